"""The application's handle on one replica: inputs in, :class:`Ready` batches out.

This is the whole surface a driver (the node process, the simulator, a
benchmark) uses.  It never blocks and never does I/O::

    node = RawNode(Config(id=1), storage, random.Random(seed))
    node.tick()                      # on every tick of the caller's clock
    node.step(message)               # on every message from a peer
    index = node.propose(b"cmd")     # leader only
    if node.has_ready():
        rd = node.ready()
        ... persist rd.entries / rd.hard_state / rd.snapshot, send rd.messages,
        ... apply rd.committed_entries, serve rd.read_states ...
        node.advance(rd)
"""

from __future__ import annotations

from .config import Config, Rand
from .raft import Raft
from .storage import LogStorage
from .types import (
    ConfChange,
    ConfState,
    HardState,
    Message,
    Ready,
    SoftState,
    Status,
)


class RawNode:
    """Wraps :class:`Raft` with the Ready/advance protocol.

    ``raft_class`` exists so the simulator can inject known bugs by
    overriding one small method of :class:`Raft`; production code never
    passes it.
    """

    def __init__(
        self,
        config: Config,
        storage: LogStorage,
        rng: Rand,
        *,
        raft_class: type[Raft] = Raft,
    ) -> None:
        self.raft = raft_class(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()

    # -- inputs -------------------------------------------------------------

    def tick(self) -> None:
        """Advance the replica's logical clock by one tick."""
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer of this group."""
        self.raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (e.g. to bootstrap a single-replica group quickly)."""
        self.raft.campaign_now()

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the leader's log; returns its index.

        Raises :class:`~node.raft.errors.NotLeaderError` on a non-leader and
        :class:`~node.raft.errors.ProposalDroppedError` while a leadership
        transfer is under way or the uncommitted backlog is full.
        """
        return self.raft.propose([data])

    def propose_batch(self, datas: list[bytes]) -> int:
        """Append many commands as one batch; returns the index of the first."""
        return self.raft.propose(datas)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change; returns the index of its entry.

        Refused while another change is pending, while the config is joint
        (except the leave-joint change), when it would promote a learner that
        has not caught up to the commit index, or when it would leave no voter.
        """
        return self.raft.propose_conf_change(cc)

    def read_index(self, context: bytes, lease: bool = False) -> None:
        """Ask for a linearizable read point; answered later as a ``ReadState``.

        With ``lease`` the leader answers at once while its lease holds (see
        :class:`~node.raft.config.Config`), otherwise after a heartbeat round
        confirms it is still leader.  On a follower the request is forwarded
        to the leader; it is dropped if no leader is known (retry later).
        ``context`` must be unique among outstanding reads.
        """
        self.raft.read_index(context, lease)

    def lease_read_index(self) -> int | None:
        """The read index a leader may serve at once under its lease, or None.

        The synchronous fast path of ``read_index(ctx, lease=True)``: valid
        only on a leader whose lease holds and that has committed an entry of
        its term.  The caller then waits until that index is applied.
        """
        r = self.raft
        if r.lease_valid() and r.log.term_or_zero(r.log.committed) == r.term:
            return r.log.committed
        return None

    @property
    def quiesced(self) -> bool:
        """The group is idle: the driver need not tick it (see :meth:`wake`)."""
        return self.raft.quiesced

    def quiesce(self) -> bool:
        """On an idle leader: tell followers to go idle and stop needing ticks. False if busy."""
        return self.raft.quiesce()

    def wake(self, elapsed_ticks: int) -> None:
        """Resume ticking after ``elapsed_ticks`` idle ticks (call before any request)."""
        self.raft.wake(elapsed_ticks)

    def transfer_leader(self, target: int) -> None:
        """Hand leadership to ``target`` once it has caught up (TimeoutNow)."""
        self.raft.transfer_leader(target)

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver to ``node_id``: fall back to probing it."""
        self.raft.report_unreachable(node_id)

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """Outcome of streaming a snapshot to ``node_id``."""
        self.raft.report_snapshot(node_id, ok)

    # -- outputs ------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        return bool(
            r.msgs
            or r.read_states
            or r.log.has_unstable()
            or r.log.has_next_committed()
            or r.hard_state() != self._prev_hard
            or r.soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        """Collect the pending work; the caller must :meth:`advance` it before the next."""
        r = self.raft
        rd = Ready(
            entries=r.log.unstable_entries(),
            snapshot=r.log.unstable_snapshot,
            committed_entries=r.entries_to_apply(),
            messages=r.msgs,
            read_states=r.read_states,
        )
        r.msgs = []
        r.read_states = []
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
        hard = r.hard_state()
        if hard != self._prev_hard:
            rd.hard_state = hard
        rd.must_sync = bool(
            rd.entries
            or rd.snapshot is not None
            or (
                rd.hard_state is not None
                and (rd.hard_state.term != self._prev_hard.term or rd.hard_state.vote != self._prev_hard.vote)
            )
        )
        return rd

    def advance(self, rd: Ready) -> None:
        """Report that everything in ``rd`` was persisted, sent and applied."""
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        self.raft.advance(rd)

    # -- inspection ---------------------------------------------------------

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def conf_state(self) -> ConfState:
        """The membership as of the last applied conf change."""
        return self.raft.conf_state()

    def status(self) -> Status:
        return self.raft.status()

    def hard_state(self) -> HardState:
        return self.raft.hard_state()

    def soft_state(self) -> SoftState:
        return self.raft.soft_state()
