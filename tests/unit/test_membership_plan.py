"""The leader's membership plan (node.membership.next_step) on a real core, no I/O."""

from __future__ import annotations

from node import membership
from node.raft import ConfChangeType
from support.raft_net import Net


def test_next_step_adds_then_promotes_then_removes_and_never_removes_the_leader_itself() -> None:
    net = Net([1, 2, 3], learners=[4])
    net.elect(1)
    net.settle()
    r = net.nodes[1].raft

    def kind(step):
        return [(c.type, c.node_id) for c in step.changes]

    # Wanted additions come first, then a caught-up learner is promoted unasked.
    assert kind(membership.next_step(r, {5: 9}, {2})) == [(ConfChangeType.ADD_LEARNER, 5)]
    assert membership.decode_stores(membership.next_step(r, {5: 9}, set()).context) == {5: 9}
    assert kind(membership.next_step(r, {}, {2})) == [(ConfChangeType.ADD_VOTER, 4)]
    r.trk.progress[4].match = 0  # a learner still catching up stays a learner
    assert kind(membership.next_step(r, {}, {2})) == [(ConfChangeType.REMOVE_NODE, 2)]
    step = membership.next_step(r, {}, {1})
    assert isinstance(step, membership.HandOver) and step.target in (2, 3)
    assert membership.next_step(r, {}, set()) is None
