"""One partition's replica on this node: its Raft group member and the requests waiting on it.

The replica owns no I/O.  The :class:`~node.raftstore.RaftStore` drives every
replica's Ready cycle (one WAL write and one LMDB transaction per round for
all of them); the KV service calls :meth:`Replica.propose` and the read
helpers and awaits the futures they return.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from node.raft import NONE, ConfState, HardState, NotLeaderError, RawNode, Role
from node.state.commands import Command
from node.state.store import OpResult
from node.wal.storage import WalLogStorage
from tesserapb import meta_pb2


class ProposalLost(Exception):
    """The entry this proposal became was replaced by another leader's: it was not applied."""


class ReplicaStopped(Exception):
    """The replica was closed (node shutting down or replica removed) before the request finished."""


@dataclass(slots=True)
class _Proposal:
    data: bytes
    future: asyncio.Future
    term: int = 0


@dataclass(order=True, slots=True)
class _ApplyWait:
    index: int
    seq: int
    future: asyncio.Future = field(compare=False)


class ReplicaStorage(WalLogStorage):
    """The WAL-backed log, but the membership comes from the applied state (LMDB).

    The core does not re-apply conf changes at or below ``Config.applied``,
    so on restart it must start from the membership *as of the applied
    index*, which the state machine stores next to that index.
    """

    __slots__ = ("conf_state",)

    def __init__(self, wal, pid: int, conf_state: ConfState, snapshot_provider=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(wal, pid, snapshot_provider)
        self.conf_state = conf_state

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs, _ = super().initial_state()
        return hs, self.conf_state


class Replica:
    def __init__(
        self,
        pid: int,
        replica_id: int,
        descriptor: meta_pb2.PartitionDescriptor,
        raw: RawNode,
        storage: ReplicaStorage,
        loop: asyncio.AbstractEventLoop,
        on_work: Callable[[], None],
        on_wake: Callable[["Replica"], None] | None = None,
    ) -> None:
        self.pid = pid
        self.replica_id = replica_id
        self.raw = raw
        self.storage = storage
        self.loop = loop
        self._on_work = on_work
        self._on_wake = on_wake
        # Quiescence bookkeeping (see RaftStore.catch_up).
        self.idle_ticks = 0
        self.quiet_ticks = 0
        self.descriptor = descriptor
        self._stores: dict[int, int] = {}
        self.set_descriptor(descriptor)
        self.queued: list[_Proposal] = []
        self.proposals: dict[int, _Proposal] = {}
        self._read_waits: dict[bytes, asyncio.Future] = {}
        self._apply_waits: list[_ApplyWait] = []
        self._seq = itertools.count()
        self._read_ctx = itertools.count(1)
        self.applied = raw.applied
        self.applied_term = 0
        # When we last heard from a leader, and the commit index it told us (STALE reads).
        self.leader_contact = 0.0
        self.leader_commit = 0
        self.last_role = raw.role
        self.closed = False
        # Membership changes placement asked this leader for (see RaftStore.drive_membership):
        # replica id -> store id to add, replica ids to remove.  Forgotten on losing the
        # lead; placement re-sends them to the next leader.
        self.want_add: dict[int, int] = {}
        self.want_remove: set[int] = set()

    # -- membership / routing -------------------------------------------------

    def set_descriptor(self, desc: meta_pb2.PartitionDescriptor) -> None:
        self.descriptor = desc
        self._stores = {r.replica_id: r.store_id for r in desc.replicas}

    def store_of(self, replica_id: int) -> int | None:
        return self._stores.get(replica_id)

    @property
    def start(self) -> bytes:
        return self.descriptor.start

    @property
    def end(self) -> bytes:
        return self.descriptor.end

    def contains(self, key: bytes) -> bool:
        return key >= self.descriptor.start and (not self.descriptor.end or key < self.descriptor.end)

    def leader_store(self) -> int:
        lead = self.raw.leader
        return self._stores.get(lead, 0) if lead != NONE else 0

    def is_leader(self) -> bool:
        return self.raw.is_leader

    # -- writes -----------------------------------------------------------------

    def propose(self, cmd: Command) -> asyncio.Future:
        """Queue a command; the future resolves with its results once applied here.

        Raises :class:`~node.raft.errors.NotLeaderError` at once on a non-leader
        (the caller answers NotLeader).  Proposals queued in one event-loop
        pass are appended as one batch at the next Raft round.
        """
        if self.closed:
            raise ReplicaStopped(f"partition {self.pid} replica is closed")
        if not self.raw.is_leader:
            raise NotLeaderError(self.raw.leader)
        self.ensure_awake()
        fut = self.loop.create_future()
        self.queued.append(_Proposal(cmd.encode(), fut))
        self._on_work()
        return fut

    def flush_proposals(self) -> None:
        """Append everything queued as one batch (called by the RaftStore each round)."""
        if not self.queued:
            return
        batch, self.queued = self.queued, []
        try:
            first = self.raw.propose_batch([p.data for p in batch])
        except Exception as exc:  # NotLeader / ProposalDropped: nothing was appended
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        term = self.raw.term
        for k, p in enumerate(batch):
            p.term = term
            self.proposals[first + k] = p

    def resolve_applied(self, index: int, term: int, results: list[OpResult] | None) -> None:
        """An entry was applied: finish the proposal that became it, if any is waiting."""
        p = self.proposals.pop(index, None)
        if p is None or p.future.done():
            return
        if p.term != term:
            p.future.set_exception(ProposalLost(f"entry {index} was replaced (term {term} != {p.term})"))
        else:
            p.future.set_result(results)

    # -- reads ------------------------------------------------------------------

    def read_index(self, lease: bool) -> asyncio.Future:
        """Future of the index a linearizable read must wait for (then :meth:`wait_applied`)."""
        if self.closed:
            raise ReplicaStopped(f"partition {self.pid} replica is closed")
        self.ensure_awake()
        fut = self.loop.create_future()
        if lease:
            idx = self.raw.lease_read_index()
            if idx is not None:
                fut.set_result(idx)
                return fut
        ctx = next(self._read_ctx).to_bytes(8, "big")
        self._read_waits[ctx] = fut
        try:
            self.raw.read_index(ctx, lease=lease)
        except Exception:
            del self._read_waits[ctx]
            raise
        self._on_work()
        return fut

    def ensure_awake(self) -> None:
        if self.raw.quiesced and self._on_wake is not None:
            self._on_wake(self)

    def resolve_read(self, context: bytes, index: int) -> None:
        fut = self._read_waits.pop(context, None)
        if fut is not None and not fut.done():
            fut.set_result(index)

    def wait_applied(self, index: int) -> asyncio.Future:
        fut = self.loop.create_future()
        if self.applied >= index:
            fut.set_result(None)
        else:
            heapq.heappush(self._apply_waits, _ApplyWait(index, next(self._seq), fut))
        return fut

    def note_applied(self, index: int, term: int) -> None:
        if index > self.applied:
            self.applied = index
            self.applied_term = term
        waits = self._apply_waits
        while waits and waits[0].index <= self.applied:
            w = heapq.heappop(waits)
            if not w.future.done():
                w.future.set_result(None)

    def on_role_change(self, role: Role) -> None:
        """Reads waiting for a leader's confirmation cannot complete after it steps down."""
        if role != Role.LEADER:
            self.want_add, self.want_remove = {}, set()
        if role != Role.LEADER and self._read_waits:
            waits, self._read_waits = self._read_waits, {}
            for fut in waits.values():
                if not fut.done():
                    fut.set_exception(NotLeaderError(self.raw.leader))
        self.last_role = role

    def close(self) -> None:
        self.closed = True
        err = ReplicaStopped(f"partition {self.pid} replica stopped")
        for p in self.queued:
            if not p.future.done():
                p.future.set_exception(err)
        for p in self.proposals.values():
            if not p.future.done():
                p.future.set_exception(err)
        for fut in self._read_waits.values():
            if not fut.done():
                fut.set_exception(err)
        for w in self._apply_waits:
            if not w.future.done():
                w.future.set_exception(err)
        self.queued, self.proposals, self._read_waits, self._apply_waits = [], {}, {}, []
