"""A writer process SIGKILLed mid-stream loses nothing that ``write()`` acknowledged.

The child writes batches (three partitions, a hard state each, compactions
now and then, small segments so that rotation and segment deletion run
too) and prints one line per acknowledged batch, flushed, only after
``write()`` returned.  The parent kills it at a random moment, reopens the WAL
and checks every acknowledged entry that is not compacted, over several
crash/restart rounds on the same directory.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.wal import WalLogStorage, WriteAheadLog

PIDS = (1, 2, 3)
SEGMENT_BYTES = 32 * 1024

CHILD = r"""
import sys
from node.raft import Entry, HardState
from node.wal import WalBatch, WriteAheadLog

directory, base, per_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wal = WriteAheadLog.open(directory, segment_bytes=int(sys.argv[4]))
nxt = {pid: wal.state(pid).last_index() + 1 for pid in (1, 2, 3)}
n = base
while True:
    b = WalBatch()
    for pid in (1, 2, 3):
        i = nxt[pid]
        b.entries(pid, [Entry(7, i + k, b"%d:%d" % (n, k)) for k in range(per_batch)])
        b.hard_state(pid, HardState(7, pid, i + per_batch - 1))
        if n % 40 == 0 and i > 100:
            b.compact(pid, i - 100)
    wal.write(b)
    print(n, *(nxt[pid] for pid in (1, 2, 3)), flush=True)
    for pid in (1, 2, 3):
        nxt[pid] += per_batch
    n += 1
"""


def _run_and_kill(directory: str, base: int, per_batch: int, acks_before_kill: int) -> list[list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, directory, str(base), str(per_batch), str(SEGMENT_BYTES)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    acked: list[list[int]] = []
    try:
        for line in proc.stdout:
            acked.append([int(x) for x in line.split()])
            if len(acked) >= acks_before_kill:
                break
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # lines the child flushed before it died were acknowledged too
    finally:
        proc.kill()
        proc.wait()
    for line in rest.splitlines(keepends=True):
        if line.endswith(b"\n"):
            acked.append([int(x) for x in line.split()])
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.timeout(120)
@pytest.mark.parametrize("per_batch", [1, 64])
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, per_batch: int) -> None:
    rng = random.Random(per_batch)
    directory = str(tmp_path / "wal")
    total = 0
    for rnd in range(1, 6):
        acked = _run_and_kill(directory, rnd * 1_000_000, per_batch, rng.randint(30, 400))
        assert acked, "the child acknowledged nothing"
        total += len(acked)
        wal = WriteAheadLog.open(directory, segment_bytes=SEGMENT_BYTES)
        try:
            for slot, pid in enumerate(PIDS, 1):
                s = WalLogStorage(wal, pid)
                last_acked = max(a[slot] for a in acked) + per_batch - 1
                assert s.last_index() >= last_acked
                assert wal.state(pid).hard_state.commit >= last_acked
                for a in acked:
                    n, first = a[0], a[slot]
                    if first + per_batch - 1 < s.first_index():
                        continue  # compacted, as the child asked
                    lo = max(first, s.first_index())
                    got = [e.data for e in s.entries(lo, first + per_batch)]
                    assert got == [b"%d:%d" % (n, k) for k in range(lo - first, per_batch)]
        finally:
            wal.close()
    assert total > 100
