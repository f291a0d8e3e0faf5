"""The router process: ``tessera router`` (its flags are defined in tools/cli.py).

Serves the placement service (Meta), the KV proxy, gRPC health and reflection on one port;
prints "router listening on HOST:PORT" once serving (the real port when --listen asks for 0);
SIGINT/SIGTERM stop it gracefully: in-flight calls finish (up to a second), the table is
flushed, the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import aio, logs
from common import tls as tls_mod
from common.auth import NEEDS_TLS, Grant, valid_hash
from common.keyspace import MAX_PRESPLIT
from common.metrics import MetricsServer, new_registry, parse_listen
from common.wire.guard import RequestGuard
from node.transport import register as register_raft_transport
from router.client import AsyncClient
from router.client.channels import CHANNEL_OPTIONS
from router.local_meta import LocalMeta
from router.meta_service import MetaService
from router.metrics import RouterCollector, RpcMetrics
from router.placement.codec import CodecError
from router.placement.config import MAX_GROUP_MEMBERS, GroupSettings, PlacementConfig
from router.placement.persist import TABLE_FILE
from router.placement.runtime import Placement
from router.proxy import KVProxy
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc

log = logging.getLogger("tessera.router")

SERVICES = (
    meta_pb2.DESCRIPTOR.services_by_name["Meta"].full_name,
    kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name,
)
SHUTDOWN_GRACE_S = 1.0


def config_from_args(args: argparse.Namespace) -> PlacementConfig:
    """The placement config the ``tessera router`` flags ask for (their defaults are
    PlacementConfig's own, so nothing is defaulted here)."""
    return PlacementConfig(
        partitions=args.partitions,
        replicas=args.replicas,
        store_down_after_s=args.store_down_after,
        max_down_s=args.max_down,
        split_size=args.split_size,
        schedule_interval_s=args.schedule_interval,
        max_moves=args.max_moves,
    )


def parse_peers(text: str | None) -> dict[int, str]:
    """``--peers 2=host:port,3=host:port`` -> {2: "host:port", 3: ...}; ValueError naming what is wrong."""
    peers: dict[int, str] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        rid, sep, address = item.partition("=")
        if not sep or not rid.strip().isdigit() or int(rid) < 1 or ":" not in address:
            raise ValueError(f"{item!r} is not ID=HOST:PORT")
        if int(rid) in peers:
            raise ValueError(f"router {rid} is named twice")
        peers[int(rid)] = address.strip()
    return peers


def _check_args(args: argparse.Namespace) -> str | None:
    if not 1 <= args.partitions <= MAX_PRESPLIT:
        return f"--partitions must be in [1, {MAX_PRESPLIT}], got {args.partitions}"
    try:
        peers = parse_peers(args.peers)
    except ValueError as exc:
        return f"--peers: {exc}"
    if args.id in peers:
        return f"--peers names this router ({args.id}) too; list the other routers only"
    if len(peers) + 1 > MAX_GROUP_MEMBERS:
        return f"--peers: a placement group has at most {MAX_GROUP_MEMBERS} routers, got {len(peers) + 1}"
    if getattr(args, "metrics_listen", None) is not None:
        try:
            parse_listen(args.metrics_listen)
        except ValueError as exc:
            return str(exc)
    return None


async def serve(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the router until SIGINT/SIGTERM (or ``stop`` is set); returns the exit status."""
    problem = _check_args(args)
    if problem:
        print(f"tessera router: {problem}", file=sys.stderr)
        return 2
    logs.set_fields(router=args.id)  # every JSON log line of this process names the router
    addresses = {args.id: args.listen, **parse_peers(args.peers)}
    try:
        tls = tls_mod.from_args(args)
    except tls_mod.TlsConfigError as exc:
        print(f"tessera router: {exc}", file=sys.stderr)
        return 2
    auth_on = bool(getattr(args, "auth", False))
    admin_hash = getattr(args, "admin_token_hash", None)
    if auth_on and tls is None:
        print(f"tessera router: {NEEDS_TLS}", file=sys.stderr)
        return 2
    if admin_hash is not None and not valid_hash(admin_hash):
        print("tessera router: --admin-token-hash must be the hex sha256 of the token (64 characters 0-9a-f)",
              file=sys.stderr)
        return 2
    try:
        placement = await Placement.open(
            args.data_dir,
            config_from_args(args),
            router_id=args.id,
            addresses=addresses,
            settings=GroupSettings(checkpoint_every=args.checkpoint_every),
            tls=tls,
        )
    except CodecError as exc:
        print(f"tessera router: {args.data_dir}/{TABLE_FILE} is unreadable ({exc}); refusing to start "
              "rather than serve a wrong table", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as exc:
        print(f"tessera router: cannot open data dir {args.data_dir}: {exc}", file=sys.stderr)
        return 1

    placement.bootstrap_token_hash = admin_hash
    interceptors, auth_task = router_auth(placement, args.id) if auth_on else ([], None)
    # No SO_REUSEPORT: a second router on a taken port must fail, not share it.
    rpc_metrics = RpcMetrics()
    # Outermost the metrics (a refused or malformed call counts with its code), then who may call
    # (docs/auth.md), then what the request says (hostile input).
    server = grpc.aio.server(
        options=[*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)],
        interceptors=[rpc_metrics, *interceptors, RequestGuard(log)],
    )
    meta_pb2_grpc.add_MetaServicer_to_server(MetaService(placement), server)
    register_raft_transport(server, placement.group.service())
    proxy_client = AsyncClient(None, meta=LocalMeta(placement), tls=tls)
    kv_pb2_grpc.add_KVServicer_to_server(KVProxy(proxy_client), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    try:
        port = tls_mod.add_port(server, args.listen, tls)
    except RuntimeError as exc:
        port, why = 0, str(exc)
    else:
        why = "address in use or invalid"
    if not port:
        print(f"tessera router: cannot listen on {args.listen}: {why}", file=sys.stderr)
        if auth_task is not None:
            auth_task.cancel()
        await proxy_client.close()
        await placement.close()
        return 1

    metrics: MetricsServer | None = None
    if getattr(args, "metrics_listen", None) is not None:
        registry = new_registry()
        registry.register(RouterCollector(placement, rpc_metrics))
        metrics = MetricsServer(registry)
        try:
            await metrics.start(args.metrics_listen)
        except OSError as exc:
            print(f"tessera router: cannot serve metrics on {args.metrics_listen}: {exc}", file=sys.stderr)
            await proxy_client.close()
            await placement.close()
            return 1

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    host = args.listen.rsplit(":", 1)[0]
    placement.group.addresses[args.id] = f"{host}:{port}"  # the real port, when --listen asked for 0
    await server.start()
    await placement.start()
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if tls is None:
        log.warning("%s", tls_mod.PLAINTEXT_WARNING)
    if metrics is not None:
        # Before the "listening on" line: a launcher that waits for that one knows both.
        print(f"router {args.id} serves metrics at {metrics.url}", flush=True)
    print(f"router listening on {host}:{port}", flush=True)
    group = placement.group
    # The table is the checkpoint's until the group commits the log after it.
    log.info("router %d of a placement group of %d, data in %s: starting from index %d (%d partitions, %d stores)",
             group.id, len(group.voters), args.data_dir, group.applied,
             len(placement.table.partitions), len(placement.table.stores))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if auth_task is not None:
            auth_task.cancel()
        await health_servicer.enter_graceful_shutdown()
        if metrics is not None:
            await metrics.close()
        await server.stop(SHUTDOWN_GRACE_S)
        await proxy_client.close()
        await placement.close()
    return 0


def router_auth(placement: Placement, router_id: int) -> tuple[list[grpc.aio.ServerInterceptor], asyncio.Task[None]]:
    """--auth: every call is checked against this router's copy of the token table
    (docs/auth.md); a task ends, once a second, the open streams of tokens since revoked."""
    from common.auth_server import AuthInterceptor

    def lookup(digest: str) -> Grant | None:
        # Through placement.table each time: a snapshot from the leader replaces the table.
        return placement.table.tokens.lookup(digest)

    interceptor = AuthInterceptor(lookup, where=f"router {router_id}")

    async def sweep() -> None:
        while True:
            await asyncio.sleep(STREAM_SWEEP_S)
            interceptor.refresh()

    return [interceptor], asyncio.ensure_future(sweep())


STREAM_SWEEP_S = 1.0  # a revoked token's open KV streams on a router end within this


def run(args: argparse.Namespace) -> int:
    """The ``tessera router`` process (tools/cli.py has set up logging from --log-level)."""
    return aio.run(serve(args))
