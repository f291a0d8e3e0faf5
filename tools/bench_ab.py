"""Two checkouts of Tessera side by side: is a change to the hot path faster than the commit before?

    python -m tools.bench_ab BEFORE_DIR AFTER_DIR [--rounds 4] [--duration 5]
        [--concurrency 64,256] [--workload write] [--consistency C] [--keys N]

Both checkouts' clusters (3 nodes, 8 partitions each, started from each checkout's own code)
are up at once; `tessera bench` (each checkout's own) runs against them in turn, every
concurrency, for several rounds, so that the machine's drift (this machine's speed moves by
up to 1.8x between days, and by 20% within minutes) lands on both. Each run prints a line;
the end prints medians: throughput, p50, the three nodes' CPU time per operation and the bytes
the machine's disks were asked to write per operation (/proc/diskstats). A checkout needs
`tesserapb/` generated (make protos) and runs under this Python (its environment's packages).
docs/benchmarks.md lists what each measured change bought.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from tools.bench_side import cpu_s
from tools.cluster import Cluster


def disk_written_bytes() -> int:
    """Bytes written to every whole disk so far (sectors of 512 bytes, partitions left out)."""
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            name = fields[2]
            if os.path.exists(f"/sys/block/{name}") and not name.startswith(("loop", "ram", "zram")):
                total += int(fields[9]) * 512
    return total


@dataclass
class Side:
    label: str
    checkout: str
    cluster: Cluster
    root: str
    runs: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    def node_cpu(self) -> float:
        return cpu_s([p.popen.pid for p in self.cluster.node_procs.values() if p.popen is not None])


def run(side: Side, args: argparse.Namespace, concurrency: int) -> str:
    out = os.path.join(side.root, "result.json")
    argv = [sys.executable, "-m", "tools.cli", "bench", "--router", side.cluster.router_addresses,
            "--workload", args.workload, "--keys", str(args.keys), "--concurrency", str(concurrency),
            "--duration", str(args.duration), "--warmup", "1", "--json", out, "--log-level", "warning"]
    if args.consistency:
        argv += ["--consistency", args.consistency]
    cpu0, disk0 = side.node_cpu(), disk_written_bytes()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=side.checkout, check=False)
    cpu, disk = side.node_cpu() - cpu0, disk_written_bytes() - disk0
    if done.returncode != 0:
        raise SystemExit(f"{side.label}: bench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    with open(out) as f:
        res = json.load(f)
    ops = max(1.0, res["throughput"] * (args.duration + 1))  # warm-up included: what CPU and disk paid for
    row = (res["throughput"], res["latency_ms"]["p50"], 1e6 * cpu / ops, disk / ops / 1024)
    side.runs.setdefault(concurrency, []).append(row)
    return f"c={concurrency}: {row[0]:8,.0f}/s p50 {row[1]:6.2f} ms node CPU {row[2]:4.0f} µs disk {row[3]:5.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", help="checkout of the commit before the change")
    ap.add_argument("after", help="checkout with the change")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (after 1 s of warm-up)")
    ap.add_argument("--concurrency", default="64,256", help="comma-separated (default: 64,256)")
    ap.add_argument("--workload", default="write")
    ap.add_argument("--consistency", default="", help="read consistency for read workloads")
    ap.add_argument("--keys", type=int, default=100_000)
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    sides: list[Side] = []
    try:
        for label, given in (("before", args.before), ("after", args.after)):
            checkout = os.path.abspath(given)
            if not os.path.isdir(os.path.join(checkout, "tesserapb")):
                raise SystemExit(f"{checkout}: no tesserapb/ (run make protos there)")
            root = tempfile.mkdtemp(prefix=f"tessera-ab-{label}-")
            side = Side(label, checkout, Cluster(root=root, nodes=3, partitions=8, log_level="warning", cwd=checkout),
                        root)
            sides.append(side)
            side.cluster.start()
            side.cluster.wait_ready(120)
            side.cluster.wait_balanced(120)
        for r in range(args.rounds):
            for side in sides:
                print(f"round {r + 1} {side.label:6s} " + " | ".join(run(side, args, c) for c in concurrencies),
                      flush=True)
        print(f"medians over {args.rounds} rounds ({args.workload}, {args.duration:g} s runs):")
        for c in concurrencies:
            for side in sides:
                rows = side.runs[c]
                med = [statistics.median(x[i] for x in rows) for i in range(4)]
                print(f"  c={c:<4d} {side.label:6s} {med[0]:8,.0f}/s  p50 {med[1]:6.2f} ms"
                      f"  node CPU {med[2]:4.0f} µs/op  disk {med[3]:5.1f} KiB/op")
    finally:
        for side in sides:
            side.cluster.stop()
            shutil.rmtree(side.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
