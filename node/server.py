"""The ``tessera node`` process: one store hosting many partition replicas.

Data directory layout::

    DATA/wal/      the shared write-ahead log (all partitions)
    DATA/state/    the LMDB environment (applied state, descriptors)
    DATA/snapshots the spool for snapshots being received
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import aio, logs
from common import tls as tls_mod
from common.auth import NEEDS_TLS
from common.descriptor import Descriptor
from common.metrics import MetricsServer, new_registry
from common.wire.guard import RequestGuard
from node import kv_wire, node_auth, tcp_transport
from node.admission import Admission
from node.disk_full import reserve_in, watch_disk
from node.fs import OS_FILES, Files
from node.health import FAILED, REPLAYING, NodeHealth
from node.kv_service import KVService
from node.late_services import LateServices
from node.metrics import NodeCollector, NodeStats
from node.raftstore import RaftStore
from node.replica import Replica
from node.router_link import RouterLink
from node.settings import HEARTBEAT_INTERVAL_S, AdmissionLimits, Limits, RaftSettings
from node.state.store import StateStore
from node.transport import SERVER_OPTIONS, RaftTransport, RaftTransportService
from node.wal.wal import WriteAheadLog
from tesserapb import kv_pb2, kv_pb2_grpc, raft_pb2, raft_pb2_grpc

log = logging.getLogger("tessera.node")

# What the node serves besides health and reflection: late, once its WAL is replayed.
SERVICES = (kv_pb2.DESCRIPTOR.services_by_name["KV"], raft_pb2.DESCRIPTOR.services_by_name["RaftTransport"])


class Node:
    def __init__(
        self,
        store_id: int,
        listen: str,
        data_dir: str,
        routers: str,
        *,
        advertise: str | None = None,
        settings: RaftSettings = RaftSettings(),
        limits: Limits = Limits(),
        wal_sync: bool = True,
        peer_addresses_file: str | None = None,
        peer_listen: str = "",
        kv_wire_listen: str = "",
        fault_file: str | None = None,
        raft_mutation: str | None = None,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        files: Files = OS_FILES,
        zone: str = "",
        metrics_listen: str | None = None,
        tls: tls_mod.TlsConfig | None = None,
        disk_reserve_bytes: int = 0,
        admission: AdmissionLimits | None = None,
        auth: bool = False,
    ) -> None:
        self.store_id = store_id
        # --auth: every client call needs a token (docs/auth.md); members pass by certificate.
        # The token table is learned either way (node/node_auth.py).
        self.auth = auth
        self.tokens = node_auth.NodeTokens()
        self.tls = tls  # mutual TLS on every listener and dialer (docs/security.md); None: plaintext
        self.listen = listen
        self.advertise = advertise or listen
        self.data_dir = data_dir
        self.routers = routers  # "A,B,C": the placement group's routers
        self.heartbeat_interval_s = heartbeat_interval_s
        self.zone = zone
        self.settings = settings
        self.limits = limits
        self.wal_sync = wal_sync
        self.peer_addresses_file = peer_addresses_file
        self.fault_file = fault_file
        self.raft_mutation = raft_mutation or None
        self.files = files  # where the WAL and the snapshot spool live (node.fs; tests may lose unsynced bytes)
        self._fault_task: asyncio.Task[None] | None = None
        self.server: grpc.aio.Server | None = None
        self.peer_listen = peer_listen  # "": the --listen host, any port; "none": Raft on gRPC only
        self.peer_server: tcp_transport.BatchListener | None = None
        self.peer_address = ""
        self.kv_wire_listen = kv_wire_listen  # "": the --listen host, any port; "none": KV on gRPC only
        self.kv_wire: kv_wire.KvWireListener | None = None
        self.kv_wire_address = ""
        self.port = 0
        self.stopped = False
        self.metrics_listen = metrics_listen  # HOST:PORT to serve Prometheus metrics on (None: off)
        self.metrics: MetricsServer | None = None
        self.stats = NodeStats()  # what the metrics export beside the parts' own counters
        # Called once the gRPC server listens (health NOT_SERVING), before the WAL is replayed.
        self.on_listening: Callable[[Node], None] | None = None
        self.admission = Admission(admission)  # the node's bounds: RESOURCE_EXHAUSTED past them
        self.disk_reserve_bytes = disk_reserve_bytes  # at most 5% of the fs; the CLI defaults to DISK_RESERVE_MB

    async def start(self) -> None:
        self.files.makedirs(self.data_dir)  # durably: everything the node keeps is below it
        snap_dir = os.path.join(self.data_dir, "snapshots")
        # Listen first: while the WAL replays, health says NOT_SERVING and the KV and Raft
        # services answer UNAVAILABLE (node/late_services.py), rather than a refused connection.
        if self.auth and self.tls is None:
            raise ValueError(NEEDS_TLS)
        # Who may call (node/node_auth.py, docs/auth.md) before what the request says (hostile input).
        self.auth_check = node_auth.interceptor(self.tokens if self.auth else None, f"node {self.store_id}")
        auth = [self.auth_check] if self.auth_check is not None else []  # the KV wire checks hellos with it too
        self.server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[*auth, RequestGuard(log)])
        self.port = tls_mod.add_port(self.server, self.listen, self.tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        host = self.advertise.rsplit(":", 1)[0]
        if self.advertise.endswith(":0"):
            self.advertise = f"{host}:{self.port}"
        self.late = LateServices(SERVICES, lambda: f"node {self.store_id} is starting: replaying its write-ahead log")
        self.server.add_generic_rpc_handlers((self.late,))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.health = NodeHealth(health_servicer, tuple(svc.full_name for svc in SERVICES))
        self.health.reasons[REPLAYING] = "replaying its write-ahead log"
        await self.health.publish()
        reflection.enable_server_reflection(
            (*(svc.full_name for svc in SERVICES), reflection.SERVICE_NAME, health.SERVICE_NAME), self.server
        )
        await self.server.start()
        try:
            if self.metrics_listen is not None:
                registry = new_registry()
                registry.register(NodeCollector(self.store_id, self.stats, lambda: getattr(self, "raftstore", None),
                                                 self.health))
                self.metrics = MetricsServer(registry)
                try:
                    await self.metrics.start(self.metrics_listen)
                except (OSError, ValueError) as exc:
                    raise OSError(f"cannot serve metrics on {self.metrics_listen}: {exc}") from exc
            if self.on_listening is not None:
                self.on_listening(self)
            await self._replay_delay()
            await self._start_serving(snap_dir)
        except BaseException:
            await self.server.stop(None)
            if self.metrics is not None:
                await self.metrics.close()
            raise
        self.health.set(REPLAYING, None)
        if self.fault_file:
            self._fault_task = asyncio.create_task(self._watch_faults(), name="fault-file")

    async def _start_serving(self, snap_dir: str) -> None:
        """Replay the WAL, open every replica, and serve (the server listens already)."""
        assert self.server is not None
        self.wal = await asyncio.to_thread(
            WriteAheadLog.open, os.path.join(self.data_dir, "wal"), sync=self.wal_sync, files=self.files
        )
        self.state = StateStore(os.path.join(self.data_dir, "state"))
        self.link = RouterLink(
            self.store_id, self.advertise, self.routers, interval=self.heartbeat_interval_s, zone=self.zone,
            tls=self.tls,
        )
        self.link.max_key_bytes = self.limits.max_key_bytes  # split keys respect it (D21)
        self.link.tokens = self.tokens
        tcp_overrides: dict[int, str] = {}
        if self.peer_addresses_file:
            with open(self.peer_addresses_file) as f:
                grpc_overrides, tcp_overrides = parse_peer_addresses(json.load(f))
            self.link.peer_overrides = grpc_overrides
        self.transport = RaftTransport(
            self.store_id,
            self.link.resolve,
            on_unreachable=self._on_unreachable,
            tcp_endpoint=tcp_overrides.get if self.peer_listen != "none" else None,
            tls=self.tls,
        )
        link = self.link

        def leader_changed(rep: Replica) -> None:
            self.stats.leader_elections_won += 1
            link.report_leader(rep)

        self.raftstore = RaftStore(
            self.store_id,
            self.wal,
            self.state,
            self.transport,
            self.settings,
            on_leader_change=leader_changed,
            on_descriptor_change=lambda rep: link.poke(),
            raft_mutation=self.raft_mutation,
            files=self.files,
            admission=self.admission,
        )
        self.raftstore.on_fail = lambda failed: self.health.set(FAILED, str(failed))
        self.link.rs = self.raftstore
        self.raftstore.disk.reserve = reserve_in(self.data_dir, self.disk_reserve_bytes)
        kv = KVService(self.raftstore, self.link.address_of, self.limits, self.stats)
        raft_service = RaftTransportService(
            self.store_id,
            self.raftstore.on_messages,
            self._on_snapshot,
            snapshot_dir=snap_dir,
            files=self.files,
            snapshot_refusal=self.raftstore.snapshot_refusal,
        )
        raft_service.admission = self.admission
        server_ssl = self.tls.server_ssl_context if self.tls is not None else None
        if self.peer_listen != "none":
            peer_host = self.peer_listen
            try:
                peer_host, peer_port = self._listen_at(self.peer_listen)
                self.peer_server = await tcp_transport.serve(peer_host.strip("[]"), peer_port, raft_service, server_ssl)
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot listen for Raft peers on {self.peer_listen or peer_host}: {exc}") from exc
            self.peer_address = raft_service.tcp_address = f"{peer_host}:{self.peer_server.port}"
        if self.kv_wire_listen != "none":
            wire_host = self.kv_wire_listen
            try:
                wire_host, wire_port = self._listen_at(self.kv_wire_listen)
                self.kv_wire = await kv_wire.serve(wire_host.strip("[]"), wire_port, kv, ssl_context=server_ssl,
                                                   checker=self.auth_check)
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot listen for the KV wire on {self.kv_wire_listen or wire_host}: {exc}") from exc
            self.kv_wire_address = kv.wire_address = f"{wire_host}:{self.kv_wire.port}"
        # A full disk: the tessera.disk health service says NOT_SERVING; the node's other
        # services stay SERVING, since it still serves reads (docs/limits.md).
        watch_disk(self.raftstore.disk, self.health.servicer)
        await self.raftstore.start()
        self.late.add(lambda server: kv_pb2_grpc.add_KVServicer_to_server(kv, server))
        self.late.add(lambda server: raft_pb2_grpc.add_RaftTransportServicer_to_server(raft_service, server))
        await self.link.start()

    def _listen_at(self, flag: str) -> tuple[str, int]:
        """(host, port) a ``--*-listen`` flag names; "" is the --listen host, any free port."""
        host, _, port = (flag or f"{self.listen.rpartition(':')[0]}:0").rpartition(":")
        return host, int(port)

    async def _on_snapshot(
        self, first: raft_pb2.RaftMessage, path: str, descriptor: Descriptor | None = None
    ) -> tuple[bool, str]:
        ok, why = await self.raftstore.on_snapshot(first, path, descriptor)
        if ok:
            self.stats.snapshots_received += 1
        else:
            self.stats.snapshots_refused += 1
        return ok, why

    async def _replay_delay(self) -> None:
        """TESTING: ``{"replay_delay_ms": N}`` in the fault file holds the node in its replay for
        N ms, long enough for a test to see health say NOT_SERVING. Read once, at start."""
        if not self.fault_file:
            return
        try:
            with open(self.fault_file) as f:
                spec = json.load(f)
            delay = float(spec.get("replay_delay_ms", 0)) / 1000.0 if isinstance(spec, dict) else 0.0
        except (OSError, ValueError):
            return
        if delay > 0:
            print(f"fault hooks: replay held for {delay:g} s", flush=True)
            await asyncio.sleep(delay)

    async def _watch_faults(self) -> None:
        """Apply the fault hooks named in the fault file (off unless the file says so).

        ``{"fail_fsync": true}`` makes every WAL fsync fail (the node then stops
        acknowledging writes for good); ``{"fsync_delay_ms": 50}`` is a slow disk;
        ``{"wal_enospc": true}`` a full disk for the WAL (node.disk_full).
        """
        assert self.fault_file is not None
        last = None
        while True:
            try:
                with open(self.fault_file) as f:
                    spec = json.load(f)
            except (OSError, ValueError):
                spec = {}
            if spec != last:
                last = spec
                self.wal.faults.fail_fsync = bool(spec.get("fail_fsync", False))
                self.wal.faults.fsync_delay_s = float(spec.get("fsync_delay_ms", 0)) / 1000.0
                self.wal.faults.append_enospc = bool(spec.get("wal_enospc", False))
                # On stdout, not in the log: the nemesis waits for this line to know the fault
                # is in force, and it must see it whatever --log-level says.
                print(f"fault hooks now {spec or 'off'}", flush=True)
            await asyncio.sleep(0.1)

    def _on_unreachable(self, store_id: int) -> None:
        for rep in self.raftstore.replicas.values():
            for r in rep.descriptor.replicas:
                if r.store_id == store_id:
                    rep.raw.report_unreachable(r.replica_id)

    async def stop(self) -> None:
        """Stop serving and close the WAL and LMDB (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        if self._fault_task is not None:
            self._fault_task.cancel()
        if self.metrics is not None:
            await self.metrics.close()
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.peer_server is not None:
            self.peer_server.close()
        if self.kv_wire is not None:
            self.kv_wire.close()
        await self.link.stop()
        await self.raftstore.stop()
        await self.transport.close()
        await asyncio.to_thread(self.wal.close)
        self.state.close()


async def serve(args: argparse.Namespace) -> int:
    if args.store_id:
        logs.set_fields(store=args.store_id)  # every JSON log line of this process names the store
    settings = RaftSettings(
        tick_s=args.tick_ms / 1000.0,
        compact_threshold=args.compact_threshold,
        compact_keep=min(args.compact_keep, args.compact_threshold),
    )
    limits = Limits(max_key_bytes=args.max_key_bytes, max_value_bytes=args.max_value_bytes)
    try:
        tls = tls_mod.from_args(args)
    except tls_mod.TlsConfigError as exc:
        print(f"tessera node: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "auth", False) and tls is None:
        print(f"tessera node: {NEEDS_TLS}", file=sys.stderr)
        return 2
    node = Node(
        args.store_id,
        args.listen,
        args.data_dir,
        args.routers,
        advertise=args.advertise,
        settings=settings,
        limits=limits,
        peer_addresses_file=args.peer_addresses,
        peer_listen=args.peer_listen or "",
        kv_wire_listen=getattr(args, "kv_wire_listen", None) or "",
        fault_file=args.fault_file,
        raft_mutation=getattr(args, "raft_mutation", None),
        heartbeat_interval_s=args.heartbeat_interval,
        files=_files(args),
        zone=args.zone or "",
        metrics_listen=args.metrics_listen,
        tls=tls,
        disk_reserve_bytes=args.disk_reserve_mb << 20,
        admission=AdmissionLimits(
            partition_proposals=args.max_partition_proposals,
            node_proposals=args.max_proposals,
            stream_bytes=args.max_stream_mb << 20,
            snapshots_out=args.max_snapshots,
            snapshots_in=args.max_snapshots,
        ),
        auth=getattr(args, "auth", False),
    )
    # Not "listening on": launchers wait for that line to know the node serves (see below).
    node.on_listening = lambda n: print(
        f"node {n.store_id} starting at {n.advertise}: health NOT_SERVING until its WAL is replayed", flush=True
    )
    try:
        await node.start()
    except Exception as exc:
        print(f"tessera node: cannot start: {exc}", file=sys.stderr)
        return 1
    if tls is None:
        log.warning("%s", tls_mod.PLAINTEXT_WARNING)
    if node.raft_mutation:
        log.warning("TESTING: running the Raft mutation %s", node.raft_mutation)
    if node.files is not OS_FILES:
        log.warning("TESTING: unsynced writes live in this process and die with it%s",
                    " (and fsync does nothing)" if args.testing_fsync_is_noop else "")
    if node.peer_address:
        # Before the "listening on" line: a launcher that waits for that one knows both.
        print(f"node {node.store_id} takes Raft peers at {node.peer_address}", flush=True)
    if node.kv_wire is not None:
        print(f"node {node.store_id} takes KV wire clients at {node.kv_wire_address}", flush=True)
    if node.metrics is not None:
        print(f"node {node.store_id} serves metrics at {node.metrics.url}", flush=True)
    print(f"node {node.store_id} listening on {node.advertise}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.stop()
    return 0


def parse_peer_addresses(body: object) -> tuple[dict[int, str], dict[int, str]]:
    """A --peer-addresses file: store id -> where to dial it. A value is the store's gRPC
    address, or ``{"address": GRPC, "peer_address": TCP}`` to also name where its Raft batch
    listener is reached (docs/cli.md). Returns (gRPC overrides, TCP overrides)."""
    if not isinstance(body, dict):
        raise ValueError("a --peer-addresses file holds a JSON object: store id -> address")
    grpc_addr: dict[int, str] = {}
    tcp_addr: dict[int, str] = {}
    for k, v in body.items():
        store = int(k)
        if isinstance(v, str):
            grpc_addr[store] = v
        elif isinstance(v, dict):
            if v.get("address"):
                grpc_addr[store] = str(v["address"])
            if v.get("peer_address"):
                tcp_addr[store] = str(v["peer_address"])
        else:
            raise ValueError(f"store {k}: an address is a string or an object, not {v!r}")
    return grpc_addr, tcp_addr


def _files(args: argparse.Namespace) -> Files:
    """The real file system, unless a test asked for one that loses unsynced bytes on SIGKILL."""
    if not getattr(args, "testing_unsynced_is_lost", False):
        return OS_FILES
    from node.fs.unsynced_lost import UnsyncedIsLost  # testing only: never imported otherwise

    return UnsyncedIsLost(fsync_is_noop=args.testing_fsync_is_noop)


def run(args: argparse.Namespace) -> int:
    """The ``tessera node`` process (tools/cli.py has set up logging from --log-level)."""
    return aio.run(serve(args))
