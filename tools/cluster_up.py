"""``tessera cluster up``: a whole local cluster in the foreground, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from common.tls import PLAINTEXT_WARNING
from tools.cluster import Cluster


def run(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.data_dir)
    cluster = Cluster(
        root=root, nodes=args.nodes, partitions=args.partitions, base_port=args.base_port, max_down=args.max_down,
        log_level=args.log_level, routers=args.routers, split_size=args.split_size, zones=args.zones, metrics=True,
        log_format=args.log_format,
        extra_router_args=["--schedule-interval", str(args.schedule_interval), "--max-moves", str(args.max_moves)],
        tls=args.tls, auth=getattr(args, "auth", False),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if cluster.auth and not args.tls:
        print("--auth turns on --tls too: members are known by their certificates (docs/auth.md)", flush=True)
    if not cluster.tls:
        print(f"{PLAINTEXT_WARNING}; --tls makes certificates and secures the cluster", flush=True)
    try:
        cluster.start()
        cluster.wait_ready(120)
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"tessera cluster up: {exc}", file=sys.stderr)
        cluster.stop()
        return 1
    routers = cluster.router_addresses
    nodes = ", ".join(cluster.node_address(i) for i in sorted(cluster.node_procs))
    # The metrics URLs come last, after what scripts parse already (DESIGN.md's "ready:" line).
    procs = [*cluster.router_procs.values(), *cluster.node_procs.values()]
    metrics = " ".join(f"{p.name}={p.metrics_url}" for p in procs)
    print(f"ready: router {routers} (nodes {nodes}; data and logs in {root}) metrics {metrics}", flush=True)
    if cluster.tls_files is not None:
        ca, cert, key = cluster.tls_files
        print(f"  tls: mutual TLS, CA and certificates in {os.path.dirname(ca)}; clients need\n"
              f"       export TESSERA_CA={ca} TESSERA_CERT={cert} TESSERA_KEY={key}\n"
              "       (or --ca, --cert, --key)", flush=True)
    if cluster.admin_token is not None:
        print(f"  auth: every client call needs a token. The bootstrap admin token, shown this once:\n"
              f"       export TESSERA_TOKEN={cluster.admin_token}\n"
              "       (or --token; 'tessera admin token create --role read|write|admin' makes more)", flush=True)
    elif cluster.auth:
        print("  auth: every client call needs a token (--token or $TESSERA_TOKEN); the bootstrap admin token "
              "was printed at this cluster's first start", flush=True)
    print(
        f"  try: tessera kv put hello world --router {routers}\n"
        f"       tessera kv get hello --router {routers}\n"
        "  Ctrl-C stops the cluster; its data stays for the next 'cluster up'.",
        flush=True,
    )
    reported: set[str] = set()
    try:
        while not stop.wait(0.5):
            for p in procs:
                if p.alive or p.name in reported:
                    continue
                reported.add(p.name)  # each death once
                if p.pump is not None:
                    p.pump.join(2)  # its output up to the end, for its last words
                print(f"tessera cluster up: {p.name} exited ({p.exit_status()}; log {p.log_path}): {p.last_words()}",
                      file=sys.stderr, flush=True)
            if len(reported) == len(procs):
                return 1
    finally:
        cluster.stop()
    return 0
