"""One simulated replica: a RawNode, its durable disk, its state machine.

The disk model (per replica):

* ``SimStorage`` (a ``MemoryStorage``, see :mod:`.storage`) *is* the durable
  disk: what is written there survives a crash; the RawNode, the in-flight
  write and the state machine do not.  After a compaction the snapshot may
  stay unavailable to the core for a while (``profile.snap_busy``).
* A Ready is handled in two phases.  When it is taken, the messages that may
  go before the write are sent at once (the correct driver: only a leader's
  APP / HEARTBEAT / SNAP / TIMEOUT_NOW / READ_INDEX_RESP, and never when the
  Ready changes term or vote; the ``vote-not-persisted`` mutation also lets
  VOTE_RESP / PRE_VOTE_RESP go early).  The write completes after a random
  disk latency; then, in order: persist (snapshot, entries, hard state), send
  the remaining messages, install the snapshot into the state machine, apply
  the committed entries, serve read states whose index is applied,
  ``advance``, and look for the next Ready.
* While a write is in flight the replica still ticks and steps messages but
  takes no new Ready.
* A paused replica processes nothing; its ticks are counted and delivered
  first on resume, then the queued inputs in arrival order.
* An idle group goes quiet and wakes as the node's does (:mod:`.quiescence`).

Every ReadIndex or lease read carries a *floor*: the highest commit index any
replica had when the request reached this replica; the read point it is
answered at must not be below it (the ``stale-read`` invariant).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from node.raft import (
    EntryType,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    RawNode,
    Ready,
)

from . import quiescence
from .kvsm import KVStateMachine, encode_command

if TYPE_CHECKING:  # pragma: no cover
    from .clients import Request
    from .cluster import Simulation
    from .storage import SimStorage

MT = MessageType
VOTE_RESPONSES = frozenset({MT.VOTE_RESP, MT.PRE_VOTE_RESP})


class SimNode:
    # The running process's core and state machine: made by start(), which the simulation
    # calls as soon as the node exists. A crash loses them with the process; they are left in
    # place rather than cleared because nothing reads them until start() replaces them: every
    # way in checks ``alive`` (or ``up``) first.
    raw: RawNode
    sm: KVStateMachine

    def __init__(self, sim: Simulation, node_id: int, storage: SimStorage, phase: int, period: int) -> None:
        self.sim = sim
        self.id = node_id
        self.storage = storage
        self.phase = phase  # tick offset within a tick period
        self.period = period  # time units between ticks
        self.alive = False
        self.paused = False
        self.removed = False
        self.incarnation = 0
        self.down_gen = 0  # bumps on every crash/pause so stale restart/resume events are ignored
        # The Ready whose write is on the disk: (ready, commit index when taken, the messages
        # that wait for the write).
        self.inflight: tuple[Ready, int, list[Message]] | None = None
        self.missed_ticks = 0
        self.paused_queue: list[tuple[str, tuple]] = []  # (kind, args) to dispatch on resume
        self.pending_writes: dict[int, tuple[Request, int]] = {}
        # ReadIndex context -> (request, its floor, how it is served)
        self.reads_waiting: dict[bytes, tuple[Request, int, str]] = {}
        self.pending_reads: list[tuple[int, Request]] = []
        self.seen_leader_term = 0
        self.seen_commit = 0
        self.leading_term = 0  # the term this replica leads, as last observed (0: not leading)
        self.lead_since = 0  # when it was observed to become leader of leading_term
        self.replaying = False  # delivering the ticks missed while paused
        self.quiet_ticks = 0  # ticks skipped while quiesced (handed over by wake)
        self.idle_ticks = 0  # ticks a leader has had nothing to do
        self.leader_heard = 0  # when a quiesced follower last heard its leader's store
        self.leader_incarnation = 0  # that store's incarnation when this follower went quiet

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        snap = self.storage.latest_snapshot()
        cfg = sim.make_config(self.id, snap.meta.index)
        rng = random.Random(sim.seed * 100_003 + self.id * 1_009 + self.incarnation)
        self.raw = RawNode(cfg, self.storage, rng, mutation=sim.core_mutation)
        self.sm = KVStateMachine.restore(snap.data)
        if self.sm.applied != snap.meta.index:
            raise AssertionError(f"snapshot data at {self.sm.applied} but meta at {snap.meta.index}")
        self.alive = True
        self.paused = False
        self.inflight = None
        self.missed_ticks = 0
        self.paused_queue = []
        self.seen_leader_term = 0
        self.leading_term = 0
        self.quiet_ticks = self.idle_ticks = 0
        self.seen_commit = self.raw.commit
        sim.ledger.end(("down", self.id), sim.now)
        sim.ledger.end(("quiet", self.id), sim.now)
        sim.inv.on_restart(self.id, self.storage, self.storage.hard_state.commit)
        self.pump()

    def crash(self) -> None:
        self.alive = False
        self.paused = False
        self.down_gen += 1
        self.leading_term = 0  # a crash is a fault: its lost leadership is not judged
        self.sim.ledger.begin(("down", self.id), (self.id,), self.sim.now)
        self.inflight = None
        self.missed_ticks = 0
        self.paused_queue = []
        self.pending_writes = {}
        self.reads_waiting = {}
        self.pending_reads = []

    def pause(self) -> None:
        self.paused = True
        self.down_gen += 1
        self.sim.ledger.begin(("down", self.id), (self.id,), self.sim.now)

    def resume(self) -> None:
        if not self.alive or not self.paused:
            return
        self.paused = False
        sim = self.sim
        sim.ledger.end(("down", self.id), sim.now)
        raw = self.raw
        n, self.missed_ticks = self.missed_ticks, 0
        # The lease is judged only once the clock has caught up with the time that passed.
        self.replaying = True
        if raw.quiesced:
            self.quiet_ticks += n  # an idle replica skips them anyway
            n = 0
        for _ in range(n):
            raw.tick()
            sim.observe(self)
            if not self.alive:
                self.replaying = False
                return
        self.replaying = False
        sim.observe(self)
        queued, self.paused_queue = self.paused_queue, []
        for kind, args in queued:
            if not self.alive or self.paused:
                break
            self.dispatch(kind, args)
        if self.alive:
            self.pump()

    @property
    def up(self) -> bool:
        return self.alive and not self.paused

    # -- inputs ----------------------------------------------------------------

    def on_tick(self) -> None:
        if not self.alive:
            return
        if self.paused:
            self.missed_ticks += 1
            return
        if self.raw.quiesced:
            quiescence.quiet_tick(self)
        else:
            self.raw.tick()
            self.sim.observe(self)
            if self.alive:
                quiescence.after_tick(self)
        self.pump()

    def deliver(self, kind: str, args: tuple) -> None:
        """A message, disk completion, snapshot report or client request for this replica."""
        if not self.alive:
            return
        if self.paused:
            self.paused_queue.append((kind, args))
            return
        self.dispatch(kind, args)
        if self.alive:
            self.pump()

    def dispatch(self, kind: str, args: tuple) -> None:
        if kind == "msg":
            m = args[0]
            if m.snapshot is not None and self.raw.log_view().last_index() > m.snapshot.meta.index:
                self.sim.stats["stale_snapshots"] += 1  # a snapshot reaching a longer log
            if m.type == MT.READ_INDEX:
                quiescence.ensure_awake(self)  # a forwarded read is a request like any other
            quiet = self.raw.quiesced
            self.raw.step(m)
            if self.raw.quiesced and not quiet:
                quiescence.went_quiet(self)
            elif quiet and not self.raw.quiesced:
                self.quiet_ticks = 0  # woken by its leader's activity
            self.sim.observe(self)
        elif kind == "disk":
            if args[0] == self.incarnation and self.inflight is not None:
                self.complete()
        elif kind == "snapst":
            inc, target, ok = args
            if inc == self.incarnation:
                self.raw.report_snapshot(target, ok)
                self.sim.observe(self)
        elif kind == "unreach":
            inc, target = args
            if inc == self.incarnation:
                self.raw.report_unreachable(target)
                self.sim.observe(self)
        elif kind == "creq":
            self.on_client(args[0])
            self.sim.observe(self)

    # -- Ready handling ----------------------------------------------------------

    def pump(self) -> None:
        sim = self.sim
        while self.alive and not self.paused and self.inflight is None and self.raw.has_ready():
            raw = self.raw
            rd = raw.ready()
            if rd.entries:
                sim.inv.on_ready(self.id, self.storage, rd.entries)
            commit_known = raw.commit
            hs = rd.hard_state
            disk_hs = self.storage.hard_state
            vote_change = hs is not None and (hs.term != disk_hs.term or hs.vote != disk_hs.vote)
            for m in rd.messages_before_persist:
                sim.send(m)
            late: list[Message] = []
            for m in rd.messages_after_persist:
                if sim.early_votes and m.type in VOTE_RESPONSES:
                    sim.send(m)  # the vote-not-persisted driver bug
                else:
                    late.append(m)
            self.inflight = (rd, commit_known, late)
            if rd.entries or rd.snapshot is not None or hs is not None:
                latency = sim.disk_latency()
                sim.queue.push(sim.now + latency, "disk", self.id, self.incarnation)
                if latency > sim.profile.disk[1]:
                    sim.ledger.touch((self.id,), sim.now, sim.now + latency)  # a slow disk is a fault
                if vote_change:
                    sim.vote_write_started(self, latency)
                return
            self.complete()

    def complete(self) -> None:
        assert self.inflight is not None, "complete() is the end of an in-flight write"
        sim = self.sim
        inv = sim.inv
        rd, commit_known, late = self.inflight
        st = self.storage
        old_commit = st.hard_state.commit
        # 1. persist
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        inv.on_persist(self.id, st, rd.entries, old_commit, st.hard_state.commit)
        # 2. the messages that had to wait for the disk
        for m in late:
            sim.send(m)
        # 3. snapshot into the state machine, then committed entries
        sm = self.sm
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            sm = self.sm = KVStateMachine.restore(rd.snapshot.data)
            if sm.applied != meta.index:
                raise AssertionError(f"snapshot data at {sm.applied} but meta at {meta.index}")
            inv.on_install(self.id, meta.index, meta.term, sm.chain)
            sim.stats["snapshots_installed"] += 1
            for idx in [i for i in self.pending_writes if i <= meta.index]:
                del self.pending_writes[idx]  # outcome unknown here: the client times out
        conf_index = 0
        for e in rd.committed_entries:
            prev = sm.applied
            op_id, outcome, value = sm.apply(e)
            inv.on_apply(self.id, e, commit_known, prev, sm.chain)
            if e.type == EntryType.CONF_CHANGE:
                conf_index = e.index
            pending = self.pending_writes.pop(e.index, None)
            if pending is not None:
                req, term = pending
                if e.term == term and op_id == req.op_id:
                    sim.respond(self.id, req, outcome, value, self.id)
                else:
                    # Another entry took that index: our proposal can no longer commit.
                    sim.respond(self.id, req, "fail", None, self.raw.leader)
        # 4. reads
        for rs in rd.read_states:
            waiting = self.reads_waiting.pop(rs.context, None)
            if waiting is not None:
                req, floor, how = waiting
                inv.on_read(self.id, rs.index, floor, how)
                self.pending_reads.append((rs.index, req))
        self.serve_reads()
        # 5. advance
        self.inflight = None
        self.raw.advance(rd)
        sim.observe(self)
        if conf_index and self.alive:
            sim.on_conf_applied(self, conf_index, self.raw.conf_state)

    def serve_reads(self) -> None:
        if not self.pending_reads:
            return
        applied = self.sm.applied
        keep = []
        for index, req in self.pending_reads:
            if index <= applied:
                hint = 0 if req.mode == "follower" else self.id
                self.sim.respond(self.id, req, "ok", self.sm.get(req.key), hint)
            else:
                keep.append((index, req))
        self.pending_reads = keep

    # -- clients -------------------------------------------------------------------

    def on_client(self, req: Request) -> None:
        if self.raw.is_leader:
            quiescence.ensure_awake(self)  # as the node does: only a leader takes requests
        raw = self.raw
        sim = self.sim
        floor = sim.inv.max_committed
        if req.mode == "follower":
            # A follower read: ReadIndex through whichever leader this replica knows.
            ctx = b"%d" % req.op_id
            try:
                self.raw.read_index(ctx, lease=False)
            except RaftError:
                sim.respond(self.id, req, "fail", None, 0)
                return
            self.reads_waiting[ctx] = (req, floor, "follower ReadIndex")
            return
        if req.f == "get" and not raw.is_leader:
            # (A write is proposed whatever this replica believes: refusing is the core's job.)
            sim.respond(self.id, req, "fail", None, raw.leader)
            return
        if req.f == "get" and sim.inv.max_leader_term > raw.term:
            sim.stats["deposed_reads"] += 1  # a read reaching a leader that a newer one replaced
        if req.f == "get" and req.mode == "lease" and req.op_id % 2 == 0:
            # The synchronous lease fast path; falls back to a lease ReadIndex below.
            index = self.raw.lease_read_index()
            if index is not None:
                sim.inv.on_read(self.id, index, floor, "lease (fast path)")
                self.pending_reads.append((index, req))
                if self.inflight is None:
                    self.serve_reads()
                return
        if req.f == "get" and req.mode != "log":
            ctx = b"%d" % req.op_id
            try:
                self.raw.read_index(ctx, lease=req.mode == "lease")
            except RaftError:
                sim.respond(self.id, req, "fail", None, raw.leader)
                return
            self.reads_waiting[ctx] = (req, floor, "lease ReadIndex" if req.mode == "lease" else "ReadIndex")
            return
        # RawNode.propose documents its refusals: a non-leader, a leadership transfer under way.
        transferring = raw.is_leader and raw.status().lead_transferee != 0
        try:
            index = self.raw.propose(encode_command(req.command()))
        except NotLeaderError as exc:
            sim.respond(self.id, req, "fail", None, exc.leader)
            return
        except ProposalDroppedError:
            sim.respond(self.id, req, "fail", None, 0)
            return
        if transferring:
            sim.inv.refusal_expected(f"a proposal to node {self.id} during a leadership transfer", False)
        self.pending_writes[index] = (req, raw.term)

    # -- maintenance ------------------------------------------------------------------

    def compact(self, keep: int) -> bool:
        """Snapshot the state machine at its applied index and drop the log before it."""
        if not self.up or self.inflight is not None:
            return False
        st = self.storage
        applied = self.sm.applied
        if applied <= st.latest_snapshot().meta.index or applied > st.last_index():
            return False
        st.create_snapshot(applied, self.raw.conf_state, self.sm.snapshot_bytes())
        sim = self.sim
        sim.stats["snapshots_created"] += 1
        p = sim.profile
        if p.snap_busy and sim.disk_rng.random() < p.snap_busy:
            # The snapshot file is still being written: the core must wait for it.
            gen = st.make_busy()
            sim.stats["snapshots_busy"] += 1
            sim.queue.push(sim.now + sim.disk_rng.randint(*p.snap_busy_time), "snapready", self.id, gen)
        upto = applied - keep
        if upto >= st.first_index():
            st.compact(upto)
        return True

