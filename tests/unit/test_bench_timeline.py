"""tools/bench_timeline.py pairs marks of several processes into one put's hops; common/trace.py
writes and reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.bench_timeline import HOPS, TOTAL, hops, points

LEADER, F1, F2 = 1, 2, 3
REPO = str(Path(__file__).resolve().parents[2])


def _put(t: int) -> tuple[list[tuple[int, str]], dict[int, list[tuple[int, str]]]]:
    """One put starting at ``t`` (µs): the client's marks and each node's, with noise a real
    node has (a round of another partition, a second follower behind the first)."""
    us = 1000
    client = [(t * us, "put.start"), ((t + 1000) * us, "put.end")]
    leader = [
        ((t + 50) * us, "kv.read"), ((t + 60) * us, "round.start"), ((t + 100) * us, "round.sent"),
        ((t + 300) * us, "round.wal"), ((t + 310) * us, "round.persisted"),
        ((t + 500) * us, "raft.ack"), ((t + 520) * us, "round.start"), ((t + 600) * us, "round.applied"),
        ((t + 640) * us, "kv.answer"), ((t + 700) * us, "raft.ack"),
    ]
    f1 = [((t + 5) * us, "round.start"), ((t + 130) * us, "raft.in"), ((t + 150) * us, "round.start"),
          ((t + 400) * us, "round.wal"), ((t + 430) * us, "round.persisted")]
    f2 = [((t + 140) * us, "raft.in"), ((t + 160) * us, "round.start"), ((t + 600) * us, "round.wal"),
          ((t + 610) * us, "round.persisted")]
    return client, {LEADER: leader, F1: f1, F2: f2}


def test_a_put_is_cut_into_its_hops_on_the_first_follower_to_read_the_appends() -> None:
    client, nodes = _put(10_000)
    c2, n2 = _put(20_000)
    client += c2
    for pid in nodes:
        nodes[pid] += n2[pid]
    puts = points(client, nodes)
    assert len(puts) == 2
    got = {h.label: h.p50_us for h in hops(puts)}
    want = [50, 10, 40, 30, 20, 250, 30, 70, 20, 80, 40, 360]  # µs, in HOPS order
    assert [got[label] for label, _, _ in HOPS] == want
    assert got[TOTAL[0]] == 1000
    assert got["leader's own WAL write and fsync (beside)"] == 200


def test_a_put_missing_a_mark_is_left_out() -> None:
    client, nodes = _put(10_000)
    nodes[LEADER] = [m for m in nodes[LEADER] if m[1] != "kv.answer"]
    assert points(client, nodes) == []
    client, nodes = _put(10_000)
    nodes = {LEADER: nodes[LEADER]}  # no follower read the appends
    assert points(client, nodes) == []


def test_marks_are_written_by_a_traced_process_and_read_back(tmp_path: Path) -> None:
    code = "from common import trace\nfor i in range(5000):\n    trace.mark('m%d' % (i % 2))\n"
    env = dict(os.environ, TESSERA_TRACE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True)
    assert done.returncode == 0
    from common import trace

    marks = trace.read_dir(str(tmp_path))
    assert len(marks) == 1
    (got,) = marks.values()
    assert len(got) == 5000  # 4,096 flushed on the way, the rest at exit
    assert [t for t, _ in got] == sorted(t for t, _ in got)
    assert {n for _, n in got} == {"m0", "m1"}


def test_marks_are_kept_nowhere_when_tracing_is_off() -> None:
    code = ("from common import trace\nassert not trace.ON\n"
            "for i in range(10):\n    trace.mark('x')\nprint(len(trace._marks))\n")
    for env in ({k: v for k, v in os.environ.items() if k != "TESSERA_TRACE_DIR"},
                dict(os.environ, TESSERA_TRACE_DIR="")):
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "0"
