"""Raft traffic between RaftStores in one process: the real transport's rules, no sockets.

What ``send`` queues is written at the next ``flush``, or later in the same loop turn by a
flush the first ``send`` scheduled (node.transport.RaftTransport's rule; an explicit flush
cancels the scheduled one). Each batch is serialised to a ``RaftBatch`` and parsed back, as
the TCP transport's two ends do, and handed to the destination store in a later callback.
Used by ``tools.bench_rounds`` and by tests that run several stores in one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tesserapb import raft_pb2


class Receiver(Protocol):
    def on_messages(self, from_store: int, msgs: list[raft_pb2.RaftMessage]) -> None: ...


Observer = Callable[[int, int, list[raft_pb2.RaftMessage]], object]
"""Called with (from store, to store, messages) for each batch as it is written."""


class MemoryTransport:
    def __init__(self, store_id: int, stores: Mapping[int, Receiver], observe: Observer | None = None) -> None:
        self.store_id = store_id
        self.stores = stores  # filled in by the caller once every store exists
        self.observe = observe
        self.queued: list[tuple[int, list[raft_pb2.RaftMessage]]] = []
        self._soon: asyncio.Handle | None = None

    def send(self, to_store: int, msgs: Sequence[raft_pb2.RaftMessage]) -> None:
        self.queued.append((to_store, list(msgs)))
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        queued, self.queued = self.queued, []
        loop = asyncio.get_running_loop()
        for to_store, msgs in queued:
            if self.observe is not None:
                self.observe(self.store_id, to_store, msgs)
            wire = raft_pb2.RaftBatch(from_store=self.store_id, to_store=to_store, msgs=msgs).SerializeToString()
            target = self.stores.get(to_store)
            if target is not None:
                loop.call_soon(target.on_messages, self.store_id, list(raft_pb2.RaftBatch.FromString(wire).msgs))

    async def send_snapshot(self, *args: object, **kwargs: object) -> tuple[bool, str]:
        return False, "no snapshots between stores in one process"
