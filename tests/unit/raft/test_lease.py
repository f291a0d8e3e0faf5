"""Leader leases (thesis §6.4.1) and what may end them early.

A lease lets a leader answer reads without a message round while a quorum's acknowledgements
are recent: followers promise not to vote for anyone else for an election timeout after they
heard the leader. Some votes do not keep that promise, by design (a leadership transfer's
target is elected at once), and the leader that caused them must then stop trusting its lease.
"""

from __future__ import annotations

from node.raft import Message, MessageType
from support.raft_net import Net

MT = MessageType
ET = 10  # Config's default election_tick


class _TransferNet(Net):
    """Drops everything sent to replica 1 once it has told its transfer target to campaign."""

    timeout_now_sent = False

    def _delivers(self, m: Message) -> bool:
        if m.type == MT.TIMEOUT_NOW and m.src == 1:
            self.timeout_now_sent = True
        if self.timeout_now_sent and m.dst == 1:
            return False
        return super()._delivers(m)


def test_no_lease_after_an_abandoned_transfer_whose_target_was_told_to_campaign() -> None:
    """A stale LEASE read after an abandoned leadership transfer.

    Followers grant a transfer target's vote in spite of their lease promise. The old leader used
    to distrust its lease only while the transfer was under way; once the transfer timed out it
    trusted the lease again, built from acknowledgements its followers gave before they voted
    for the target, and answered a lease read that missed a write the new leader had committed.
    A leader that has sent TimeoutNow in a term trusts no lease again in that term.
    """
    net = _TransferNet([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"x=old")
    net.settle()
    net.dropped.add((1, 2))  # 2 stops hearing from 1 (one way), so it falls behind
    net.nodes[1].propose(b"y")
    net.settle()
    assert net.nodes[2].commit < net.nodes[1].commit

    net.nodes[1].transfer_leader(2)  # 2 lags: the leader first tries to bring it up to date
    net.tick(3)  # 3 keeps acknowledging 1 meanwhile: the lease is fresh
    net.dropped.discard((1, 2))
    net.tick()  # 2 catches up, 1 sends TimeoutNow; from now on nothing reaches 1
    assert net.timeout_now_sent
    net.settle()
    assert net.nodes[2].is_leader and net.nodes[2].term == net.nodes[1].term + 1
    net.nodes[2].propose(b"x=new")
    net.settle()
    net.tell_commit(2)
    new_commit = net.nodes[2].commit
    assert net.nodes[3].commit == new_commit

    old = net.nodes[1]
    assert old.is_leader and old.term < net.nodes[2].term  # deposed without knowing it
    for _ in range(2 * ET):  # the transfer is abandoned after an election timeout
        assert old.lease_read_index() is None, (
            f"deposed leader 1 (term {old.term}, commit {old.commit}) answers a lease read; "
            f"leader 2 committed {new_commit} in term {net.nodes[2].term}"
        )
        net.tick_alone(1)
    assert old.status().lead_transferee == 0  # the transfer was abandoned on the way


def test_the_lease_holds_again_in_a_later_term() -> None:
    """Distrusting the lease is for the term of the transfer only: a leader elected later leases."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.nodes[1].transfer_leader(2)
    net.settle()
    assert net.nodes[2].is_leader
    net.nodes[2].transfer_leader(1)
    net.settle()
    assert net.nodes[1].is_leader
    net.tick()
    assert net.nodes[1].lease_read_index() == net.nodes[1].commit
