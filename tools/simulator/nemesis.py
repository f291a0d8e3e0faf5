"""The fault injector of the fault phase.

Every ``profile.gap`` time units it picks one action (weights from the
profile): crash a replica (any, the leader, or one with a disk write in
flight), restart one early, pause one (any or the leader), partition the
network (symmetric split, one-way, bridge, or isolate the leader), heal it,
make the network flaky for a while (loss + duplication), snapshot and compact
a replica's log, change the membership, or transfer leadership.  Crashes,
pauses, partitions and flaky spells end by themselves after a random time;
at most ``profile.max_down`` members are crashed or paused at once.

The targeted actions of the newer profiles:

* ``depose``: cut the leader off (both ways or one way) or pause it, or slow
  the messages to it and then cut it off, and point every client at it, so
  reads reach a replica that has lost leadership without knowing it;
* ``tail``: cut the leader off with a minority and hand it a burst of
  proposals: a long uncommitted tail of its term, on it and its followers;
* ``rejoin``: cut one follower off for a long time (it comes back on its own);
* ``lagging-transfer``: transfer leadership to the voter furthest behind;
* ``member-storm``: several membership changes proposed back to back;
* ``transfer-member``: a transfer and a membership change at the same time;
* ``resize``: a joint change to another group size;
* ``member-invalid``: a change no configuration allows;
* ``lull``: the clients fall silent for a while, so the group goes idle and
  quiesces (:mod:`.quiescence`);
* ``campaign-learner``: tell a replica that cannot stand (a learner, a removed
  replica, one with a snapshot not yet persisted, by its own configuration) to
  campaign.

Like the membership driver, transfers are asked without looking first: to any
member, the leader itself or a learner included, during another transfer or a
pending change, and now and then of a replica that is not the leader (an
operator with a stale view); refusing is the core's job.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from node.raft import ConfChangeType, RaftError

from . import quiescence
from .kvsm import encode_command
from .membership import Membership
from .network import bridge, one_way, split

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Simulation
    from .profiles import Profile
    from .simnode import SimNode


class Nemesis:
    def __init__(self, sim: Simulation, rng: random.Random, profile: Profile, membership: Membership) -> None:
        self.sim = sim
        self.rng = rng
        self.profile = profile
        self.membership = membership
        self.actions = [a for a, _ in profile.actions]
        self.weights = [w for _, w in profile.actions]
        self.stopped = False
        self.fillers = 0

    def schedule(self) -> None:
        lo, hi = self.profile.gap
        self.sim.queue.push(self.sim.now + self.rng.randint(lo, hi), "nemesis")

    def on_event(self) -> None:
        if self.stopped:
            return
        action = self.rng.choices(self.actions, self.weights)[0]
        result = getattr(self, "do_" + action.replace("-", "_"))()
        self.sim.trace.note(f"nemesis {action}: {result}")
        self.schedule()

    # -- helpers ---------------------------------------------------------------

    def _nodes(self) -> list[SimNode]:
        sim = self.sim
        return [sim.nodes[i] for i in sorted(sim.nodes) if not sim.nodes[i].removed]

    def _pick(self, nodes: list[SimNode]) -> SimNode | None:
        return nodes[self.rng.randrange(len(nodes))] if nodes else None

    def _down_count(self) -> int:
        members = self.sim.config.all_nodes()
        return sum(1 for n in self._nodes() if n.id in members and not n.up)

    def may_take_down(self, node: SimNode) -> bool:
        if node.id not in self.sim.config.all_nodes():
            return True
        return self._down_count() < self.profile.max_down

    def _crash(self, node: SimNode | None, lo: int | None = None, hi: int | None = None) -> str:
        if node is None or not node.alive:
            return "nobody"
        if not self.may_take_down(node):
            return f"{node.id} spared (too many down)"
        d_lo, d_hi = self.profile.downtime
        self.sim.crash_node(node, self.rng.randint(lo or d_lo, hi or d_hi))
        return f"crashed {node.id}"

    def _pause(self, node: SimNode | None) -> str:
        if node is None or not node.up:
            return "nobody"
        if not self.may_take_down(node):
            return f"{node.id} spared (too many down)"
        lo, hi = self.profile.pause_time
        self.sim.pause_node(node, self.rng.randint(lo, hi))
        return f"paused {node.id}"

    # -- actions ---------------------------------------------------------------

    def do_crash(self) -> str:
        return self._crash(self._pick([n for n in self._nodes() if n.alive]))

    def do_crash_leader(self) -> str:
        return self._crash(self.sim.leader())

    def do_crash_writer(self) -> str:
        """Kill a replica while its disk write is in flight (before it lands)."""
        busy = [n for n in self._nodes() if n.up and n.inflight is not None]
        return self._crash(self._pick(busy), 5, 60)

    def do_restart(self) -> str:
        down = [n for n in self._nodes() if not n.alive]
        node = self._pick(down)
        if node is None:
            return "nobody"
        self.sim.restart_node(node)
        return f"restarted {node.id}"

    def do_pause(self) -> str:
        return self._pause(self._pick([n for n in self._nodes() if n.up]))

    def do_pause_leader(self) -> str:
        return self._pause(self.sim.leader())

    def do_partition(self) -> str:
        rng = self.rng
        ids = [n.id for n in self._nodes()]
        rng.shuffle(ids)
        kind = rng.choice(("split", "one-way", "bridge"))
        if kind == "bridge" and len(ids) >= 3:
            b = ids[0]
            rest = ids[1:]
            k = len(rest) // 2
            blocked = bridge(rest[:k], b, rest[k:])
            desc = f"bridge {sorted(rest[:k])}<{b}>{sorted(rest[k:])}"
        elif kind == "one-way":
            x, others = ids[0], ids[1:]
            if rng.random() < 0.5:
                blocked = one_way([x], others)
                desc = f"{x} cannot send"
            else:
                blocked = one_way(others, [x])
                desc = f"{x} cannot receive"
        else:
            k = rng.randint(1, max(1, len(ids) // 2))
            blocked = split(ids[:k], ids[k:])
            desc = f"split {sorted(ids[:k])}|{sorted(ids[k:])}"
        self.sim.partition(blocked, desc, self.rng.randint(*self.profile.partition_time))
        return desc

    def do_isolate_leader(self) -> str:
        leader = self.sim.leader()
        if leader is None:
            return "no leader"
        others = [n.id for n in self._nodes() if n.id != leader.id]
        desc = f"isolate leader {leader.id}"
        self.sim.partition(split([leader.id], others), desc, self.rng.randint(*self.profile.partition_time))
        return desc

    def do_heal(self) -> str:
        return "healed" if self.sim.heal_network() else "nothing to heal"

    def do_flaky(self) -> str:
        self.sim.flaky(self.rng.randint(*self.profile.flaky_time))
        return "flaky network"

    def do_compact(self) -> str:
        node = self._pick([n for n in self._nodes() if n.up])
        if node is None:
            return "nobody"
        keep = self.rng.choice((0, 0, 1, 2, 5))
        return f"compacted {node.id}" if node.compact(keep) else f"{node.id} had nothing to compact"

    def do_member(self) -> str:
        return self.membership.step()

    def do_resize(self) -> str:
        return self.membership.resize()

    def do_member_storm(self) -> str:
        """Membership changes back to back: the core must refuse all but the first."""
        return "; ".join(self.membership.step() for _ in range(self.rng.randint(2, 4)))

    def do_transfer_member(self) -> str:
        """A transfer and a membership change together, in either order; after the change, half
        the time to a voter it removes or demotes (the transfer must be abandoned when it applies)."""
        if self.rng.random() < 0.5:
            return f"{self.do_transfer()}; {self.membership.step()}"
        self.membership.last_change = None
        step = self.membership.step()
        cc = self.membership.last_change
        leader = self.sim.leader()
        if cc is not None and leader is not None and self.rng.random() < 0.5:
            outs = [c.node_id for c in cc.changes if c.type != ConfChangeType.ADD_VOTER and c.node_id != leader.id]
            if outs:
                return f"{step}; {self._transfer(leader, outs[0])}"
        return f"{step}; {self.do_transfer()}"

    def do_lull(self) -> str:
        """The clients fall silent for a while: the group goes idle (and quiesces)."""
        sim = self.sim
        sim.lull_until = max(sim.lull_until, sim.now + self.rng.randint(*self.profile.lull_time))
        return f"clients quiet until {sim.lull_until}"

    def do_member_invalid(self) -> str:
        return self.membership.invalid()

    def do_campaign_learner(self) -> str:
        """Tell a replica that may not stand for election to campaign: the core must refuse."""
        sim = self.sim
        # Judged by the replica's own configuration: a voter by its own lights would campaign,
        # and a forced campaign is no fault of the core's.
        cannot = [
            n for n in self._nodes()
            if n.up and (n.raw.pending_snapshot is not None
                         or n.id not in n.raw.conf_state.voters | n.raw.conf_state.voters_outgoing)
        ]
        node = self._pick(cannot)
        if node is None:
            return "nobody"
        quiescence.ensure_awake(node)
        before = (node.raw.term, node.raw.role)
        node.raw.campaign()
        refused = (node.raw.term, node.raw.role) == before
        sim.inv.refusal_expected(f"a campaign by node {node.id}, which may not stand", refused)
        sim.observe(node)
        node.pump()
        return f"node {node.id} told to campaign"

    def do_transfer(self) -> str:
        leader = self.sim.leader()
        if leader is None:
            return "no leader"
        cs = leader.raw.conf_state
        others = sorted(v for v in cs.voters | cs.voters_outgoing if v != leader.id)
        roll = self.rng.random()
        if roll < 0.05 and others:
            # Asked of a replica that does not lead (an operator's stale view): refused.
            asked = self.sim.nodes[others[self.rng.randrange(len(others))]]
            if asked.up and not asked.raw.is_leader:
                outcome = self._transfer(asked, leader.id)
                what = f"a transfer asked of node {asked.id}, which does not lead"
                self.sim.inv.refusal_expected(what, "refused" in outcome)
                return outcome
        if roll < 0.1 or not others:
            target = leader.id  # to itself: the core abandons any transfer under way
        elif roll < 0.2 and cs.learners:
            learners = sorted(cs.learners)
            target = learners[self.rng.randrange(len(learners))]
        else:
            target = others[self.rng.randrange(len(others))]
        return self._transfer(leader, target)

    def _transfer(self, leader: SimNode, target: int) -> str:
        quiescence.ensure_awake(leader)
        try:
            leader.raw.transfer_leader(target)
        except RaftError as exc:
            return f"transfer {leader.id}->{target} refused: {exc}"
        self.sim.observe(leader)
        leader.pump()
        self.sim.stats["transfers"] += 1
        return f"transfer {leader.id}->{target}"

    def do_lagging_transfer(self) -> str:
        """Transfer to the voter furthest behind: the leader must wait for it to catch up."""
        leader = self.sim.leader()
        if leader is None:
            return "no leader"
        st = self.membership.status(leader)
        voters = st.conf_state.voters | st.conf_state.voters_outgoing
        behind = sorted((pr.match, nid) for nid, pr in st.progress.items() if nid in voters and nid != leader.id)
        if not behind:
            return "no target"
        if behind[0][0] < leader.raw.log_view().last_index():
            self.sim.stats["laggard_transfers"] += 1  # asked while the target is behind
        return self._transfer(leader, behind[0][1])

    def do_rejoin(self) -> str:
        """Cut one follower off for a long while; it comes back when the cut ends."""
        leader = self.sim.leader()
        followers = [n.id for n in self._nodes() if leader is None or n.id != leader.id]
        if not followers:
            return "nobody"
        x = followers[self.rng.randrange(len(followers))]
        others = [n.id for n in self._nodes() if n.id != x]
        desc = f"cut off follower {x}"
        self.sim.partition(split([x], others), desc, self.rng.randint(*self.profile.partition_time))
        return desc

    def do_depose(self) -> str:
        """Make the leader lose leadership without knowing it, and send it every client's reads."""
        sim = self.sim
        leader = sim.leader()
        if leader is None:
            return "no leader"
        lid = leader.id
        others = [n.id for n in self._nodes() if n.id != lid]
        roll = self.rng.random()
        if roll < 0.25:
            what = self._pause(leader)
        elif roll < 0.45:
            # Answers to it crawl in first, then it is cut off: the late answers keep CheckQuorum
            # content while the followers, hearing nothing, elect a new leader.
            lo, hi = self.profile.slow_inbound
            sim.slow_inbound(lid, self.rng.randint(lo, hi), self.rng.randint(*self.profile.partition_time))
            cut_for = self.rng.randint(*self.profile.partition_time)
            sim.queue.push(sim.now + self.rng.randint(10, hi), "cutoff", lid, cut_for)
            what = f"answers to leader {lid} slowed, then it is cut off"
        else:
            if roll < 0.6:
                blocked, what = split([lid], others), f"cut off leader {lid}"
            elif roll < 0.8:
                # The followers hear nothing: a candidate overtakes it while it still leads.
                blocked, what = one_way([lid], others), f"leader {lid} cannot send"
            else:
                # Its heartbeats still land but no answer comes back: CheckQuorum must depose it.
                blocked, what = one_way(others, [lid]), f"leader {lid} cannot receive"
            # (Never RawNode.campaign() on a follower here: a forced campaign overrides the
            # follower's own lease promise, like a transfer, and is no fault of the core's.)
            sim.partition(blocked, what, self.rng.randint(*self.profile.partition_time))
        for c in sim.clients:
            c.target = lid
        return f"{what}; clients sent to it"

    def do_tail(self) -> str:
        """Cut the leader off with a minority and give it a burst of proposals to replicate there."""
        sim = self.sim
        leader = sim.leader()
        if leader is None:
            return "no leader"
        others = [n.id for n in self._nodes() if n.id != leader.id]
        self.rng.shuffle(others)
        # A minority with the leader: alone of 3, with one other of 4 (two-two: nobody leads) or 5.
        side = [leader.id] + others[: len(leader.raw.conf_state.voters) // 2 - 1]
        rest = [i for i in others if i not in side]
        desc = f"tail {sorted(side)}|{sorted(rest)}"
        sim.partition(split(side, rest), desc, self.rng.randint(*self.profile.partition_time))
        n = self.rng.randint(*self.profile.burst)
        proposed = 0
        quiescence.ensure_awake(leader)
        for _ in range(n):
            self.fillers += 1
            try:
                leader.raw.propose(encode_command({"id": -1_000_000 - self.fillers, "f": "fill"}))
            except RaftError:
                sim.stats["burst_refused"] += 1  # the uncommitted-entries limit
                break
            proposed += 1
        sim.observe(leader)
        leader.pump()
        return f"leader {leader.id} cut off with {sorted(side[1:])}, {proposed} entries proposed"
