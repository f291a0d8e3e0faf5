"""Leadership transfer (Ongaro's thesis §3.10): the leader brings the target up to date, then tells
it to campaign at once (TIMEOUT_NOW); proposals are refused meanwhile, and an unfinished transfer
is abandoned after an election timeout.

Ported, in our own words, from the TestLeaderTransfer* tests of etcd-io/raft's ``raft_test.go``.
Differences: ``RawNode.transfer_leader`` is called on the leader (etcd also accepts the request on
a follower and forwards it); it raises for a target that is not a voter (etcd ignores it); and the
target's vote requests are marked ``transfer``, so followers grant them despite their lease of
the current leader (our leases are always on).
"""

from __future__ import annotations

import pytest

from node.raft import (
    NONE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
)
from support.raft_net import Net, Replica

MT = MessageType
ET = 10
VOTERS3 = (1, 2, 3)


def assert_transfer_state(net: Net, i: int, role: Role, lead: int) -> None:
    """Replica ``i`` has ``role`` under leader ``lead``, and no transfer is under way at it."""
    n = net.nodes[i]
    assert (n.role, n.leader, n.status().lead_transferee) == (role, lead, NONE)


def pending_transfer_to_isolated_3() -> Net:
    """Leader 1 transferring to node 3, which is cut off: the transfer hangs."""
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leader(3)
    net.settle()
    assert net.nodes[1].status().lead_transferee == 3
    return net


@pytest.mark.parametrize("check_quorum", [True, False], ids=["lease", "no-lease"])
def test_leader_transfer_to_up_to_date_node(check_quorum: bool) -> None:
    """Thesis §3.10: a transfer to an up-to-date voter makes it leader at once, and back again.

    etcd: TestLeaderTransferToUpToDateNode / TestLeaderTransferWithCheckQuorum (the followers'
    lease of the old leader does not stand in the way).
    """
    net = Net.fresh(VOTERS3, check_quorum=check_quorum)
    net.elect(1)
    net.nodes[1].transfer_leader(2)
    net.settle()
    assert_transfer_state(net, 1, Role.FOLLOWER, 2)
    assert net.nodes[2].is_leader
    net.nodes[2].propose(b"")
    net.settle()
    net.nodes[2].transfer_leader(1)
    net.settle()
    assert_transfer_state(net, 1, Role.LEADER, 1)


def test_leader_transfer_requested_at_a_follower() -> None:
    """A follower asked to transfer leadership refuses, naming the leader to ask.

    etcd: TestLeaderTransferToUpToDateNodeFromFollower (etcd forwards the request instead).
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    with pytest.raises(NotLeaderError) as err:
        net.nodes[2].transfer_leader(2)
    assert err.value.leader == 1


def node_3_behind() -> Net:
    """Leader 1 of term 1 that appended an entry while node 3 was cut off (now reachable again)."""
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].propose(b"")
    net.settle()
    net.heal()
    assert net.nodes[1].status().progress[3].match == 1
    return net


def test_leader_transfer_to_slow_follower() -> None:
    """Thesis §3.10: the leader first brings a lagging target up to date, then hands over.

    etcd: TestLeaderTransferToSlowFollower.
    """
    net = node_3_behind()
    net.nodes[1].transfer_leader(3)
    net.settle()
    assert_transfer_state(net, 1, Role.FOLLOWER, 3)
    assert net.log(3) == net.log(1)


def test_leader_transfer_after_snapshot() -> None:
    """Thesis §3.10: a target that needs entries the leader compacted away gets the snapshot first.

    etcd: TestLeaderTransferAfterSnapshot.
    """
    net = node_3_behind()
    net.compact(1)
    net.nodes[1].transfer_leader(3)
    net.settle()
    assert net.storages[3].snapshot().meta.index == 2
    assert_transfer_state(net, 1, Role.FOLLOWER, 3)


def test_leader_transfer_to_self() -> None:
    """A transfer to the leader itself does nothing.

    etcd: TestLeaderTransferToSelf.
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.nodes[1].transfer_leader(1)
    net.settle()
    assert_transfer_state(net, 1, Role.LEADER, 1)


def test_leader_transfer_to_non_existing_node() -> None:
    """A transfer to a replica that is not a voter is refused, and the leader stays.

    etcd: TestLeaderTransferToNonExistingNode (etcd ignores the request).
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    with pytest.raises(ProposalDroppedError, match="not a voter"):
        net.nodes[1].transfer_leader(4)
    assert_transfer_state(net, 1, Role.LEADER, 1)


def test_leader_transfer_timeout() -> None:
    """Thesis §3.10: a transfer that has not completed within an election timeout is abandoned.

    etcd: TestLeaderTransferTimeout.
    """
    net = pending_transfer_to_isolated_3()
    net.tick(ET - 1)
    assert net.nodes[1].status().lead_transferee == 3
    net.tick()
    assert_transfer_state(net, 1, Role.LEADER, 1)


def test_leader_transfer_ignore_proposal() -> None:
    """Thesis §3.10: while a transfer is under way the leader refuses proposals (the target is
    about to take over), conf changes included.

    etcd: TestLeaderTransferIgnoreProposal.
    """
    net = pending_transfer_to_isolated_3()
    last = net.nodes[1].log_view().last_index()
    with pytest.raises(ProposalDroppedError, match="transfer"):
        net.nodes[1].propose(b"")
    with pytest.raises(ProposalDroppedError, match="transfer"):
        net.nodes[1].propose_conf_change(ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, 3),)))
    assert net.nodes[1].log_view().last_index() == last


def test_leader_transfer_receive_higher_term_vote() -> None:
    """§5.1: a leader in the middle of a transfer that sees a newer term steps down; the transfer
    dies with its leadership.

    etcd: TestLeaderTransferReceiveHigherTermVote (without leases, as there: with them the leader
    would ignore node 2's campaign).
    """
    net = Net.fresh(VOTERS3, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leader(3)
    net.campaign(2)
    assert_transfer_state(net, 1, Role.FOLLOWER, 2)


@pytest.mark.parametrize(
    "change",
    [
        (ConfChangeSingle(ConfChangeType.REMOVE_NODE, 3),),
        (ConfChangeSingle(ConfChangeType.ADD_LEARNER, 3),),
    ],
    ids=["remove", "demote"],
)
def test_leader_transfer_to_removed_or_demoted_node(change: tuple[ConfChangeSingle, ...]) -> None:
    """A transfer whose target stops being a voter is abandoned when that change is applied.

    etcd: TestLeaderTransferRemoveNode / TestLeaderTransferDemoteNode. The change must have been
    proposed before the transfer started (proposals are refused during one), and the TIMEOUT_NOW
    is lost so that the transfer is still pending when the change applies.
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChange(change))
    net.nodes[1].transfer_leader(3)
    net.ignore(MT.TIMEOUT_NOW)
    net.settle()
    assert 3 not in net.nodes[1].conf_state.voters
    assert_transfer_state(net, 1, Role.LEADER, 1)


@pytest.mark.parametrize(
    ("target", "role", "lead"), [(1, Role.LEADER, 1), (2, Role.FOLLOWER, 2)], ids=["back", "another"]
)
def test_leader_transfer_second_request(target: int, role: Role, lead: int) -> None:
    """A second transfer request replaces a pending one: to the leader itself it cancels it, to
    another voter it goes there instead.

    etcd: TestLeaderTransferBack / TestLeaderTransferSecondTransferToAnotherNode.
    """
    net = pending_transfer_to_isolated_3()
    net.nodes[1].transfer_leader(target)
    net.settle()
    assert_transfer_state(net, 1, role, lead)


def test_leader_transfer_second_transfer_to_same_node() -> None:
    """Asking again for the same pending transfer does not extend its deadline.

    etcd: TestLeaderTransferSecondTransferToSameNode.
    """
    net = pending_transfer_to_isolated_3()
    net.tick(1)
    net.nodes[1].transfer_leader(3)
    net.tick(ET - 1)
    assert_transfer_state(net, 1, Role.LEADER, 1)


def test_transfer_non_member() -> None:
    """§6: a TIMEOUT_NOW reaching a replica that is not a voter in its own view starts nothing,
    and vote grants it never asked for do not make it leader.

    etcd: TestTransferNonMember.
    """
    r = Replica.of(1, (2, 3, 4))
    assert r.step(Message(MT.TIMEOUT_NOW, 2, 1, term=0)) == []
    r.step(Message(MT.VOTE_RESP, 2, 1, term=0), Message(MT.VOTE_RESP, 3, 1, term=0))
    assert r.node.role == Role.FOLLOWER


def test_transfer_vote_passes_the_lease() -> None:
    """Leases: a follower that just heard from its leader ignores ordinary candidates, but grants
    the vote of a transfer target (``transfer`` set), which the leader itself asked for.

    Tessera's form of etcd's ``campaignTransfer`` context.
    """
    r = Replica.of(1, VOTERS3)
    r.follow(1, 2)
    assert r.step(Message(MT.VOTE, 3, 1, term=2)) == []
    assert r.step(Message(MT.VOTE, 3, 1, term=2, transfer=True)) == [Message(MT.VOTE_RESP, 1, 3, term=2)]
