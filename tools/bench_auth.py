"""What auth costs: the same ``tessera bench`` with TLS off, TLS on, and TLS + auth, side by side.

    .venv/bin/python -m tools.bench_auth [--concurrency 1,64] [--duration 6] [--rounds 1]

For each round and each concurrency it measures three fresh local 3-node clusters back to
back, so all see the same machine load: plaintext; mutual TLS (``--tls``); mutual TLS with
``--auth``, the bench client sending the bootstrap admin token on every call (so every KV
stream open and every Meta call is checked by the interceptor; docs/auth.md). It prints one
markdown table: throughput, latency percentiles and the servers' CPU per write (as
tools/bench_tls.py measures it). docs/auth.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from tools.bench_tls import TESSERA, WARMUP_S, _cpu_s
from tools.cluster import Cluster

MODES = ("plaintext", "TLS", "TLS+auth")


def run_one(concurrency: int, duration: float, mode: str, workload: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="tessera-bench-auth-") as tmp:
        cluster = Cluster(root=os.path.join(tmp, "cluster"), nodes=3, log_level="warning",
                          tls=mode != "plaintext", auth=mode == "TLS+auth")
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
            before = _cpu_s(pids)
            done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
            server_cpu = _cpu_s(pids) - before
        finally:
            cluster.stop()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        with open(out) as f:
            result: dict = json.load(f)
    result["server_cpu_ms_per_op"] = 1000 * server_cpu / max(1.0, result["throughput"] * (duration + WARMUP_S))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,64", help="comma-separated (default: %(default)s)")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workload", default="write")
    a = p.parse_args(argv)
    rows = []
    for r in range(a.rounds):
        for c in (int(x) for x in a.concurrency.split(",")):
            for mode in MODES:
                res = run_one(c, a.duration, mode, a.workload)
                lat = res["latency_ms"]
                rows.append((r + 1, c, mode, res["throughput"], lat["p50"], lat["p99"], res["server_cpu_ms_per_op"],
                             res["errors"]))
                print(f"round {r + 1} c={c} {mode}: {res['throughput']:.0f} ops/s p50 {lat['p50']:.2f} ms "
                      f"p99 {lat['p99']:.2f} ms, servers {res['server_cpu_ms_per_op']:.2f} CPU ms/op",
                      file=sys.stderr, flush=True)
    print(f"| round | concurrency | mode | ops/s | p50 ms | p99 ms | server CPU ms/op | errors |  ({a.workload}, "
          f"{a.duration:g} s)")
    print("|---|---|---|---|---|---|---|---|")
    for r, c, mode, thr, p50, p99, cpu_ms, err in rows:
        print(f"| {r} | {c} | {mode} | {thr:,.0f} | {p50:.2f} | {p99:.2f} | {cpu_ms:.2f} | {err} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
