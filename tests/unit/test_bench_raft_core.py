"""The core benchmark runs and commits everything it proposes (a smoke test, not a timing)."""

from tools.bench_raft_core import run


def test_core_benchmark_commits_every_proposal() -> None:
    r = run(seconds=0.2, batch=8, value_size=16)
    assert r["proposals"] > 0 and r["proposals"] % 8 == 0
    assert r["proposals_per_s"] > 0
