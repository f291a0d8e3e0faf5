"""The leader's membership plan (node.membership.next_step): a pure function of the status."""

from __future__ import annotations

import dataclasses

from node import membership
from node.raft import ConfChange, ConfChangeType, ProgressStatus
from support.raft_net import Net


def conf_change(step: ConfChange | membership.HandOver | None) -> ConfChange:
    """The plan's step, which must be a conf change."""
    assert isinstance(step, ConfChange), step
    return step


def kind(step: ConfChange | membership.HandOver | None) -> list[tuple[ConfChangeType, int]]:
    """The changes of a conf-change step, as (type, node)."""
    return [(c.type, c.node_id) for c in conf_change(step).changes]


def test_next_step_adds_then_promotes_then_removes_and_never_removes_the_leader_itself() -> None:
    net = Net([1, 2, 3], learners=[4])
    net.elect(1)
    net.settle()
    st = net.nodes[1].status()

    # Wanted additions come first, then a caught-up learner is promoted unasked.
    assert kind(membership.next_step(st, {5: 9}, {2})) == [(ConfChangeType.ADD_LEARNER, 5)]
    assert membership.decode_stores(conf_change(membership.next_step(st, {5: 9}, set())).context) == {5: 9}
    assert kind(membership.next_step(st, {}, {2})) == [(ConfChangeType.ADD_VOTER, 4)]
    # A learner still catching up stays a learner.
    lagging = dataclasses.replace(st.progress[4], match=0)
    behind = dataclasses.replace(st, progress={**st.progress, 4: lagging})
    assert kind(membership.next_step(behind, {}, {2})) == [(ConfChangeType.REMOVE_NODE, 2)]
    step = membership.next_step(behind, {}, {1})
    assert isinstance(step, membership.HandOver) and step.target in (2, 3)
    assert membership.next_step(behind, {}, set()) is None


def test_next_step_waits_while_a_change_or_a_transfer_is_under_way() -> None:
    net = Net([1, 2, 3], learners=[4])
    net.elect(1)
    net.settle()
    st = net.nodes[1].status()
    assert membership.next_step(dataclasses.replace(st, conf_change_pending=True), {5: 9}, {2}) is None
    assert membership.next_step(dataclasses.replace(st, lead_transferee=2), {5: 9}, {2}) is None


def test_a_leader_removing_itself_hands_over_to_the_most_caught_up_active_voter() -> None:
    net = Net([1, 2, 3])
    net.elect(1)
    net.settle()
    st = net.nodes[1].status()
    progress = {
        1: st.progress[1],
        2: ProgressStatus(match=5, next=6, state="replicate", recent_active=True, learner=False),
        3: ProgressStatus(match=9, next=10, state="replicate", recent_active=False, learner=False),
    }
    step = membership.next_step(dataclasses.replace(st, progress=progress), {}, {1})
    assert step == membership.HandOver(2)  # 3 is further ahead but has not been heard from
    progress[2] = dataclasses.replace(progress[2], recent_active=False)
    assert membership.next_step(dataclasses.replace(st, progress=progress), {}, {1}) is None
