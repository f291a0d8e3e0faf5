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
import tempfile
from collections.abc import Sequence

from tools.bench_side import side_by_side

MODES = {"plaintext": (False, False), "TLS": (True, False)}  # label -> (tls, auth)


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
    side_by_side(MODES, column="wire", concurrency=a.concurrency, duration=a.duration, rounds=a.rounds,
                 workload=a.workload, prefix="tessera-bench-tls-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
