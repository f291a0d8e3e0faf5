"""One partition's replica on this node: its Raft group member and everything kept per partition.

The replica owns no I/O.  The :class:`~node.raftstore.RaftStore` drives every replica's
Ready cycle in rounds (one WAL write and one LMDB transaction per round for all of them,
see :mod:`node.round_plan`); the KV service calls :meth:`Replica.propose` and the read
helpers and awaits the futures they return.  What a partition carries between rounds lives
here too: the commit index not yet written, the compaction that is due, the snapshot
received from the leader and waiting for the core, the membership changes placement asked
this leader for, and whether the replica is to be deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from common.descriptor import Descriptor
from node import membership
from node.raft import NONE, ConfState, HardState, NotLeaderError, ProposalDroppedError, RawNode, Role, Snapshot
from node.requests import PendingRequests, Proposal, ReplicaStopped
from node.round_plan import NOTHING_CARRIED, PartitionWork, StagedSnapshot
from node.state.commands import Command, SplitCommand
from node.state.store import OpResult
from node.wal.storage import WalLogStorage
from node.wal.wal import WriteAheadLog


class ReplicaStorage(WalLogStorage):
    """The WAL-backed log, but the membership comes from the applied state (LMDB).

    The core does not re-apply conf changes at or below ``Config.applied``,
    so on restart it must start from the membership *as of the applied
    index*, which the state machine stores next to that index.
    """

    __slots__ = ("conf_state",)

    def __init__(
        self,
        wal: WriteAheadLog,
        pid: int,
        conf_state: ConfState,
        snapshot_provider: Callable[[], Snapshot] | None = None,
    ) -> None:
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
        descriptor: Descriptor,
        raw: RawNode,
        storage: ReplicaStorage,
        loop: asyncio.AbstractEventLoop,
        on_work: Callable[[], None],
        on_wake: Callable[[Replica], None] | None = None,
        *,
        on_apply_wanted: Callable[[], None] | None = None,
    ) -> None:
        self.pid = pid
        self.replica_id = replica_id
        self.raw = raw
        self.storage = storage
        self.loop = loop
        self._on_work = on_work
        self._on_wake = on_wake
        # Commits applies held in LMDB's open transaction at once (the node's RoundExecutor).
        self.on_apply_wanted = on_apply_wanted
        self.requests = PendingRequests(loop)
        self.descriptor = descriptor
        self._stores: dict[int, int] = {}
        self.set_descriptor(descriptor)
        self.applied = raw.applied
        self.applied_term = 0
        self.closed = False
        # Quiescence bookkeeping (see node.ticker).
        self.idle_ticks = 0
        self.quiet_ticks = 0
        # When we last heard from a leader, and the commit index it told us (STALE reads).
        self.leader_contact = 0.0
        self.leader_commit = 0
        # Carried between rounds until one writes (see node.round_plan).
        self.carried = NOTHING_CARRIED
        # A snapshot's data received from the leader, and who waits for its installation.
        self._staged: tuple[StagedSnapshot, asyncio.Future[tuple[bool, str]]] | None = None
        # Set when the replica is to be deleted at the start of the next round.
        self.doomed: asyncio.Future[None] | None = None
        # Membership changes placement asked this leader for (see drive_membership):
        # replica id -> store id to add, replica ids to remove.  Forgotten on losing the
        # lead; placement re-sends them to the next leader.
        self.want_add: dict[int, int] = {}
        self.want_remove: set[int] = set()
        # The linearizable read whose ReadIndex was asked of the core since the last round took
        # its Ready: later reads share it (see read_index).
        self._open_read: asyncio.Future[int] | None = None

    # -- membership / routing -------------------------------------------------

    def set_descriptor(self, desc: Descriptor) -> None:
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
        return self.descriptor.contains(key)

    def leader_store(self) -> int:
        lead = self.raw.leader
        return self._stores.get(lead, 0) if lead != NONE else 0

    def is_leader(self) -> bool:
        return self.raw.is_leader

    # -- a round's input ----------------------------------------------------------

    def take_work(self) -> PartitionWork | None:
        """Append what is queued as one batch, then take the Ready, if there is one."""
        # Reads arriving from now on need a ReadIndex of their own (see read_index).
        self._open_read = None
        if self.requests.queued:
            self.requests.flush(self.raw.propose_batch, self.raw.term)
        if not self.raw.has_ready():
            return None
        staged = self._staged[0] if self._staged is not None else None
        return PartitionWork(self.pid, self.replica_id, self.raw.ready(), self.descriptor, self.raw.conf_state, staged)

    def has_work(self) -> bool:
        return bool(self.requests.queued) or self.raw.has_ready()

    # -- writes -----------------------------------------------------------------

    def propose(self, cmd: Command | SplitCommand) -> asyncio.Future[list[OpResult] | None]:
        """Queue a command; the future resolves with its results once applied here.

        Raises :class:`~node.raft.NotLeaderError` at once on a non-leader
        (the caller answers NotLeader).  Proposals queued in one event-loop
        pass are appended as one batch at the next Raft round.
        """
        self._may_propose()
        fut = self.requests.queue(cmd.encode())
        self._on_work()
        return fut

    def propose_call(self, cmd: Command) -> Proposal:
        """As :meth:`propose`, settled by a call instead of a future: set the proposal's
        ``on_settled`` now; it is called from the round that applies the command (or drops it),
        so an answer made there leaves before that round's own Raft traffic (node.requests)."""
        self._may_propose()
        p = self.requests.queue_call(cmd.encode())
        self._on_work()
        return p

    def _may_propose(self) -> None:
        if self.closed:
            raise ReplicaStopped(f"partition {self.pid} replica is closed")
        if not self.raw.is_leader:
            raise NotLeaderError(self.raw.leader)
        self.ensure_awake()

    def resolve_applied(self, index: int, term: int, results: list[OpResult] | None) -> None:
        self.requests.resolve_applied(index, term, results)

    # -- reads ------------------------------------------------------------------

    def read_index(self, lease: bool) -> asyncio.Future[int]:
        """Future of the index a linearizable read must wait for (then :meth:`wait_applied`).

        Linearizable reads that arrive between two rounds share one ReadIndex: one heartbeat
        round trip confirms the leadership for all of them, as etcd's server batches its
        reads. That is safe because a write is acknowledged to its client only from a round
        (its apply), so none can be acknowledged after the shared ReadIndex recorded the
        commit index and before a later read joins it: the round that would acknowledge it
        takes the Ready first, and that ends the sharing. Share the future, never cancel it
        (callers shield it).
        """
        if self.closed:
            raise ReplicaStopped(f"partition {self.pid} replica is closed")
        if lease:
            idx = self.lease_index_now()
            if idx is not None:
                fut: asyncio.Future[int] = self.loop.create_future()
                fut.set_result(idx)
                return fut
        else:
            self.ensure_awake()
        shared = self._open_read
        if not lease and shared is not None and not shared.done():
            return shared
        ctx, fut = self.requests.new_read()
        try:
            self.raw.read_index(ctx, lease=lease)
        except Exception:
            self.requests.forget_read(ctx)
            raise
        if not lease:
            self._open_read = fut
        self._on_work()
        return fut

    def lease_index_now(self) -> int | None:
        """The read index the leader's lease vouches for now, or None (no lease: ReadIndex).
        A quiesced group is woken first, so that it ticks again while it is read."""
        self.ensure_awake()
        return self.raw.lease_read_index()

    def resolve_read(self, context: bytes, index: int) -> None:
        self.requests.resolve_read(context, index)

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        """Future settled once ``index`` is applied. An apply already done but held in LMDB's
        open transaction (D27) is committed now rather than on its timer (``on_apply_wanted``)."""
        if index > self.applied and self.on_apply_wanted is not None:
            self.on_apply_wanted()
        return self.requests.wait_applied(index, self.applied)

    def note_applied(self, index: int, term: int) -> None:
        if index > self.applied:
            self.applied = index
            self.applied_term = term
        self.requests.note_applied(self.applied)

    def ensure_awake(self) -> None:
        if self.raw.quiesced and self._on_wake is not None:
            self._on_wake(self)

    def on_role_change(self, role: Role) -> None:
        if role != Role.LEADER:
            self.want_add, self.want_remove = {}, set()
            self.requests.fail_reads(NotLeaderError(self.raw.leader))

    # -- membership changes (leader side) ------------------------------------------

    def drive_membership(self) -> str | None:
        """Take the leader's next membership step (:func:`node.membership.next_step`).

        Returns what was done, for the log (None: nothing to do or not possible now).
        """
        if not self.raw.is_leader:
            return None
        st = self.raw.status()
        members = st.conf_state.all_nodes()
        held = {r.store_id for r in self.descriptor.replicas}  # one replica of a partition per store
        self.want_add = {rid: store for rid, store in self.want_add.items() if rid not in members and store not in held}
        self.want_remove &= members
        step = membership.next_step(st, self.want_add, self.want_remove)
        if step is None:
            return None
        # An idle group is not ticked: it must tick again to probe and promote the newcomer.
        self.ensure_awake()
        try:
            if isinstance(step, membership.HandOver):
                self.raw.transfer_leader(step.target)
                self.want_remove.discard(self.replica_id)
                done = f"asked to remove the leader; transferring to {step.target} first"
            else:
                self.raw.propose_conf_change(step)
                done = f"proposed {[(c.type.name, c.node_id) for c in step.changes]}"
        except (ProposalDroppedError, NotLeaderError) as exc:
            return f"membership step {step} not taken yet: {exc}"
        self._on_work()
        return done

    # -- a snapshot received from the leader ---------------------------------------

    def stage_snapshot(self, staged: StagedSnapshot) -> asyncio.Future[tuple[bool, str]]:
        """Hold a received snapshot's data for the round that installs it; the future says how
        that went.  A newer one replaces an older one still waiting."""
        self.finish_snapshot(False, "superseded by a newer snapshot")
        fut: asyncio.Future[tuple[bool, str]] = self.loop.create_future()
        self._staged = (staged, fut)
        return fut

    def finish_snapshot(self, ok: bool, reason: str) -> None:
        if self._staged is not None:
            fut = self._staged[1]
            self._staged = None
            if not fut.done():
                fut.set_result((ok, reason))

    # -- the end ------------------------------------------------------------------

    def doom(self) -> asyncio.Future[None]:
        """Mark the replica for deletion at the start of the next round (rounds own storage)."""
        if self.doomed is None:
            self.doomed = self.loop.create_future()
            self._on_work()
        return self.doomed

    def close(self) -> None:
        self.closed = True
        self.requests.fail_all(ReplicaStopped(f"partition {self.pid} replica stopped"))
        self.finish_snapshot(False, "replica removed")
