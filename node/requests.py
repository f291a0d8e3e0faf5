"""The client requests waiting on one replica, and how each one ends.

A write waits twice: queued until the next Raft round appends it (all of a round's
proposals to one partition become one batch), then in flight until its entry is applied,
when it is settled with the results, or an error if another leader's entry took its index.
It is settled through a future (``queue``), or by a call made right there, in the round that
applied it (``queue_call``): a stream's write answered from inside that round leaves before
the round's own Raft traffic, and without a loop turn for a future's callbacks in between.
A linearizable read waits for the leader's read index, then until that index is applied.
Everything here runs on the event loop; nothing does I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from node.state.store import OpResult

_T = TypeVar("_T")

log = logging.getLogger("tessera.requests")


class ProposalLost(Exception):
    """The entry this proposal became was replaced by another leader's: it was not applied."""


class ReplicaStopped(Exception):
    """The replica was closed (node shutting down or replica removed) before the request finished."""


Settled = Callable[[list[OpResult] | None, BaseException | None], None]
"""How a proposal made by ``queue_call`` ends: ``(results, None)`` or ``(None, error)``."""


@dataclass(slots=True)
class Proposal:
    """A write proposed on this replica, until it is settled (exactly once)."""

    data: bytes
    future: asyncio.Future[list[OpResult] | None] | None = None
    on_settled: Settled | None = None  # set by the caller of queue_call, before the next round
    term: int = 0

    def settle(self, results: list[OpResult] | None, exc: BaseException | None) -> None:
        fut = self.future
        if fut is not None:
            if not fut.done():
                if exc is None:
                    fut.set_result(results)
                else:
                    fut.set_exception(exc)
            return
        call, self.on_settled = self.on_settled, None
        if call is None:
            return
        try:
            call(results, exc)
        except Exception:  # settled inside a Raft round: a caller's bug must not fail the round
            log.exception("settling a proposal failed")


@dataclass(order=True, slots=True)
class _ApplyWait:
    index: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class PendingRequests:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queued: list[Proposal] = []
        self._proposals: dict[int, Proposal] = {}
        self._read_waits: dict[bytes, asyncio.Future[int]] = {}
        self._apply_waits: list[_ApplyWait] = []
        self._seq = itertools.count()
        self._read_ctx = itertools.count(1)

    # -- writes -----------------------------------------------------------------

    def in_flight(self) -> int:
        """Proposals queued for the next round or proposed and not yet applied (node.admission)."""
        return len(self.queued) + len(self._proposals)

    def queue(self, data: bytes) -> asyncio.Future[list[OpResult] | None]:
        fut: asyncio.Future[list[OpResult] | None] = self._loop.create_future()
        self.queued.append(Proposal(data, fut))
        return fut

    def queue_call(self, data: bytes) -> Proposal:
        """Queue a proposal settled by a call: set its ``on_settled`` before the next round
        (it is called in the round that applies or drops it, never from here)."""
        p = Proposal(data)
        self.queued.append(p)
        return p

    def flush(self, propose_batch: Callable[[list[bytes]], int], term: int) -> None:
        """Hand every queued proposal to ``propose_batch`` as one batch (at ``term``).

        If the core refuses (not leader, transfer under way, backlog full), nothing was
        appended and every queued proposal fails with the core's error.
        """
        if not self.queued:
            return
        batch, self.queued = self.queued, []
        try:
            first = propose_batch([p.data for p in batch])
        except Exception as exc:
            for p in batch:
                p.settle(None, exc)
            return
        for k, p in enumerate(batch):
            p.term = term
            self._proposals[first + k] = p

    def resolve_applied(self, index: int, term: int, results: list[OpResult] | None) -> None:
        """An entry was applied: finish the proposal that became it, if any is waiting."""
        p = self._proposals.pop(index, None)
        if p is None:
            return
        if p.term != term:
            p.settle(None, ProposalLost(f"entry {index} was replaced (term {term} != {p.term})"))
        else:
            p.settle(results, None)

    # -- reads ------------------------------------------------------------------

    def new_read(self) -> tuple[bytes, asyncio.Future[int]]:
        """A unique read context, and the future its read index will resolve."""
        ctx = next(self._read_ctx).to_bytes(8, "big")
        fut: asyncio.Future[int] = self._loop.create_future()
        self._read_waits[ctx] = fut
        return ctx, fut

    def forget_read(self, ctx: bytes) -> None:
        self._read_waits.pop(ctx, None)

    def resolve_read(self, context: bytes, index: int) -> None:
        fut = self._read_waits.pop(context, None)
        if fut is not None and not fut.done():
            fut.set_result(index)

    def fail_reads(self, exc: Exception) -> None:
        """Reads waiting for a leader's confirmation cannot complete after it steps down."""
        waits, self._read_waits = self._read_waits, {}
        for fut in waits.values():
            if not fut.done():
                fut.set_exception(exc)

    def wait_applied(self, index: int, applied: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        if applied >= index:
            fut.set_result(None)
        else:
            heapq.heappush(self._apply_waits, _ApplyWait(index, next(self._seq), fut))
        return fut

    def first_wait(self) -> int | None:
        """The lowest index a read waits to see applied (None: no read waits)."""
        waits = self._apply_waits
        return waits[0].index if waits else None

    def note_applied(self, applied: int) -> None:
        waits = self._apply_waits
        while waits and waits[0].index <= applied:
            w = heapq.heappop(waits)
            if not w.future.done():
                w.future.set_result(None)

    # -- the end ----------------------------------------------------------------

    def fail_all(self, exc: Exception) -> None:
        proposals = list(itertools.chain(self.queued, self._proposals.values()))
        read_waits, apply_waits = self._read_waits, self._apply_waits
        self.queued, self._proposals, self._read_waits, self._apply_waits = [], {}, {}, []
        for p in proposals:
            p.settle(None, exc)
        _fail_each(read_waits.values(), exc)
        _fail_each([w.future for w in apply_waits], exc)


def _fail_each(futures: Iterable[asyncio.Future[_T]], exc: Exception) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)
