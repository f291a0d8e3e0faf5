"""tools/bench_matrix.py's table: which way its ratios point, and what a failed run shows.

The matrix itself runs clusters for minutes (``python -m tools.bench_matrix --quick`` is its
smoke run); these check the arithmetic that turns the runs' JSON into the table.
"""

from __future__ import annotations

import argparse
import datetime

from tools.bench_matrix import Line, Row, last_words, render, table


def _result(throughput: float, p50: float, p99: float, errors: int = 0) -> dict:
    return {"throughput": throughput, "errors": errors,
            "latency_ms": {"p50": p50, "p90": p50, "p99": p99, "p999": p99, "max": p99}}


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"partitions": 8, "idle_partitions": 1000}
    base.update(kw)
    return argparse.Namespace(**base)


def _by_figure(lines: list[Line]) -> dict[str, Line]:
    return {ln.figure: ln for ln in lines}


def test_ratios_above_one_mean_tessera_is_better() -> None:
    row = Row("write c=16", "write", 16)
    row.results = {"tessera": _result(2000, 2.0, 10.0), "etcd": _result(1000, 4.0, 5.0, errors=3)}
    lines = _by_figure(table([row], {}, {}, _args()))
    assert lines["write c=16: throughput (ops/s)"].ratio() == "2.00"  # twice etcd's throughput
    assert lines["write c=16: p50 latency (ms)"].ratio() == "2.00"  # half etcd's latency
    assert lines["write c=16: p99 latency (ms)"].ratio() == "0.50"  # twice etcd's latency
    etcd_cell = lines["write c=16: throughput (ops/s)"]
    assert etcd_cell.cell(etcd_cell.etcd, etcd_cell.note_etcd) == "1,000 (3 errors)"


def test_a_failed_run_leaves_its_cell_empty_with_the_reason() -> None:
    row = Row("a c=1", "a", 1)
    row.results = {"tessera": _result(500, 1.0, 2.0), "etcd": "failed: exit status 1: boom"}
    lines = table([row], {}, {}, _args())
    throughput = lines[0]
    assert throughput.etcd is None and throughput.ratio() == "—"
    assert "boom" in throughput.cell(throughput.etcd, throughput.note_etcd)
    text = render(lines, ["a note"], _args(), datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC), ["--quick"])
    assert "| a c=1: throughput (ops/s) | — (failed: exit status 1: boom) | 500 | — |" in text
    assert "Command: `python -m tools.bench_matrix --quick`" in text
    assert "- a note" in text


def test_failover_and_idle_figures() -> None:
    failover: dict[str, dict | str] = {"tessera": {"failover": {"first_ok_s": 0.5, "longest_gap_s": 1.0}},
                "etcd": {"failover": {"first_ok_s": 1.5, "longest_gap_s": 1.5}}}

    def idle(partitions: int, rss: float, cpu: float) -> dict:
        return {"partitions": partitions, "processes": {"router": {"cpu_percent": 1.0, "rss_mib": 50.0},
                              "node1": {"cpu_percent": cpu, "rss_mib": rss},
                              "node2": {"cpu_percent": cpu, "rss_mib": rss}}}

    idle_runs: dict[str, dict | str] = {
        # 10 KiB more per partition, 992 more partitions
        "tessera": {**idle(1000, rss=8 + 992 / 1024 * 10, cpu=4.0), "baseline": idle(8, rss=8.0, cpu=1.0)},
        "etcd": {"processes": {"etcd1": {"cpu_percent": 1.0, "rss_mib": 30.0}}},
    }
    lines = _by_figure(table([], failover, idle_runs, _args()))
    assert lines["failover: first write after the leader kill (s)"].ratio() == "3.00"
    assert lines["failover: longest gap without a write (s)"].ratio() == "1.50"
    per = lines["idle: memory per idle partition per node, KiB (RSS at 1000 - at 8) / 992"]
    assert per.tessera is not None and abs(per.tessera - 10.0) < 1e-9  # 10 KiB a partition
    cpu = lines["idle: CPU per node, % of a core (Tessera 1000 partitions; etcd its one group)"]
    assert (cpu.etcd, cpu.tessera, cpu.ratio()) == (1.0, 4.0, "0.25")


def test_the_bench_before_target_reports_failover_s() -> None:
    lines = _by_figure(table([], {"tessera": {"failover_s": 0.8}}, {}, _args()))
    assert lines["failover: first write after the leader kill (s)"].tessera == 0.8


def test_last_words_skip_traceback_frames() -> None:
    out = "Traceback (most recent call last):\n  File \"x.py\", line 1\n    boom()\nValueError: bad\n"
    assert last_words(out) == "Traceback (most recent call last): | ValueError: bad"
    assert last_words("") == "(no output)"
