"""Where a write's time goes at concurrency 1: one timeline of the client, the leader and a follower.

    python -m tools.bench_timeline [--duration 5] [--partitions 8] [--json FILE]

Starts a local cluster (3 nodes) with tracing on (``TESSERA_TRACE_DIR``, common/trace.py),
runs ``tessera bench --workload write --concurrency 1`` against it, and lines up every process's
marks on the machine's one monotonic clock: for each put, the hops from the client to the
leader, the leader's round up to its appends on the wire, the first follower to read them
(its round, its WAL write and fsync, its acknowledgement), the leader's next round up to the
apply, and the answer back. Prints each hop's median and 90th percentile over the puts whose
every mark was found (the first fifth are left out as warm-up), so a change to the hot path
shows which hop it moved. At concurrency 1 the puts do not overlap, which is what lets marks
be paired without ids; higher concurrency is what ``tessera bench`` and py-spy are for.
docs/benchmarks.md ("Where a write's time goes") has a run and what it showed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common import trace
from tools.cluster import Cluster

# The hops of one put, in path order: (label, from point, to point). The leader's own WAL
# write runs beside the follower's path (its appends leave first, docs/decisions.md D6).
HOPS: tuple[tuple[str, str, str], ...] = (
    ("client -> leader reads the request", "put", "l_read"),
    ("leader: request -> round starts", "l_read", "l_round"),
    ("leader: round starts -> appends on the wire", "l_round", "l_sent"),
    ("appends -> a follower reads them", "l_sent", "f_read"),
    ("follower: read -> round starts", "f_read", "f_round"),
    ("follower: round starts -> WAL written, fsynced", "f_round", "f_wal"),
    ("follower: WAL fsynced -> ack on the wire", "f_wal", "f_ack"),
    ("ack -> leader reads it", "f_ack", "l_ack"),
    ("leader: ack -> next round starts", "l_ack", "l_round2"),
    ("leader: round starts -> applied", "l_round2", "l_applied"),
    ("leader: applied -> answer on the wire", "l_applied", "l_answer"),
    ("answer -> client has it", "l_answer", "done"),
)
BESIDE: tuple[tuple[str, str, str], ...] = (("leader's own WAL write and fsync (beside)", "l_sent", "l_wal"),)
TOTAL = ("the put, end to end", "put", "done")


@dataclass(frozen=True, slots=True)
class Hop:
    label: str
    p50_us: float
    p90_us: float


def _first(marks: Sequence[tuple[int, str]], name: str, after: int, before: int) -> int | None:
    for t, n in marks:
        if t >= after and n == name:
            return t if t <= before else None
    return None


def points(client: Sequence[tuple[int, str]], nodes: Mapping[int, Sequence[tuple[int, str]]]) -> list[dict[str, int]]:
    """Each complete put's points (ns on the shared clock), in the order the puts ran. A put
    whose leader or follower marks are missing (an election, a retry) is left out."""
    out = []
    start = None
    for t, name in client:
        if name == "put.start":
            start = t
        elif name == "put.end" and start is not None:
            p = _put_points(start, t, nodes)
            if p is not None:
                out.append(p)
            start = None
    return out


def _put_points(t0: int, t1: int, nodes: Mapping[int, Sequence[tuple[int, str]]]) -> dict[str, int] | None:
    reads = [(at, pid) for pid, marks in nodes.items() if (at := _first(marks, "kv.read", t0, t1)) is not None]
    if not reads:
        return None
    l_read, leader = min(reads)
    lm = nodes[leader]
    p = {"put": t0, "done": t1, "l_read": l_read}
    for key, name, after in (("l_round", "round.start", "l_read"), ("l_sent", "round.sent", "l_round")):
        at = _first(lm, name, p[after], t1)
        if at is None:
            return None
        p[key] = at
    ins = [(at, pid) for pid, marks in nodes.items()
           if pid != leader and (at := _first(marks, "raft.in", p["l_sent"], t1)) is not None]
    if not ins:
        return None
    p["f_read"], follower = min(ins)
    fm = nodes[follower]
    steps = (
        (fm, "f_round", "round.start", "f_read"),
        (fm, "f_wal", "round.wal", "f_round"),
        (fm, "f_ack", "round.persisted", "f_wal"),
        (lm, "l_ack", "raft.ack", "f_ack"),
        (lm, "l_round2", "round.start", "l_ack"),
        (lm, "l_applied", "round.applied", "l_round2"),
        (lm, "l_answer", "kv.answer", "l_applied"),
        (lm, "l_wal", "round.wal", "l_sent"),
    )
    for marks, key, name, after in steps:
        at = _first(marks, name, p[after], t1)
        if at is None:
            return None
        p[key] = at
    return p


def hops(puts: Sequence[Mapping[str, int]]) -> list[Hop]:
    """Median and 90th percentile of every hop (and the total) over ``puts``, in µs."""
    out = []
    for label, a, b in (*HOPS, *BESIDE, TOTAL):
        spans = sorted((p[b] - p[a]) / 1e3 for p in puts)
        if spans:
            out.append(Hop(label, statistics.median(spans), spans[min(len(spans) - 1, int(len(spans) * 0.9))]))
    return out


def report(result: Sequence[Hop], n: int) -> str:
    lines = [f"{'hop':50s} {'p50 µs':>8s} {'p90 µs':>8s}   ({n} puts)"]
    for h in result:
        if h.label == TOTAL[0] or h.label == BESIDE[0][0]:
            lines.append("")
        lines.append(f"{h.label:50s} {h.p50_us:8.0f} {h.p90_us:8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of puts (default: 5)")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--json", metavar="FILE", help="also write the hops here")
    args = ap.parse_args(argv)
    if args.duration <= 0:
        ap.error("--duration must be positive")
    if args.partitions < 1:
        ap.error("--partitions must be at least 1")
    root = tempfile.mkdtemp(prefix="tessera-timeline-")
    marks_dir = os.path.join(root, "trace")
    os.mkdir(marks_dir)
    env_before = os.environ.get(trace.ENV)
    os.environ[trace.ENV] = marks_dir  # the nodes and the bench client inherit it
    cluster = Cluster(root=os.path.join(root, "cluster"), nodes=3, partitions=args.partitions, log_level="warning")
    try:
        cluster.start()
        cluster.wait_ready(90)
        node_pids = {p.popen.pid for p in cluster.node_procs.values() if p.popen is not None}
        done = subprocess.run(
            [sys.executable, "-m", "tools.cli", "bench", "--router", cluster.router_addresses, "--workload", "write",
             "--concurrency", "1", "--duration", str(args.duration), "--warmup", "1", "--log-level", "warning"],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"bench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    finally:
        cluster.stop()  # the nodes write their last marks as they exit
        if env_before is None:
            os.environ.pop(trace.ENV, None)
        else:
            os.environ[trace.ENV] = env_before
    try:
        marks = trace.read_dir(marks_dir)
        clients = [pid for pid, m in marks.items() if any(n == "put.start" for _, n in m)]
        if len(clients) != 1:
            raise SystemExit(f"expected the marks of one bench client, found {len(clients)}")
        puts = points(marks[clients[0]], {pid: m for pid, m in marks.items() if pid in node_pids})
        puts = puts[len(puts) // 5 :]
        if not puts:
            raise SystemExit("no put had every mark (were the nodes' marks written?)")
        result = hops(puts)
        print(report(result, len(puts)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"puts": len(puts), "hops": [dataclasses.asdict(h) for h in result]}, f, indent=2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
