"""Side-by-side cluster benchmarks: ``tessera bench`` against fresh local clusters that differ in
one guard (TLS, auth), measured back to back so all see the same machine load.

tools/bench_tls.py and tools/bench_auth.py both ran this same loop (fresh cluster, bench
subprocess, servers' CPU from /proc, one markdown table); it lives here once so the two
benchmarks measure their modes the same way and a fix to the measurement reaches both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping

from tools.cluster import Cluster
from tools.procstat import cpu_seconds

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")
WARMUP_S = 1.0


def cpu_s(pids: list[int]) -> float:
    """The processes' CPU time (user + system) so far, in seconds, from /proc."""
    return sum(cpu_seconds(pid) for pid in pids)


def run_one(concurrency: int, duration: float, workload: str, *, tls: bool, auth: bool, prefix: str) -> dict:
    """One ``tessera bench`` run against a fresh local 3-node cluster (as ``bench --local`` starts).

    The bench client gets the cluster's client certificate and, with ``auth``, the bootstrap
    admin token in $TESSERA_TOKEN (not on the command line). The result is bench's JSON plus
    ``server_cpu_ms_per_op``: the nodes' and the router's CPU over the run, warm-up included,
    divided by the writes done in it.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        cluster = Cluster(root=os.path.join(tmp, "cluster"), nodes=3, log_level="warning", tls=tls, auth=auth)
        try:
            cluster.start()
            cluster.wait_ready(120)
            cluster.wait_balanced(120)
            pids = [p.popen.pid for p in [*cluster.node_procs.values(), *cluster.router_procs.values()]
                    if p.popen is not None]
            out = os.path.join(tmp, "result.json")
            flags = []
            if cluster.tls_files is not None:
                ca, cert, key = cluster.tls_files
                flags = ["--ca", ca, "--cert", cert, "--key", key]
            env = dict(os.environ)
            if cluster.admin_token is not None:
                env["TESSERA_TOKEN"] = cluster.admin_token  # not on the command line
            argv = [TESSERA, "bench", "--target", f"tessera://{cluster.router_addresses}", "--workload", workload,
                    "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(WARMUP_S),
                    "--json", out, "--log-level", "warning", *flags]
            before = cpu_s(pids)
            done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
            server_cpu = cpu_s(pids) - before
        finally:
            cluster.stop()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        with open(out) as f:
            result: dict = json.load(f)
    # Writes done over warm-up and run, at the measured rate: what the servers' CPU paid for.
    result["server_cpu_ms_per_op"] = 1000 * server_cpu / max(1.0, result["throughput"] * (duration + WARMUP_S))
    return result


def side_by_side(modes: Mapping[str, tuple[bool, bool]], *, column: str, concurrency: str, duration: float,
                 rounds: int, workload: str, prefix: str) -> None:
    """For each round and each concurrency, run every mode (label -> (tls, auth)) back to back;
    print a progress line per run on stderr and one markdown table on stdout at the end."""
    rows = []
    for r in range(rounds):
        for c in (int(x) for x in concurrency.split(",")):
            for mode, (tls, auth) in modes.items():
                res = run_one(c, duration, workload, tls=tls, auth=auth, prefix=prefix)
                lat = res["latency_ms"]
                rows.append((r + 1, c, mode, res["throughput"], lat["p50"], lat["p99"], res["server_cpu_ms_per_op"],
                             res["errors"]))
                print(f"round {r + 1} c={c} {mode}: {res['throughput']:.0f} ops/s p50 {lat['p50']:.2f} ms "
                      f"p99 {lat['p99']:.2f} ms, servers {res['server_cpu_ms_per_op']:.2f} CPU ms/op",
                      file=sys.stderr, flush=True)
    print(f"| round | concurrency | {column} | ops/s | p50 ms | p99 ms | server CPU ms/op | errors |  ({workload}, "
          f"{duration:g} s)")
    print("|---|---|---|---|---|---|---|---|")
    for r, c, mode, thr, p50, p99, cpu_ms, err in rows:
        print(f"| {r} | {c} | {mode} | {thr:,.0f} | {p50:.2f} | {p99:.2f} | {cpu_ms:.2f} | {err} |")
