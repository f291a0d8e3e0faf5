"""``tessera bench``: check the flags, start a --local cluster if asked, load, measure, report.

The pieces, each in its own module: targets (which store, which driver), workload (keys, key
distributions, operation mixes), runner (one process's worker loop), procs (several client
processes, merged), failover (the kill-a-leader scenario), report (JSON and text), plot
(the PNG), live (progress display), tessera_driver / tessera_local (Tessera's side of the
Driver and LocalTarget interfaces of driver.py). This module only sequences them.

Exit status: 0 after a run, 2 for flags that cannot work together (before anything starts),
1 when something the run needs is missing or fails (etcd not installed, a cluster that does
not come up, matplotlib missing for --plot).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from common import aio
from common.auth import token_from
from common.tls import TlsConfigError, from_args
from router.placement.config import PlacementConfig
from tools.bench import failover, live, procs, report
from tools.bench.driver import DriverError, LocalTarget
from tools.bench.runner import LoadSpec, preload
from tools.bench.targets import MissingSupport, Target, TargetError, make_driver, parse_target, start_local
from tools.bench.workload import needs_preload

log = logging.getLogger("tessera.bench")

REQUEST_TIMEOUT_S = 10.0  # each request's deadline in a normal run (retries included)
PRELOAD_CONCURRENCY = 256


class UsageError(Exception):
    """Flags that cannot work together; the CLI prints the message and exits 2."""


def resolve_target(args: argparse.Namespace) -> Target:
    """The target from --target, else --router (its synonym), else for --local a Tessera one."""
    text = getattr(args, "target", None)
    if text is None:
        text = "tessera" if args.local else f"tessera://{args.router}"
    target = parse_target(text)
    if args.local and target.addresses:
        raise UsageError(f"--local starts its own cluster: give --target {target.kind} without an address")
    if not args.local and not target.addresses:
        raise UsageError(f"--target {target.kind} names no address: give {target.kind}://HOST:PORT or add --local")
    return target


def check_args(args: argparse.Namespace) -> Target:
    """Every combination check that needs no cluster; raises UsageError."""
    if args.failover and not args.local:
        raise UsageError("--failover needs --local (it kills a member of a cluster the bench started)")
    if args.failover and args.procs > 1:
        raise UsageError("--failover runs one client process: drop --procs")
    if args.concurrency < args.procs:
        raise UsageError(f"--concurrency {args.concurrency} is fewer workers than --procs {args.procs}")
    if getattr(args, "tls", False) and not args.local:
        raise UsageError("--tls needs --local (it makes the local cluster's certificates); for a running "
                         "cluster give --ca, --cert and --key")
    try:
        target = resolve_target(args)
    except TargetError as exc:
        raise UsageError(str(exc)) from exc
    if getattr(args, "tls", False) and target.kind != "tessera":
        raise UsageError("--tls applies to a local Tessera cluster only")
    if getattr(args, "auth", False) and (not args.local or target.kind != "tessera"):
        raise UsageError("--auth needs --local and a Tessera target (it starts the cluster with --auth); for a "
                         "running cluster give --token")
    return target


def client_tls_files(args: argparse.Namespace) -> tuple[str, str, str] | None:
    """The (ca, cert, key) files of --ca/--cert/--key (else $TESSERA_*), checked now; None:
    plaintext. A --local cluster has its own (with --tls), so these are not read for it."""
    if args.local:
        return None
    try:
        tls = from_args(args, os.environ)
    except TlsConfigError as exc:
        raise UsageError(str(exc)) from exc
    return (tls.ca_path, tls.cert_path, tls.key_path) if tls is not None else None


def main(args: argparse.Namespace) -> int:
    try:
        target = check_args(args)
        tls = client_tls_files(args)
        token = None if args.local else token_from(getattr(args, "token", None), os.environ)
        if token and tls is None:
            raise UsageError("--token needs TLS: give --ca, --cert and --key too")
    except UsageError as exc:
        print(f"tessera bench: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        from tools.bench.plot import PlotUnavailable, check_available

        try:
            check_available()
        except PlotUnavailable as exc:
            print(f"tessera bench: {exc}", file=sys.stderr)
            return 1
    local: LocalTarget | None = None
    # etcd is one Raft group whatever --partitions says (the matrix passes one for both targets).
    partitions = 1 if target.kind == "etcd" else args.partitions
    try:
        if args.local:
            if target.kind == "tessera":
                partitions = partitions or PlacementConfig().partitions
            log.info("starting a local %s cluster", target.kind)
            local = start_local(target.kind, partitions or 1, args.log_level, tls=getattr(args, "tls", False),
                                auth=getattr(args, "auth", False))
            target = parse_target(local.target)
            tls = getattr(local, "tls_files", None)
            token = getattr(local, "token", None)
        result = _measure(args, target, local, partitions, tls, token)
    except MissingSupport as exc:
        print(f"tessera bench: {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError, DriverError) as exc:
        print(f"tessera bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if local is not None:
            local.stop()
    print(report.human(result))
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        from tools.bench.plot import plot

        plot(result, args.plot)
    return 0


def _measure(
    args: argparse.Namespace, target: Target, local: LocalTarget | None, partitions: int | None,
    tls: tuple[str, str, str] | None,
    token: str | None = None,
) -> dict:
    spec = LoadSpec(
        target=str(target),
        workload=args.workload,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        keys=args.keys,
        value_size=args.value_size,
        consistency=args.consistency,
        distribution=args.distribution,
        timeout=REQUEST_TIMEOUT_S,
        tls=tls,
        token=token,
        wire=getattr(args, "wire", "tcp"),
    )
    extra: dict[str, Any] = {"tls": tls is not None, "auth": token is not None}
    if target.kind == "tessera":
        extra["wire"] = spec.wire
    if args.failover:
        assert local is not None
        spec = failover.failover_spec(spec)
        with live.StatusLine(spec.duration) as status:
            result, fo = aio.run(failover.run_failover(local, spec, status))
        merged = procs.merge([result], spec.duration)
        extra["failover"] = fo.as_json()
    else:
        if needs_preload(spec.workload):
            aio.run(_preload(spec))
        with live.StatusLine(spec.duration) as status:
            merged = procs.run_clients(spec, args.procs, status)
    if local is not None:
        extra["elections"] = local.elections()
    info = report.RunInfo(
        workload=spec.workload, concurrency=spec.concurrency, duration=spec.duration, warmup=spec.warmup,
        keys=spec.keys, value_size=spec.value_size, distribution=spec.distribution,
        consistency=spec.consistency, partitions=partitions, target=target.kind, address=str(target),
        procs=args.procs,
    )
    return report.build(info, merged, extra)


async def _preload(spec: LoadSpec) -> None:
    """Write all ``spec.keys`` keys once (with a progress bar on a terminal)."""
    driver = make_driver(parse_target(spec.target), deadline_s=spec.timeout, tls=spec.tls, token=spec.token,
                         wire=spec.wire)
    try:
        with live.preload_bar(spec.keys) as advance:
            await preload(driver, spec.keys, spec.value_size, PRELOAD_CONCURRENCY, spec.timeout, advance)
    finally:
        await driver.close()
