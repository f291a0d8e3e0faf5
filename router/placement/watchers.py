"""Stores waiting to hear "heartbeat now": how an operation reaches its node when it is decided.

Every node holds a ``WatchOperations`` stream open to the router (router/meta_service.py).
When placement queues work for a store, it wakes that store's watchers; the node answers with
an immediate heartbeat, whose response carries the operations, exactly as a periodic one
would. Nothing else travels on the stream, so there is one way operations are handed out, and
a lost wake-up costs at most one heartbeat interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class OperationWatchers:
    def __init__(self) -> None:
        self._by_store: dict[int, set[asyncio.Event]] = {}

    @contextmanager
    def watch(self, store_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever work is queued for ``store_id``, for as long as the block runs."""
        event = asyncio.Event()
        self._by_store.setdefault(store_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._by_store.get(store_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._by_store[store_id]

    def wake(self, store_ids: Iterable[int]) -> int:
        """Wake every watcher of these stores; returns how many were woken."""
        woken = 0
        for store_id in store_ids:
            for event in self._by_store.get(store_id, ()):
                event.set()
                woken += 1
        return woken

    def watching(self, store_id: int) -> bool:
        return bool(self._by_store.get(store_id))

    def close_all(self) -> None:
        """Wake every watcher so that each looks again whether it should go on (a router that
        stopped leading ends its streams; the nodes reconnect to the new leader)."""
        for watchers in self._by_store.values():
            for event in watchers:
                event.set()
