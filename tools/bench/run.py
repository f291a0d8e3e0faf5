"""``tessera bench``: drive a workload at a cluster and report throughput and latency.

Keys are 16 bytes: one leading byte spreading them evenly over the byte key
space (so over the pre-split partitions), then the key number.  Each of
``--concurrency`` workers keeps one request in flight through the asyncio
client, which multiplexes them onto one stream per node.  The first second
is a warm-up and is not counted.

``--local`` starts a throw-away 3-node cluster with ``--partitions``
partitions in a temp directory, measures, and removes it.
``--failover`` (with ``--local``) kills the leader of a partition midway
and reports the time from the kill to the first successful write to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

from common import aio
from router.client import AsyncClient, TesseraError
from router.placement.config import PlacementConfig
from tools.cluster import Cluster
from tools.stats import percentile

WARMUP_S = 1.0
_MIX = {"write": 0.0, "a": 0.5, "b": 0.95, "c": 1.0}  # share of reads


def key_of(i: int) -> bytes:
    return bytes([(i * 131) % 256]) + b"%015d" % i


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    ops: int = 0


def summarize(stats: Stats, seconds: float) -> dict:
    lat = sorted(stats.latencies)
    return {
        "throughput": round(stats.ops / seconds, 1) if seconds > 0 else 0.0,
        "ops": stats.ops,
        "seconds": round(seconds, 3),
        "errors": stats.errors,
        "latency_ms": {
            "p50": round(percentile(lat, 0.50), 3),
            "p90": round(percentile(lat, 0.90), 3),
            "p99": round(percentile(lat, 0.99), 3),
            "p999": round(percentile(lat, 0.999), 3),
            "max": round(lat[-1], 3) if lat else 0.0,
        },
    }


async def run_workload(
    router: str,
    workload: str,
    concurrency: int,
    duration: float,
    keys: int,
    value_size: int,
    consistency: str,
    seed: int = 1,
) -> dict:
    read_share = _MIX[workload]
    value = os.urandom(value_size)
    stats = Stats()
    async with AsyncClient(router) as client:
        if read_share > 0:
            # Reads need something to read: load a slice of the key space first.
            preload = min(keys, 2000)
            sem = asyncio.Semaphore(64)

            async def load(i: int) -> None:
                async with sem:
                    await client.put(key_of(i), value)

            await asyncio.gather(*(load(i) for i in range(preload)))
            keys = preload
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + WARMUP_S
        stop_at = measure_from + duration

        async def worker(w: int) -> None:
            rng = random.Random(seed * 1000 + w)
            while True:
                now = loop.time()
                if now >= stop_at:
                    return
                k = key_of(rng.randrange(keys))
                t0 = time.perf_counter()
                try:
                    if rng.random() < read_share:
                        await client.get(k, consistency=consistency)
                    else:
                        await client.put(k, value)
                    ok = True
                except TesseraError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= 0 and loop.time() >= measure_from:
                    if ok:
                        stats.ops += 1
                        stats.latencies.append((t1 - t0) * 1000.0)
                    else:
                        stats.errors += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return summarize(stats, duration)


async def measure_failover(cluster: Cluster, concurrency: int = 8) -> float:
    """Seconds from SIGKILL of a partition leader to the first successful write to that partition."""
    import grpc

    from tesserapb import meta_pb2, meta_pb2_grpc

    assert cluster.router is not None
    probe_key = key_of(7)
    async with AsyncClient(cluster.router.address) as client:
        await client.put(probe_key, b"warm")
        with grpc.insecure_channel(cluster.router.address) as ch:
            part = meta_pb2_grpc.MetaStub(ch).GetPartition(meta_pb2.GetPartitionRequest(key=probe_key), timeout=5)
        leader = part.partition.leader_store_id
        first_ok: list[float] = []
        killed_at = time.monotonic()
        cluster.kill(leader)

        async def writer(w: int) -> None:
            i = 0
            while not first_ok and time.monotonic() - killed_at < 30:
                try:
                    await client.put(probe_key[:1] + b"failover-%d-%d" % (w, i), b"x", timeout=30)
                    first_ok.append(time.monotonic())
                except TesseraError:
                    await asyncio.sleep(0.01)
                i += 1

        await asyncio.gather(*(writer(w) for w in range(concurrency)))
    cluster.restart(leader)
    if not first_ok:
        raise TimeoutError("no write succeeded within 30 s of the leader kill")
    return min(first_ok) - killed_at


def main(args: argparse.Namespace) -> int:
    if args.plot:
        print("tessera bench: --plot is not available in this version (--json FILE writes the numbers)",
              file=sys.stderr)
        return 2
    if args.failover and not args.local:
        print("tessera bench: --failover needs --local (it kills a node)", file=sys.stderr)
        return 2
    cluster = None
    root = None
    router = args.router
    try:
        if args.local:
            root = tempfile.mkdtemp(prefix="tessera-bench-")
            cluster = Cluster(root=root, nodes=3, partitions=args.partitions or PlacementConfig().partitions,
                              log_level=args.log_level)
            cluster.start()
            cluster.wait_ready(120)
            assert cluster.router is not None
            router = cluster.router.address
        result = aio.run(
            run_workload(
                router, args.workload, args.concurrency, args.duration, args.keys, args.value_size, args.consistency
            )
        )
        result.update(
            workload=args.workload,
            concurrency=args.concurrency,
            value_size=args.value_size,
            key_size=16,
            partitions=args.partitions,
        )
        if args.failover and cluster is not None:
            result["failover_s"] = round(aio.run(measure_failover(cluster)), 3)
    finally:
        if cluster is not None:
            cluster.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    lat = result["latency_ms"]
    print(
        f"{args.workload}: {result['throughput']:,.0f} ops/s  p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  "
        f"p99 {lat['p99']:.2f} ms  p999 {lat['p999']:.2f} ms  max {lat['max']:.1f} ms  errors {result['errors']}  "
        f"(concurrency {args.concurrency}, {args.duration:g} s)"
    )
    if "failover_s" in result:
        print(f"failover: first successful write {result['failover_s']:.2f} s after the leader was killed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
