"""Log replication and commitment beyond the paper's sentences (Raft paper §5.3, §5.4.2).

Ported, in our own words, from etcd-io/raft's ``raft_test.go`` (each test names its Go original).
A leader here counts its own log only once the driver reports it persisted, and its commit index
moves only for entries of its own term; followers answer every append with the index they now
hold (``APP_RESP``) or a refusal with a back-off hint.
"""

from __future__ import annotations

import pytest

from node.raft import Entry, HardState, Message, MessageType, NotLeaderError, Role
from support.raft_net import Net, Replica, accept, ents

MT = MessageType
VOTERS3 = (1, 2, 3)


# -- in a group ----------------------------------------------------------------------------------


def test_log_replication() -> None:
    """§5.3: proposals reach every replica's state machine, in order, across a change of leader.

    etcd: TestLogReplication (both cases in one run). The second leader is elected without
    leases, which would otherwise keep the followers loyal to the first.
    """
    net = Net.fresh(VOTERS3, check_quorum=False)
    net.elect(1)
    net.nodes[1].propose(b"one")
    net.settle()
    net.tell_commit(1)
    assert [net.nodes[i].commit for i in VOTERS3] == [2, 2, 2]
    net.elect(2)
    net.nodes[2].propose(b"two")
    net.settle()
    net.tell_commit(2)
    assert [net.nodes[i].commit for i in VOTERS3] == [4, 4, 4]
    assert all(net.applied[i] == [b"one", b"two"] for i in VOTERS3)


def test_single_node_commit() -> None:
    """§5.3: a lone voter commits each entry as soon as it has persisted it.

    etcd: TestSingleNodeCommit.
    """
    r = Replica.of(1, [1])
    r.node.campaign()
    r.flush()
    r.node.propose(b"some data")
    r.node.propose(b"some data")
    r.flush()
    assert r.node.commit == 3


@pytest.mark.parametrize("appends_lost", [True, False], ids=["appends-lost", "appends-delivered"])
def test_commit_needs_an_entry_of_the_new_term(appends_lost: bool) -> None:
    """§5.4.2: entries a deposed leader left on a minority commit under the next leader only once an
    entry of the new leader's term is replicated on a majority (its empty first entry does it).

    etcd: TestCannotCommitWithoutNewTermEntry / TestCommitWithoutNewTermEntry. Without leases, so
    that node 2 can be elected while the others still heard from node 1.
    """
    net = Net.fresh(range(1, 6), check_quorum=False)
    net.elect(1)
    for j in (3, 4, 5):
        net.cut(1, j)
    net.nodes[1].propose(b"some data")
    net.nodes[1].propose(b"some data")
    net.settle()
    assert net.nodes[1].commit == 1
    net.heal()
    if appends_lost:
        net.ignore(MT.APP)
    net.elect(2)
    assert net.nodes[2].commit == (1 if appends_lost else 4)
    if appends_lost:
        net.heal()
        net.tick()  # heartbeat answers tell the leader who lags; it sends them its log
        net.nodes[2].propose(b"some data")
        net.settle()
        assert net.nodes[2].commit == 5


@pytest.mark.parametrize(
    ("size", "down", "ok"),
    [(3, (), True), (3, (3,), True), (3, (2, 3), False), (4, (2, 3), False), (5, (2, 3), True)],
)
def test_proposal(size: int, down: tuple[int, ...], ok: bool) -> None:
    """§5.3: a proposal commits once a majority of the group can be reached; without one there is no
    leader, and a proposal is refused with NotLeaderError (etcd drops it).

    etcd: TestProposal. (TestProposalByProxy does not apply: a follower refuses proposals, naming
    the leader, instead of forwarding them; see test_rawnode.py.)
    """
    net = Net.fresh(range(1, size + 1))
    for i in down:
        net.crash(i)
    net.campaign(1)
    if ok:
        net.nodes[1].propose(b"somedata")
        net.settle()
    else:
        with pytest.raises(NotLeaderError):
            net.nodes[1].propose(b"somedata")
    want = [Entry(1, 1), Entry(1, 2, b"somedata")] if ok else []
    for i in net.nodes:
        assert net.log(i) == want, i
    assert net.nodes[1].term == (1 if ok else 0)


# -- the leader's commit rule --------------------------------------------------------------------


COMMIT = [
    # (match index of each voter, the leader first; its log's terms from index 1; its term; commit)
    ((1,), (1,), 1, 1),
    ((1,), (1,), 2, 0),
    ((2,), (1, 2), 2, 2),
    ((1,), (2,), 2, 1),
    ((2, 1, 1), (1, 2), 1, 1),
    ((2, 1, 1), (1, 1), 2, 0),
    ((2, 1, 2), (1, 2), 2, 2),
    ((2, 1, 2), (1, 1), 2, 0),
    ((2, 1, 1, 1), (1, 2), 1, 1),
    ((2, 1, 1, 1), (1, 1), 2, 0),
    ((2, 1, 1, 2), (1, 2), 1, 1),
    ((2, 1, 1, 2), (1, 1), 2, 0),
    ((2, 1, 2, 2), (1, 2), 2, 2),
    ((2, 1, 2, 2), (1, 1), 2, 0),
]


@pytest.mark.parametrize(("matches", "terms", "term", "commit"), COMMIT)
def test_commit(matches: tuple[int, ...], terms: tuple[int, ...], term: int, commit: int) -> None:
    """§5.3/§5.4.2: the commit index is the highest index a majority of voters hold, provided its
    entry is of the leader's current term.

    etcd: TestCommit. White-box: the table sets arbitrary match indexes, the leader's own among
    them, in a term the replica never campaigned in; only the tracker can be put in such states.
    """
    r = Replica.of(1, range(1, len(matches) + 1), entries=ents(*terms), hard_state=HardState(term=term))
    raft = r.node._raft
    for i, match in enumerate(matches, start=1):
        raft.trk.progress[i].match = match
    raft._maybe_commit()
    assert r.node.commit == commit


# -- a follower's side ---------------------------------------------------------------------------


HANDLE_APP = [
    # (previous index, its term, commit, new entries' terms) -> (last index, commit, refused)
    ((2, 3, 3, ()), (2, 0, True)),  # the previous entry has another term
    ((3, 3, 3, ()), (2, 0, True)),  # there is no previous entry
    ((1, 1, 1, ()), (2, 1, False)),
    ((0, 0, 1, (2,)), (1, 1, False)),  # a conflict at 1 truncates the follower's log
    ((2, 2, 3, (2, 2)), (4, 3, False)),
    ((2, 2, 4, (2,)), (3, 3, False)),  # commit: no further than the last new entry
    ((1, 1, 4, (2,)), (2, 2, False)),
    ((1, 1, 3, ()), (2, 1, False)),  # the commit stops at the last entry the leader vouched for
    ((1, 1, 3, (2,)), (2, 2, False)),
    ((2, 2, 3, ()), (2, 2, False)),
    ((2, 2, 4, ()), (2, 2, False)),
]


@pytest.mark.parametrize(("append", "outcome"), HANDLE_APP)
def test_handle_msg_app(append: tuple[int, int, int, tuple[int, ...]], outcome: tuple[int, int, bool]) -> None:
    """§5.3, AppendEntries receiver rules: (1) refuse if the log has no entry at the previous index
    with the previous term; (2) delete a conflicting entry and all after it, append what is new;
    (3) set the commit index to min(leader's commit, index of the last new entry).

    etcd: TestHandleMsgApp. The follower holds entries of terms 1 and 2 and follows term 2.
    """
    index, log_term, commit, terms = append
    r = Replica.of(1, VOTERS3, entries=ents(1, 2), hard_state=HardState(term=2))
    new = tuple(ents(*terms, start=index + 1))
    out = r.step(Message(MT.APP, 2, 1, term=2, index=index, log_term=log_term, commit=commit, entries=new))
    last, want_commit, refused = outcome
    assert (r.node.log_view().last_index(), r.node.commit) == (last, want_commit)
    # An acceptance names the last index the leader vouched for, a refusal the probed one.
    assert [(m.type, m.reject, m.index) for m in out] == [(MT.APP_RESP, refused, index + (0 if refused else len(new)))]


@pytest.mark.parametrize(("commit", "want"), [(3, 3), (1, 2)])
def test_handle_heartbeat(commit: int, want: int) -> None:
    """§5.3: a heartbeat moves a follower's commit index forward, never back, and is answered with
    the context and stamp it carried.

    etcd: TestHandleHeartbeat.
    """
    r = Replica.of(1, (1, 2), entries=ents(1, 2, 3), hard_state=HardState(term=2, commit=2))
    out = r.step(Message(MT.HEARTBEAT, 2, 1, term=2, commit=commit, context=b"c", stamp=7))
    assert r.node.commit == want
    assert out == [Message(MT.HEARTBEAT_RESP, 1, 2, term=2, context=b"c", stamp=7)]


# -- a leader's side -----------------------------------------------------------------------------


def test_handle_heartbeat_resp() -> None:
    """§5.3: a heartbeat answer from a follower that lags makes the leader send it an append, each
    time; once the follower has caught up, heartbeat answers cause nothing.

    etcd: TestHandleHeartbeatResp.
    """
    r = Replica.of(1, (1, 2), entries=ents(1, 2, 3), hard_state=HardState(term=3, commit=3))
    r.campaign_granted()
    beat_resp = Message(MT.HEARTBEAT_RESP, 2, 1, term=4)
    for _ in range(2):
        out = r.step(beat_resp)
        assert [(m.type, m.index, len(m.entries)) for m in out] == [(MT.APP, 3, 1)]
    r.step(accept(out[0]))
    assert r.node.commit == 4
    assert r.step(beat_resp) == []


def test_msg_app_resp_wait_reset() -> None:
    """§5.3 with flow control: a follower probed once waits for its answer before getting more; an
    answer resumes it.

    etcd: TestMsgAppRespWaitReset. Node 2 answers the election's probe and gets the next entry at
    once; node 3 gets it only when it answers too.
    """
    r = Replica.of(1, VOTERS3)
    r.campaign_granted()
    r.step(Message(MT.APP_RESP, 2, 1, term=1, index=1))
    assert r.node.commit == 1
    r.node.propose(b"")
    assert r.flush() == [Message(MT.APP, 1, 2, term=1, index=1, log_term=1, entries=(Entry(1, 2),), commit=1)]
    out = r.step(Message(MT.APP_RESP, 3, 1, term=1, index=1))
    assert out == [Message(MT.APP, 1, 3, term=1, index=1, log_term=1, entries=(Entry(1, 2),), commit=1)]


@pytest.mark.parametrize(
    ("index", "reject", "match", "next_", "sent"),
    [
        (3, True, 0, 3, []),  # a stale refusal: nothing changes
        (2, True, 0, 2, [(1, 0)]),  # a refusal: back off and probe one lower
        (2, False, 2, 4, [(2, 2)]),  # an acceptance: commit (index 2 is of term 1) and send the rest
    ],
)
def test_leader_app_resp(index: int, reject: bool, match: int, next_: int, sent: list[tuple[int, int]]) -> None:
    """§5.3: how a leader's view of a follower moves on its answers.

    etcd: TestLeaderAppResp. The leader holds [t1, t1] and its term-1 empty entry at 3; it probed
    both followers at 2 when elected. Only node 2 answers, so only node 2 is sent more (node 3
    waits for its probe's answer). (index, commit) of what is sent is listed.
    """
    r = Replica.of(1, VOTERS3, entries=ents(1, 1))
    r.campaign_granted()
    out = r.step(Message(MT.APP_RESP, 2, 1, term=1, index=index, reject=reject, reject_hint=index))
    pr = r.node.status().progress[2]
    assert (pr.match, pr.next) == (match, next_)
    assert [(m.index, m.commit) for m in out] == sent
    assert all(m.type == MT.APP and m.dst == 2 for m in out)


def test_probe_answered_at_match_resumes_replication() -> None:
    """§5.3 with flow control: a follower in probe state that answers at exactly its known match
    has told the leader where their logs agree; the leader moves it to replicate and sends it the
    rest of the log.

    etcd: the last row of TestLeaderAppResp (``pr.Match == m.Index && pr.State == StateProbe``).
    Found by this port: the core returned early when the answer did not raise the match, so the
    follower stayed paused in probe.
    """
    r = Replica.of(1, VOTERS3, entries=ents(1, 1))
    r.campaign_granted()
    out = r.step(Message(MT.APP_RESP, 2, 1, term=1, index=0))
    pr = r.node.status().progress[2]
    assert (pr.state, pr.match, pr.next) == ("replicate", 0, 4)
    assert [(m.type, m.index, len(m.entries)) for m in out] == [(MT.APP, 0, 3)]


def test_leader_msg_app_self_ack_after_term_change() -> None:
    """A leader counts its own entries only once persisted; if it was deposed meanwhile, the
    persist completing later counts for nothing.

    etcd: TestLeaderMsgAppSelfAckAfterTermChange (there the self-acknowledgement is a message of
    the old term; here it is ``advance`` on a Ready taken while leader).
    """
    r = Replica.of(1, VOTERS3)
    r.campaign_granted()
    r.node.propose(b"somedata")
    rd = r.node.ready()
    r.node.step(Message(MT.HEARTBEAT, 2, 1, term=2))
    assert r.node.role == Role.FOLLOWER
    r.node.advance(rd)
    assert (r.node.role, r.node.term, r.node.commit) == (Role.FOLLOWER, 2, 0)


def test_log_replication_with_reordered_message() -> None:
    """§5.3: appends may arrive out of order; the follower refuses the one that comes early, and
    when that stale refusal reaches the leader after it fell back to probing, the leader probes
    again from the follower's known match rather than from the refusal's lower hint.

    etcd: TestLogReplicationWithReorderedMessage.
    """
    r1 = Replica.of(1, (1, 2))
    r2 = Replica.of(2, (1, 2))
    r1.step(*r2.step(*r1.campaign_granted()))  # node 2 holds the empty entry: match 1
    r1.node.propose(b"a")
    (req1,) = r1.flush()
    r1.node.propose(b"b")
    (req2,) = r1.flush()
    (resp2,) = r2.step(req2)
    assert (resp2.reject, resp2.index, resp2.reject_hint) == (True, 2, 1)
    (resp1,) = r2.step(req1)
    assert (resp1.reject, resp1.index) == (False, 2)
    r1.step(resp1)
    assert r1.node.status().progress[2].match == 2
    r1.node.report_unreachable(2)
    assert r1.node.status().progress[2].state == "probe"
    (probe,) = r1.step(resp2)
    assert (probe.type, probe.index) == (MT.APP, 2)


FAST_REJECTION = [
    # (leader's terms, follower's terms) -> (hint index, hint term, next probe's index and term)
    ((1, 2, 2, 4, 4, 4, 4), (1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), (7, 3, 3, 2)),
    ((1, 2, 2, 3, 4, 4, 4, 5), (1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), (8, 3, 4, 3)),
    ((1, 1, 1, 1), (1, 2, 2, 4), (1, 1, 1, 1)),
    ((1, 1, 1, 1, 1, 1), (1, 2, 2, 4), (1, 1, 1, 1)),
    ((1, 1, 1, 1), (1, 2, 2, 4, 4, 4), (1, 1, 1, 1)),
    ((1, 1, 1, 4, 5), (1, 1, 1, 4), (4, 4, 4, 4)),
    ((2, 5, 5, 5, 5, 5, 5, 5, 5), (2, 4, 4, 4, 4, 4), (6, 4, 1, 2)),
    ((2, 2, 2, 2, 2), (2, 4, 4, 4, 4, 4, 4, 4), (1, 2, 1, 2)),
]


@pytest.mark.parametrize(("leader_terms", "follower_terms", "want"), FAST_REJECTION)
def test_fast_log_rejection(
    leader_terms: tuple[int, ...], follower_terms: tuple[int, ...], want: tuple[int, int, int, int]
) -> None:
    """§5.3's optimization: a follower refusing an append names the last entry that may match (at
    or below the probed index, of a term no newer than the probed one) and its term; the leader
    skips every entry of a newer term than that, so a divergent log is found in one round trip
    per term, not per entry.

    etcd: TestFastLogRejection (without its compacted-follower case, which needs a log whose
    commit index lies below its compaction point: not a state our storage admits).
    """
    last = len(leader_terms)
    r1 = Replica.of(
        1, VOTERS3, entries=ents(*leader_terms), hard_state=HardState(term=leader_terms[-1] - 1, commit=last)
    )
    r1.campaign_granted()
    r2 = Replica.of(2, VOTERS3, entries=ents(*follower_terms), hard_state=HardState(term=leader_terms[-1], vote=1))
    (beat_resp,) = r2.step(Message(MT.HEARTBEAT, 1, 2, term=r1.node.term))
    (probe,) = r1.step(beat_resp)
    assert probe.type == MT.APP
    (refusal,) = r2.step(probe)
    hint, hint_term, next_index, next_term = want
    assert (refusal.reject, refusal.reject_hint, refusal.log_term) == (True, hint, hint_term)
    (again,) = r1.step(refusal)
    assert (again.index, again.log_term) == (next_index, next_term)
