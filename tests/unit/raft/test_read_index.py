"""Linearizable reads without log writes (Ongaro's thesis §6.4): ReadIndex and leader leases.

Ported, in our own words, from the TestReadOnly* tests of etcd-io/raft's ``raft_test.go``. A read
is answered with the leader's commit index once a heartbeat round has confirmed it still leads
(``read_index``), or at once while its lease holds (``lease=True`` / ``lease_read_index``); a
follower forwards the request to the leader. A new leader answers no read before it has committed
an entry of its own term (until then its commit index may lag its predecessor's).
"""

from __future__ import annotations

import pytest

from node.raft import HardState, Message, MessageType, NotLeaderError, ReadState
from support.raft_net import FixedRand, Net, Replica, ents, storage_with

MT = MessageType
ET = 10
VOTERS3 = (1, 2, 3)


@pytest.mark.parametrize("lease", [False, True], ids=["read-index", "lease"])
def test_read_only_option(lease: bool) -> None:
    """Thesis §6.4: a read asked at any replica is answered at the leader's commit index.

    etcd: TestReadOnlyOptionSafe / TestReadOnlyOptionLease. With ``lease`` the leader answers its
    own reads at once; followers' reads always take a heartbeat round at the leader.
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    for k, reader in enumerate([1, 2, 3, 1, 2, 3]):
        for _ in range(10):
            net.nodes[1].propose(b"")
        net.settle()
        ctx = b"ctx%d" % k
        net.nodes[reader].read_index(ctx, lease=lease)
        net.settle()
        assert net.reads[reader][-1] == ReadState(index=11 + 10 * k, context=ctx)


def test_read_only_with_learner() -> None:
    """Thesis §6.4: a learner's read is forwarded and answered like a follower's; a lone voter
    confirms its own reads.

    etcd: TestReadOnlyWithLearner.
    """
    net = Net.fresh([1], learners=[2])
    net.elect(1)
    for k, reader in enumerate([1, 2, 1, 2]):
        for _ in range(10):
            net.nodes[1].propose(b"")
        net.settle()
        ctx = b"ctx%d" % k
        net.nodes[reader].read_index(ctx)
        net.settle()
        assert net.reads[reader][-1] == ReadState(index=11 + 10 * k, context=ctx)


def test_read_only_for_new_leader() -> None:
    """Thesis §6.4 step 1: a new leader holds reads back until it has committed an entry of its
    term, then answers them (at its new commit index).

    etcd: TestReadOnlyForNewLeader. Node 1 wins while knowing only commit 1 (the others know 2);
    its appends are lost, so it commits nothing in its term. All three restarted from persisted
    state, so their quiet period passes first.
    """
    storages = {
        i: storage_with(VOTERS3, entries=ents(1, 1), hard_state=HardState(term=1, commit=commit))
        for i, commit in ((1, 1), (2, 2), (3, 2))
    }
    net = Net(VOTERS3, storages=storages, rand=FixedRand(ET - 1))
    net.tick(ET)
    net.ignore(MT.APP)
    net.elect(1)
    net.nodes[1].read_index(b"ctx")
    net.settle()
    assert net.reads[1] == []
    assert net.nodes[1].lease_read_index() is None
    net.heal()
    net.tick()  # heartbeat answers show the followers lag: the empty entry of term 2 goes out
    assert net.nodes[1].commit == 3
    assert net.reads[1] == [ReadState(index=3, context=b"ctx")]
    net.nodes[1].propose(b"")
    net.settle()
    net.nodes[1].read_index(b"ctx2")
    net.settle()
    assert net.reads[1][-1] == ReadState(index=4, context=b"ctx2")


def test_raft_frees_read_only_mem() -> None:
    """Thesis §6.4 step 3: once a quorum has answered the heartbeat carrying a read's context, the
    read is answered and forgotten.

    etcd: TestRaftFreesReadOnlyMem. White-box for the forgetting (the pending reads are not on
    the public surface).
    """
    r = Replica.of(1, (1, 2))
    r.ack_until_quiet(r.campaign_granted())
    (beat,) = r.step(Message(MT.READ_INDEX, 2, 1, term=1, context=b"ctx"))
    # The round's context is the leader's own sequence number, never the client's (see
    # test_read_only_duplicate_request); the answer carries the client's back.
    assert (beat.type, beat.dst) == (MT.HEARTBEAT, 2) and beat.context and beat.context != b"ctx"
    assert len(r.node._raft.read_only) == 1
    out = r.step(Message(MT.HEARTBEAT_RESP, 2, 1, term=1, context=beat.context))
    assert out == [Message(MT.READ_INDEX_RESP, 1, 2, term=1, index=1, context=b"ctx")]
    assert len(r.node._raft.read_only) == 0


def test_lease_read_index_needs_a_live_lease() -> None:
    """Thesis §6.4.1: a leader answers reads from its lease only while a quorum acknowledged one of
    its heartbeats recently enough; ticks with no acknowledgement end the lease.
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    lead = net.nodes[1]
    assert lead.lease_read_index() == lead.commit == 1
    net.isolate(1)
    for _ in range(ET - 2):  # the default lease: election_tick - 2 ticks from the last quorum ack
        assert lead.lease_read_index() == 1
        lead.tick()
    assert lead.lease_read_index() is None


def test_read_index_without_a_known_leader() -> None:
    """Thesis §6.4: a replica that knows no leader cannot serve a read; it says so at once."""
    r = Replica.of(1, VOTERS3)
    with pytest.raises(NotLeaderError):
        r.node.read_index(b"ctx")
    r.node.campaign()
    with pytest.raises(NotLeaderError):
        r.node.read_index(b"ctx")


def test_read_only_duplicate_request() -> None:
    """Thesis §6.4 step 3: a read may be answered only on heartbeat answers to a round sent after
    it was asked; answers to an earlier round prove nothing about leadership at the time of the
    read.

    etcd: TestReadOnlyDuplicateRequest. Read A is confirmed (late answers to its first heartbeat
    round are held back); node 1 is cut off and node 2 takes over and commits; read B is asked at
    the stale node 1; then a duplicate of request A and the held answers reach node 1. B must
    not be answered: node 1 is no longer leader, and its commit index is below node 2's.

    Found by this port: the heartbeat context was the client's read context, and a pending read
    was keyed by it, so the duplicate A queued anew behind B took the old answers carrying
    context A as acknowledgements, and confirming A released B at the stale commit index. The
    leader now sends a sequence number of its own as each round's context (node/raft/readonly.py).
    Without CheckQuorum, as in etcd's test; with it, node 1's clock must run slow for the same.
    """
    net = Net.fresh(VOTERS3, check_quorum=False)
    net.elect(1)
    request_a = Message(MT.READ_INDEX, 2, 1, term=1, context=b"A")
    net.hold(MT.HEARTBEAT_RESP)
    net.send(request_a)
    net.heal()
    net.tick()  # the next heartbeat round confirms A
    assert [m.type for m in net.held] == [MT.HEARTBEAT_RESP, MT.HEARTBEAT_RESP]
    assert net.reads[2] == [ReadState(index=1, context=b"A")]
    net.isolate(1)
    net.elect(2)
    net.nodes[2].propose(b"someOp")
    net.settle()
    assert net.nodes[2].commit == 3
    net.nodes[1].read_index(b"B")
    net.settle()
    net.heal()
    net.deliver([request_a, *net.held])
    net.settle()
    assert net.reads[1] == []
