"""The liveness phase: what must happen after every fault is healed.

Within ``LIVENESS_BOUND`` units of the heal (20 election timeouts):

* a leader exists;
* a fresh probe proposal is committed and applied on every live voter;
* a membership change goes through: the leader re-adds itself as a voter, a change that is
  valid in every configuration and changes nothing, so a core that refuses valid changes
  forever (or never applies one) fails here rather than only slowing the fault phase down;
* every client completes an ``ok`` operation and has nothing outstanding;
* then, with the clients silent, the group goes quiet (:mod:`.quiescence`): the leader and
  every live member quiesce, as an idle group must for a node to host many of them.

Proposals that the core refuses for now (a change still pending, a transfer under way) are
retried every ``RETRY`` units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.raft import ConfChange, ConfChangeSingle, ConfChangeType, EntryType, RaftError

from . import quiescence
from .invariants import LIVENESS, InvariantViolation
from .kvsm import encode_command

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Simulation
    from .simnode import SimNode

LIVENESS_TIMEOUTS = 20  # election timeouts
RETRY = 300  # units between proposals of a probe that has not got through
POLL = 20  # units between looks at the state


class Liveness:
    def __init__(self, sim: Simulation, bound: int) -> None:
        self.sim = sim
        self.bound = bound
        self.probes: list[tuple[int, int, bytes, int]] = []  # (index, term, data, proposed at)
        self.conf_probes: list[tuple[int, int, int]] = []  # (index, term, proposed at)
        self.counter = 0

    def start(self) -> None:
        sim = self.sim
        sim.queue.push(sim.now + 1, "probe")
        sim.queue.push(sim.now + self.bound, "deadline")

    def on_poll(self) -> None:
        sim = self.sim
        if sim.finished:
            return
        leader = sim.leader()
        if not self._probe_applied():
            if leader is not None and (not self.probes or sim.now - self.probes[-1][3] > RETRY):
                self._propose_probe(leader)
        elif not self._conf_probe_applied():
            if leader is not None and (not self.conf_probes or sim.now - self.conf_probes[-1][2] > RETRY):
                self._propose_conf_probe(leader)
        elif all(c.ok_after_heal for c in sim.clients):
            for c in sim.clients:
                c.stopped = True
            if all(c.idle for c in sim.clients) and not self._awake():
                sim.finished = True
                sim.stats["liveness_time"] = sim.now - sim.heal_time
                return
        sim.queue.push(sim.now + POLL, "probe")

    def _propose_probe(self, leader: SimNode) -> None:
        quiescence.ensure_awake(leader)
        self.counter += 1
        data = encode_command({"id": -self.counter, "f": "probe"})
        try:
            index = leader.raw.propose(data)
        except RaftError:
            return
        self.probes.append((index, leader.raw.term, data, self.sim.now))
        self.sim.observe(leader)
        leader.pump()

    def _propose_conf_probe(self, leader: SimNode) -> None:
        cc = ConfChange((ConfChangeSingle(ConfChangeType.ADD_VOTER, leader.id),))
        quiescence.ensure_awake(leader)
        try:
            index = leader.raw.propose_conf_change(cc)
        except RaftError:
            return
        self.conf_probes.append((index, leader.raw.term, self.sim.now))
        self.sim.observe(leader)
        leader.pump()

    def _live_voters(self) -> list[SimNode]:
        sim = self.sim
        ids = sim.config.voters | sim.config.voters_outgoing
        return [sim.nodes[i] for i in sorted(ids) if sim.nodes[i].up]

    def _probe_applied(self) -> bool:
        sim = self.sim
        if sim.leader() is None:
            return False
        for index, term, data, _ in self.probes:
            if sim.inv.applied.get(index) != (term, int(EntryType.NORMAL), data):
                continue
            if all(n.sm.applied >= index for n in self._live_voters()):
                return True
        return False

    def _conf_probe_applied(self) -> bool:
        """Some conf probe committed (with its term) and applied by the current leader."""
        sim = self.sim
        leader = sim.leader()
        if leader is None:
            return False
        for index, term, _ in self.conf_probes:
            seen = sim.inv.applied.get(index)
            if seen is not None and seen[:2] == (term, int(EntryType.CONF_CHANGE)) and leader.sm.applied >= index:
                return True
        return False

    def _awake(self) -> list[int]:
        """The live members (the leader included) not quiesced."""
        sim = self.sim
        members = sim.config.all_nodes()
        return [i for i in sorted(members) if sim.nodes[i].up and not sim.nodes[i].raw.quiesced]

    def on_deadline(self) -> None:
        sim = self.sim
        if sim.finished:
            return
        problems = []
        if sim.leader() is None:
            problems.append("no leader")
        if not self._probe_applied():
            lag = {n.id: n.sm.applied for n in self._live_voters()}
            probes = [p[:2] for p in self.probes]
            problems.append(f"no probe applied on every live voter (probes {probes}, applied {lag})")
        elif not self._conf_probe_applied():
            probes = [p[:2] for p in self.conf_probes]
            problems.append(f"no membership change applied (conf probes {probes})")
        waiting = [c.idx for c in sim.clients if not c.ok_after_heal]
        if waiting:
            problems.append(f"clients {waiting} completed no ok operation after the heal")
        busy = [c.idx for c in sim.clients if not c.idle]
        if busy:
            problems.append(f"clients {busy} still have an operation outstanding")
        if not problems:
            problems.append(f"the idle group never went quiet (awake: {self._awake()})")
        raise InvariantViolation(
            LIVENESS,
            f"{self.bound} units ({LIVENESS_TIMEOUTS} election timeouts) after healing at {sim.heal_time}: "
            + "; ".join(problems),
        )
