"""Membership changes driven mid-run through the current leader.

The driver proposes without asking whether a change is pending, the
configuration is joint or a transfer is under way: refusing those is the
core's job (``ProposalDroppedError``), and the refusals are counted
(``stats["conf_refused"]``).  Now and then it also asks to promote a learner
that has not caught up.  The changes:

* add a learner: a fresh node id from the pool, started with an empty
  MemoryStorage; it catches up from the leader by a snapshot install (the
  leader also takes a fresh snapshot that names the learner, as a real store
  would, so both the old-snapshot and the new-snapshot paths get exercised);
* promote a learner that has caught up to a voter;
* swap: promote a caught-up learner and remove (or demote to learner) a voter
  in one change — two voters change, so the core goes through a joint
  configuration (``learners_next`` for the demoted one);
* remove or demote a voter, only while more than ``profile.min_voters``
  (three, one in ``grow``) remain;
* remove a learner that is not catching up;
* resize (:meth:`Membership.resize`): one joint change to another group size
  between ``profile.min_voters`` and 5 (3->4 promotes two learners and
  removes a voter, 5->3 removes two voters, 1->3 promotes two, ...), adding
  two learners first when it lacks them;
* invalid (:meth:`Membership.invalid`): a change no configuration allows, as
  a confused operator would send: a voter added without joining as a
  learner, every voter removed, a leave-joint outside a joint configuration,
  node id 0.  The core must refuse each one.

Removed nodes are stopped by the simulation once a configuration without
them is applied anywhere (see ``Simulation.on_conf_applied``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from node.raft import ConfChange, ConfChangeSingle, ConfChangeType, RaftError, Status

from . import quiescence

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Simulation
    from .simnode import SimNode

MAX_VOTERS = 5


class Membership:
    def __init__(self, sim: Simulation, rng: random.Random, spare: list[int]) -> None:
        self.sim = sim
        self.rng = rng
        self.spare = list(spare)
        self.last_change: ConfChange | None = None  # the last change the core accepted

    def _leader_view(self) -> tuple[SimNode, Status, list[int], list[int], list[int]] | None:
        """The leader, its (checked) status, its voters, its learners, and the learners caught
        up to its commit index; None without a leader."""
        leader = self.sim.leader()
        if leader is None:
            return None
        st = self.status(leader)
        learners = sorted(st.conf_state.learners)
        caught_up = [n for n in learners if n in st.progress and st.progress[n].match >= st.commit]
        return leader, st, sorted(st.conf_state.voters), learners, caught_up

    def step(self) -> str:
        sim, rng = self.sim, self.rng
        view = self._leader_view()
        if view is None:
            return "no leader"
        leader, st, voters, learners, caught_up = view
        cs = st.conf_state
        options = []
        if caught_up:
            options += ["promote", "swap", "swap-demote"]
        elif learners:
            # Seed the learner from a fresh snapshot that names it (now and then).
            snap_cs = leader.storage.latest_snapshot().meta.conf_state
            named = snap_cs.all_nodes()
            if any(n not in named for n in learners):
                leader.compact(keep=rng.choice([2, 10, 50]))
            roll = rng.random()
            if roll < 0.1:
                # Promote it anyway: the core must refuse a learner that has not caught up.
                nid = learners[rng.randrange(len(learners))]
                cc = ConfChange((ConfChangeSingle(ConfChangeType.ADD_VOTER, nid),))
                return self._propose(leader, "early promote", cc)
            if roll < 0.7:
                return "learner catching up"
            options.append("remove-learner")
        elif self.spare or self._idle_nodes(cs):
            options.append("add")
        if len(voters) > sim.profile.min_voters:
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
        return self._propose(leader, what, cc)

    def resize(self) -> str:
        """One joint change to another size, between ``profile.min_voters`` and 5 voters."""
        sim, rng = self.sim, self.rng
        view = self._leader_view()
        if view is None:
            return "no leader"
        leader, st, voters, learners, ready = view
        cs = st.conf_state
        if rng.random() < 0.2:
            ready = learners  # sometimes one that has not caught up: the core refuses
        n = len(voters)
        size = rng.choice([t for t in range(sim.profile.min_voters, MAX_VOTERS + 1) if t != n])
        # (added, removed) with added - removed = size - n and at least two voters changing.
        plans = [(size - n + j, j) for j in range(n) if 0 <= size - n + j <= len(ready) and size - n + 2 * j >= 2]
        single = ConfChangeSingle
        if not plans:
            fresh = self._idle_nodes(cs)[:2]
            while len(fresh) < 2 and self.spare:
                fresh.append(self.spare.pop(0))
                sim.add_node(fresh[-1])
            if not fresh:
                return "resize: no learners to add"
            cc = ConfChange(tuple(single(ConfChangeType.ADD_LEARNER, nid) for nid in fresh))
            return self._propose(leader, "resize: add learners", cc)
        added, removed = plans[rng.randrange(len(plans))]
        ins = rng.sample(ready, added)
        outs = rng.sample(voters, removed)
        demote = rng.random() < 0.3
        changes = [single(ConfChangeType.ADD_VOTER, nid) for nid in ins]
        out_kind = ConfChangeType.ADD_LEARNER if demote else ConfChangeType.REMOVE_NODE
        changes += [single(out_kind, nid) for nid in outs]
        return self._propose(leader, f"resize {n}->{size}", ConfChange(tuple(changes)))

    def invalid(self) -> str:
        """Propose a change that no configuration allows (the core must refuse it)."""
        leader = self.sim.leader()
        if leader is None:
            return "no leader"
        cs = leader.raw.conf_state
        single = ConfChangeSingle
        kind = self.rng.choice(("voter-first", "remove-all", "leave", "id-0"))
        if kind == "voter-first":
            # A fresh id straight to voter, never started: it must join as a learner first.
            fresh = max(self.sim.nodes) + 1
            cc = ConfChange((single(ConfChangeType.ADD_VOTER, fresh),))
        elif kind == "remove-all":
            cc = ConfChange(tuple(single(ConfChangeType.REMOVE_NODE, v) for v in sorted(cs.voters)))
        elif kind == "leave":
            cc = ConfChange()  # leave-joint: refused outside a joint configuration (or while pending)
        else:
            cc = ConfChange((single(ConfChangeType.ADD_LEARNER, 0),))
        what = f"invalid change ({kind})"
        outcome = self._propose(leader, what, cc)
        if kind != "leave" or not cs.joint:  # a leave-joint is fine inside a joint configuration
            self.sim.inv.refusal_expected(what, "refused" in outcome)
        return outcome

    def status(self, leader: SimNode) -> Status:
        """The leader's status, which the driver decides by: checked against its configuration."""
        st = leader.raw.status()
        self.sim.inv.on_status(leader.id, st, leader.raw.log_view().last_index())
        return st

    def _propose(self, leader: SimNode, what: str, cc: ConfChange) -> str:
        sim = self.sim
        quiescence.ensure_awake(leader)
        try:
            index = leader.raw.propose_conf_change(cc)
        except RaftError as exc:
            sim.stats["conf_refused"] += 1
            return f"{what} refused: {exc}"
        self.last_change = cc
        named = sorted({c.node_id for c in cc.changes})
        sim.ledger.begin(("conf", index), named, sim.now)
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
