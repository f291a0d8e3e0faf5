"""The Raft paper, section by section: each test pins down what a few of its sentences require.

A port, in our own words, of etcd-io/raft's ``raft_paper_test.go`` (one test per Go test, named
after it), against "In Search of an Understandable Consensus Algorithm" (Ongaro & Ousterhout,
extended version). Each test sets a replica up through the public surface (``Replica`` in
``support.raft_net``: a RawNode with its storage, the test playing the driver), steps or ticks
it, and checks the exact messages it sends and the state it ends in.

Where Tessera's core differs from etcd's on purpose, the test says so. The recurring points:

* PreVote is on by default, so a timed-out replica first canvasses at ``term + 1`` without
  changing its term; tests of the paper's plain election run with ``pre_vote=False`` and have
  a PreVote twin where the outcome differs.
* CheckQuorum and leases are on by default: a replica that heard from a leader within an
  election timeout ignores other candidates, and so does a replica restarted from a persisted
  hard state for its first ``election_tick`` ticks.
* A leader counts its own log only once the driver reports it persisted (``advance``), and it
  may send its appends before that (``Ready.messages_before_persist``).
* Every append and heartbeat carries the leader's tick counter (``stamp``), which followers echo.
"""

from __future__ import annotations

import random

import pytest

from node.raft import NONE, Entry, HardState, Message, MessageType, Role
from support.raft_net import PAPER, Net, Replica, accept, ents, enum_id, storage_with

MT = MessageType
ET = 10  # the default election_tick
VOTERS3 = (1, 2, 3)


# =============================================================================================
# §5.1 Raft basics
# =============================================================================================


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER], ids=enum_id)
def test_update_term_from_message(role: Role) -> None:
    """§5.1: a server that sees a larger term adopts it; a candidate or leader reverts to follower.

    etcd: Test{Follower,Candidate,Leader}UpdateTermFromMessage (we add the pre-candidate).
    An append proves a leader exists in the new term, so its sender becomes the known leader.
    """
    r = Replica.of(1, VOTERS3)
    r.put_in(role)
    r.step(Message(MT.APP, 2, 1, term=2))
    assert (r.node.role, r.node.term, r.node.leader) == (Role.FOLLOWER, 2, 2)


def test_reject_stale_term_message() -> None:
    """§5.1: a server that receives a request with a stale term rejects it.

    etcd: TestRejectStaleTermMessage. An append or heartbeat of an older term changes nothing;
    the answer carries our term so that the deposed leader learns it was superseded (etcd sends
    the same answer when CheckQuorum or PreVote is on, and is otherwise silent). A stale vote
    request gets no answer; a stale pre-vote gets a rejection with our term.
    """
    r = Replica.of(1, VOTERS3, hard_state=HardState(term=2))
    stale_append = Message(MT.APP, 2, 1, term=1, entries=(Entry(1, 1, b"x"),), commit=1)
    assert r.step(stale_append) == [Message(MT.APP_RESP, 1, 2, term=2)]
    assert r.step(Message(MT.HEARTBEAT, 3, 1, term=1, commit=1)) == [Message(MT.APP_RESP, 1, 3, term=2)]
    assert r.step(Message(MT.VOTE, 3, 1, term=1, index=5, log_term=1)) == []
    assert r.step(Message(MT.PRE_VOTE, 3, 1, term=1, index=5, log_term=1)) == [
        Message(MT.PRE_VOTE_RESP, 1, 3, term=2, reject=True)
    ]
    assert r.log() == [] and r.node.commit == 0
    assert (r.node.role, r.node.term, r.node.leader, r.node.hard_state().vote) == (Role.FOLLOWER, 2, NONE, NONE)


# =============================================================================================
# §5.2 Leader election
# =============================================================================================


def test_start_as_follower() -> None:
    """§5.2: when servers start up, they begin as followers (a restarted one keeps its term and vote).

    etcd: TestStartAsFollower.
    """
    fresh = Replica.of(1, VOTERS3)
    assert (fresh.node.role, fresh.node.term, fresh.node.leader) == (Role.FOLLOWER, 0, NONE)
    restarted = Replica.of(1, VOTERS3, hard_state=HardState(term=4, vote=3))
    assert (restarted.node.role, restarted.node.term, restarted.node.leader) == (Role.FOLLOWER, 4, NONE)
    assert restarted.node.hard_state() == HardState(term=4, vote=3)


@pytest.mark.parametrize("heartbeat_tick", [1, 3])
def test_leader_bcast_beat(heartbeat_tick: int) -> None:
    """§5.2: leaders send periodic heartbeats (AppendEntries that carry no entries) to all followers.

    etcd: TestLeaderBcastBeat. A heartbeat goes out every ``heartbeat_tick`` ticks, names no log
    position, and carries the commit index capped at what the follower is known to hold (nothing
    here: no follower answered yet), and the leader's clock as its stamp.
    """
    r = Replica.of(1, VOTERS3, heartbeat_tick=heartbeat_tick)
    r.campaign_granted()
    r.node.propose_batch([b"%d" % i for i in range(10)])
    r.flush()
    for _ in range(heartbeat_tick - 1):
        assert r.tick() == []
    assert r.tick() == [
        Message(MT.HEARTBEAT, 1, 2, term=1, commit=0, stamp=heartbeat_tick),
        Message(MT.HEARTBEAT, 1, 3, term=1, commit=0, stamp=heartbeat_tick),
    ]


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE], ids=enum_id)
def test_nonleader_start_election(role: Role, pre_vote: bool) -> None:
    """§5.2: a follower that hears nothing for an election timeout starts an election: it increments
    its term, becomes a candidate, votes for itself and asks every other server for its vote; a
    candidate that neither wins nor loses times out and starts a new election the same way.

    etcd: Test{Follower,Candidate}StartElection / testNonleaderStartElection. With PreVote (our
    default) the timed-out replica first becomes a pre-candidate: it keeps its term and vote and
    asks for pre-votes at ``term + 1``. ``2 * election_tick - 1`` ticks hold exactly one timeout
    whatever the randomized timeout drew.
    """
    r = Replica.of(1, VOTERS3, rand=random.Random(7), pre_vote=pre_vote)
    if role == Role.FOLLOWER:
        r.follow(1, 2)
    else:
        r.to_candidate()
        assert r.node.term == 1
    out = r.tick(2 * ET - 1)
    if pre_vote:
        assert (r.node.role, r.node.term) == (Role.PRE_CANDIDATE, 1)
        kind = MT.PRE_VOTE
    else:
        assert (r.node.role, r.node.term, r.node.hard_state().vote) == (Role.CANDIDATE, 2, 1)
        kind = MT.VOTE
    assert out == [Message(kind, 1, 2, term=2), Message(kind, 1, 3, term=2)]


# (cluster size, answers by voter, the outcome of a plain election)
ONE_ROUND = [
    # a majority grants: leader
    (1, {}, Role.LEADER),
    (3, {2: True, 3: True}, Role.LEADER),
    (3, {2: True}, Role.LEADER),
    (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
    (5, {2: True, 3: True, 4: True}, Role.LEADER),
    (5, {2: True, 3: True}, Role.LEADER),
    # a majority refuses: back to follower
    (3, {2: False, 3: False}, Role.FOLLOWER),
    (5, {2: False, 3: False, 4: False, 5: False}, Role.FOLLOWER),
    (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
    # neither: still a candidate
    (3, {}, Role.CANDIDATE),
    (5, {2: True}, Role.CANDIDATE),
    (5, {2: False, 3: False}, Role.CANDIDATE),
    (5, {}, Role.CANDIDATE),
]


@pytest.mark.parametrize(("size", "votes", "outcome"), ONE_ROUND)
def test_leader_election_in_one_round_rpc(size: int, votes: dict[int, bool], outcome: Role) -> None:
    """§5.2: a candidate wins once a majority grants, returns to follower once a majority refuses,
    and otherwise stays a candidate.

    etcd: TestLeaderElectionInOneRoundRPC. A refusal carries the voter's term, here the
    candidate's (the voter adopted it on seeing the request).
    """
    r = Replica.of(1, range(1, size + 1), **PAPER)
    r.node.campaign()
    r.flush()
    r.step(*(Message(MT.VOTE_RESP, v, 1, term=1, reject=not ok) for v, ok in votes.items()))
    assert (r.node.role, r.node.term) == (outcome, 1)


@pytest.mark.parametrize(("size", "votes", "outcome"), ONE_ROUND)
def test_pre_election_in_one_round_rpc(size: int, votes: dict[int, bool], outcome: Role) -> None:
    """§5.2 under PreVote (Ongaro's thesis §9.6): the same tally decides the pre-election, at no cost
    in terms: a won pre-election makes a candidate of ``term + 1`` (a lone voter goes on to lead),
    a lost or undecided one leaves the term alone.

    etcd: the PreVote side of TestLeaderElectionPreVote, on the one-round table. A pre-vote
    refusal carries the voter's own term (0: it changes nothing on a pre-vote).
    """
    r = Replica.of(1, range(1, size + 1))
    r.node.campaign()
    r.flush()
    r.step(*(Message(MT.PRE_VOTE_RESP, v, 1, term=1 if ok else 0, reject=not ok) for v, ok in votes.items()))
    expected = {
        Role.LEADER: (Role.LEADER, 1) if size == 1 else (Role.CANDIDATE, 1),
        Role.FOLLOWER: (Role.FOLLOWER, 0),
        Role.CANDIDATE: (Role.PRE_CANDIDATE, 0),
    }[outcome]
    assert (r.node.role, r.node.term) == expected


@pytest.mark.parametrize(
    ("vote", "candidate", "reject"),
    [(NONE, 2, False), (NONE, 3, False), (2, 2, False), (3, 3, False), (2, 3, True), (3, 2, True)],
)
def test_follower_vote(vote: int, candidate: int, reject: bool) -> None:
    """§5.2: each server votes for at most one candidate in a given term, first come first served
    (asked again by the candidate it voted for, it says yes again).

    etcd: TestFollowerVote. The vote is part of the persisted hard state, so the answer leaves
    only after the write (``messages_after_persist``).
    """
    r = Replica.of(1, VOTERS3, hard_state=HardState(term=1, vote=vote))
    r.node.step(Message(MT.VOTE, candidate, 1, term=1))
    rd = r.node.ready()
    assert rd.messages_before_persist == ()
    assert rd.messages_after_persist == (Message(MT.VOTE_RESP, 1, candidate, term=1, reject=reject),)
    assert r.node.hard_state().vote == (vote if reject else candidate)


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_fallback(term: int) -> None:
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at least its own
    recognizes that leader and returns to follower.

    etcd: TestCandidateFallback.
    """
    r = Replica.of(1, VOTERS3)
    r.to_candidate()
    r.step(Message(MT.APP, 2, 1, term=term))
    assert (r.node.role, r.node.term, r.node.leader) == (Role.FOLLOWER, term, 2)


def ticks_until_campaign(r: Replica) -> int:
    elapsed = 0
    while True:
        elapsed += 1
        if r.tick():
            return elapsed
        assert elapsed < 3 * ET


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE], ids=enum_id)
def test_election_timeout_randomized(role: Role) -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval, here
    ``[election_tick, 2 * election_tick)`` ticks: every value occurs, and no other.

    etcd: Test{Follower,Candidate}ElectionTimeoutRandomized. The candidate runs without PreVote
    so that each campaign starts a new term.
    """
    r = Replica.of(1, VOTERS3, rand=random.Random(3), pre_vote=role != Role.CANDIDATE)
    timeouts = set()
    for _ in range(50 * ET):
        if role == Role.FOLLOWER:
            r.follow(r.node.term + 1, 2)
        else:
            r.node.campaign()
            r.flush()
        timeouts.add(ticks_until_campaign(r))
    assert timeouts == set(range(ET, 2 * ET))


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE], ids=enum_id)
def test_election_timeouts_nonconflict(role: Role) -> None:
    """§5.2: randomized timeouts spread the servers out, so that in most cases only one times out
    first, wins, and sends heartbeats before the others time out.

    etcd: Test{Followers,Candidates}ElectionTimeoutNonconflict: five replicas reset together,
    then ticked together; in at most 30% of 1000 rounds do several time out on the same tick.
    A follower is reset by a message of a newer term from no leader (a stale vote refusal is the
    plainest such message); a candidate by campaigning again (without PreVote, so it does).
    """
    ids = range(1, 6)
    rs = [Replica.of(i, ids, rand=random.Random(100 + i), pre_vote=role != Role.CANDIDATE) for i in ids]
    conflicts = 0
    for _ in range(1000):
        for r in rs:
            if role == Role.FOLLOWER:
                r.step(Message(MT.VOTE_RESP, 9, r.node.id, term=r.node.term + 1, reject=True))
            else:
                r.node.campaign()
                r.flush()
        timed_out = 0
        while not timed_out:
            for r in rs:
                r.node.tick()
                if r.node.has_ready():
                    timed_out += 1
                    r.flush()
        conflicts += timed_out > 1
    assert conflicts <= 300, conflicts


# =============================================================================================
# §5.3 Log replication
# =============================================================================================


def leader_with_committed_noop(size: int = 3) -> Replica:
    """A leader of term 1 whose empty first entry (index 1) every follower has acknowledged."""
    r = Replica.of(1, range(1, size + 1))
    r.ack_until_quiet(r.campaign_granted())
    assert r.node.commit == 1
    return r


def test_leader_start_replication() -> None:
    """§5.3: the leader appends a client command to its log as a new entry, then sends AppendEntries
    to every other server in parallel, naming the index and term of the entry just before the new
    ones; the new entry is also written to stable storage.

    etcd: TestLeaderStartReplication. Ours sends the appends before its own write completes:
    they are in ``messages_before_persist``, beside the entry the driver must persist.
    """
    r = leader_with_committed_noop()
    li = r.node.log_view().last_index()
    assert r.node.propose(b"some data") == li + 1
    rd = r.node.ready()
    new = Entry(term=1, index=li + 1, data=b"some data")
    assert rd.entries == (new,)
    assert rd.messages_before_persist == (
        Message(MT.APP, 1, 2, term=1, index=li, log_term=1, entries=(new,), commit=li),
        Message(MT.APP, 1, 3, term=1, index=li, log_term=1, entries=(new,), commit=li),
    )
    assert rd.messages_after_persist == ()
    assert (r.node.log_view().last_index(), r.node.commit) == (li + 1, li)


def test_leader_commit_entry() -> None:
    """§5.3: once the leader has replicated an entry on a majority it is committed and applied; the
    leader then tells the followers the new commit index in its next AppendEntries: here (nothing
    else to send) at its next tick, where etcd sends them at once (docs/decisions.md D30).

    etcd: TestLeaderCommitEntry.
    """
    r = leader_with_committed_noop()
    li = r.node.log_view().last_index()
    r.node.propose(b"some data")
    apps = r.flush()
    out = r.step(*(accept(m) for m in apps))
    assert r.node.commit == li + 1
    assert r.applied[-1] == Entry(term=1, index=li + 1, data=b"some data")
    assert out == []
    assert [m for m in r.tick() if m.type == MT.APP] == [
        Message(MT.APP, 1, 2, term=1, index=li + 1, log_term=1, commit=li + 1, stamp=1),
        Message(MT.APP, 1, 3, term=1, index=li + 1, log_term=1, commit=li + 1, stamp=1),
    ]


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, set(), False),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_leader_acknowledge_commit(size: int, acceptors: set[int], committed: bool) -> None:
    """§5.3: an entry is committed once the leader that created it has replicated it on a majority
    of the servers (the leader counts itself once it has persisted the entry).

    etcd: TestLeaderAcknowledgeCommit.
    """
    r = leader_with_committed_noop(size)
    li = r.node.log_view().last_index()
    r.node.propose(b"some data")
    r.step(*(accept(m) for m in r.flush() if m.dst in acceptors))
    assert (r.node.commit > li) == committed


@pytest.mark.parametrize("previous", [[], ents(2), ents(1, 2), ents(1)], ids=["none", "t2", "t1t2", "t1"])
def test_leader_commit_preceding_entries(previous: list[Entry]) -> None:
    """§5.3: when the leader commits an entry it also commits every entry before it in its log,
    including those created by earlier leaders, and applies them in log order.

    etcd: TestLeaderCommitPrecedingEntries. The leader of term 3 commits its own empty entry and
    a command; everything before them commits with them.
    """
    r = Replica.of(1, VOTERS3, entries=previous, hard_state=HardState(term=2))
    out = r.campaign_granted()
    assert r.node.term == 3
    r.node.propose(b"some data")
    r.ack_until_quiet(out + r.flush())
    li = len(previous)
    assert r.applied == previous + [Entry(3, li + 1), Entry(3, li + 2, b"some data")]


@pytest.mark.parametrize(
    ("entries", "commit"),
    [
        ([Entry(1, 1, b"some data")], 1),
        ([Entry(1, 1, b"some data"), Entry(1, 2, b"some data2")], 2),
        ([Entry(1, 1, b"some data2"), Entry(1, 2, b"some data")], 2),
        ([Entry(1, 1, b"some data"), Entry(1, 2, b"some data2")], 1),
    ],
)
def test_follower_commit_entry(entries: list[Entry], commit: int) -> None:
    """§5.3: once a follower learns that a log entry is committed, it applies it (in log order).

    etcd: TestFollowerCommitEntry.
    """
    r = Replica.of(1, VOTERS3)
    r.follow(1, 2)
    r.step(Message(MT.APP, 2, 1, term=1, entries=tuple(entries), commit=commit))
    assert r.node.commit == commit
    assert r.applied == entries[:commit]


@pytest.mark.parametrize(
    ("log_term", "index", "answer_index", "reject", "hint", "hint_term"),
    [
        (0, 0, 1, False, 0, 0),  # matches below the commit index: answered with the commit index
        (1, 1, 1, False, 0, 0),  # matches the committed entry
        (2, 2, 2, False, 0, 0),  # matches the uncommitted entry
        (1, 2, 2, True, 1, 1),  # an entry there, of another term
        (3, 3, 3, True, 2, 2),  # no entry there at all
    ],
)
def test_follower_check_msg_app(
    log_term: int, index: int, answer_index: int, reject: bool, hint: int, hint_term: int
) -> None:
    """§5.3: a follower that has no entry at the index and term the AppendEntries names before its
    new entries refuses them; otherwise it accepts.

    etcd: TestFollowerCheckMsgApp. A refusal carries a hint for the leader's back-off (§5.3's
    optimization): the last index at or below the probed one whose term is at most the probed
    term, and that entry's term.
    """
    r = Replica.of(1, VOTERS3, entries=ents(1, 2), hard_state=HardState(commit=1))
    r.follow(2, 2)
    out = r.step(Message(MT.APP, 2, 1, term=2, log_term=log_term, index=index))
    assert out == [
        Message(MT.APP_RESP, 1, 2, term=2, index=answer_index, reject=reject, reject_hint=hint, log_term=hint_term)
    ]


@pytest.mark.parametrize(
    ("index", "log_term", "entries", "log", "unstable"),
    [
        (2, 2, ents(3, start=3), ents(1, 2, 3), ents(3, start=3)),
        (1, 1, ents(3, 4, start=2), ents(1, 3, 4), ents(3, 4, start=2)),
        (0, 0, ents(1), ents(1, 2), []),
        (0, 0, ents(3), ents(3), ents(3)),
    ],
)
def test_follower_append_entries(
    index: int, log_term: int, entries: list[Entry], log: list[Entry], unstable: list[Entry]
) -> None:
    """§5.3: on a valid AppendEntries a follower deletes any existing entry that conflicts with a new
    one, and everything after it, and appends the new entries it lacks; it writes them to stable
    storage (they are the Ready's ``entries``).

    etcd: TestFollowerAppendEntries.
    """
    r = Replica.of(1, VOTERS3, entries=ents(1, 2))
    r.follow(2, 2)
    r.node.step(Message(MT.APP, 2, 1, term=2, log_term=log_term, index=index, entries=tuple(entries)))
    assert r.log() == log
    assert list(r.node.ready().entries) == unstable


FIGURE_7_LEADER = ents(1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7_FOLLOWERS = {
    "a": ents(1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": ents(1, 1, 1, 4),
    "c": ents(1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": ents(1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": ents(1, 1, 1, 4, 4, 4, 4),
    "f": ents(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_leader_sync_follower_log(case: str) -> None:
    """§5.3, Figure 7: whatever a follower's log holds (missing entries, extra uncommitted ones, or
    both), the leader brings it to match its own.

    etcd: TestLeaderSyncFollowerLog. The leader of term 8 (its log committed) wins term 9 with the
    vote of a third, empty replica: the follower may hold a newer log (c, d) and would refuse,
    and having restarted from a persisted term it ignores candidates for now anyway.
    """
    storages = {
        1: storage_with(VOTERS3, entries=FIGURE_7_LEADER, hard_state=HardState(term=8, commit=10)),
        2: storage_with(VOTERS3, entries=FIGURE_7_FOLLOWERS[case], hard_state=HardState(term=7)),
        3: storage_with(VOTERS3),
    }
    net = Net(VOTERS3, storages=storages)
    net.elect(1)
    assert net.nodes[1].term == 9
    net.nodes[1].propose(b"")
    net.settle()
    assert net.log(1) == FIGURE_7_LEADER + ents(9, 9, start=11)
    assert net.log(2) == net.log(1) and net.log(3) == net.log(1)


# =============================================================================================
# §5.4 Safety
# =============================================================================================


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
@pytest.mark.parametrize(("log", "term"), [(ents(1), 2), (ents(1, 2), 3)])
def test_vote_request(log: list[Entry], term: int, pre_vote: bool) -> None:
    """§5.4.1: RequestVote carries the index and term of the candidate's last log entry, and goes to
    every other server.

    etcd: TestVoteRequest. A follower of term ``term - 1`` receives ``log``, then times out.
    """
    r = Replica.of(1, VOTERS3, pre_vote=pre_vote)
    r.step(Message(MT.APP, 2, 1, term=term - 1, entries=tuple(log)))
    out = r.tick(2 * ET - 1)
    kind = MT.PRE_VOTE if pre_vote else MT.VOTE
    last = log[-1]
    assert out == [
        Message(kind, 1, 2, term=term, index=last.index, log_term=last.term),
        Message(kind, 1, 3, term=term, index=last.index, log_term=last.term),
    ]


VOTER_TABLE = [
    # same last term: the longer (or equal) log wins
    (ents(1), 1, 1, False),
    (ents(1), 1, 2, False),
    (ents(1, 1), 1, 1, True),
    # the candidate's last term is newer
    (ents(1), 2, 1, False),
    (ents(1), 2, 2, False),
    (ents(1, 1), 2, 1, False),
    # the voter's last term is newer
    (ents(2), 1, 1, True),
    (ents(2), 1, 2, True),
    (ents(2, 2), 1, 1, True),
]


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
@pytest.mark.parametrize(("log", "log_term", "index", "reject"), VOTER_TABLE)
def test_voter(log: list[Entry], log_term: int, index: int, reject: bool, kind: MessageType) -> None:
    """§5.4.1: a voter denies its vote if its own log is more up-to-date than the candidate's: the
    later last term wins, and with equal last terms the longer log.

    etcd: TestVoter. The same rule decides pre-votes. A grant carries the requested term; a
    refusal the voter's (which a real vote made 3, a pre-vote left at 0).
    """
    r = Replica.of(1, (1, 2), entries=log)
    out = r.step(Message(kind, 2, 1, term=3, log_term=log_term, index=index))
    resp = MT.VOTE_RESP if kind == MT.VOTE else MT.PRE_VOTE_RESP
    own_term = 3 if kind == MT.VOTE else 0
    assert out == [Message(resp, 1, 2, term=own_term if reject else 3, reject=reject)]


def test_voter_check_is_what_fails_without_the_up_to_date_rule() -> None:
    """§5.4.1: the refusal above is the voting restriction and nothing else: with the known
    ``vote-ignores-log`` bug injected, the same request from a shorter log is granted."""
    r = Replica.of(1, (1, 2), entries=ents(2, 2), mutation="vote-ignores-log")
    assert r.step(Message(MT.VOTE, 2, 1, term=3, log_term=1, index=1)) == [Message(MT.VOTE_RESP, 1, 2, term=3)]


@pytest.mark.parametrize(("acked", "commit"), [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_log_from_current_term(acked: int, commit: int) -> None:
    """§5.4.2 (Figure 8): a leader never commits an entry of an earlier term by counting replicas;
    only an entry of its current term commits that way, and everything before it with it.

    etcd: TestLeaderOnlyCommitsLogFromCurrentTerm. Two voters, the log holds entries of terms 1
    and 2; the leader of term 3 appends its empty entry at 3 and a command at 4; the follower
    acknowledges up to ``acked``.
    """
    r = Replica.of(1, (1, 2), entries=ents(1, 2), hard_state=HardState(term=2))
    r.campaign_granted()
    r.node.propose(b"")
    r.flush()
    r.step(Message(MT.APP_RESP, 2, 1, term=3, index=acked))
    assert r.node.commit == commit


def test_commit_previous_term_mutation_breaks_figure_8() -> None:
    """§5.4.2: the rule above is what the ``commit-previous-term`` bug removes: with it injected, a
    follower's acknowledgement of the term-2 entry commits it."""
    r = Replica.of(1, (1, 2), entries=ents(1, 2), hard_state=HardState(term=2), mutation="commit-previous-term")
    r.campaign_granted()
    r.flush()
    r.step(Message(MT.APP_RESP, 2, 1, term=3, index=2))
    assert r.node.commit == 2
