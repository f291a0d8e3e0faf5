"""`tessera cluster up` as a user runs it: ready line, CLI round trip, clean stop, data kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import eventually
from support import cluster_up

pytestmark = pytest.mark.timeout(180)

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")
_UP = [TESSERA, "cluster", "up", "--base-port", "0", "--partitions", "4", "--data-dir"]


def _start(data_dir: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        _UP + [data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"ready: router (\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"no ready line; stderr: {proc.stderr.read() if proc.stderr else ''}")


_children_of = cluster_up.children_of


def _kv(router: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TESSERA, "kv", *args, "--router", router], capture_output=True, timeout=60, check=False)


def test_cluster_up_serves_stops_cleanly_and_keeps_data(tmp_path) -> None:
    data = str(tmp_path / "data")
    proc, router = _start(data)
    try:
        assert _kv(router, "put", "greeting", "hello").returncode == 0
        got = _kv(router, "get", "greeting")
        assert got.returncode == 0 and got.stdout.strip() == b"hello"
        missing = _kv(router, "get", "nope")
        assert missing.returncode == 1 and b"not found" in missing.stderr
        assert len(_children_of(data)) == 4  # one router, three nodes
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    eventually(lambda: not _children_of(data), 10, "no processes left behind after SIGTERM")

    proc, router = _start(data)
    try:
        got = _kv(router, "get", "greeting", "--consistency", "linearizable")
        assert got.returncode == 0 and got.stdout.strip() == b"hello"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert _children_of(data) == []


def test_launcher_killed_with_sigkill_leaves_no_orphans(tmp_path) -> None:
    data = str(tmp_path / "data")
    proc, _ = _start(data)
    assert len(_children_of(data)) == 4
    proc.kill()
    proc.wait(10)
    eventually(lambda: not _children_of(data), 15, "the children of a SIGKILLed launcher to exit")


def test_second_cluster_up_on_the_same_data_dir_names_the_cause_and_leaves_the_first_alone(tmp_path) -> None:
    data = str(tmp_path / "data")
    proc, router = _start(data)
    try:
        second = subprocess.run(_UP + [data], capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 1
        assert "ready:" not in second.stdout
        # The router's own words, not a pointer to its log.
        assert "router did not start" in second.stderr and "in use by another router" in second.stderr, second.stderr
        assert proc.poll() is None
        assert len(_children_of(data)) == 4
        assert _kv(router, "put", "still", "here").returncode == 0
        got = _kv(router, "get", "still", "--consistency", "linearizable")
        assert got.returncode == 0 and got.stdout == b"here"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    eventually(lambda: not _children_of(data), 10, "no processes left behind after SIGTERM")
