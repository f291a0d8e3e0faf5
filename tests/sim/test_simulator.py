"""The deterministic simulator: determinism, the invariant checkers, mutations, liveness.

The 500-seed run and the mutation hunts are marked ``slow`` (they still run in
``make test``); the rest takes a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.raft import ConfState, Entry, MemoryStorage, ProposalDroppedError, RawNode
from tools.simulator import cluster, mutations, runner, simnode
from tools.simulator.invariants import (
    COMMITTED_LOST,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LEASE_OVERLAP,
    LINEARIZABILITY,
    LIVENESS,
    LOG_MATCHING,
    STALE_READ,
    STATE_MACHINE_SAFETY,
    Invariants,
    InvariantViolation,
)
from tools.simulator.runner import main, run_seed

ROOT = Path(__file__).resolve().parents[2]

# Budget of seeds in which each mutation must be caught, and what catching it may look like.
# Measured (seeds 0..199), first catch, each as its signature: apply-uncommitted 0,
# vote-ignores-log 0, learner-votes 2, long-lease 3, vote-not-persisted 4, commit-previous-term 7.
MUTATION_BUDGET = 200
# A forgotten vote or a learner's vote can also elect a leader while an older one still holds
# its lease, or answers reads.
SAFETY = {
    ELECTION_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, COMMITTED_LOST, STALE_READ, LEASE_OVERLAP,
}
EXPECTED = {
    "apply-uncommitted": {STATE_MACHINE_SAFETY},
    "vote-ignores-log": {LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, COMMITTED_LOST, LINEARIZABILITY},
    "commit-previous-term": {LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, COMMITTED_LOST, LINEARIZABILITY},
    # Forgotten votes also mean forgotten terms, so a stale leader may surface first.
    "vote-not-persisted": SAFETY | {LINEARIZABILITY},
    # A learner's vote can elect two leaders in one term, or one that lacks committed entries.
    "learner-votes": SAFETY | {LINEARIZABILITY},
    # A lease that outlives the followers' promise: an older leader still holds it when a newer
    # one is elected, and may serve a read below what the newer one committed.
    "long-lease": {LEASE_OVERLAP, STALE_READ, LINEARIZABILITY},
}
# The invariant that must show up within the budget (the bug's signature).
SIGNATURE = {
    "apply-uncommitted": STATE_MACHINE_SAFETY,
    "vote-ignores-log": LEADER_COMPLETENESS,
    "commit-previous-term": LEADER_COMPLETENESS,
    "vote-not-persisted": ELECTION_SAFETY,
    "learner-votes": LEADER_COMPLETENESS,
    "long-lease": LEASE_OVERLAP,
}


# -- determinism -------------------------------------------------------------------------


def test_same_seed_same_digest():
    a = run_seed(7)
    b = run_seed(7)
    assert a.ok, a.detail
    assert a.digest == b.digest
    assert a.stats == b.stats


def test_different_seeds_differ():
    assert run_seed(1).digest != run_seed(2).digest


def _digest_in_subprocess(seed: int, mutation: str | None, hashseed: str) -> tuple[str, str | None]:
    """``run_seed``'s digest and invariant violation, computed in a fresh interpreter."""
    code = (
        "import json, sys; from tools.simulator import run_seed; "
        f"r = run_seed({seed}, {mutation!r}); print(json.dumps([r.digest, r.invariant]))"
    )
    env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    digest, invariant = json.loads(out.stdout.strip().splitlines()[-1])
    return digest, invariant


@pytest.mark.parametrize("seed,mutation", [(7, None), (4, "vote-not-persisted")])
def test_digest_stable_across_processes_and_hash_seeds(seed, mutation):
    here = run_seed(seed, mutation)
    for hashseed in ("1", "987654"):
        digest, invariant = _digest_in_subprocess(seed, mutation, hashseed)
        assert digest == here.digest
        assert invariant == here.invariant


# -- the invariant checkers reject hand-made violations ------------------------------------


def _storage(*terms: int, data: bytes = b"") -> MemoryStorage:
    """A log with entries 1..n of the given terms (each entry's data names its index/term)."""
    st = MemoryStorage()
    st.append([Entry(t, i, data or b"%d/%d" % (i, t)) for i, t in enumerate(terms, start=1)])
    return st


def test_two_leaders_in_one_term_rejected():
    inv = Invariants()
    inv.became_leader(1, 3, _storage(1, 1))
    inv.became_leader(1, 3, _storage(1, 1))  # the same leader seen twice is fine
    inv.became_leader(2, 4, _storage(1, 1))
    with pytest.raises(InvariantViolation) as exc:
        inv.became_leader(3, 3, _storage(1, 1))
    assert exc.value.name == ELECTION_SAFETY


def test_mismatched_logs_rejected():
    inv = Invariants()
    a = _storage(1, 1, 2)
    inv.on_persist(1, a, [Entry(1, 1, b"1/1"), Entry(1, 2, b"2/1"), Entry(2, 3, b"3/2")], 0, 0)
    # Same (index, term), different data.
    b = _storage(1, 1)
    b.append([Entry(2, 3, b"other")])
    with pytest.raises(InvariantViolation) as exc:
        inv.on_persist(2, b, [Entry(2, 3, b"other")], 0, 0)
    assert exc.value.name == LOG_MATCHING
    # Same (index, term) and data, but a different predecessor.
    c = _storage(1, 3)
    c.append([Entry(2, 3, b"3/2")])
    with pytest.raises(InvariantViolation) as exc:
        inv.on_persist(3, c, [Entry(2, 3, b"3/2")], 0, 0)
    assert exc.value.name == LOG_MATCHING


def test_changed_committed_entry_rejected():
    inv = Invariants()
    inv.on_commit(1, _storage(1, 2, 2), 0, 3, term=2)
    inv.on_commit(2, _storage(1, 2, 2), 0, 3, term=2)  # agreeing replica
    with pytest.raises(InvariantViolation) as exc:
        inv.on_commit(3, _storage(1, 2, 3), 0, 3, term=3)
    assert exc.value.name == COMMITTED_LOST
    with pytest.raises(InvariantViolation) as exc:
        inv.on_commit(1, _storage(1, 2, 2), 3, 2, term=2)  # commit index going back
    assert exc.value.name == COMMITTED_LOST


def test_persisted_commit_beyond_log_or_over_other_entries_rejected():
    inv = Invariants()
    inv.on_commit(1, _storage(1, 2, 2), 0, 3, term=2)
    st = _storage(1, 2)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_persist(2, st, [], 0, 3)
    assert exc.value.name == COMMITTED_LOST
    other = _storage(1, 3, 3)
    with pytest.raises(InvariantViolation) as exc:
        inv.on_restart(3, other, 3)
    assert exc.value.name == COMMITTED_LOST


def test_leader_missing_committed_entry_rejected():
    inv = Invariants()
    inv.on_commit(1, _storage(1, 2, 2), 0, 3, term=2)
    inv.became_leader(2, 3, _storage(1, 2, 2, 3))  # has everything: fine
    with pytest.raises(InvariantViolation) as exc:
        inv.became_leader(3, 4, _storage(1, 2))  # too short
    assert exc.value.name == LEADER_COMPLETENESS
    with pytest.raises(InvariantViolation) as exc:
        inv.became_leader(4, 5, _storage(1, 2, 4))  # different entry at 3
    assert exc.value.name == LEADER_COMPLETENESS
    # A stale candidate of a term *before* the commit need not hold it.
    inv2 = Invariants()
    inv2.on_commit(1, _storage(1, 5), 0, 2, term=5)
    inv2.became_leader(2, 4, _storage(1, 4))


def test_apply_past_commit_or_divergent_apply_rejected():
    inv = Invariants()
    with pytest.raises(InvariantViolation) as exc:
        inv.on_apply(1, Entry(1, 3, b"x"), known_commit=2, prev_applied=2, chain="c3")
    assert exc.value.name == STATE_MACHINE_SAFETY
    inv.on_apply(1, Entry(1, 3, b"x"), known_commit=3, prev_applied=2, chain="c3")
    with pytest.raises(InvariantViolation) as exc:
        inv.on_apply(2, Entry(2, 3, b"y"), known_commit=3, prev_applied=2, chain="c3'")
    assert exc.value.name == STATE_MACHINE_SAFETY
    with pytest.raises(InvariantViolation) as exc:
        inv.on_apply(3, Entry(1, 5, b"z"), known_commit=9, prev_applied=3, chain="c5")  # skipped 4
    assert exc.value.name == STATE_MACHINE_SAFETY
    with pytest.raises(InvariantViolation) as exc:
        inv.on_install(4, 3, 1, "not-c3")  # snapshot whose state differs from what was applied
    assert exc.value.name == STATE_MACHINE_SAFETY


# -- whole runs ---------------------------------------------------------------------------------


def test_a_few_seeds_hold_with_liveness_bound():
    for seed in range(6):
        r = run_seed(seed)
        assert r.ok, runner.format_failure(r)
        assert 0 < r.stats["liveness_time"] <= cluster.LIVENESS_BOUND
        assert r.stats["elections"] > 0 and r.stats["ops"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_500_seeds_hold(capsys):
    assert main(500, start=0, workers=2) == 0
    assert "500 seeds (0..499) hold" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mutation", sorted(set(mutations.describe()) - mutations.NOT_CAUGHT_YET))
def test_mutation_is_caught(mutation):
    caught = []
    for seed in range(MUTATION_BUDGET):
        r = run_seed(seed, mutation)
        if not r.ok:
            assert r.invariant in EXPECTED[mutation], runner.format_failure(r)
            caught.append(r.invariant)
            if r.invariant == SIGNATURE[mutation]:
                return
    if not caught:
        pytest.fail(f"mutation {mutation} survived seeds 0..{MUTATION_BUDGET - 1}")
    pytest.fail(f"mutation {mutation} caught only as {sorted(set(caught))}, never as {SIGNATURE[mutation]}")


def test_main_reports_failure_with_reproducer(capsys):
    assert main(1, start=0, mutation="apply-uncommitted") == 1
    out = capsys.readouterr().out
    assert "FAIL seed 0" in out and STATE_MACHINE_SAFETY in out
    assert "tessera simulate --seeds 1 --start 0 --mutation apply-uncommitted" in out


def test_unknown_mutation_names_valid_ones():
    with pytest.raises(ValueError) as exc:
        run_seed(0, "no-such-bug")
    for name in mutations.describe():
        assert name in str(exc.value)
    with pytest.raises(ValueError):
        main(1, mutation="no-such-bug")


def test_liveness_violation_detected(monkeypatch):
    """A driver whose clock never reaches the core: nobody ever campaigns."""
    monkeypatch.setattr(simnode.SimNode, "on_tick", lambda self: None)
    r = run_seed(3)
    assert not r.ok and r.invariant == LIVENESS
    assert "no leader" in r.detail


def test_a_core_refusing_every_membership_change_fails_liveness(monkeypatch):
    """After the heal a membership change (a no-op: the leader re-adds itself) must go through."""

    def refuse(self, cc):
        raise ProposalDroppedError("refusing everything")

    monkeypatch.setattr(RawNode, "propose_conf_change", refuse)
    r = run_seed(3)
    assert not r.ok and r.invariant == LIVENESS, runner.format_failure(r)
    assert "no membership change applied" in r.detail


def test_stale_reads_fail_linearizability(monkeypatch):
    """Serving gets from local state without ReadIndex must be caught by the history check."""
    orig = simnode.SimNode.on_client

    def stale(self, req):
        if req.f == "get":
            self.sim.respond(self.id, req, "ok", self.sm.get(req.key), self.id)
            return
        orig(self, req)

    monkeypatch.setattr(simnode.SimNode, "on_client", stale)
    for seed in range(20):
        r = run_seed(seed)
        if not r.ok:
            assert r.invariant == LINEARIZABILITY, runner.format_failure(r)
            return
    pytest.fail("stale reads went unnoticed")


def test_bootstrap_snapshot_shape():
    """Every initial member starts from one identical snapshot holding the membership."""
    sim = cluster.Simulation(5)
    snaps = {nid: n.storage.snapshot() for nid, n in sorted(sim.nodes.items())}
    metas = {s.meta for s in snaps.values()}
    assert len(metas) == 1
    (meta,) = metas
    assert meta.index == 1 and meta.conf_state == ConfState(voters=frozenset(range(1, sim.size + 1)))
    assert len({s.data for s in snaps.values()}) == 1
