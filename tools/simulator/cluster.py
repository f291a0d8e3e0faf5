"""The simulation of one seed: replicas, network, clients, nemesis, checks.

Time is an integer count of units; every replica ticks every ``TICK`` (or
``TICK - 1``: clocks drift within the core's documented lease bound) units at
its own fixed phase.  With ``ELECTION_TICK`` = 10 an election timeout is
100 units.  A run has two phases:

1. **Faults** (``profile.fault_time`` units): clients run, the nemesis
   injects faults, invariants are checked after every event.
2. **Liveness**: everything is healed (crashed replicas restarted, paused ones
   resumed, partitions and loss cleared).  Within ``LIVENESS_BOUND`` units —
   20 election timeouts (``LIVENESS_TIMEOUTS`` x ``ELECTION_TICK`` ticks) — a
   leader must exist, a probe proposal and a membership change must get
   through, and every client must complete an ``ok`` operation
   (:mod:`.liveness`).  Otherwise the run fails with ``liveness``.

Finally the client history is checked for linearizability.
"""

from __future__ import annotations

import random
import traceback
from collections import Counter

from node.raft import Config, ConfState, Message, MessageType, RaftError, Snapshot, SnapshotMeta

from .clients import Client, Request
from .events import EventQueue
from .invariants import CORE_EXCEPTION, LINEARIZABILITY, Invariants, InvariantViolation
from .kvsm import GENESIS_CHAIN, KVStateMachine
from .liveness import LIVENESS_TIMEOUTS, Liveness
from .membership import Membership
from .mutations import get_mutation
from .nemesis import Nemesis
from .network import NetParams, Network, split
from .profiles import choose_profile
from .simnode import SimNode
from .stability import Stability
from .storage import SimStorage
from .trace import Trace

TICK = 10
ELECTION_TICK = 10
HEARTBEAT_TICK = 2
LIVENESS_BOUND = LIVENESS_TIMEOUTS * ELECTION_TICK * TICK
# How far back a fault still explains a lost leadership (the stability check): two election
# timeouts at the slowest clock.
STABILITY_WINDOW = 2 * ELECTION_TICK * TICK
# The history check is the only place wall-clock time matters: a check that runs out of time
# counts as passed (stats["lin_unknown"]); it never affects the event digest.
LINEARIZABILITY_TIME_LIMIT_S = 10.0

_MT_NAMES = {t: t.name for t in MessageType}


def _term_or_zero(log, index: int) -> int:
    try:
        return log.term(index)
    except RaftError:
        return 0


def sub_rng(seed: int, k: int) -> random.Random:
    return random.Random(seed * 1000 + k)


class Simulation:
    def __init__(self, seed: int, mutation: str | None = None) -> None:
        self.seed = seed
        mut = get_mutation(mutation)
        self.mutation = mut
        self.core_mutation = mut.core
        self.early_votes = mut.early_votes
        setup = sub_rng(seed, 1)
        self.profile = p = choose_profile(setup)
        self.size = p.sizes[setup.randrange(len(p.sizes))]
        self.max_entries = p.max_entries[setup.randrange(len(p.max_entries))]
        self.max_inflight = p.max_inflight[setup.randrange(len(p.max_inflight))]
        self.max_uncommitted = p.max_uncommitted[setup.randrange(len(p.max_uncommitted))]
        self.fault_time = setup.randint(*p.fault_time)
        self.pre_vote = setup.random() < p.pre_vote
        self.disk_rng = sub_rng(seed, 2)
        self.trap_rng = sub_rng(seed, 3)
        self.net = Network(
            sub_rng(seed, 4),
            NetParams(
                drop_prob=p.drop_prob,
                dup_prob=p.dup_prob,
                long_delay_prob=p.long_delay_prob,
                long_delay_hi=p.long_delay_hi,
            ),
        )
        self.queue = EventQueue()
        self.now = 0
        self.inv = Invariants()
        self.trace = Trace()
        self.stats: Counter = Counter()
        self.history: list = []
        self.op_counter = 0
        self.healed = False
        self.heal_time = 0
        self.finished = False
        self.flaky_gen = 0
        self.slow_gen = 0
        self.lull_until = 0  # clients send nothing before this time (quiet spells, for quiescence)
        self.last_arrival: dict[tuple[int, int], int] = {}  # link -> latest arrival scheduled on it
        self.ghost_processes = 0  # history processes for read answers their client gave up on
        self.stability = Stability(STABILITY_WINDOW, enabled=self.pre_vote)
        self.ledger = self.stability.ledger

        initial = list(range(1, self.size + 1))
        self.config = ConfState(voters=frozenset(initial))
        self.config_index = 1
        self.members_ever: set[int] = set(initial)
        self.retiring: set[int] = set()  # removed from the configuration, stopped once it is settled
        self.nodes: dict[int, SimNode] = {}
        self.phase_rng = sub_rng(seed, 5)
        for nid in initial:
            st = SimStorage()
            boot = KVStateMachine(applied=1, chain=GENESIS_CHAIN)
            st.apply_snapshot(Snapshot(SnapshotMeta(index=1, term=1, conf_state=self.config), boot.snapshot_bytes()))
            self._new_node(nid, st)
        self.inv.chains[1] = GENESIS_CHAIN
        self.inv.committed[1] = 1
        self.inv.commit_term[1] = 1
        self.inv.max_committed = 1
        spare = list(range(self.size + 1, self.size + 1 + p.spare))
        self.membership = Membership(self, sub_rng(seed, 6), spare)
        self.nemesis = Nemesis(self, sub_rng(seed, 7), p, self.membership)
        self.clients = [Client(self, i, p.clients, sub_rng(seed, 10 + i)) for i in range(p.clients)]
        self.liveness = Liveness(self, LIVENESS_BOUND)

    # -- setup helpers -------------------------------------------------------------

    def make_config(self, node_id: int, applied: int) -> Config:
        return Config(
            id=node_id,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            applied=applied,
            max_entries_per_msg=self.max_entries,
            max_inflight_msgs=self.max_inflight,
            max_uncommitted_entries=self.max_uncommitted,
            pre_vote=self.pre_vote,
        )

    def _new_node(self, nid: int, storage: SimStorage) -> SimNode:
        # Clocks run at slightly different rates: by default periods 10 and 9 (11% apart),
        # within the core's documented bound for lease reads, (election_tick - 1) / lease_ticks
        # = 12.5%; the `deposed` profile uses 9 and 8, exactly at the bound.
        periods = self.profile.periods
        period = periods[self.phase_rng.randrange(len(periods))]
        node = SimNode(self, nid, storage, self.phase_rng.randrange(period), period)
        self.nodes[nid] = node
        node.start()
        self.queue.push(self.now + node.phase + 1, "tick", nid)
        return node

    def add_node(self, nid: int) -> SimNode:
        self.trace.note(f"new node {nid}")
        return self._new_node(nid, SimStorage())

    def next_op_id(self) -> int:
        self.op_counter += 1
        return self.op_counter

    def ghost_process(self) -> int:
        """A fresh history process for a read answered after its client gave up on it."""
        self.ghost_processes += 1
        return 1_000_000 + self.ghost_processes

    # -- queries ------------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        best = None
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            if n.up and n.raw.is_leader and (best is None or n.raw.term > best.raw.term):
                best = n
        return best

    election_ticks = ELECTION_TICK

    def election_timeout(self, node: SimNode) -> int:
        """An election timeout of ``node``'s clock, in time units."""
        return ELECTION_TICK * node.period

    def store_heard(self, src: int, dst: int) -> bool:
        """Does ``dst`` hear ``src``'s store (its heartbeats, which vouch for idle groups)?"""
        node = self.nodes.get(src)
        return node is not None and node.up and not node.removed and (src, dst) not in self.net.blocked

    def client_targets(self) -> list[int]:
        return sorted(self.config.voters)

    def disk_latency(self) -> int:
        p, rng = self.profile, self.disk_rng
        if p.disk_slow_prob and rng.random() < p.disk_slow_prob:
            return rng.randint(*p.disk_slow)
        return rng.randint(*p.disk)

    # -- outputs of replicas -----------------------------------------------------------

    def send(self, m: Message) -> None:
        self.stats["messages"] += 1
        net, now, ledger = self.net, self.now, self.ledger
        delays = net.deliveries(m.src, m.dst)
        pair = (m.src, m.dst)
        if m.quiesce and delays:
            # The node sends between two stores over one ordered stream: a quiesce heartbeat is
            # not overtaken by the heartbeats before it (which would wake the follower again).
            after = self.last_arrival.get(pair, 0) - now + 1
            delays = [max(d, after) for d in delays]
        if delays:
            self.last_arrival[pair] = max(self.last_arrival.get(pair, 0), now + max(delays))
        late = self.profile.late_prob
        if late and not self.healed and net.rng.random() < (late * 4 if m.type == MessageType.SNAP else late):
            # A stale copy that arrives long after the log, the term or the config moved on.
            delays.append(net.rng.randint(*self.profile.late_delay))
            self.stats["late_copies"] += 1
        if not delays:
            ledger.touch(pair, now, now)
        for k, d in enumerate(delays):
            self.queue.push(now + d, "msg", m.dst, m)  # frozen: every copy may share it
            if d > net.params.delay_hi:
                # Late: the first copy touches the link while it is on its way, a later copy
                # when it lands (the first one got through in time).
                ledger.touch(pair, now if k == 0 else now + d, now + d)
        if m.type == MessageType.TIMEOUT_NOW:
            self._transfer_sent(m)
        if not delays and m.type == MessageType.APP and self.net.rng.random() < 0.5:
            # The transport noticed the loss (a broken stream): tell the sender's core.
            src = self.nodes[m.src]
            self.queue.push(self.now + self.net.delay(), "unreach", m.src, src.incarnation, m.dst)
        if m.type == MessageType.SNAP:
            self.stats["snapshots_sent"] += 1
            src = self.nodes[m.src]
            when = self.now + (delays[0] if delays else self.net.delay())
            if self.net.rng.random() < 0.3:
                # The transport reports once the stream closes: sometimes after the answer.
                when += self.net.rng.randint(1, 40)
            self.queue.push(when, "snapst", m.src, src.incarnation, m.dst, bool(delays))

    def _transfer_sent(self, m: Message) -> None:
        """A leader told ``m.dst`` to campaign: a transfer touches both, if the target holds the
        leader's whole log (a target that is behind is no reason for an election)."""
        src, dst = self.nodes[m.src], self.nodes[m.dst]
        log = src.raw.log_view()
        last = log.last_index()
        if dst.alive:
            theirs = dst.raw.log_view()
            if theirs.last_index() >= last and _term_or_zero(theirs, last) == _term_or_zero(log, last):
                self.ledger.touch((m.src, m.dst), self.now, self.now)
                return
        self.stats["transfers_to_laggard"] += 1

    def client_request(self, target: int, req: Request) -> None:
        self.queue.push(self.now + self.net.client_delay(), "creq", target, req)

    def respond(self, node_id: int, req: Request, outcome: str, value: object, hint: int) -> None:
        self.queue.push(self.now + self.net.client_delay(), "cresp", req.client, req.op_id, outcome, value, hint)

    def observe(self, node: SimNode) -> None:
        """Check what changed on ``node`` after it processed an input."""
        if not node.alive:
            return
        raw = node.raw
        term = raw.term
        stab = self.stability
        if term > stab.max_term:
            stab.saw_term(term, self.now)
        if node.leading_term and (term != node.leading_term or not raw.is_leader):
            led, node.leading_term = node.leading_term, 0
            cs = raw.conf_state
            stab.deposed(node.id, led, node.lead_since, term, self.now, cs.voters, cs.voters_outgoing)
        if raw.is_leader and term != node.seen_leader_term:
            node.seen_leader_term = term
            node.leading_term = term
            node.lead_since = self.now
            self.stats["elections"] += 1
            self.trace.note(f"node {node.id} leads term {term}")
            self.inv.became_leader(node.id, term, raw.log_view())
            self._check_leases(term)
            if self.retiring:
                self._retire()
            p = self.profile
            if p.leader_trap and not self.healed and self.trap_rng.random() < p.leader_trap:
                if self.trap_rng.random() < 0.4:
                    # Cut off before its first append leaves: its new entries stay its own.
                    self._ev_ltrap(node.id, node.incarnation, raw.term, isolate=True)
                else:
                    delay = self.trap_rng.randint(*p.leader_trap_delay)
                    self.queue.push(self.now + delay, "ltrap", node.id, node.incarnation, raw.term)
        elif raw.is_leader and self.inv.max_leader_term > term and not node.replaying and not raw.quiesced:
            self.inv.check_lease(node.id, term, raw.lease_read_index())
        c = raw.commit
        if c != node.seen_commit:
            self.inv.on_commit(node.id, raw.log_view(), node.seen_commit, c, raw.term)
            node.seen_commit = c
            p = self.profile
            if p.commit_trap and raw.is_leader and not self.healed and self.trap_rng.random() < p.commit_trap:
                # Dies before anything it queued (appends carrying the new commit) leaves.
                self._ev_ctrap(node.id, node.incarnation)

    def _check_leases(self, term: int) -> None:
        """A leader of ``term`` was just elected: every older leader's lease must have run out by
        now (paused ones are judged once their missed ticks are replayed, quiesced ones once
        woken: their clocks stand still until then)."""
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            if n.up and not n.replaying and n.raw.is_leader and not n.raw.quiesced:
                if n.raw.term < term and (n.reads_waiting or n.pending_reads):
                    self.stats["deposed_reads"] += 1  # reads waiting at a leader just replaced
                self.inv.check_lease(nid, n.raw.term, n.raw.lease_read_index())

    def _retire(self) -> None:
        """Stop the removed replicas once a leader of the configuration without them applied it.

        Not sooner: replicas that have not learned that the change committed still decide
        with the old (or joint) configuration, in which the removed ones may be needed for a
        majority (a joint change that removes two of four voters, say).
        """
        leader = self.leader()
        if leader is None or leader.id not in self.config.all_nodes():
            return
        applied = leader.raw.conf_state.all_nodes()
        for nid in sorted(self.retiring):
            gone = self.nodes[nid]
            if nid in applied:
                continue  # added back since
            self.retiring.discard(nid)
            if gone.removed:
                continue
            gone.removed = True
            gone.crash()
            self.stats["removed"] += 1
            self.trace.note(f"node {nid} removed and stopped")

    def on_conf_applied(self, node: SimNode, index: int, cs: ConfState) -> None:
        if self.retiring:
            self._retire()
        if index <= self.config_index:
            return
        old = self.config
        self.config_index = index
        self.config = cs
        # Every replica whose role changed was touched by the change (stability check).
        self.ledger.end_all("conf", self.now)
        changed = (
            (old.voters ^ cs.voters) | (old.voters_outgoing ^ cs.voters_outgoing)
            | (old.learners ^ cs.learners) | (old.learners_next ^ cs.learners_next)
        )
        self.ledger.touch(sorted(changed), self.now, self.now)
        if cs.joint and len(cs.voters) != len(cs.voters_outgoing):
            self.stats["joint_resizes"] += 1
        if len(old.voters) == 1 and not old.joint and len(cs.voters) > 1:
            self.stats["grown_from_one"] += 1
        self.trace.note(
            f"config@{index}: voters {sorted(cs.voters)} out {sorted(cs.voters_outgoing)} "
            f"learners {sorted(cs.learners)}"
        )
        members = cs.all_nodes()
        self.members_ever |= members
        for nid in sorted(self.members_ever - members):
            if not self.nodes[nid].removed:
                self.retiring.add(nid)
        self._retire()
        # Half the time a leader seeds new learners from a fresh snapshot that names them;
        # otherwise they get whatever older snapshot it has.
        if node.alive and node.raw.is_leader:  # it may have just removed itself
            snap_cs = node.storage.latest_snapshot().meta.conf_state
            named = snap_cs.all_nodes()
            if any(learner not in named for learner in sorted(cs.learners)) and self.membership.rng.random() < 0.5:
                node.compact(keep=10)
        p = self.profile
        if cs.joint and p.joint_trap and not self.healed and self.trap_rng.random() < p.joint_trap:
            self._joint_trap()

    def _joint_trap(self) -> None:
        """Failpoint: cut the network (or crash the leader) while a joint configuration is in force."""
        rng = self.trap_rng
        self.stats["joint_traps"] += 1
        ids = [i for i in sorted(self.nodes) if not self.nodes[i].removed]
        leader = self.leader()
        roll = rng.random()
        if leader is not None and roll < 0.2 and self.nemesis.may_take_down(leader):
            self.trace.note(f"failpoint: crash leader {leader.id} while joint")
            self.stats["joint_crashes"] += 1
            self.crash_node(leader, rng.randint(*self.profile.downtime))
            return
        if leader is not None and roll < 0.5:
            side = [leader.id]
        else:
            rng.shuffle(ids)
            side = ids[: rng.randint(1, max(1, len(ids) // 2))]
        rest = [i for i in ids if i not in side]
        desc = f"joint split {sorted(side)}|{sorted(rest)}"
        self.trace.note(f"failpoint: {desc}")
        self.stats["joint_cuts"] += 1
        self.partition(split(side, rest), desc, rng.randint(*self.profile.partition_time))

    # -- faults ----------------------------------------------------------------------------

    def crash_node(self, node: SimNode, downtime: int) -> None:
        node.crash()
        self.stats["crashes"] += 1
        self.queue.push(self.now + downtime, "restart", node.id, node.down_gen)

    def restart_node(self, node: SimNode) -> None:
        if node.alive or node.removed:
            return
        self.trace.note(f"restart {node.id}")
        self.stats["restarts"] += 1
        node.start()

    def pause_node(self, node: SimNode, duration: int) -> None:
        node.pause()
        self.stats["pauses"] += 1
        self.queue.push(self.now + duration, "resume", node.id, node.down_gen)

    def partition(self, blocked: set, desc: str, duration: int) -> None:
        gen = self.net.set_partition(desc, blocked)
        self.ledger.begin("partition", sorted({n for link in blocked for n in link}), self.now)
        self.stats["partitions"] += 1
        self.queue.push(self.now + duration, "heal", gen)

    def slow_inbound(self, nid: int, extra: int, duration: int) -> None:
        """Every message to ``nid`` takes ``extra`` units longer for ``duration`` units."""
        self.net.slow_to[nid] = extra
        self.slow_gen += 1
        self.queue.push(self.now + duration, "unslow", nid, self.slow_gen)

    def _ev_unslow(self, nid: int, gen: int) -> None:
        if gen == self.slow_gen:
            self.net.slow_to.pop(nid, None)

    def _ev_cutoff(self, nid: int, duration: int) -> None:
        """Cut ``nid`` off from everyone (a ``depose`` action's second step)."""
        node = self.nodes[nid]
        if self.healed or node.removed:
            return
        others = [i for i in sorted(self.nodes) if i != nid and not self.nodes[i].removed]
        self.partition(split([nid], others), f"cut off {nid}", duration)

    def heal_network(self, gen: int | None = None) -> bool:
        """Clear the partition (only generation ``gen``, when given); True if one was in force."""
        healed = self.net.heal(gen)
        if not self.net.blocked:
            self.ledger.end("partition", self.now)
        return healed

    def flaky(self, duration: int) -> None:
        p = self.net.params
        p.drop_prob = self.profile.flaky_drop
        p.dup_prob = self.profile.flaky_dup
        self.flaky_gen += 1
        self.queue.push(self.now + duration, "unflaky", self.flaky_gen)

    def vote_write_started(self, node: SimNode, latency: int) -> None:
        """Failpoint: maybe crash ``node`` while its term/vote write is still in flight."""
        p = self.profile
        if self.healed or not p.vote_trap or latency <= 1:
            return
        if self.trap_rng.random() >= p.vote_trap:
            return
        if not self.nemesis.may_take_down(node):
            return
        self.queue.push(self.now + self.trap_rng.randrange(latency), "trap", node.id, node.incarnation)

    # -- the event loop ---------------------------------------------------------------------

    def run(self) -> InvariantViolation | None:
        q = self.queue
        for c in self.clients:
            c.pick_target()
            c.schedule_next()
        self.nemesis.schedule()
        q.push(self.fault_time, "heal-all")
        end = self.fault_time + LIVENESS_BOUND
        q.push(end, "deadline")
        nodes = self.nodes
        trace = self.trace
        stats = self.stats
        try:
            while q and not self.finished:
                t, _, kind, args = q.pop()
                self.now = t
                if kind == "tick":
                    nid = args[0]
                    trace.record(f"{t} tick {nid}")
                    node = nodes[nid]
                    if node.removed:
                        continue
                    stats["ticks"] += 1
                    node.on_tick()
                    q.push(t + node.period, "tick", nid)
                elif kind == "msg":
                    m = args[1]
                    trace.record(
                        f"{t} {_MT_NAMES[m.type]} {m.src}->{m.dst} t{m.term} i{m.index}/{m.log_term} "
                        f"c{m.commit} n{len(m.entries)}{' rej' if m.reject else ''}"
                    )
                    nodes[args[0]].deliver("msg", (m,))
                elif kind in ("disk", "snapst", "creq", "unreach"):
                    trace.record(f"{t} {kind} {args}")
                    nodes[args[0]].deliver(kind, args[1:])
                else:
                    trace.record(f"{t} {kind} {args}")
                    getattr(self, "_ev_" + kind.replace("-", "_"))(*args)
        except InvariantViolation as v:
            return v
        except Exception:  # a crash inside the core (or the simulator): report it
            return InvariantViolation(CORE_EXCEPTION, traceback.format_exc(limit=-6))
        try:
            return self._check_history()
        except InvariantViolation as v:
            return v

    # -- event handlers -------------------------------------------------------------------------

    def _ev_cnext(self, idx: int) -> None:
        self.clients[idx].invoke()

    def _ev_cresp(self, idx: int, op_id: int, outcome: str, value: object, hint: int) -> None:
        self.clients[idx].on_response(op_id, outcome, value, hint)

    def _ev_ctimeout(self, idx: int, op_id: int) -> None:
        self.clients[idx].on_timeout(op_id)

    def _ev_nemesis(self) -> None:
        self.nemesis.on_event()

    def _ev_restart(self, nid: int, gen: int) -> None:
        node = self.nodes[nid]
        if node.down_gen == gen and not node.alive and not self.healed:
            self.restart_node(node)

    def _ev_resume(self, nid: int, gen: int) -> None:
        node = self.nodes[nid]
        if node.down_gen == gen:
            node.resume()

    def _ev_snapready(self, nid: int, gen: int) -> None:
        self.nodes[nid].storage.ready(gen)

    def _ev_heal(self, gen: int) -> None:
        self.heal_network(gen)

    def _ev_unflaky(self, gen: int) -> None:
        if gen == self.flaky_gen:
            self.net.params.drop_prob = self.profile.drop_prob
            self.net.params.dup_prob = self.profile.dup_prob

    def _ev_trap(self, nid: int, incarnation: int) -> None:
        node = self.nodes[nid]
        if node.alive and node.incarnation == incarnation and node.inflight is not None and not self.healed:
            self.stats["trap_crashes"] += 1
            self.trace.note(f"failpoint: crash {nid} during its vote write")
            self.crash_node(node, self.trap_rng.randint(1, 60))

    def _ev_ltrap(self, nid: int, incarnation: int, term: int, isolate: bool = False) -> None:
        """Failpoint: a freshly elected leader crashes or is cut off before it settles."""
        node = self.nodes[nid]
        if not node.up or node.incarnation != incarnation or node.raw.term != term or self.healed:
            return
        self.stats["leader_traps"] += 1
        if not isolate and self.trap_rng.random() < 0.5:
            if self.nemesis.may_take_down(node):
                self.trace.note(f"failpoint: crash new leader {nid}")
                self.crash_node(node, self.trap_rng.randint(*self.profile.downtime))
        else:
            others = [i for i in sorted(self.nodes) if i != nid and not self.nodes[i].removed]
            self.trace.note(f"failpoint: isolate new leader {nid}")
            duration = self.trap_rng.randint(*self.profile.partition_time)
            self.partition(split([nid], others), f"isolate new leader {nid}", duration)

    def _ev_ctrap(self, nid: int, incarnation: int) -> None:
        """Failpoint: a leader crashes right after it advanced its commit index."""
        node = self.nodes[nid]
        if node.up and node.incarnation == incarnation and not self.healed and self.nemesis.may_take_down(node):
            self.stats["commit_traps"] += 1
            self.trace.note(f"failpoint: crash leader {nid} right after it committed")
            self.crash_node(node, self.trap_rng.randint(*self.profile.downtime))

    def _ev_heal_all(self) -> None:
        self.healed = True
        self.heal_time = self.now
        self.nemesis.stopped = True
        self.heal_network()
        self.net.slow_to.clear()
        self.ledger.end_all("conf", self.now)
        p = self.net.params
        p.drop_prob = p.dup_prob = p.long_delay_prob = 0.0
        self.flaky_gen += 1
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if node.removed:
                continue
            if not node.alive:
                self.restart_node(node)
            elif node.paused:
                node.resume()
        self.queue.push(self.now + 1, "probe")

    def _ev_probe(self) -> None:
        self.liveness.on_poll()

    def _ev_deadline(self) -> None:
        self.liveness.on_deadline()

    # -- the end ----------------------------------------------------------------------------------

    def _check_history(self) -> InvariantViolation | None:
        try:
            from tools.checker.linearizability import check_history, describe
        except ImportError:
            self.stats["lin_skipped"] = 1
            return None
        result = check_history(self.history, time_limit_s=LINEARIZABILITY_TIME_LIMIT_S)
        if result.ok is None:
            self.stats["lin_unknown"] = 1
            return None
        if not result.ok:
            return InvariantViolation(LINEARIZABILITY, describe(result))
        return None
