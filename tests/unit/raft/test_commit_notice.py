"""How a leader tells its followers a new commit index (docs/decisions.md D30).

etcd's raft sends every follower an append each time the commit index moves, empty when there
is nothing else to send. Ours sends the index with the next append that has entries, or at the
next tick to a follower no append or heartbeat told; a committed configuration change is still
told at once (a removed member hears nothing once the leader applies its removal).
"""

from __future__ import annotations

from node.raft import ConfChange, ConfChangeSingle, ConfChangeType, Message, MessageType
from support.raft_net import Net, Replica, accept

MT = MessageType


def leader(size: int = 3) -> Replica:
    r = Replica.of(1, range(1, size + 1))
    r.ack_until_quiet(r.campaign_granted())
    assert r.node.is_leader and r.node.commit == 1
    return r


def apps(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.type == MT.APP]


def leader_that_committed(data: bytes) -> Replica:
    """A leader whose followers both acknowledged ``data`` (index 2), not yet told it is committed."""
    r = leader()
    r.node.propose(data)
    r.step(*(accept(m) for m in r.flush()))
    assert r.node.commit == 2
    return r


def test_acknowledgements_that_commit_send_nothing_until_the_next_tick() -> None:
    r = leader()
    r.node.propose(b"a")
    sent = r.flush()
    # Both acknowledgements in one batch: the index moves once per ack quorum, told once.
    out = r.step(*(accept(m) for m in sent))
    assert r.node.commit == 2
    assert out == []
    told = apps(r.tick())
    assert [(m.dst, m.commit, m.entries) for m in told] == [(2, 2, ()), (3, 2, ())]
    # Told once: the next tick has nothing more to say.
    assert apps(r.tick()) == []


def test_an_append_with_entries_carries_the_index_and_the_tick_adds_nothing() -> None:
    r = leader_that_committed(b"a")
    r.node.propose(b"b")
    carried = apps(r.flush())
    assert [(m.dst, m.commit, len(m.entries)) for m in carried] == [(2, 2, 1), (3, 2, 1)]
    assert apps(r.tick()) == []


def test_a_commit_one_follower_made_travels_to_both_with_the_next_appends() -> None:
    r = leader_that_committed(b"a")
    # Follower 2 answers the next append; 3 never answers it.
    r.node.propose(b"b")
    to2 = [m for m in apps(r.flush()) if m.dst == 2]
    r.step(accept(to2[0]))  # commit 3 needs 1 and 2 only
    assert r.node.commit == 3
    r.node.propose(b"c")
    carried = apps(r.flush())
    assert [(m.dst, m.commit, len(m.entries)) for m in carried] == [(2, 3, 1), (3, 3, 1)]
    assert apps(r.tick()) == []


def test_a_committed_configuration_change_is_told_at_once() -> None:
    r = leader(size=3)
    r.node.propose_conf_change(ConfChange((ConfChangeSingle(ConfChangeType.REMOVE_NODE, 3),)))
    sent = r.flush()
    out = r.step(*(accept(m) for m in sent if m.dst == 2))
    assert r.node.commit == 2
    # Sent in the same batch as the commit, before the leader applies the removal (after which
    # node 3 is no longer a member it sends to; 2 hears again of the new configuration).
    assert {(m.dst, m.commit) for m in apps(out)} == {(2, 2), (3, 2)}


def test_followers_apply_by_the_next_tick_without_further_writes() -> None:
    net = Net.fresh((1, 2, 3))
    net.elect(1)
    idx = net.nodes[1].propose(b"x")
    net.settle()
    assert net.nodes[1].commit == idx
    assert all(net.nodes[i].commit < idx for i in (2, 3))  # not told yet
    net.tell_commit(1)
    assert all(net.nodes[i].commit == idx for i in (2, 3))
    assert all(net.applied[i][-1] == b"x" for i in (2, 3))
