"""``tessera cluster up`` as a child process, for process tests: start it and read up to its
ready hint, stop it with SIGTERM and check that nothing it started is left behind.

tests/process/test_tls.py and tests/process/test_auth_cli.py each carried these three helpers,
line for line (and test_cluster_up.py ``children_of``); they live here once so all drive and
check the launcher the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import eventually

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")


def children_of(data_dir: str) -> list[str]:
    """The processes (``ps`` lines) the launcher started for ``data_dir``."""
    # check=True: a failed ps would list no process at all, and "none left behind" would pass.
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if data_dir in line and "tools.cli" in line]


def up(data_dir: str, *flags: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `tessera cluster up --base-port 0 --data-dir DATA_DIR FLAGS...` and read its output
    up to the ready line and the lines that follow it, up to the "try:" hint."""
    proc = subprocess.Popen(
        [TESSERA, "cluster", "up", "--base-port", "0", "--data-dir", data_dir, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.lstrip().startswith("try:"):
            return proc, lines
    proc.kill()
    raise AssertionError(f"no ready line: {lines}; stderr: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen[str], data_dir: str) -> None:
    """SIGTERM the launcher; it must exit 0 and leave none of its processes behind."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    eventually(lambda: not children_of(data_dir), 10, "no processes left behind")
