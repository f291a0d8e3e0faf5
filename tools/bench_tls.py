"""What TLS costs: the same ``tessera bench`` with and without mutual TLS, side by side in one run.

    .venv/bin/python -m tools.bench_tls [--concurrency 64,1] [--duration 6] [--rounds 1]
    .venv/bin/python -m tools.bench_tls --micro [--rounds 3]

``--micro`` measures the Raft wire alone instead: node.transport's in-process benchmark (two
stores, one event loop, bursts of 1 and 64 messages) on the TCP wire with and without TLS.

For each round and each concurrency it measures a plaintext cluster and a TLS one back to
back (each a fresh local 3-node cluster, as ``bench --local`` starts, with ``--tls`` for the
second; the bench client gets the cluster's client certificate), so both see the same machine
load. It prints one markdown table: throughput, latency percentiles, and the servers' CPU per
write (the nodes' and the router's CPU time, read from /proc over the bench run, warm-up
included, divided by the writes done in it). docs/security.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from tools.cluster import Cluster

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")
WARMUP_S = 1.0
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / _TICK


def run_one(concurrency: int, duration: float, tls: bool, workload: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tessera-bench-tls-") as tmp:
        cluster = Cluster(root=os.path.join(tmp, "cluster"), nodes=3, log_level="warning", tls=tls)
        try:
            cluster.start()
            cluster.wait_ready(120)
            cluster.wait_balanced(120)
            pids = [p.popen.pid for p in [*cluster.node_procs.values(), *cluster.router_procs.values()]
                    if p.popen is not None]
            out = os.path.join(tmp, "result.json")
            tls_flags = []
            if cluster.tls_files is not None:
                ca, cert, key = cluster.tls_files
                tls_flags = ["--ca", ca, "--cert", cert, "--key", key]
            argv = [TESSERA, "bench", "--target", f"tessera://{cluster.router_addresses}", "--workload", workload,
                    "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(WARMUP_S),
                    "--json", out, "--log-level", "warning", *tls_flags]
            before = _cpu_s(pids)
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            server_cpu = _cpu_s(pids) - before
        finally:
            cluster.stop()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        with open(out) as f:
            result: dict = json.load(f)
    # Writes done over warm-up and run, at the measured rate: what the servers' CPU paid for.
    result["server_cpu_ms_per_op"] = 1000 * server_cpu / max(1.0, result["throughput"] * (duration + WARMUP_S))
    return result


def micro(rounds: int) -> None:
    """The TCP Raft wire alone, plaintext against TLS, interleaved (node.transport's benchmark)."""
    from common import aio, tls
    from node.transport import _bench
    from tools.certs import ensure_cluster_certs

    with tempfile.TemporaryDirectory(prefix="tessera-bench-tls-") as tmp:
        made = ensure_cluster_certs(tmp, nodes=[1], routers=[])
        config = tls.TlsConfig.load(made.ca, made.nodes[1].cert, made.nodes[1].key)
        print("| round | burst | wire | msgs/s | msgs/batch |  (TCP wire, in process, 128 B entries, 3 s)")
        print("|---|---|---|---|---|")
        for r in range(rounds):
            for burst in (1, 64):
                for cfg in (None, config):
                    got = aio.run(_bench(3.0, burst, 64, 128, tcp=True, tls=cfg))
                    print(f"| {r + 1} | {burst} | {'TLS' if cfg else 'plaintext'} | {got['msgs_per_s']:,.0f} | "
                          f"{got['msgs_per_batch']:.0f} |", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="64,1", help="comma-separated (default: %(default)s)")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workload", default="write")
    p.add_argument("--micro", action="store_true", help="the TCP Raft wire alone, in process")
    a = p.parse_args(argv)
    if a.micro:
        micro(a.rounds)
        return 0
    rows = []
    for r in range(a.rounds):
        for c in (int(x) for x in a.concurrency.split(",")):
            for tls in (False, True):
                res = run_one(c, a.duration, tls, a.workload)
                lat = res["latency_ms"]
                rows.append((r + 1, c, "TLS" if tls else "plaintext", res["throughput"], lat["p50"], lat["p99"],
                             res["server_cpu_ms_per_op"], res["errors"]))
                print(f"round {r + 1} c={c} {'tls' if tls else 'plain'}: {res['throughput']:.0f} ops/s "
                      f"p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms, servers "
                      f"{res['server_cpu_ms_per_op']:.2f} CPU ms/op", file=sys.stderr, flush=True)
    print(f"| round | concurrency | wire | ops/s | p50 ms | p99 ms | server CPU ms/op | errors |  ({a.workload}, "
          f"{a.duration:g} s)")
    print("|---|---|---|---|---|---|---|---|")
    for r, c, wire, thr, p50, p99, cpu_ms, err in rows:
        print(f"| {r} | {c} | {wire} | {thr:,.0f} | {p50:.2f} | {p99:.2f} | {cpu_ms:.2f} | {err} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
