"""The WAL benchmark runs and writes what it counts (a smoke test, not a timing)."""

from __future__ import annotations

import json

import pytest

from tools.bench_wal import main, run


def test_wal_benchmark_writes_batches_and_reports_percentiles(tmp_path) -> None:
    r = run(str(tmp_path / "wal"), batch_size=4, value_size=32, partitions=2, seconds=0.1, sync=False)
    assert r["batches"] > 0 and r["entries_per_s"] == pytest.approx(r["batches_per_s"] * 4)
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_wal_benchmark_command_line_prints_json_lines(tmp_path, capsys) -> None:
    main(["--seconds", "0.05", "--batch", "1", "8", "--no-sync", "--dir", str(tmp_path), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["batch"] for r in lines] == [1, 8]
    assert list(tmp_path.iterdir()) == []  # its temporary WAL directories are removed
