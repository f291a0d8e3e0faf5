"""``tessera bench --local`` end to end: the installed command against real throw-away clusters.

Short runs (2 s measured, small key spaces): these check that the generator drives a real
cluster and that its report holds together (counts against the histogram, the timeline
against the duration, one CPU figure per client process, a real PNG, failover times in a
sane window), not how fast anything is. Each run's temp directories are made under the
test's own tmp_path (TMPDIR), so the test also sees that the bench removed them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.bench import histogram

REPO = Path(__file__).resolve().parents[2]


def bench(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[dict[str, Any], str]:
    """Run ``tessera bench --local ... --json`` with TMPDIR in tmp_path; (the JSON, stdout)."""
    tessera = Path(sys.executable).parent / "tessera"
    if not tessera.exists():
        pytest.fail(f"no tessera console script next to {sys.executable}; run `make dev` first")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "result.json"
    env = dict(os.environ, TMPDIR=str(scratch))
    proc = subprocess.run(
        [str(tessera), "bench", "--local", "--log-level", "warning", "--json", str(out), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # Not a terminal: no progress bars or live lines, no control sequences.
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert list(scratch.iterdir()) == [], "the bench left its temp directories behind"
    return json.loads(out.read_text()), proc.stdout


def check_consistent(result: dict[str, Any], duration: float) -> None:
    """The numbers of one report agree with each other."""
    h = histogram.decode(result["histogram"])
    assert result["ops"] > 0
    assert h.get_total_count() == result["ops"]
    assert result["throughput"] == pytest.approx(result["ops"] / duration, rel=0.01)
    assert sum(row[1] for row in result["timeline"]) == result["ops"]
    assert sum(row[2] for row in result["timeline"]) == result["errors"] == sum(result["errors_by_kind"].values())
    assert [row[0] for row in result["timeline"]] == list(range(len(result["timeline"])))
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert all(0 < c < 400 for c in result["client_cpu"])


def test_write_workload(tmp_path):
    result, stdout = bench(tmp_path, "--workload", "write", "--duration", "2", "--concurrency", "16",
                           "--partitions", "4")
    check_consistent(result, 2.0)
    assert result["target"] == "tessera" and result["workload"] == "write"
    assert result["errors"] == 0
    assert (result["partitions"], result["key_size"], result["value_size"], result["procs"]) == (4, 16, 128, 1)
    assert len(result["timeline"]) == 2 and len(result["client_cpu"]) == 1
    assert result["elections"] >= 0
    assert stdout.startswith("write on tessera: ") and "client CPU: " in stdout


def test_read_mix_from_two_processes_with_a_plot(tmp_path):
    """Workload a (half reads: every key loaded first) from two client processes, zipfian."""
    png = tmp_path / "bench.png"
    result, _ = bench(tmp_path, "--workload", "a", "--duration", "2", "--keys", "300", "--procs", "2",
                           "--concurrency", "16", "--distribution", "zipfian", "--plot", str(png))
    check_consistent(result, 2.0)
    assert result["errors"] == 0
    assert (result["procs"], result["distribution"], result["keys"]) == (2, "zipfian", 300)
    assert len(result["client_cpu"]) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cas_workload(tmp_path):
    result, _ = bench(tmp_path, "--workload", "cas", "--duration", "2", "--keys", "200",
                           "--concurrency", "16", "--warmup", "0.5")
    check_consistent(result, 2.0)
    assert result["errors"] == 0
    # Compare-and-sets that lost a race are counted, and are never more than the operations.
    assert 0 <= result["cas_conflicts"] <= result["ops"]


@pytest.mark.timeout(180)
def test_failover(tmp_path):
    png = tmp_path / "failover.png"
    result, stdout = bench(tmp_path, "--workload", "write", "--duration", "2", "--failover", "--plot", str(png))
    fo = result["failover"]
    assert result["concurrency"] == 16 and result["duration"] >= 9
    assert 0 < fo["first_ok_s"] < 10
    assert fo["first_ok_s"] <= fo["longest_gap_s"] < 10
    assert fo["led_partitions"] >= 1 and fo["affected_writes"] > 0
    assert fo["kill_at_s"] == pytest.approx(3.0, abs=1.0)
    assert "failover: killed " in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
