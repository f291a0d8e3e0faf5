"""Membership changes driven mid-run through the current leader.

One step at a time, never while a change is pending or the configuration is
joint (the core leaves a joint configuration by itself):

* add a learner: a fresh node id from the pool, started with an empty
  MemoryStorage; it catches up from the leader by a snapshot install (the
  leader also takes a fresh snapshot that names the learner, as a real store
  would, so both the old-snapshot and the new-snapshot paths get exercised);
* promote a learner that has caught up to a voter;
* swap: promote a caught-up learner and remove (or demote to learner) a voter
  in one change — two voters change, so the core goes through a joint
  configuration (``learners_next`` for the demoted one);
* remove or demote a voter, only while more than three voters remain;
* remove a learner that is not catching up.

Removed nodes are stopped by the simulation once a configuration without
them is applied anywhere (see ``Simulation.on_conf_applied``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from node.raft import ConfChange, ConfChangeSingle, ConfChangeType, RaftError

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Simulation

MIN_VOTERS = 3


class Membership:
    def __init__(self, sim: Simulation, rng: random.Random, spare: list[int]) -> None:
        self.sim = sim
        self.rng = rng
        self.spare = list(spare)

    def step(self) -> str:
        sim, rng = self.sim, self.rng
        leader = sim.leader()
        if leader is None:
            return "no leader"
        raw = leader.raw
        st = raw.status()
        cs = st.conf_state
        if cs.joint or st.conf_change_pending:
            return "change pending"
        voters = sorted(cs.voters)
        learners = sorted(cs.learners)
        progress = st.progress
        caught_up = [n for n in learners if n in progress and progress[n].match >= st.commit]
        options = []
        if caught_up:
            options += ["promote", "swap", "swap-demote"]
        elif learners:
            # Seed the learner from a fresh snapshot that names it (now and then).
            snap_cs = leader.storage.snapshot().meta.conf_state
            named = snap_cs.all_nodes()
            if any(n not in named for n in learners):
                leader.compact(keep=rng.choice([2, 10, 50]))
            if rng.random() < 0.7:
                return "learner catching up"
            options.append("remove-learner")
        elif self.spare or self._idle_nodes(cs):
            options.append("add")
        if len(voters) > MIN_VOTERS:
            options += ["remove", "demote"]
        if not options:
            return "nothing to do"
        what = options[rng.randrange(len(options))]
        single = ConfChangeSingle
        if what == "add":
            idle = self._idle_nodes(cs)
            if idle:
                nid = idle[0]
            else:
                nid = self.spare.pop(0)
                sim.add_node(nid)
            cc = ConfChange((single(ConfChangeType.ADD_LEARNER, nid),))
        elif what == "promote":
            nid = caught_up[rng.randrange(len(caught_up))]
            cc = ConfChange((single(ConfChangeType.ADD_VOTER, nid),))
        elif what in ("swap", "swap-demote"):
            # Two voters change at once: the core goes through a joint configuration.
            nid = caught_up[rng.randrange(len(caught_up))]
            out = self._victim(voters, leader.id)
            kind = ConfChangeType.REMOVE_NODE if what == "swap" else ConfChangeType.ADD_LEARNER
            cc = ConfChange((single(ConfChangeType.ADD_VOTER, nid), single(kind, out)))
        elif what == "remove-learner":
            nid = learners[rng.randrange(len(learners))]
            cc = ConfChange((single(ConfChangeType.REMOVE_NODE, nid),))
        elif what == "demote":
            out = self._victim(voters, leader.id)
            cc = ConfChange((single(ConfChangeType.ADD_LEARNER, out),))
        else:
            out = self._victim(voters, leader.id)
            cc = ConfChange((single(ConfChangeType.REMOVE_NODE, out),))
        try:
            index = raw.propose_conf_change(cc)
        except RaftError as exc:
            return f"{what} refused: {exc}"
        sim.observe(leader)
        leader.pump()
        desc = ",".join(f"{c.type.name}:{c.node_id}" for c in cc.changes)
        sim.stats["conf_changes"] += 1
        return f"{what} {desc} at {index} via {leader.id}"

    def _victim(self, voters: list[int], leader_id: int) -> int:
        others = [v for v in voters if v != leader_id]
        if self.rng.random() < 0.15 or not others:
            return leader_id
        return others[self.rng.randrange(len(others))]

    def _idle_nodes(self, cs) -> list[int]:
        """Nodes we started for an add that never made it into a configuration."""
        sim = self.sim
        return [
            nid
            for nid in sorted(sim.nodes)
            if nid not in sim.members_ever and nid not in cs.all_nodes() and not sim.nodes[nid].removed
        ]
