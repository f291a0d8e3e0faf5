"""One client's multiplexed stream of tagged requests, whichever wire carries it.

A :class:`StreamSession` is what ``KV.Stream`` (gRPC) and a KV wire connection
(:mod:`node.kv_wire`, D28) share: each ``StreamRequest`` is taken as it is read, every item
admitted against the stream's byte budget (node.admission), puts, deletes and gets started
without a task (D25), anything else served by a task; each answer goes to ``respond`` as
soon as it is known, in any order (items are tagged). The carrier packs the answers into
its own messages and says when they left (:meth:`answered`), which frees their budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tesserapb import kv_pb2

if TYPE_CHECKING:
    from node.kv_service import KVService

Respond = Callable[[kv_pb2.StreamResponseItem], None]


class _Abandonable(Protocol):
    def abandon(self) -> None: ...


class Unanswered:
    """One stream's items served without a task and not yet answered (writes, gets waiting for
    their read barrier), so that the stream answers them all before it ends."""

    def __init__(self) -> None:
        self.items: set[_Abandonable] = set()
        self.quiet = asyncio.Event()
        self.quiet.set()

    def add(self, w: _Abandonable) -> None:
        self.items.add(w)
        self.quiet.clear()

    def done(self, w: _Abandonable) -> None:
        self.items.discard(w)
        if not self.items:
            self.quiet.set()

    def abandon(self) -> None:
        for w in self.items:
            w.abandon()
        self.items.clear()
        self.quiet.set()


class StreamSession:
    def __init__(self, kv: KVService, respond: Respond) -> None:
        self.kv = kv
        self.respond = respond
        self.budget = kv.rs.admission.stream()  # unanswered request bytes (node.admission)
        self.writes = Unanswered()  # items started without a task, not answered yet
        self.tasks: set[asyncio.Task[kv_pb2.StreamResponseItem]] = set()

    def take(self, req: kv_pb2.StreamRequest) -> None:
        """Start serving every item of ``req`` (answers come through ``respond``)."""
        kv, respond, budget, writes = self.kv, self.respond, self.budget, self.writes
        share = budget.share(req)
        for item in req.requests:
            refused = budget.admit(item, share)
            if refused is not None:
                respond(refused)
                continue
            kind = item.WhichOneof("request")
            if kind == "put" or kind == "delete":
                kv._start_write(item, kind, respond, writes)
                continue
            if kind == "get" and (kv._answered_now(item, respond) or kv._start_get(item, respond, writes)):
                continue
            t = asyncio.ensure_future(kv._serve_item(item))
            self.tasks.add(t)
            t.add_done_callback(self._finished)

    def _finished(self, t: asyncio.Task[kv_pb2.StreamResponseItem]) -> None:
        self.tasks.discard(t)
        if not t.cancelled():
            self.respond(t.result())

    def answered(self, items: list[kv_pb2.StreamResponseItem]) -> None:
        """These answers left: their requests' bytes no longer count against the budget."""
        self.budget.answered(items)

    async def drain(self) -> None:
        """Wait until every item taken so far is answered (the client half-closed)."""
        while self.tasks or not self.writes.quiet.is_set():
            if self.tasks:
                await asyncio.wait(set(self.tasks))
            else:
                await self.writes.quiet.wait()

    def close(self) -> None:
        """The stream is gone: nothing taken is answered any more."""
        for t in list(self.tasks):
            t.cancel()
        self.writes.abandon()
