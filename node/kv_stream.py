"""One client's multiplexed stream of tagged requests, whichever wire carries it.

A :class:`StreamSession` is what ``KV.Stream`` (gRPC) and a KV wire connection
(:mod:`node.kv_wire`, D28) share: each ``StreamRequest`` is taken as it is read, every item
admitted against the stream's byte budget (node.admission), puts, deletes and gets started
without a task (D25), anything else served by a task; each answer goes to ``respond`` as
soon as it is known, in any order (items are tagged). The carrier packs the answers into
messages of a bounded size (:meth:`take_answers`), which frees what they held of the budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from common.wire import kv_frames as kf
from tesserapb import kv_pb2

if TYPE_CHECKING:
    from node.kv_service import KVService

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
    """One client stream's requests served and answers packed, whichever carrier has them."""

    def __init__(self, kv: KVService, ready: Callable[[], object], backlog: Callable[[], int] | None = None) -> None:
        """``ready`` is told when answers wait to be taken (:meth:`take_answers`) where none did;
        ``backlog`` says what the carrier still buffers (it counts against the budget)."""
        self.kv = kv
        self.ready = ready
        self.budget = kv.rs.admission.stream(backlog)  # what the stream holds (node.admission)
        self.writes = Unanswered()  # items started without a task, not answered yet
        self.tasks: set[asyncio.Task[kv_pb2.StreamResponseItem]] = set()
        self._answers: list[tuple[kv_pb2.StreamResponseItem, int]] = []  # (answer, its bytes)

    def respond(self, item: kv_pb2.StreamResponseItem) -> None:
        """An answer is known: queue it for the carrier (it counts against the budget)."""
        n = item.ByteSize()
        self.budget.answering += n
        self._answers.append((item, n))
        if len(self._answers) == 1:
            self.ready()

    def take(self, req: kv_pb2.StreamRequest) -> None:
        """Start serving every item of ``req`` (answers come through :meth:`respond`)."""
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

    @property
    def has_answers(self) -> bool:
        return bool(self._answers)

    def take_answers(self) -> Iterator[kv_pb2.StreamResponse]:
        """The answers queued so far, packed into messages of at most PACK_BYTES each (one
        larger answer alone), made one at a time as the carrier takes them: each answer is let
        go once packed, so what the stream holds moves to the carrier's buffer rather than
        doubling (many large answers at once). Handing one on frees what it held of the budget."""
        answers, self._answers = self._answers, []
        if len(answers) == 1:  # the common case under light load
            item, n = answers[0]
            self.budget.answered([item], n)
            yield kv_pb2.StreamResponse(responses=[item])
            return
        for run, size in kf.packed(answers):
            self.budget.answered(run, size)
            resp = kv_pb2.StreamResponse(responses=run)
            del run
            yield resp

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
        self._answers.clear()
