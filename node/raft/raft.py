"""The Raft state machine of one replica: elections, replication, reads, membership.

Pure and deterministic: inputs are :meth:`Raft.step`, :meth:`Raft.tick` and
the request methods; outputs accumulate in ``msgs``, ``read_states`` and the
log, and are collected by :class:`~node.raft.rawnode.RawNode`.  The design
follows etcd's raft library.  Points worth knowing:

* **Leader counts itself only once persisted.**  A leader may send appends
  before its own fsync finishes; its own match index moves only when the
  application reports the entries stable (:meth:`advance`).
* **Leases.**  Appends and heartbeats carry the leader's tick counter
  (``stamp``); followers echo it.  The lease runs from the newest stamp a
  quorum echoed, for ``Config.effective_lease_ticks``.  Followers that heard
  from a leader refuse other candidates for ``election_tick`` ticks, and a
  replica that just started refuses them for its first ``election_tick``
  ticks (it may have acknowledged a lease before it crashed).
* **Commit rule.**  Only an entry of the current term is committed by
  counting replicas (:meth:`can_commit_at`); earlier ones commit with it.
* **Mutation hooks.**  :meth:`can_commit_at`, :meth:`log_up_to_date`,
  :meth:`entries_to_apply`, :meth:`electorate` and :meth:`vote_result` are
  the single places the simulator and the nemesis override to inject known
  bugs (:mod:`node.raft.mutations`).  Keep them small and keep the rules in
  them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .confchange import ConfChangeError, apply_conf_change
from .config import Config, Rand
from .errors import (
    CompactedError,
    NotLeaderError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from .log import RaftLog
from .progress import NO_STAMP, Progress, ProgressState
from .quorum import VoteResult
from .readonly import ReadOnly
from .storage import LogStorage
from .tracker import ProgressTracker
from .types import (
    NONE,
    ConfChange,
    ConfChangeResult,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProgressStatus,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
    Status,
)

MT = MessageType
_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}


class Raft:
    def __init__(self, config: Config, storage: LogStorage, rng: Rand) -> None:
        self.id = config.id
        self.cfg = config
        self.rng = rng
        self.log = RaftLog(storage)
        self.trk = ProgressTracker(config.max_inflight_msgs)
        self.read_only = ReadOnly()
        self.msgs: list[Message] = []
        # The commit index moved and a follower may not know yet: it learns it from the next
        # append, or at the next tick (see _commit_moved).
        self.commit_unsent = False
        self.read_states: list[ReadState] = []
        # Reads that arrived before this leader committed an entry of its term.
        self._deferred_reads: list[tuple[bytes, int, bool]] = []

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.lead_transferee = NONE
        # Set once this leader sent TimeoutNow in its term (see lease_valid).
        self._lease_forfeited = False
        self.pending_conf_index = 0
        self.clock = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self._boot_ticks = 0
        # Idle group: the driver stops ticking it (see quiesce / wake).
        self.quiesced = False
        self._lease_ticks = config.effective_lease_ticks

        hs, cs = storage.initial_state()
        self.trk.set_config(cs, self.log.last_index() + 1)
        if hs != HardState():
            if not self.log.committed <= hs.commit <= self.log.last_index():
                raise ValueError(
                    f"persisted commit {hs.commit} outside the log "
                    f"[{self.log.committed}, {self.log.last_index()}]"
                )
            self.log.commit_to(hs.commit)
            self.term = hs.term
            self.vote = hs.vote
            # We may have acknowledged a leader's lease just before we went down.
            self._boot_ticks = config.election_tick
        if config.applied:
            self.log.applied_to(min(config.applied, self.log.committed))
        # A group bootstrapped from a snapshot starts in that snapshot's term.
        self.become_follower(max(self.term, self.log.term_or_zero(self.log.first_index() - 1)), NONE)

    # =========================================================================
    # Mutation hooks (the simulator overrides exactly these)
    # =========================================================================

    def can_commit_at(self, index: int) -> bool:
        """May the leader commit ``index`` because a quorum stores it?  Only current-term entries."""
        return self.log.term_or_zero(index) == self.term

    def log_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The voting restriction: grant only to candidates whose log is at least as new."""
        return self.log.is_up_to_date(last_index, last_term)

    def entries_to_apply(self) -> list[Entry]:
        """Committed entries not yet handed to the application."""
        if not self.log.has_next_committed():
            return []
        return self.log.slice(self.log.applied + 1, self.log.committed + 1)

    def electorate(self) -> list[int]:
        """Whom a candidate asks for its vote: the voters.  Learners never vote."""
        return self.trk.voter_ids()

    def vote_result(self) -> VoteResult:
        """Has the campaign won, lost, or is it pending?  Counts voters' answers only."""
        return self.trk.tally()

    # =========================================================================
    # State transitions
    # =========================================================================

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def conf_state(self) -> ConfState:
        return self.trk.conf

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.quiesced = False
        self.commit_unsent = False
        self._lease_forfeited = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(
            0, self.cfg.election_tick
        )
        self._abort_transfer()
        self.trk.reset_votes()
        last = self.log.last_index()
        for node_id, pr in self.trk.progress.items():
            pr.reset(last + 1)
            if node_id == self.id:
                pr.match = self.log.stable_last_index()
                pr.recent_active = True
        self.read_only.clear()
        self._deferred_reads.clear()

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # PreVote changes neither term nor vote: a partitioned replica that
        # keeps failing pre-elections never inflates the group's term.
        self.trk.reset_votes()
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        for pr in self.trk.progress.values():
            pr.last_heard = self.clock  # one election timeout of grace to hear back
        me = self.trk.progress.get(self.id)
        if me is not None:
            me.become_replicate()
            me.match = self.log.stable_last_index()
            me.recent_active = True
        # Conf changes already in the log may not be applied yet: wait for them.
        self.pending_conf_index = self.log.last_index()
        # An empty entry of the new term lets earlier entries commit with it.
        self._append([Entry(term=self.term, index=self.log.last_index() + 1)])

    def _promotable(self) -> bool:
        """May this replica stand for election?  Any voter of either half may: a voter being
        demoted in a joint configuration (``learners_next``) still votes in the outgoing half,
        and may hold the log every quorum of that half needs (etcd's rule too)."""
        return self.trk.is_voter(self.id) and self.log.unstable_snapshot is None

    def _in_lease(self) -> bool:
        """Should this replica ignore candidates because a leader (may) still lead?"""
        if not self.cfg.check_quorum:
            return False
        if self._boot_ticks > 0:
            return True
        return self.lead != NONE and self.election_elapsed < self.cfg.election_tick

    # =========================================================================
    # Time
    # =========================================================================

    def tick(self) -> None:
        self.clock += 1
        if self._boot_ticks > 0:
            self._boot_ticks -= 1
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.cfg.check_quorum:
            heard = self.trk.quorum_last_heard(self.id, self.clock)
            if self.clock - heard >= self.cfg.election_tick:
                # CheckQuorum: no quorum answered for an election timeout.
                self.become_follower(self.term, NONE)
                return
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            for node_id, pr in self.trk.progress.items():
                if node_id != self.id:
                    pr.recent_active = False
            if self.lead_transferee != NONE:
                self._abort_transfer()
        for pr in self.trk.progress.values():
            if pr.state == ProgressState.SNAPSHOT:
                # A snapshot that never landed (lost stream): probe again.
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= 2 * self.cfg.election_tick:
                    pr.become_probe()
        if self.commit_unsent:
            self._tell_commit()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_context())

    # =========================================================================
    # Quiescence: idle groups cost no per-tick work or traffic
    # =========================================================================

    def can_quiesce(self) -> bool:
        """Is this leader's group fully idle: everything replicated, committed, applied?"""
        if self.role != Role.LEADER or self.lead_transferee != NONE or self.trk.conf.joint:
            return False
        log = self.log
        last = log.last_index()
        if log.committed != last or log.applied != last or log.stable_last_index() != last:
            return False
        if len(self.read_only) or self._deferred_reads or self.pending_conf_index > log.applied:
            return False
        for node_id, pr in self.trk.progress.items():
            if node_id == self.id:
                continue
            if pr.match != last or pr.state != ProgressState.REPLICATE or len(pr.inflights):
                return False
        return True

    def quiesce(self) -> bool:
        """Tell followers to go idle and go idle; the driver then stops ticking this group."""
        if not self.can_quiesce():
            return False
        self.quiesced = True
        committed = self.log.committed
        for node_id in self.trk.ids():
            if node_id != self.id:
                self.trk.progress[node_id].commit_sent = committed
                self._send(
                    Message(MT.HEARTBEAT, self.id, node_id, term=self.term, commit=committed,
                            stamp=self.clock, quiesce=True)
                )
        self.commit_unsent = False
        return True

    def wake(self, elapsed_ticks: int) -> None:
        """Resume after ``elapsed_ticks`` ticks of idleness.

        The clock jumps forward first, so a lease taken before going idle has
        expired.  The driver vouches that peers stayed reachable meanwhile
        (store-level liveness), so CheckQuorum restarts its window now and a
        leader heartbeats at once to renew its lease and wake the followers.
        """
        self.quiesced = False
        self.clock += max(0, elapsed_ticks)
        self._boot_ticks = max(0, self._boot_ticks - elapsed_ticks)
        self.election_elapsed = 0
        if self.role == Role.LEADER:
            for pr in self.trk.progress.values():
                pr.last_heard = self.clock
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_context())

    # =========================================================================
    # Elections
    # =========================================================================

    def campaign_now(self) -> None:
        self._hup(transfer=False)

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_change():
            return
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        try:
            ents = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        except (CompactedError, UnavailableError):
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.trk.record_vote(self.id, True)
        result = self.vote_result()
        if result == VoteResult.WON:
            self._won(pre)
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node_id in self.electorate():
            if node_id == self.id:
                continue
            self.msgs.append(
                Message(
                    vote_type,
                    self.id,
                    node_id,
                    term=term,
                    index=last_index,
                    log_term=last_term,
                    transfer=transfer,
                )
            )

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False, transfer=False)
        else:
            self._become_leader()
            self._bcast_append()

    # =========================================================================
    # Messages
    # =========================================================================

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE) and not m.transfer and self._in_lease():
                return  # a live leader may still hold its lease: ignore the candidate
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes are about a future term; they change nothing yet
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.src)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MT.APP, MT.HEARTBEAT):
                # A deposed leader learns of the new term from this answer.
                self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, self.id, m.src, term=self.term, reject=True))
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
            return
        role = self.role
        if role == Role.LEADER:
            self._step_leader(m)
        elif role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = _VOTE_RESP[m.type]
        if can_vote and self.log_up_to_date(m.index, m.log_term):
            self._send(Message(resp, self.id, m.src, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(Message(resp, self.id, m.src, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP, MT.TIMEOUT_NOW):
            # Activity from the leader wakes an idle follower; a quiesce heartbeat puts it to sleep.
            self.quiesced = t == MT.HEARTBEAT and m.quiesce
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif t == MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.become_follower(m.term, m.src)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.src)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.src)
            self._handle_snapshot(m)
        elif (t == MT.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE) or (
            t == MT.VOTE_RESP and self.role == Role.CANDIDATE
        ):
            self.trk.record_vote(m.src, not m.reject)
            result = self.vote_result()
            if result == VoteResult.WON:
                self._won(self.role == Role.PRE_CANDIDATE)
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.READ_INDEX:
            self._handle_read(m.context, m.src, lease=False)
            return
        pr = self.trk.progress.get(m.src)
        if pr is None:
            return
        pr.last_heard = self.clock
        if t == MT.APP_RESP:
            pr.recent_active = True
            if m.stamp > pr.stamp:
                pr.stamp = m.stamp
            if m.reject:
                next_probe = m.reject_hint
                if m.log_term > 0:
                    next_probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, next_probe):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._maybe_send_append(m.src, send_if_empty=True)
                return
            was_paused = pr.is_paused()
            # An answer at exactly the known match is progress for a probing follower: the
            # probe found where its log and ours agree, so replication can resume.
            if not pr.maybe_update(m.index) and not (pr.state == ProgressState.PROBE and pr.match == m.index):
                return
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT:
                if pr.match + 1 >= self.log.first_index():
                    pr.become_probe()
                    pr.become_replicate()
            else:
                pr.inflights.free_le(m.index)
            before = self.log.committed
            if self._maybe_commit():
                self._commit_moved(before)
            elif was_paused:
                self._maybe_send_append(m.src, send_if_empty=True)
            while self._maybe_send_append(m.src, send_if_empty=False):
                pass
            if m.src == self.lead_transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.src)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            if m.stamp > pr.stamp:
                pr.stamp = m.stamp
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            if pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
                # A probing follower is probed again even when caught up: its answer is what
                # moves it back to replicating (and lets an idle group quiesce again).
                self._maybe_send_append(m.src, send_if_empty=True)
            if m.context:
                acks = self.read_only.ack(m.src, m.context)
                if acks is not None and self.trk.quorum_acked(acks):
                    for req in self.read_only.release_through(m.context):
                        self._answer_read(req.requester, req.index, req.context)

    # -- follower handlers ------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=self.log.committed, stamp=m.stamp))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=last_new, stamp=m.stamp))
            return
        hint = self.log.find_conflict_by_term(min(m.index, self.log.last_index()), m.log_term)
        self._send(
            Message(
                MT.APP_RESP,
                self.id,
                m.src,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=self.log.term_or_zero(hint),
                stamp=m.stamp,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(MT.HEARTBEAT_RESP, self.id, m.src, term=self.term, context=m.context, stamp=m.stamp))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        index = self.log.last_index() if snap is not None and self._restore(snap) else self.log.committed
        self._send(Message(MT.APP_RESP, self.id, m.src, term=self.term, index=index, stamp=m.stamp))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        # A snapshot older than the change that added us does not list us; we
        # still take it and learn our membership from the entries that follow.
        if self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just move commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.trk.set_config(meta.conf_state, self.log.last_index() + 1)
        return True

    # -- leader replication -----------------------------------------------------

    def _append(self, ents: list[Entry]) -> None:
        self.log.append(ents)
        # Our own match moves in advance(), once the entries are on disk.

    def _commit_moved(self, before: int) -> None:
        """The commit index moved from ``before``: tell the followers, now or lazily.

        etcd's raft sends every follower an append at each move, empty if it has no entries to
        carry. Under load the next append carries the new index anyway, and at low load the
        empty one costs each follower a round of its own (a wake-up, an apply, an answer the
        leader steps in a round too): a fifth of the CPU of a write at concurrency 1. So a move
        is told lazily: by the next append to that follower, else by a heartbeat or at the next
        tick (_tell_commit), one tick's delay at most in what followers apply, which nothing
        waits on (writes are acknowledged by the leader, reads served by it; a follower's
        bounded-staleness read is judged by its last contact, whose message carried the index
        current when sent). A configuration change is told at once: a removed member is sent
        nothing more once the leader applies it, and must learn of its removal from this.
        See docs/decisions.md D30.
        """
        if before < self.pending_conf_index <= self.log.committed:
            self._bcast_append()
        else:
            self.commit_unsent = True

    def _tell_commit(self) -> None:
        """Send the commit index to each follower that no append or heartbeat carried it to."""
        self.commit_unsent = False
        committed = self.log.committed
        progress = self.trk.progress
        for node_id in self.trk.ids():
            if node_id != self.id and progress[node_id].commit_sent < committed:
                self._maybe_send_append(node_id, send_if_empty=True)

    def _bcast_append(self) -> None:
        for node_id in self.trk.ids():
            if node_id != self.id:
                self._maybe_send_append(node_id, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except (CompactedError, UnavailableError):
            # Compacted: the follower needs a snapshot.  Unavailable (its match is beyond our
            # log) cannot happen while Raft's safety holds; as etcd does, resend from a
            # snapshot rather than fail the whole node's round.
            return self._send_snapshot(to, pr)
        if len(ents) > self.cfg.max_entries_per_msg:
            ents = ents[: self.cfg.max_entries_per_msg]
        if not ents and not send_if_empty:
            return False
        pr.commit_sent = self.log.committed
        self._send(
            Message(
                MT.APP,
                self.id,
                to,
                term=self.term,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
                stamp=self.clock,
            )
        )
        if pr.state == ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.empty:
            return False
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MT.SNAP, self.id, to, term=self.term, snapshot=snap, stamp=self.clock))
        return True

    def _bcast_heartbeat(self, context: bytes) -> None:
        committed = self.log.committed
        for node_id in self.trk.ids():
            if node_id == self.id:
                continue
            pr = self.trk.progress[node_id]
            told = min(pr.match, committed)
            if told > pr.commit_sent:
                pr.commit_sent = told
            self._send(
                Message(
                    MT.HEARTBEAT,
                    self.id,
                    node_id,
                    term=self.term,
                    commit=told,
                    context=context,
                    stamp=self.clock,
                )
            )

    def _maybe_commit(self) -> bool:
        index = self.trk.committed_index()
        if index > self.log.committed and index <= self.log.last_index() and self.can_commit_at(index):
            self.log.commit_to(index)
            self._release_deferred_reads()
            return True
        return False

    # =========================================================================
    # Requests
    # =========================================================================

    def propose(self, datas: list[bytes]) -> int:
        self._check_can_propose()
        if not datas:
            raise ValueError("nothing to propose")
        if self.log.last_index() - self.log.committed + len(datas) > self.cfg.max_uncommitted_entries:
            raise ProposalDroppedError("too many uncommitted entries")
        first = self.log.last_index() + 1
        term = self.term
        self._append([Entry(term, first + k, d) for k, d in enumerate(datas)])
        self._bcast_append()
        return first

    def propose_conf_change(self, cc: ConfChange) -> int:
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError("a configuration change is still being applied")
        cs = self.trk.conf
        try:
            apply_conf_change(cs, cc)
        except ConfChangeError as exc:
            raise ProposalDroppedError(str(exc)) from None
        for c in cc.changes:
            if c.type != ConfChangeType.ADD_VOTER or c.node_id in cs.voters:
                continue
            pr = self.trk.progress.get(c.node_id)
            if pr is None or not pr.is_learner:
                raise ProposalDroppedError(
                    f"node {c.node_id} must join as a learner and catch up before it can vote"
                )
            if pr.match < self.log.committed:
                raise ProposalDroppedError(
                    f"learner {c.node_id} has not caught up (match {pr.match} < commit {self.log.committed})"
                )
        index = self.log.last_index() + 1
        self._append([Entry(self.term, index, cc.encode(), EntryType.CONF_CHANGE)])
        self.pending_conf_index = index
        self._bcast_append()
        return index

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(f"leadership transfer to {self.lead_transferee} in progress")

    def read_index(self, context: bytes, lease: bool) -> None:
        if self.role == Role.LEADER:
            self._handle_read(context, self.id, lease)
        elif self.role == Role.FOLLOWER and self.lead != NONE:
            self._send(Message(MT.READ_INDEX, self.id, self.lead, term=self.term, context=context))
        else:
            raise NotLeaderError(self.lead)

    def _handle_read(self, context: bytes, requester: int, lease: bool) -> None:
        if self.log.term_or_zero(self.log.committed) != self.term:
            # Our commit index may lag the previous leader's until we commit in our term.
            self._deferred_reads.append((context, requester, lease))
            return
        if self.trk.is_singleton() and self.trk.is_voter(self.id):
            self._answer_read(requester, self.log.committed, context)
            return
        if lease and self.lease_valid():
            self._answer_read(requester, self.log.committed, context)
            return
        round_ctx = self.read_only.add(self.log.committed, context, requester)
        self.read_only.ack(self.id, round_ctx)
        self._bcast_heartbeat(round_ctx)

    def _release_deferred_reads(self) -> None:
        if not self._deferred_reads or self.log.term_or_zero(self.log.committed) != self.term:
            return
        pending, self._deferred_reads = self._deferred_reads, []
        for context, requester, lease in pending:
            self._handle_read(context, requester, lease)

    def _answer_read(self, requester: int, index: int, context: bytes) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(Message(MT.READ_INDEX_RESP, self.id, requester, term=self.term, index=index, context=context))

    def lease_valid(self) -> bool:
        """True while a quorum acknowledged a stamp recent enough for the lease to hold.

        Never during a leadership transfer, nor for the rest of a term in which this leader
        told a transfer target to campaign: followers vote for that target in spite of their
        promise, so acknowledgements given before their vote no longer hold anyone back.
        """
        if self.role != Role.LEADER or self.lead_transferee != NONE or self._lease_forfeited:
            return False
        start = self.trk.quorum_stamp(self.id, self.clock)
        if start == NO_STAMP or start < 0:
            return False
        return self.clock < start + self._lease_ticks

    def transfer_leader(self, target: int) -> None:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.lead)
        if target == self.id:
            self._abort_transfer()
            return
        pr = self.trk.progress.get(target)
        if pr is None or pr.is_learner or not self.trk.is_voter(target):
            raise ProposalDroppedError(f"transfer target {target} is not a voter")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        # The transfer must finish within an election timeout or it is abandoned.
        self.election_elapsed = 0
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._maybe_send_append(target, send_if_empty=True)

    def _send_timeout_now(self, target: int) -> None:
        """Tell the transfer target to campaign now.  Its vote requests will pass the followers'
        lease promises, so from here on this leader's lease proves nothing: it is forfeited for
        the rest of the term, even if the transfer is then abandoned (see :meth:`lease_valid`)."""
        self._lease_forfeited = True
        self._send(Message(MT.TIMEOUT_NOW, self.id, target, term=self.term))

    def _abort_transfer(self) -> None:
        self.lead_transferee = NONE

    def report_unreachable(self, node_id: int) -> None:
        pr = self.trk.progress.get(node_id)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        pr = self.trk.progress.get(node_id)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the next heartbeat answer before probing again.
        pr.probe_sent = True

    # =========================================================================
    # Ready / advance
    # =========================================================================

    def conf_change_results(self, committed: Sequence[Entry]) -> tuple[ConfChangeResult, ...]:
        """What each conf change among ``committed`` does, in order, from the config in force.

        Computed once, when the entries are handed out: the application stores these
        results and :meth:`advance` adopts exactly them, so nobody re-derives a config.
        """
        results = []
        conf = self.trk.conf
        for e in committed:
            if e.type != EntryType.CONF_CHANGE:
                continue
            cc = ConfChange.decode(e.data)
            try:
                conf = apply_conf_change(conf, cc)
            except ConfChangeError:
                # Every replica rejects the same committed entry the same way.
                results.append(ConfChangeResult(e.index, cc, None))
                continue
            results.append(ConfChangeResult(e.index, cc, conf))
        return tuple(results)

    def advance(self, rd: Ready) -> None:
        log = self.log
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.meta.index)
            log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
            if self.role == Role.LEADER:
                me = self.trk.progress.get(self.id)
                before = log.committed
                if me is not None and me.maybe_update(log.stable_last_index()) and self._maybe_commit():
                    self._commit_moved(before)
        if rd.committed_entries:
            for result in rd.conf_changes:
                if result.conf_state is not None:
                    self._adopt_conf(result.conf_state)
            log.applied_to(rd.committed_entries[-1].index)
            self._maybe_auto_leave_joint()

    def _adopt_conf(self, cs: ConfState) -> None:
        """Switch to the membership a committed conf change produced."""
        self.trk.set_config(cs, self.log.last_index() + 1)
        if self.role != Role.LEADER:
            return
        for pr in self.trk.progress.values():
            if pr.last_heard == NO_STAMP:
                pr.last_heard = self.clock
        if not self.trk.is_voter(self.id):
            # Removed (or demoted) leader: step aside; the others elect.
            self.become_follower(self.term, NONE)
            return
        if self.lead_transferee != NONE and not self.trk.is_voter(self.lead_transferee):
            self._abort_transfer()
        # A smaller quorum may already agree on more; everyone learns the new config.
        self._maybe_commit()
        self._bcast_append()

    def _maybe_auto_leave_joint(self) -> None:
        cs = self.trk.conf
        if (
            self.role == Role.LEADER
            and cs.joint
            and cs.auto_leave
            and self.pending_conf_index <= self.log.applied
            and self.lead_transferee == NONE
        ):
            index = self.log.last_index() + 1
            self._append([Entry(self.term, index, ConfChange().encode(), EntryType.CONF_CHANGE)])
            self.pending_conf_index = index
            self._bcast_append()

    # =========================================================================
    # Inspection
    # =========================================================================

    def status(self) -> Status:
        progress: dict[int, ProgressStatus] = {}
        if self.role == Role.LEADER:
            for node_id, pr in self.trk.progress.items():
                progress[node_id] = ProgressStatus(
                    pr.match, pr.next, pr.state_name(), pr.recent_active, pr.is_learner
                )
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            leader=self.lead,
            role=self.role,
            conf_state=self.trk.conf,
            progress=progress,
            lead_transferee=self.lead_transferee,
            conf_change_pending=self.pending_conf_index > self.log.applied,
        )
