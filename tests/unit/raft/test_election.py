"""Elections beyond the paper's sentences: whole-group scenarios, PreVote, CheckQuorum and leases.

Ported, in our own words, from etcd-io/raft's ``raft_test.go`` (each test names its Go original).
Sections cite the Raft paper (§5.2 election, §5.4.1 the voting restriction, §6 membership) and
Ongaro's thesis for PreVote (§9.6) and for leader stickiness / CheckQuorum (§6.2, §9.6).

Tessera's differences from etcd that shape these tests: PreVote and CheckQuorum are on by
default; a follower that heard from a leader within ``election_tick`` ticks ignores every other
candidate (etcd does so only with CheckQuorum, we always have it), and so does a replica that
restarted from a persisted hard state, for its first ``election_tick`` ticks (it may have
promised a lease before it went down). Tests of the plain algorithm turn both off (``PAPER``).
"""

from __future__ import annotations

import pytest

from node.raft import NONE, Entry, HardState, Message, MessageType, Role
from support.raft_net import PAPER, FixedRand, Net, Replica, ents, enum_id, storage_with

MT = MessageType
ET = 10  # the default election_tick
VOTERS3 = (1, 2, 3)

ROLES = [Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER]


# -- elections in a group ------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
@pytest.mark.parametrize(
    ("size", "down", "outcome"),
    [
        (3, (), Role.LEADER),
        (3, (3,), Role.LEADER),
        (3, (2, 3), Role.CANDIDATE),
        (4, (2, 3), Role.CANDIDATE),
        (5, (2, 3), Role.LEADER),
    ],
)
def test_leader_election(size: int, down: tuple[int, ...], outcome: Role, pre_vote: bool) -> None:
    """§5.2: a candidate wins with the votes of a majority of the whole group, not of those up.

    etcd: TestLeaderElection / TestLeaderElectionPreVote. Without a majority up the campaign
    hangs: a plain candidate in the new term, a pre-candidate in the old one.
    """
    net = Net.fresh(range(1, size + 1), **(PAPER | {"pre_vote": pre_vote}))
    for i in down:
        net.crash(i)
    net.campaign(1)
    if outcome == Role.CANDIDATE and pre_vote:
        assert (net.nodes[1].role, net.nodes[1].term) == (Role.PRE_CANDIDATE, 0)
    else:
        assert (net.nodes[1].role, net.nodes[1].term) == (outcome, 1)


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
def test_leader_election_refused_by_newer_logs(pre_vote: bool) -> None:
    """§5.4.1: three of five voters hold a newer log than the candidate (in the same term): they
    refuse, and the candidate returns to follower.

    etcd: the last case of TestLeaderElection(PreVote). Their term 1 is persisted: they are
    restarted replicas, but a request of their own term is answered even so. Under PreVote the
    first refusal, carrying term 1, already makes the pre-candidate of term 0 a follower of term 1.
    """
    ids = range(1, 6)
    newer = {2: ents(1), 3: ents(1), 4: ents(1, 1)}
    storages = {i: storage_with(ids, entries=log, hard_state=HardState(term=1)) for i, log in newer.items()}
    net = Net.fresh(ids, **(PAPER | {"pre_vote": pre_vote}))
    for i, st in storages.items():
        net.start(i, st)
    net.campaign(1)
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.FOLLOWER, 1)


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
def test_leader_cycle(pre_vote: bool) -> None:
    """§5.2: elections work from any state, not only a clean start: each voter in turn campaigns
    and wins, the others following.

    etcd: TestLeaderCycle / TestLeaderCyclePreVote. Without CheckQuorum: with it (our default) a
    follower that just heard from its leader ignores the challenger, and handing leadership
    over takes a transfer (see ``test_transfer.py`` and ``test_leader_superseding_with_check_quorum``).
    """
    net = Net.fresh(VOTERS3, **(PAPER | {"pre_vote": pre_vote}))
    for campaigner in VOTERS3:
        net.campaign(campaigner)
        assert net.roles() == {i: Role.LEADER if i == campaigner else Role.FOLLOWER for i in VOTERS3}
    assert net.terms() == {1: 3, 2: 3, 3: 3}


@pytest.mark.parametrize("pre_vote", [False, True], ids=["plain", "prevote"])
def test_leader_election_overwrite_newer_logs(pre_vote: bool) -> None:
    """§5.3/§5.4: a newly elected leader may lack the newest (highest-term) entries, which were never
    committed; the followers' conflicting entries are then overwritten with the leader's.

    etcd: TestLeaderElectionOverwriteNewerLogs(PreVote). Node 1 led term 1 and gave its entry to
    node 2; node 3 led term 2 and kept its entry to itself; nodes 4 and 5 voted for 3 in term 2.
    Node 1's first campaign fails (three voters know term 2, and 3's log is newer) but teaches it
    term 2; its second wins term 3. All five restarted from persisted state, so first their
    quiet period passes (long election timeouts keep them from campaigning meanwhile).
    """
    ids = range(1, 6)
    storages = {
        1: storage_with(ids, entries=ents(1), hard_state=HardState(term=1)),
        2: storage_with(ids, entries=ents(1), hard_state=HardState(term=1)),
        3: storage_with(ids, entries=ents(2), hard_state=HardState(term=2)),
        4: storage_with(ids, hard_state=HardState(term=2, vote=3)),
        5: storage_with(ids, hard_state=HardState(term=2, vote=3)),
    }
    net = Net(ids, storages=storages, rand=FixedRand(ET - 1), pre_vote=pre_vote)
    net.tick(ET)
    net.campaign(1)
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.FOLLOWER, 2)
    net.campaign(1)
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.LEADER, 3)
    for i in ids:
        assert net.log(i) == [Entry(1, 1), Entry(3, 2)], i


def test_single_node_candidate() -> None:
    """§5.2: a lone voter is its own majority: campaigning makes it leader at once (PreVote too).

    etcd: TestSingleNodeCandidate / TestSingleNodePreCandidate.
    """
    for pre_vote in (False, True):
        r = Replica.of(1, [1], pre_vote=pre_vote)
        r.node.campaign()
        assert (r.node.role, r.node.term) == (Role.LEADER, 1)


def test_campaign_while_leader() -> None:
    """§5.2: a leader asked to campaign does nothing: it keeps its role and term.

    etcd: TestCampaignWhileLeader / TestPreCampaignWhileLeader.
    """
    for pre_vote in (False, True):
        r = Replica.of(1, [1], pre_vote=pre_vote)
        r.node.campaign()
        r.flush()
        r.node.campaign()
        assert (r.node.role, r.node.term, r.flush()) == (Role.LEADER, 1, [])


def duel(net: Net) -> Net:
    """Nodes 1 and 3, which cannot reach each other, campaign one after the other; node 2 hears both."""
    net.cut(1, 3)
    net.campaign(1)
    net.campaign(3)
    return net


def test_dueling_candidates() -> None:
    """§5.2/§5.4.1: two candidates of the same term split the voters; the one with a majority leads.
    The loser, campaigning again in a higher term, deposes the leader, but cannot win with its
    shorter log: everyone ends a follower of its term.

    etcd: TestDuelingCandidates (plain Raft, as there).
    """
    net = duel(Net.fresh(VOTERS3, **PAPER))
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.CANDIDATE}
    net.heal()
    net.campaign(3)
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.FOLLOWER, 3: Role.FOLLOWER}
    assert net.terms() == {1: 2, 2: 2, 3: 2}
    assert [net.nodes[i].log_view().last_index() for i in VOTERS3] == [1, 1, 0]


@pytest.mark.parametrize("check_quorum", [False, True], ids=["no-lease", "lease"])
def test_dueling_pre_candidates(check_quorum: bool) -> None:
    """PreVote (thesis §9.6): the losing pre-candidate, campaigning again, disrupts nobody: the
    leader keeps its term and role.

    etcd: TestDuelingPreCandidates. Node 2 refuses node 3's first pre-vote (it voted for 1 in that
    very term, so leases play no part) and its refusal makes 3 a follower of term 1. The second
    time the pre-vote is for term 2: without leases both refuse (3's log is behind) and 3 stays a
    follower; with leases neither answers (both just heard from leader 1) and 3 stays a
    pre-candidate until the leader's next heartbeat.
    """
    net = duel(Net.fresh(VOTERS3, check_quorum=check_quorum))
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.FOLLOWER}
    net.heal()
    net.campaign(3)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.PRE_CANDIDATE if check_quorum else Role.FOLLOWER}
    assert net.terms() == {1: 1, 2: 1, 3: 1}
    assert [net.nodes[i].log_view().last_index() for i in VOTERS3] == [1, 1, 0]
    net.tick()  # the leader's heartbeat
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.FOLLOWER}
    assert [net.nodes[i].log_view().last_index() for i in VOTERS3] == [1, 1, 1]


def test_candidate_concede() -> None:
    """§5.2: a candidate that hears AppendEntries from a leader of its own term concedes, and its
    log becomes the leader's.

    etcd: TestCandidateConcede (plain Raft: node 1 campaigns alone and hangs in term 1).
    """
    net = Net.fresh(VOTERS3, **PAPER)
    net.isolate(1)
    net.campaign(1)
    net.campaign(3)
    net.heal()
    net.nodes[3].propose(b"force follower")
    net.settle()
    net.tick()
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.FOLLOWER, 1)
    for i in VOTERS3:
        assert net.log(i) == [Entry(1, 1), Entry(1, 2, b"force follower")], i


@pytest.mark.parametrize("kind", [MT.HEARTBEAT, MT.APP], ids=enum_id)
def test_candidate_reset_term(kind: MessageType) -> None:
    """§5.1/§5.2: a candidate that hears a heartbeat or an append from a leader of a newer term
    becomes its follower and adopts that term.

    etcd: TestCandidateResetTermMsgHeartbeat / TestCandidateResetTermMsgApp (plain Raft: two more
    elections push the group to term 3 while node 3, cut off, times out into candidacy for term 2).
    """
    net = Net.fresh(VOTERS3, rand=FixedRand(0), **PAPER)
    net.elect(1)
    net.isolate(3)
    net.campaign(2)
    net.campaign(1)
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.LEADER, 3)
    net.tick_alone(3, ET)
    assert (net.nodes[3].role, net.nodes[3].term) == (Role.CANDIDATE, 2)
    net.heal()
    net.send(Message(kind, 1, 3, term=3))
    assert (net.nodes[3].role, net.nodes[3].term, net.nodes[3].leader) == (Role.FOLLOWER, 3, 1)


def test_old_messages() -> None:
    """§5.1: a message of an older term is ignored: an append from a deposed leader changes no log.

    etcd: TestOldMessages (plain Raft: three elections bring node 1 to lead term 3).
    """
    net = Net.fresh(VOTERS3, **PAPER)
    net.campaign(1)
    net.campaign(2)
    net.campaign(1)
    net.send(Message(MT.APP, 2, 1, term=2, index=2, log_term=2, entries=(Entry(2, 3),)))
    net.nodes[1].propose(b"somedata")
    net.settle()
    for i in VOTERS3:
        assert net.log(i) == [Entry(1, 1), Entry(2, 2), Entry(3, 3), Entry(3, 4, b"somedata")], i


# -- how a single replica answers ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
@pytest.mark.parametrize("role", ROLES, ids=enum_id)
def test_vote_from_any_state(role: Role, kind: MessageType) -> None:
    """§5.1/§5.2: whatever its role, a replica asked for its vote in a newer term by an up-to-date
    candidate grants it; a real vote makes it a follower of that term that voted for the
    candidate, a pre-vote changes nothing.

    etcd: TestVoteFromAnyState / TestPreVoteFromAnyState, without CheckQuorum: with it, see
    ``test_leased_replicas_ignore_candidates``. (PreVote stays on: it is how a replica gets to
    be a pre-candidate.)
    """
    r = Replica.of(1, VOTERS3, check_quorum=False)
    r.put_in(role)
    term, vote = r.node.term, r.node.hard_state().vote
    resp = MT.VOTE_RESP if kind == MT.VOTE else MT.PRE_VOTE_RESP
    request = Message(kind, 2, 1, term=term + 1, log_term=term + 1, index=42)
    assert r.step(request) == [Message(resp, 1, 2, term=term + 1)]
    if kind == MT.VOTE:
        assert (r.node.role, r.node.term, r.node.hard_state().vote) == (Role.FOLLOWER, term + 1, 2)
    else:
        assert (r.node.role, r.node.term, r.node.hard_state().vote) == (role, term, vote)


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
@pytest.mark.parametrize("role", ROLES, ids=enum_id)
def test_leased_replicas_ignore_candidates(role: Role, kind: MessageType) -> None:
    """Leader stickiness (thesis §6.2, §9.6): a follower that heard from its leader within an
    election timeout, and the leader itself, ignore a candidate of a newer term, whatever its
    log: no answer, no change. Replicas that know no leader answer as in ``test_vote_from_any_state``.

    Our default; etcd does the same with CheckQuorum on (its ``inLease``).
    """
    r = Replica.of(1, VOTERS3)
    r.put_in(role)
    before = (r.node.role, r.node.term, r.node.hard_state())
    out = r.step(Message(kind, 2, 1, term=r.node.term + 1, log_term=9, index=42))
    if role in (Role.FOLLOWER, Role.LEADER):
        assert (out, (r.node.role, r.node.term, r.node.hard_state())) == ([], before)
    else:
        assert [m.reject for m in out] == [False]


RECV_VOTE = [
    # a follower of term max(2, log_term) that has not voted; its log is [t2, t2]
    (0, 0, NONE, True),
    (0, 1, NONE, True),
    (0, 2, NONE, True),
    (0, 3, NONE, False),
    (1, 0, NONE, True),
    (1, 1, NONE, True),
    (1, 2, NONE, True),
    (1, 3, NONE, False),
    (2, 0, NONE, True),
    (2, 1, NONE, True),
    (2, 2, NONE, False),
    (2, 3, NONE, False),
    (3, 0, NONE, True),
    (3, 1, NONE, True),
    (3, 2, NONE, False),
    (3, 3, NONE, False),
    # it already voted in this term
    (3, 2, 2, False),
    (3, 2, 1, True),
]


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
@pytest.mark.parametrize(("index", "log_term", "voted_for", "reject"), RECV_VOTE)
def test_recv_msg_vote(index: int, log_term: int, voted_for: int, reject: bool, kind: MessageType) -> None:
    """§5.2/§5.4.1: a follower grants a (pre-)vote of its own term only if it has not voted for
    someone else in that term and the candidate's log is at least as up-to-date as its own.

    etcd: TestRecvMsgVote / TestRecvMsgPreVote (the follower rows; the other roles are
    ``test_recv_msg_vote_when_not_a_follower``).
    """
    term = max(2, log_term)
    r = Replica.of(1, VOTERS3, entries=ents(2, 2), hard_state=HardState(term=term, vote=voted_for))
    out = r.step(Message(kind, 2, 1, term=term, index=index, log_term=log_term))
    resp = MT.VOTE_RESP if kind == MT.VOTE else MT.PRE_VOTE_RESP
    assert out == [Message(resp, 1, 2, term=term, reject=reject)]


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
@pytest.mark.parametrize("role", [Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER], ids=enum_id)
def test_recv_msg_vote_when_not_a_follower(role: Role, kind: MessageType) -> None:
    """§5.2: a (pre-)candidate or leader of term 3 that voted for itself refuses another candidate
    of the same term, however up-to-date.

    etcd: the last rows of TestRecvMsgVote / TestRecvMsgPreVote.
    """
    if role == Role.PRE_CANDIDATE:
        r = Replica.of(1, VOTERS3, entries=ents(2, 2), hard_state=HardState(term=3, vote=1))
    else:
        r = Replica.of(1, VOTERS3, entries=ents(2, 2), hard_state=HardState(term=2))
    r.put_in(role)
    assert (r.node.role, r.node.term, r.node.hard_state().vote) == (role, 3, 1)
    resp = MT.VOTE_RESP if kind == MT.VOTE else MT.PRE_VOTE_RESP
    assert r.step(Message(kind, 2, 1, term=3, index=3, log_term=3)) == [Message(resp, 1, 2, term=3, reject=True)]


@pytest.mark.parametrize("role", ROLES, ids=enum_id)
def test_all_server_stepdown(role: Role) -> None:
    """§5.1: a vote request or an append of a newer term turns any server into a follower of that
    term; only the append names a leader. Logs are untouched (the append does not match).

    etcd: TestAllServerStepdown, without CheckQuorum (with it the leader would ignore the vote
    request: ``test_leased_replicas_ignore_candidates``).
    """
    r = Replica.of(1, VOTERS3, hard_state=HardState(term=1), check_quorum=False)
    if role != Role.FOLLOWER:
        r.put_in(role)
    last = r.node.log_view().last_index()
    assert last == (1 if role == Role.LEADER else 0)
    for kind, lead in ((MT.VOTE, NONE), (MT.APP, 2)):
        r.step(Message(kind, 2, 1, term=3, log_term=3))
        assert (r.node.role, r.node.term, r.node.leader) == (Role.FOLLOWER, 3, lead)
        assert r.node.log_view().last_index() == last


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE], ids=enum_id)
def test_restarted_replica_refuses_votes_for_an_election_timeout(kind: MessageType) -> None:
    """Leases: a replica restarted from a persisted hard state may have acknowledged a leader's
    lease just before it went down, so for its first ``election_tick`` ticks it ignores
    candidates of newer terms; from then on it answers.

    Tessera only (etcd keeps no such quiet period).
    """
    r = Replica.of(1, VOTERS3, hard_state=HardState(term=1), rand=FixedRand(ET - 1))
    request = Message(kind, 2, 1, term=2)
    for _ in range(ET - 1):
        assert r.tick() == []
        assert r.step(request) == []
    assert r.node.term == 1
    r.tick()
    resp = MT.VOTE_RESP if kind == MT.VOTE else MT.PRE_VOTE_RESP
    assert r.step(request) == [Message(resp, 1, 2, term=2)]


def test_follower_ignores_candidates_for_an_election_timeout_after_hearing_its_leader() -> None:
    """Leases: a follower ignores other candidates until ``election_tick`` of its own ticks have
    passed since it last heard from its leader: that is what makes a leader's lease safe.

    Tessera's rule, etcd's with CheckQuorum (its ``inLease``).
    """
    r = Replica.of(1, VOTERS3, rand=FixedRand(ET - 1))
    r.follow(1, 2)
    request = Message(MT.PRE_VOTE, 3, 1, term=2)
    for _ in range(ET - 1):
        r.tick()
        assert r.step(request) == []
    r.tick()
    assert r.step(request) == [Message(MT.PRE_VOTE_RESP, 1, 3, term=2)]


# -- CheckQuorum ---------------------------------------------------------------------------------


def test_leader_stepdown_when_quorum_active() -> None:
    """CheckQuorum (thesis §6.2): a leader that keeps hearing from a quorum stays leader.

    etcd: TestLeaderStepdownWhenQuorumActive.
    """
    r = Replica.of(1, VOTERS3)
    r.campaign_granted()
    for _ in range(2 * ET + 1):
        r.step(Message(MT.HEARTBEAT_RESP, 2, 1, term=1))
        r.tick()
    assert (r.node.role, r.node.term) == (Role.LEADER, 1)


def test_leader_stepdown_when_quorum_lost() -> None:
    """CheckQuorum (thesis §6.2): a leader that has not heard from a quorum for an election timeout
    steps down (keeping its term), so that a leader cut off from the majority stops serving.

    etcd: TestLeaderStepdownWhenQuorumLost. Ours counts from the last answer of each follower,
    so the step-down comes exactly ``election_tick`` ticks after the election.
    """
    r = Replica.of(1, VOTERS3)
    r.campaign_granted()
    r.tick(ET - 1)
    assert r.node.is_leader
    r.tick()
    assert (r.node.role, r.node.term, r.node.leader) == (Role.FOLLOWER, 1, NONE)


def test_leader_superseding_with_check_quorum() -> None:
    """Leases: a challenger cannot depose a live leader while the followers still hear from it;
    once a follower's election timeout has passed without news, it votes, and the challenger wins.

    etcd: TestLeaderSupersedingWithCheckQuorum. Here the challenger stays a pre-candidate (PreVote
    is on); node 2's timeout runs while it hears nothing (ticked alone).
    """
    net = Net.fresh(VOTERS3, rand=FixedRand(1))
    net.elect(1)
    net.campaign(3)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.PRE_CANDIDATE}
    net.tick_alone(2, ET)
    net.campaign(3)
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.FOLLOWER, 3: Role.LEADER}
    assert net.terms() == {1: 2, 2: 2, 3: 2}


def test_leader_election_with_check_quorum() -> None:
    """CheckQuorum: a leader and a follower both cut off for an election timeout (the leader steps
    down, the follower's lease of it expires): a third replica's campaign then succeeds.

    etcd: TestLeaderElectionWithCheckQuorum.
    """
    net = Net.fresh(VOTERS3, rand=FixedRand(1))
    net.elect(1)
    net.tick_alone(1, ET)
    assert net.nodes[1].role == Role.FOLLOWER
    net.tick_alone(2, ET)
    net.campaign(3)
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.FOLLOWER, 3: Role.LEADER}


def test_free_stuck_candidate_with_check_quorum() -> None:
    """CheckQuorum without PreVote: a candidate whose term ran ahead while it was cut off is stuck
    (the followers ignore it while their leader lives). When the old leader's heartbeat reaches
    it, its answer carries the newer term and deposes the leader, which then votes for it.

    etcd: TestFreeStuckCandidateWithCheckQuorum.
    """
    net = Net.fresh(VOTERS3, pre_vote=False)
    net.elect(1)
    net.isolate(1)
    net.campaign(3)
    assert (net.nodes[2].role, net.nodes[3].role) == (Role.FOLLOWER, Role.CANDIDATE)
    assert net.nodes[3].term == net.nodes[2].term + 1
    net.campaign(3)
    assert net.nodes[3].term == net.nodes[2].term + 2
    net.heal()
    net.send(Message(MT.HEARTBEAT, 1, 3, term=net.nodes[1].term))
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.FOLLOWER, net.nodes[3].term)
    net.campaign(3)
    assert net.nodes[3].role == Role.LEADER


def test_non_promotable_voter_with_check_quorum() -> None:
    """§6: a replica that is not a voter in its own view of the membership never campaigns, yet
    follows the leader and votes when asked.

    etcd: TestNonPromotableVoterWithCheckQuorum.
    """
    net = Net((1, 2), storages={1: storage_with((1, 2)), 2: storage_with((1,))}, rand=FixedRand(1))
    net.tick_alone(2, 2 * ET)
    assert net.nodes[2].role == Role.FOLLOWER
    net.elect(1)
    assert (net.nodes[2].role, net.nodes[2].leader) == (Role.FOLLOWER, 1)


def test_disruptive_follower() -> None:
    """Without PreVote a follower whose election timeout passes before the leader's heartbeat
    arrives becomes a candidate of a newer term; the late heartbeat's answer then deposes the
    leader. (PreVote exists to prevent exactly this: ``test_disruptive_follower_pre_vote``.)

    etcd: TestDisruptiveFollower. Node 3 times out alone, its vote requests lost.
    """
    net = Net.fresh(VOTERS3, rand=FixedRand(2), pre_vote=False)
    net.elect(1)
    net.tick_alone(3, ET + 2)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.CANDIDATE}
    assert net.terms() == {1: 1, 2: 1, 3: 2}
    net.send(Message(MT.HEARTBEAT, 1, 3, term=1))
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.FOLLOWER, 3: Role.CANDIDATE}
    assert net.terms() == {1: 2, 2: 1, 3: 2}


def test_disruptive_follower_pre_vote() -> None:
    """PreVote (thesis §9.6): a follower that fell behind and times out only pre-campaigns, without
    raising its term; nobody grants it (its log is behind, and the others hear from the leader),
    and the leader's late heartbeat finds it at the leader's term: no disruption.

    etcd: TestDisruptiveFollowerPreVote.
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.isolate(3)
    for _ in range(3):
        net.nodes[1].propose(b"somedata")
    net.settle()
    net.heal()
    net.campaign(3)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.PRE_CANDIDATE}
    assert net.terms() == {1: 1, 2: 1, 3: 1}
    net.send(Message(MT.HEARTBEAT, 1, 3, term=1))
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.FOLLOWER}


# -- PreVote -------------------------------------------------------------------------------------


def test_node_with_smaller_term_can_complete_election() -> None:
    """PreVote: a replica that fell behind in term while cut off rejoins as the leader fails; its
    stale pre-vote is refused with the current term, it catches up, and the group elects again.

    etcd: TestNodeWithSmallerTermCanCompleteElection (without CheckQuorum, as there).
    """
    net = Net.fresh(VOTERS3, check_quorum=False)
    net.cut(1, 3)
    net.cut(2, 3)
    net.campaign(1)
    net.campaign(3)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.PRE_CANDIDATE}
    net.campaign(2)
    assert net.roles() == {1: Role.FOLLOWER, 2: Role.LEADER, 3: Role.PRE_CANDIDATE}
    assert net.terms() == {1: 2, 2: 2, 3: 0}
    net.heal()
    net.cut(2, 1)
    net.cut(2, 3)
    net.campaign(3)
    assert (net.nodes[3].role, net.nodes[3].term) == (Role.FOLLOWER, 2)
    net.campaign(1)
    assert (net.nodes[1].role, net.nodes[1].term) == (Role.LEADER, 3)


def test_pre_vote_with_split_vote() -> None:
    """PreVote: two followers time out together; each grants the other's pre-vote, both become
    candidates of the same term and split the vote; the next campaign settles it.

    etcd: TestPreVoteWithSplitVote (without CheckQuorum, as there).
    """
    net = Net.fresh(VOTERS3, check_quorum=False)
    net.elect(1)
    net.isolate(1)
    net.nodes[2].campaign()
    net.nodes[3].campaign()
    net.settle()
    assert (net.roles()[2], net.roles()[3]) == (Role.CANDIDATE, Role.CANDIDATE)
    assert (net.terms()[2], net.terms()[3]) == (2, 2)
    net.campaign(2)
    assert (net.roles()[2], net.roles()[3]) == (Role.LEADER, Role.FOLLOWER)
    assert (net.terms()[2], net.terms()[3]) == (3, 3)


def test_pre_vote_with_check_quorum() -> None:
    """PreVote with CheckQuorum: once a replica has pre-campaigned it no longer follows a leader,
    so it grants a peer's pre-vote and vote even though the peer still ignored its own.

    etcd: TestPreVoteWithCheckQuorum (there only "a leader exists"; here exactly which).
    """
    net = Net.fresh(VOTERS3)
    net.elect(1)
    net.isolate(1)
    net.campaign(3)
    assert net.roles() == {1: Role.LEADER, 2: Role.FOLLOWER, 3: Role.PRE_CANDIDATE}
    net.campaign(2)
    assert (net.roles()[2], net.roles()[3]) == (Role.LEADER, Role.FOLLOWER)
    assert (net.terms()[2], net.terms()[3]) == (2, 2)
