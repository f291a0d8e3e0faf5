"""Micro-benchmark of the WAL write path: batches/s and entries/s with fsync.

Each batch carries ``N`` entries of ``--value-size`` bytes plus a hard state
(what one Ready of a busy partition adds), spread over ``--partitions``
partitions; every 64 batches each partition compacts what it wrote before,
as a node would after applying, so segments rotate and get deleted.  The
clock runs from building the WalBatch until ``write`` returns; making the
Entry objects (the consensus core's job) is not counted.

    python -m tools.bench_wal [--seconds 3] [--batch 1 16 256] [--value-size 128]
                              [--partitions 1] [--no-sync] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from node.raft import Entry, HardState
from node.wal.batch import WalBatch
from node.wal.wal import WriteAheadLog
from tools.stats import percentile


def run(directory: str, batch_size: int, value_size: int, partitions: int, seconds: float, sync: bool) -> dict:
    payload = bytes(range(256)) * (value_size // 256 + 1)
    payload = payload[:value_size]
    nxt = dict.fromkeys(range(1, partitions + 1), 1)
    per_part = [batch_size // partitions + (1 if p < batch_size % partitions else 0) for p in range(partitions)]
    lat: list[float] = []
    busy = 0.0
    n = 0
    with WriteAheadLog.open(directory, sync=sync) as wal:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            work = []
            for (pid, i), k in zip(nxt.items(), per_part):
                if k:
                    work.append((pid, [Entry(3, j, payload) for j in range(i, i + k)]))
            t0 = time.perf_counter()
            b = WalBatch()
            for pid, ents in work:
                b.entries(pid, ents)
                b.hard_state(pid, HardState(3, 1, ents[-1].index))
                if n % 64 == 63 and ents[0].index > 1:
                    b.compact(pid, ents[0].index - 1)
            wal.write(b)
            dt = time.perf_counter() - t0
            lat.append(dt)
            busy += dt
            for pid, ents in work:
                nxt[pid] = ents[-1].index + 1
            n += 1
        segments = len(wal.segment_paths())
    lat.sort()
    return {
        "batch": batch_size,
        "partitions": partitions,
        "sync": sync,
        "batches_per_s": n / busy,
        "entries_per_s": n * batch_size / busy,
        "mb_per_s": n * batch_size * value_size / busy / 1e6,
        "latency_ms": {
            "p50": percentile(lat, 0.50) * 1e3,
            "p99": percentile(lat, 0.99) * 1e3,
            "max": lat[-1] * 1e3,
        },
        "batches": n,
        "segments_left": segments,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 256], help="entries per batch")
    ap.add_argument("--value-size", type=int, default=128)
    ap.add_argument("--partitions", type=int, default=1, help="spread each batch's entries over this many")
    ap.add_argument("--no-sync", action="store_true", help="skip fdatasync: the CPU cost alone")
    ap.add_argument("--dir", default=None, help="parent directory for the WAL (default: the system temp dir)")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = ap.parse_args(argv)

    if not args.json:
        print(f"{'batch':>6} {'parts':>5} {'sync':>5} {'batches/s':>10} {'entries/s':>10} {'MB/s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7}")
    for size in args.batch:
        directory = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir)
        try:
            r = run(directory, size, args.value_size, min(args.partitions, size), args.seconds, not args.no_sync)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if args.json:
            print(json.dumps(r))
        else:
            lat = r["latency_ms"]
            print(f"{size:>6} {r['partitions']:>5} {r['sync']!s:>5} {r['batches_per_s']:>10.0f} "
                  f"{r['entries_per_s']:>10.0f} {r['mb_per_s']:>7.1f} {lat['p50']:>7.3f} {lat['p99']:>7.3f}")


if __name__ == "__main__":
    main()
