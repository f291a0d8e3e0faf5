"""The application's handle on one replica: inputs in, :class:`Ready` batches out.

This is the whole surface a driver (the node process, the simulator, a
benchmark) uses; nothing outside this package reaches the :class:`Raft` object
behind it (``tests/unit/test_core_boundary.py`` enforces that).  It never
blocks and never does I/O::

    node = RawNode(Config(id=1), storage, random.Random(seed))
    node.tick()                      # on every tick of the caller's clock
    node.step(message)               # on every message from a peer
    index = node.propose(b"cmd")     # leader only
    if node.has_ready():
        rd = node.ready()
        ... send rd.messages_before_persist (any time)
        ... persist rd.snapshot / rd.entries / rd.hard_state
        ... send rd.messages_after_persist
        ... apply rd.committed_entries (rd.conf_changes says what conf changes do),
        ... serve rd.read_states ...
        node.advance(rd)

Reading state: cheap properties for the hot path (``role``, ``leader``,
``term``, ``commit``...), :meth:`status` for a full snapshot with the
leader's view of every peer, and :meth:`log_view` for checkers.

Why one door: docs/decisions.md D1 (and D6 for what may be sent before the persist).
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import Config, Rand
from .raft import Raft
from .storage import LogStorage
from .types import (
    ConfChange,
    ConfState,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
    Status,
)
from .views import LogView

# What a leader may send before its own write completes: its appends (it counts its own log
# only once persisted), heartbeats, snapshots, transfer and read answers. Nothing that
# promises what is on its disk (votes, acknowledgements) ever goes early.
_LEADER_EARLY = frozenset(
    {MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP, MessageType.TIMEOUT_NOW, MessageType.READ_INDEX_RESP}
)


class RawNode:
    """Wraps :class:`Raft` with the Ready/advance protocol.

    ``mutation`` names a known Raft bug to run instead of the real rules
    (:func:`node.raft.known_mutations`); it exists so that tests can prove
    they catch such bugs, and production code never passes it.
    """

    def __init__(self, config: Config, storage: LogStorage, rng: Rand, *, mutation: str | None = None) -> None:
        raft_class = Raft
        if mutation:
            from .mutations import raft_class_for  # test-only code, loaded only when asked for

            raft_class = raft_class_for(mutation)
        self._raft = raft_class(config, storage, rng)
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()

    # -- inputs -------------------------------------------------------------

    def tick(self) -> None:
        """Advance the replica's logical clock by one tick."""
        self._raft.tick()

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer of this group."""
        self._raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (e.g. to bootstrap a single-replica group quickly)."""
        self._raft.campaign_now()

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the leader's log; returns its index.

        Raises :class:`~node.raft.errors.NotLeaderError` on a non-leader and
        :class:`~node.raft.errors.ProposalDroppedError` while a leadership
        transfer is under way or the uncommitted backlog is full.
        """
        return self._raft.propose([data])

    def propose_batch(self, datas: Sequence[bytes]) -> int:
        """Append many commands as one batch; returns the index of the first."""
        return self._raft.propose(list(datas))

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change; returns the index of its entry.

        Refused while another change is pending, while the config is joint
        (except the leave-joint change), when it would promote a learner that
        has not caught up to the commit index, or when it would leave no voter.
        """
        return self._raft.propose_conf_change(cc)

    def read_index(self, context: bytes, lease: bool = False) -> None:
        """Ask for a linearizable read point; answered later as a ``ReadState``.

        With ``lease`` the leader answers at once while its lease holds (see
        :class:`~node.raft.config.Config`), otherwise after a heartbeat round
        confirms it is still leader.  On a follower the request is forwarded
        to the leader; it is dropped if no leader is known (retry later).
        ``context`` must be unique among outstanding reads.
        """
        self._raft.read_index(context, lease)

    def lease_read_index(self) -> int | None:
        """The read index a leader may serve at once under its lease, or None.

        The synchronous fast path of ``read_index(ctx, lease=True)``: valid
        only on a leader whose lease holds and that has committed an entry of
        its term.  The caller then waits until that index is applied.
        """
        r = self._raft
        if r.lease_valid() and r.log.term_or_zero(r.log.committed) == r.term:
            return r.log.committed
        return None

    def can_quiesce(self) -> bool:
        """Is this a leader whose group is fully idle (replicated, committed, applied)?"""
        return self._raft.can_quiesce()

    def quiesce(self) -> bool:
        """On an idle leader: tell followers to go idle and stop needing ticks. False if busy."""
        return self._raft.quiesce()

    def wake(self, elapsed_ticks: int) -> None:
        """Resume ticking after ``elapsed_ticks`` idle ticks (call before any request)."""
        self._raft.wake(elapsed_ticks)

    def transfer_leader(self, target: int) -> None:
        """Hand leadership to ``target`` once it has caught up (TimeoutNow)."""
        self._raft.transfer_leader(target)

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver to ``node_id``: fall back to probing it."""
        self._raft.report_unreachable(node_id)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """Outcome of streaming a snapshot to ``node_id``."""
        self._raft.report_snapshot(node_id, ok)

    # -- outputs ------------------------------------------------------------

    def has_ready(self) -> bool:
        # Asked of every candidate replica several times a round: compares fields rather than
        # building a HardState and a SoftState to compare (a tenth of a round's core time).
        r = self._raft
        if r.msgs or r.read_states:
            return True
        log = r.log
        if log.unstable or log.unstable_snapshot is not None:
            return True
        if log.committed > log.applied and log.unstable_snapshot is None:
            return True
        hard = self._prev_hard
        if r.term != hard.term or r.vote != hard.vote or log.committed != hard.commit:
            return True
        soft = self._prev_soft
        return r.lead != soft.leader or r.role != soft.role

    def ready(self) -> Ready:
        """Collect the pending work; the caller must :meth:`advance` it before the next."""
        r = self._raft
        prev = self._prev_hard
        soft = r.soft_state()
        hard = r.hard_state()
        log = r.log
        entries = tuple(log.unstable) if log.unstable else ()
        snapshot = log.unstable_snapshot
        to_apply = r.entries_to_apply()  # a mutation hook: always ask it
        committed = tuple(to_apply) if to_apply else ()
        term_or_vote_changed = hard.term != prev.term or hard.vote != prev.vote
        msgs, r.msgs = r.msgs, []
        early: tuple[Message, ...] = ()
        late: tuple[Message, ...] = ()
        if msgs:
            if r.role == Role.LEADER and not term_or_vote_changed:
                for m in msgs:
                    if m.type not in _LEADER_EARLY:
                        early = tuple(m for m in msgs if m.type in _LEADER_EARLY)
                        late = tuple(m for m in msgs if m.type not in _LEADER_EARLY)
                        break
                else:  # the usual case: a leader's messages may all go at once
                    early = tuple(msgs)
            else:
                late = tuple(msgs)
        read_states: tuple[ReadState, ...] = ()
        if r.read_states:
            read_states, r.read_states = tuple(r.read_states), []
        return Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != prev else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=committed,
            messages_before_persist=early,
            messages_after_persist=late,
            read_states=read_states,
            conf_changes=r.conf_change_results(committed) if committed else (),
            must_sync=bool(entries or snapshot is not None or term_or_vote_changed),
        )

    def advance(self, rd: Ready) -> None:
        """Report that everything in ``rd`` was persisted, sent and applied."""
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        self._raft.advance(rd)

    # -- inspection (read-only) ------------------------------------------------

    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def is_leader(self) -> bool:
        return self._raft.role == Role.LEADER

    @property
    def leader(self) -> int:
        """The leader this replica knows of (0: none known)."""
        return self._raft.lead

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def commit(self) -> int:
        return self._raft.log.committed

    @property
    def applied(self) -> int:
        """The last index handed to the application and advanced past."""
        return self._raft.log.applied

    @property
    def quiesced(self) -> bool:
        """The group is idle: the driver need not tick it (see :meth:`wake`)."""
        return self._raft.quiesced

    @property
    def conf_state(self) -> ConfState:
        """The membership as of the last applied conf change."""
        return self._raft.conf_state()

    @property
    def pending_snapshot(self) -> SnapshotMeta | None:
        """The snapshot accepted from the leader and not yet persisted (handed out in a Ready)."""
        snap = self._raft.log.unstable_snapshot
        return snap.meta if snap is not None else None

    def status(self) -> Status:
        return self._raft.status()

    def hard_state(self) -> HardState:
        return self._raft.hard_state()

    def soft_state(self) -> SoftState:
        return self._raft.soft_state()

    def log_view(self) -> LogView:
        """A read-only view of this replica's log, persisted and not (for invariant checkers)."""
        return LogView(self._raft.log)
