"""What a quiet cluster costs: each process's CPU share and memory with many idle partitions.

Starts a local cluster (``--nodes`` nodes, ``--routers`` routers, ``--partitions``
partitions, nothing else running against it), waits until every partition has a leader that
answers a linearizable read and placement has balanced the leaders (its moves wake the
groups they move), lets it settle for ``--settle`` seconds, then reads each
process's CPU time from /proc at the start and the end of a ``--seconds`` window. A share of
100% is one core busy for the whole window. Memory is each process's resident set at the end.

    python -m tools.bench_idle [--partitions 1000] [--nodes 3] [--routers 1] [--seconds 60]
                               [--settle 10] [--baseline 8] [--json]

No load is offered: what it measures is the price of ticks, heartbeats (between replicas and
to placement) and placement's own bookkeeping. CPU time is counted per process, so a busy
machine slows the start-up but changes the shares little.

``--baseline B`` first measures the same way a cluster of B partitions, then reports what each
idle partition costs a node in memory: (mean node RSS at ``--partitions`` - mean node RSS at
B) / (``--partitions`` - B).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import grpc

from common.routers import RouterSet
from common.wire.errors import error_from_rpc, leader_hint
from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster, Proc
from tools.procstat import cpu_seconds, rss_bytes


def _pids(cluster: Cluster) -> dict[str, int]:
    procs: dict[str, Proc] = {p.name: p for p in [*cluster.router_procs.values(), *cluster.node_procs.values()]}
    out = {}
    for name, p in procs.items():
        popen = p.running
        if popen is None:
            raise RuntimeError(f"{name} is not running")
        out[name] = popen.pid
    return out


def leaders(cluster: Cluster) -> dict[int, tuple[int, int]]:
    """Partition id -> (term, leader store) as placement has them."""
    routers = RouterSet(cluster.router_addresses)
    for _ in range(10 * routers.tries):
        try:
            with grpc.insecure_channel(routers.current) as ch:
                req = meta_pb2.ScanPartitionsRequest()
                parts = meta_pb2_grpc.MetaStub(ch).ScanPartitions(req, timeout=5).partitions
            return {p.id: (p.term, p.leader_store_id) for p in parts}
        except grpc.RpcError as exc:
            routers.failed(exc.code(), leader_hint(error_from_rpc(exc)))
            time.sleep(0.2)
    raise RuntimeError("no router answered ScanPartitions")


def measure(partitions: int, nodes: int, routers: int, seconds: float, settle: float, ready_timeout: float) -> dict:
    root = tempfile.mkdtemp(prefix="tessera-idle-")
    cluster = Cluster(root, nodes=nodes, partitions=partitions, routers=routers, log_level="warning")
    try:
        t0 = time.monotonic()
        cluster.start()
        cluster.wait_ready(ready_timeout)
        ready_s = time.monotonic() - t0
        # Placement's scheduler moves leaders until they are balanced; a move wakes its group.
        # Measure a cluster with nothing left to do, not the tail of its start-up.
        cluster.wait_balanced(ready_timeout)
        balanced_s = time.monotonic() - t0
        time.sleep(settle)
        pids = _pids(cluster)
        led = leaders(cluster)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        w0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - w0
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        moved = sum(1 for pid, tl in leaders(cluster).items() if led.get(pid) != tl)
        return {
            "partitions": partitions,
            "nodes": nodes,
            "routers": routers,
            "ready_s": round(ready_s, 1),
            "balanced_s": round(balanced_s, 1),
            # Partitions whose term or leader changed during the window (0 if it was quiet).
            "leader_changes": moved,
            "window_s": round(wall, 1),
            "processes": {
                name: {
                    "cpu_percent": round(100 * (after[name] - before[name]) / wall, 2),
                    "rss_mib": round(rss_bytes(pid) / 2**20, 1),
                }
                for name, pid in pids.items()
            },
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def memory_per_partition_kib(big: dict, base: dict) -> float:
    """What one more idle partition costs a node in resident memory, from two :func:`measure`
    results (``big`` with more partitions than ``base``)."""

    def node_rss(got: dict) -> float:
        rss = [p["rss_mib"] for name, p in got["processes"].items() if name.startswith("node")]
        return sum(rss) / len(rss)

    extra = big["partitions"] - base["partitions"]
    if extra <= 0:
        raise ValueError("the baseline must have fewer partitions")
    return (node_rss(big) - node_rss(base)) * 1024 / extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_idle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window (default: 60)")
    ap.add_argument("--settle", type=float, default=10.0, help="quiet time after ready, before measuring")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    ap.add_argument("--baseline", type=int, default=0, metavar="B",
                    help="also measure a cluster of B partitions first, for the memory per idle partition")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    for flag, value, low in (("--partitions", args.partitions, 1), ("--nodes", args.nodes, 3),
                             ("--routers", args.routers, 1)):
        if value < low:
            ap.error(f"{flag} must be at least {low} (got {value})")
    if args.seconds <= 0 or args.settle < 0:
        ap.error("--seconds must be positive and --settle not negative")
    if args.baseline and not 1 <= args.baseline < args.partitions:
        ap.error(f"--baseline must be between 1 and --partitions - 1 (got {args.baseline})")
    base = None
    if args.baseline:
        base = measure(args.baseline, args.nodes, args.routers, args.seconds, args.settle, args.ready_timeout)
    got = measure(args.partitions, args.nodes, args.routers, args.seconds, args.settle, args.ready_timeout)
    if base is not None:
        got["baseline"] = base
        got["memory_per_partition_kib"] = round(memory_per_partition_kib(got, base), 1)
    if args.json:
        print(json.dumps(got, indent=1))
        return 0
    print(f"{got['partitions']} idle partitions, {got['nodes']} nodes, {got['routers']} router(s); "
          f"ready after {got['ready_s']} s, balanced after {got['balanced_s']} s; CPU over "
          f"{got['window_s']} s (100% = one core), {got['leader_changes']} leader changes in it:")
    for name, p in got["processes"].items():
        print(f"  {name:<10} {p['cpu_percent']:6.2f}%   rss {p['rss_mib']:7.1f} MiB")
    if base is not None:
        print(f"memory per idle partition, per node: {got['memory_per_partition_kib']:.1f} KiB "
              f"(mean node RSS at {got['partitions']} partitions less at {base['partitions']}, "
              f"over {got['partitions'] - base['partitions']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
