"""The simulator's newer checks reject hand-made violating states (and accept the legal ones).

stale-read, lease-overlap, stability (with its fault ledger), an entry applied before anyone
knew it committed, read answers that arrive after their client gave up, and api-contract.
"""

from __future__ import annotations

import pytest

from node.raft import ConfState, Entry, MemoryStorage, ProgressStatus, Role, Status
from tools.checker.history import Op
from tools.checker.linearizability import check_history
from tools.simulator import cluster
from tools.simulator.clients import Request
from tools.simulator.invariants import (
    API_CONTRACT,
    LEASE_OVERLAP,
    STABILITY,
    STALE_READ,
    STATE_MACHINE_SAFETY,
    Invariants,
    InvariantViolation,
)
from tools.simulator.stability import FaultLedger, Stability


def _log(*terms: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append([Entry(t, i, b"%d/%d" % (i, t)) for i, t in enumerate(terms, start=1)])
    return st


# -- stale-read ----------------------------------------------------------------------------------


def test_read_below_the_commit_floor_rejected():
    inv = Invariants()
    inv.on_read(1, index=7, floor=7, how="ReadIndex")  # at the floor: fine
    inv.on_read(1, index=9, floor=7, how="lease (fast path)")  # above: fine
    with pytest.raises(InvariantViolation) as exc:
        inv.on_read(2, index=6, floor=7, how="lease ReadIndex")
    assert exc.value.name == STALE_READ
    assert "node 2" in exc.value.detail and "lease ReadIndex" in exc.value.detail


# -- lease-overlap -------------------------------------------------------------------------------


def test_lease_held_after_a_newer_leader_was_elected_rejected():
    inv = Invariants()
    inv.became_leader(1, 3, _log(1))
    inv.check_lease(1, 3, 5)  # the newest leader's own lease: fine
    inv.became_leader(2, 4, _log(1))
    inv.check_lease(1, 3, None)  # the old leader's lease ran out: fine
    inv.check_lease(2, 4, 5)
    with pytest.raises(InvariantViolation) as exc:
        inv.check_lease(1, 3, 5)
    assert exc.value.name == LEASE_OVERLAP
    assert "node 2 was elected in term 4" in exc.value.detail


# -- applied before known committed ----------------------------------------------------------


def test_entry_applied_early_that_is_not_the_one_committed_rejected():
    inv = Invariants()
    # Node 1 applied entry 2 of term 1 while nobody's commit index covered it yet...
    inv.on_apply(1, Entry(1, 2, b"2/1"), known_commit=5, prev_applied=1, chain="c2")
    # ...and then the entry of term 2 at index 2 is what commits.
    with pytest.raises(InvariantViolation) as exc:
        inv.on_commit(2, _log(1, 2), 0, 2, term=2)
    assert exc.value.name == STATE_MACHINE_SAFETY
    # Applied early but the same entry commits: fine.
    ok = Invariants()
    ok.on_apply(1, Entry(1, 2, b"2/1"), known_commit=5, prev_applied=1, chain="c2")
    ok.on_commit(2, _log(1, 1), 0, 2, term=1)


# -- stability -----------------------------------------------------------------------------------

WINDOW = 200
VOTERS = frozenset({1, 2, 3})


def _stability() -> Stability:
    stab = Stability(WINDOW, enabled=True)
    stab.saw_term(2, 0)  # leader 1 was elected in term 2 at time 0
    stab.saw_term(3, 1000)  # term 3 was born at 1000
    return stab


def test_leader_with_an_untouched_quorum_deposed_is_rejected():
    with pytest.raises(InvariantViolation) as exc:
        _stability().deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())
    assert exc.value.name == STABILITY
    assert "term 3 was born at 1000" in exc.value.detail
    # Stepping down in its own term (CheckQuorum) with an untouched quorum: just as wrong.
    with pytest.raises(InvariantViolation):
        _stability().deposed(1, 2, 0, 2, 1010, VOTERS, frozenset())


def test_a_fault_touching_the_leader_or_a_quorum_explains_the_loss():
    touched_leader = _stability()
    touched_leader.ledger.touch((1,), 900, 900)  # a message of its dropped
    touched_leader.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())

    one_follower = _stability()
    one_follower.ledger.touch((2,), 850, 950)  # 1 and 3 are still a clean quorum
    with pytest.raises(InvariantViolation):
        one_follower.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())

    two_followers = _stability()
    two_followers.ledger.touch((2, 3), 850, 950)
    two_followers.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())

    long_ago = _stability()
    long_ago.ledger.touch((1, 2, 3), 100, 700)  # ended before the window [800, 1000]
    with pytest.raises(InvariantViolation):
        long_ago.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())


def test_open_faults_touch_until_they_end():
    stab = _stability()
    stab.ledger.begin(("down", 3), (3,), 400)  # paused at 400, not resumed yet
    stab.ledger.begin("partition", (2,), 990)
    stab.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())  # 2 and 3 touched: no quorum clean
    ended = _stability()
    ended.ledger.begin(("down", 3), (3,), 400)
    ended.ledger.end(("down", 3), 500)  # resumed at 500, before the window
    with pytest.raises(InvariantViolation):
        ended.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())


def test_joint_configuration_needs_a_clean_quorum_of_both_halves():
    stab = _stability()
    stab.ledger.touch((4, 5), 900, 900)  # the incoming half {1, 4, 5} has no clean majority
    stab.deposed(1, 2, 0, 3, 1010, frozenset({1, 4, 5}), VOTERS)
    clean = _stability()
    with pytest.raises(InvariantViolation):
        clean.deposed(1, 2, 0, 3, 1010, frozenset({1, 4, 5}), VOTERS)


def test_a_fresh_leader_or_a_seed_without_prevote_is_not_judged():
    _stability().deposed(1, 2, 850, 3, 1010, VOTERS, frozenset())  # led only since 850
    off = Stability(WINDOW, enabled=False)
    off.saw_term(3, 1000)
    off.deposed(1, 2, 0, 3, 1010, VOTERS, frozenset())


def test_fault_ledger_merges_and_answers_intervals():
    led = FaultLedger()
    led.touch((1,), 10, 20)
    led.touch((1,), 15, 40)  # overlaps: merged
    led.touch((1,), 100, 100)
    assert not led.clean(1, 0, 10) and not led.clean(1, 35, 50) and not led.clean(1, 100, 100)
    assert led.clean(1, 41, 99) and led.clean(2, 0, 1000)
    led.end_all("conf", 0)  # nothing open: nothing happens
    led.begin(("conf", 7), (2,), 200)
    assert not led.clean(2, 300, 400)  # open: touches from its start on
    led.end_all("conf", 250)
    assert led.clean(2, 251, 400) and not led.clean(2, 240, 260)


# -- late read answers ---------------------------------------------------------------------------


def test_read_answered_after_its_client_gave_up_joins_the_history():
    sim = cluster.Simulation(0)
    client = sim.clients[0]
    # x is written to "new" and acknowledged before the read is invoked.
    sim.history += [Op(99, "invoke", "put", "x", "new", 10), Op(99, "ok", "put", "x", "new", 20)]
    req = Request(client.idx, sim.next_op_id(), "get", "x", None, "lease")
    client.cur, client.invoked_at, sim.now = req, 50, 50
    sim.history.append(Op(client.process, "invoke", "get", "x", None, 50))
    client.on_timeout(req.op_id)  # gave up: a failed read says nothing
    assert [op.type for op in sim.history[-1:]] == ["fail"]
    sim.now = 700
    client.on_response(req.op_id, "ok", None, 0)  # a deposed leader answers with the stale initial value
    invoke, ok = sim.history[-2:]
    assert (invoke.type, invoke.time, ok.type, ok.value, ok.time) == ("invoke", 50, "ok", None, 700)
    assert invoke.process == ok.process >= 1_000_000  # a process of its own
    assert sim.stats["late_reads"] == 1
    assert not check_history(sim.history).ok  # and the checker sees the stale value
    sim.now = 800
    client.on_response(req.op_id, "ok", None, 0)  # a second copy of the answer: already recorded
    assert sim.stats["late_reads"] == 1


# -- api-contract --------------------------------------------------------------------------------


def test_ready_handing_out_entries_already_on_disk_rejected():
    inv = Invariants()
    disk = _log(1, 1, 2)
    inv.on_ready(1, disk, [Entry(2, 4), Entry(2, 5)])  # beyond the disk: fine
    inv.on_ready(1, disk, [Entry(3, 3), Entry(3, 4)])  # replaces entry 3 (another term): fine
    with pytest.raises(InvariantViolation) as exc:
        inv.on_ready(1, disk, [Entry(2, 3), Entry(2, 4)])  # entry 3 of term 2 is there already
    assert exc.value.name == API_CONTRACT


def _status(progress: dict, cs: ConfState) -> Status:
    return Status(id=1, term=2, vote=1, commit=3, applied=3, leader=1, role=Role.LEADER, conf_state=cs,
                  progress=progress, lead_transferee=0, conf_change_pending=False)


def test_leader_status_must_describe_its_configuration():
    inv = Invariants()
    cs = ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
    good = {1: ProgressStatus(3, 4, "replicate", True, False), 2: ProgressStatus(2, 3, "replicate", True, False),
            3: ProgressStatus(0, 1, "probe", True, True)}
    inv.on_status(1, _status(good, cs), last_index=3)
    for bad in (
        {k: v for k, v in good.items() if k != 3},  # a member missing
        {**good, 3: ProgressStatus(0, 1, "probe", True, False)},  # the learner reported as a voter
        {**good, 2: ProgressStatus(9, 10, "replicate", True, False)},  # a match beyond the log
    ):
        with pytest.raises(InvariantViolation) as exc:
            inv.on_status(1, _status(bad, cs), last_index=3)
        assert exc.value.name == API_CONTRACT


def test_an_expected_refusal_must_happen():
    inv = Invariants()
    inv.refusal_expected("a change removing every voter", refused=True)
    with pytest.raises(InvariantViolation) as exc:
        inv.refusal_expected("a change removing every voter", refused=False)
    assert exc.value.name == API_CONTRACT and "removing every voter" in exc.value.detail
