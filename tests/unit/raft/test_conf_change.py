"""Membership: learners, one change at a time, and what a pending change blocks (Raft paper §6).

Ported, in our own words, from the learner and conf-change tests of etcd-io/raft's ``raft_test.go``
(each test names its Go original). Ours differs in that a voter can only be added as a learner
first and promoted once caught up, and a second conf change is refused while one is pending
(etcd turns it into an empty entry). Joint consensus and the change rules themselves are in
``test_rawnode.py``.
"""

from __future__ import annotations

import pytest

from node.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    Role,
    Snapshot,
    SnapshotMeta,
)
from support.raft_net import Net, Replica, accept, ents

MT = MessageType
ET = 10
ADD_V, ADD_L, REMOVE = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE


def cc(*changes: tuple[ConfChangeType, int]) -> ConfChange:
    return ConfChange(tuple(ConfChangeSingle(t, i) for t, i in changes))


# -- learners ------------------------------------------------------------------------------------


def test_learner_election_timeout() -> None:
    """§6 (learners, thesis §4.2.1): a learner never campaigns, however long it hears nothing.

    etcd: TestLearnerElectionTimeout / TestPromotable.
    """
    r = Replica.of(2, [1], learners=[2])
    assert r.tick(3 * ET) == []
    assert r.node.role == Role.FOLLOWER


def test_learner_campaign() -> None:
    """A learner asked to campaign, or told to by a TIMEOUT_NOW (sent when it was still a voter),
    does nothing.

    etcd: TestLearnerCampaign.
    """
    r = Replica.of(2, [1], learners=[2])
    r.node.campaign()
    assert r.flush() == [] and r.node.role == Role.FOLLOWER
    r.follow(1, 1)
    assert r.step(Message(MT.TIMEOUT_NOW, 1, 2, term=1)) == []
    assert r.node.role == Role.FOLLOWER


def test_learner_can_vote() -> None:
    """A learner asked for its vote answers like anyone (a replica that does not know it was
    promoted must still help elect); the candidate simply does not count learners' grants.

    etcd: TestLearnerCanVote. (That the grants never count is test_rawnode.py's
    test_learner_votes_never_count.)
    """
    r = Replica.of(2, [1], learners=[2])
    out = r.step(Message(MT.VOTE, 1, 2, term=2, log_term=11, index=11))
    assert out == [Message(MT.VOTE_RESP, 2, 1, term=2)]


def test_learner_log_replication() -> None:
    """A learner receives the log and learns the commit index like a follower, but does not count
    toward commitment (a lone voter commits alone).

    etcd: TestLearnerLogReplication.
    """
    net = Net.fresh([1], learners=[2])
    net.elect(1)
    net.nodes[1].propose(b"somedata")
    net.settle()
    net.tell_commit(1)
    assert net.nodes[1].commit == net.nodes[2].commit == 2
    assert net.nodes[1].status().progress[2].match == 2
    assert net.applied[2] == [b"somedata"]


def test_learner_promotion() -> None:
    """A caught-up learner promoted to voter can then lead (here through a transfer, since the
    followers' lease of the current leader would otherwise turn a campaign away).

    etcd: TestLearnerPromotion.
    """
    net = Net.fresh([1], learners=[2])
    net.elect(1)
    net.nodes[2].campaign()
    net.settle()
    assert net.nodes[2].role == Role.FOLLOWER
    net.nodes[1].propose_conf_change(cc((ADD_V, 2)))
    net.settle()
    assert net.nodes[2].conf_state.voters == frozenset({1, 2})
    net.nodes[1].transfer_leader(2)
    net.settle()
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.LEADER}


# -- proposing changes ---------------------------------------------------------------------------


def test_step_config() -> None:
    """§6: a proposed conf change is appended like any entry, and marks a change as pending.

    etcd: TestStepConfig.
    """
    r = Replica.of(1, (1, 2))
    r.campaign_granted()
    last = r.node.log_view().last_index()
    assert r.node.propose_conf_change(cc((ADD_L, 3))) == last + 1
    entry = r.node.log_view().entry(last + 1)
    assert entry is not None and entry.type == EntryType.CONF_CHANGE
    assert r.node.status().conf_change_pending


def test_step_ignore_config() -> None:
    """§6: one change at a time: while a conf change is pending a second one is refused, and the
    log is left alone.

    etcd: TestStepIgnoreConfig (etcd appends an empty entry in its place).
    """
    r = Replica.of(1, (1, 2))
    r.campaign_granted()
    r.node.propose_conf_change(cc((ADD_L, 3)))
    last = r.node.log_view().last_index()
    with pytest.raises(ProposalDroppedError, match="configuration change"):
        r.node.propose_conf_change(cc((ADD_L, 4)))
    assert r.node.log_view().last_index() == last


@pytest.mark.parametrize(("log", "pending"), [([], False), (ents(1), True)], ids=["empty", "uncommitted-entry"])
def test_new_leader_pending_config(log: list[Entry], pending: bool) -> None:
    """§6: a new leader cannot know whether the uncommitted entries it inherits hold a conf change
    until it has applied them, so it treats them as a pending change.

    etcd: TestNewLeaderPendingConfig.
    """
    r = Replica.of(1, (1, 2), entries=log)
    r.campaign_granted()
    assert r.node.status().conf_change_pending == pending


def test_commit_after_remove_node() -> None:
    """§6: entries that waited for the removed voter commit as soon as the removal is applied,
    under the smaller quorum.

    etcd: TestCommitAfterRemoveNode.
    """
    r = Replica.of(1, (1, 2))
    r.ack_until_quiet(r.campaign_granted())
    index = r.node.propose_conf_change(cc((REMOVE, 2)))
    (cc_append,) = r.flush()
    r.node.propose(b"hello")
    r.flush()
    assert r.node.commit == index - 1
    r.step(accept(cc_append))  # node 2 acknowledges the removal only
    assert r.node.conf_state.voters == frozenset({1})
    assert r.node.commit == index + 1
    assert r.applied[-1] == Entry(1, index + 1, b"hello")


def test_add_node_check_quorum() -> None:
    """CheckQuorum: a leader does not step down the moment it gains a voter it has not heard from
    yet; it does an election timeout after it last heard from a quorum.

    etcd: TestAddNodeCheckQuorum. Here the new voter, promoted from learner, goes down at once.
    """
    net = Net.fresh([1], learners=[2])
    net.elect(1)
    net.nodes[1].propose_conf_change(cc((ADD_V, 2)))
    net.settle()
    net.crash(2)
    net.tick(ET - 1)
    assert net.nodes[1].is_leader
    net.tick()
    assert net.nodes[1].role == Role.FOLLOWER


@pytest.mark.parametrize("by", ["timeout", "transfer"])
def test_conf_change_check_before_campaign(by: str) -> None:
    """§6: a replica does not campaign while a committed conf change is not applied yet (it may
    change who votes), neither on a timeout nor on a transfer's TIMEOUT_NOW; once applied, it does.

    etcd: TestConfChangeCheckBeforeCampaign (on one replica, whose driver has not yet handed the
    committed entry to the application).
    """
    r = Replica.of(2, (1, 2, 3))
    r.follow(1, 1)
    change = Entry(1, 1, cc((REMOVE, 3)).encode(), EntryType.CONF_CHANGE)
    r.node.step(Message(MT.APP, 1, 2, term=1, entries=(change,), commit=1))
    rd = r.node.ready()
    assert rd.committed_entries == (change,)
    hup = Message(MT.TIMEOUT_NOW, 1, 2, term=1)
    if by == "timeout":
        for _ in range(3 * ET):
            r.node.tick()
    else:
        r.node.step(hup)
    assert r.node.role == Role.FOLLOWER
    r.node.advance(rd)
    r.flush()
    if by == "timeout":
        r.tick(2 * ET)
    else:
        r.step(hup)
    assert r.node.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)


# -- joint configurations: who may campaign --------------------------------------------------------


def _joint_storage(extra: int) -> MemoryStorage:
    """Bootstrapped inside a joint configuration that demotes 2 and 3, with ``extra`` entries more."""
    joint = ConfState(
        voters=frozenset({1, 4}),
        voters_outgoing=frozenset({1, 2, 3}),
        learners_next=frozenset({2, 3}),
        auto_leave=True,
    )
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMeta(index=1, term=1, conf_state=joint)))
    st.append(ents(*[1] * extra, start=2))
    return st


def test_demoted_voters_holding_the_longest_log_can_still_be_elected() -> None:
    """Joint C({1,2,3}, {1,4}) demoting 2 and 3 (``learners_next``): they still vote in the outgoing half,
    and when they hold the longest log (here an entry at index 2 that 1 and 4 lack; in the simulator,
    the leader's leave-joint entry) only they can win its majority. If they may not campaign, nobody is
    ever elected (etcd lets them: their progress is not a learner's until the joint configuration is left).
    Found by the simulator's `even` profile (seed 43): the core excluded them from campaigning.
    """
    short, long = _joint_storage(0), _joint_storage(1)
    net = Net([1, 2, 3, 4], storages={1: short, 2: long, 3: _joint_storage(1), 4: _joint_storage(0)})
    assert long.last_index() == 2 and short.last_index() == 1
    leader = net.wait_leader(max_ticks=20 * ET)
    # Only 2 or 3 can win the outgoing half; once elected, the leader may leave the joint
    # configuration and (demoted itself) hand over to 1 or 4 at once: any leader will do.
    assert net.nodes[leader].log_view().last_index() >= 2
