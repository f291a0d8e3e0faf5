"""A local cluster of real processes: what ``tessera cluster up``, the tests and nemesis run.

Each router and node is a child process (``python -m tools.cli router|node``)
with its own data directory under the cluster's root. Its stdout and stderr are one pipe,
which a thread of the launcher copies into ``ROOT/logs/NAME.log`` while keeping the last
lines, so a child that fails to start is reported with its own last words rather than a
pointer to a log (which another launcher on the same directory may be writing too).
Children set PR_SET_PDEATHSIG (see :func:`tools.lifecycle.die_with_parent`), so even a
launcher killed with SIGKILL leaves no orphans; :meth:`Cluster.stop` terminates them
gracefully and waits.

Ports: ``cluster up`` uses consecutive ports from ``--base-port`` (the
router first).  Tests pass ``base_port=0``: every process binds port 0 and
reports the port it got on its "listening on" line, so no port is ever
assumed free.

TLS (``tls=True``, what ``cluster up --tls`` asks for; docs/security.md): the cluster's CA and
a certificate per process are made in ``ROOT/tls`` (tools/certs.py; kept and reused by the next
start on the same root), every child gets its own ``--ca/--cert/--key``, and the launcher's own
calls (readiness checks) use the client certificate, as a user's CLI would.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from common import tls as tls_mod
from common.logs import DEFAULT_FORMAT, DEFAULT_LEVEL
from common.routers import RouterSet
from common.wire.errors import error_from_rpc, leader_hint
from router.placement.config import PlacementConfig
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.lifecycle import PARENT_ENV

if TYPE_CHECKING:  # tools.certs (and cryptography) is imported only by a cluster with TLS
    from tools.certs import ClusterCerts, Issued

_LISTENING = re.compile(rb"listening on (\S+:\d+)")
_PEERS_AT = re.compile(rb"takes Raft peers at (\S+:\d+)")  # a node's TCP batch listener (D23)
_WIRE_AT = re.compile(rb"takes KV wire clients at (\S+:\d+)")  # a node's KV wire listener (D28)
_METRICS_AT = re.compile(rb"serves metrics at (http://\S+)")  # its --metrics-listen, when it has one
AUTH_DIR = "auth"  # under a cluster's data dir: the bootstrap admin token's sha256
ADMIN_HASH_FILE = "bootstrap-admin.sha256"
_PLACEMENT = PlacementConfig()  # the router's defaults are the cluster's
_TAIL_LINES = 40  # of a child's output kept in memory for error messages
_LAST_WORDS = 3  # of those, how many an error message quotes


@dataclass
class Proc:
    """One child process of the cluster: how it is started, where its output goes, what it said
    last. Restarting it (:meth:`Cluster.restart`) starts a new run in the same record."""

    name: str
    argv: list[str]
    log_path: str
    address: str = ""
    peer_address: str = ""  # a node's Raft batch listener, from its "takes Raft peers at" line
    wire_address: str = ""  # a node's KV wire listener, from its "takes KV wire clients at" line
    metrics_url: str = ""  # where it serves Prometheus metrics, from its "serves metrics at" line
    popen: subprocess.Popen[bytes] | None = None  # the current run (None: never started)
    port: int = 0
    # The last lines of the current run's output (stdout and stderr interleaved as written).
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    pump: threading.Thread | None = None

    @property
    def running(self) -> subprocess.Popen[bytes] | None:
        """The current run's process while it has not exited, else None."""
        popen = self.popen
        return popen if popen is not None and popen.poll() is None else None

    @property
    def alive(self) -> bool:
        return self.running is not None

    def last_words(self) -> str:
        """What the process said last: its last few lines that are neither blank nor indented
        (an indented line is a traceback frame; the exception line after it is kept)."""
        said = [line for line in self.tail if line.strip() and not line[0].isspace()]
        return " | ".join(said[-_LAST_WORDS:]) or "(it printed nothing)"

    def exit_status(self) -> str:
        assert self.popen is not None
        rc = self.popen.poll()
        if rc is None:
            return "still running"
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


@dataclass
class Cluster:
    root: str
    nodes: int = 3
    partitions: int = _PLACEMENT.partitions
    base_port: int = 0
    max_down: float = _PLACEMENT.max_down_s
    log_level: str = DEFAULT_LEVEL  # every child's --log-level
    log_format: str = DEFAULT_FORMAT  # and --log-format
    routers: int = 1  # the placement group's size
    split_size: int | None = None  # routers' --split-size (None: their default)
    zones: int = 0  # label node i with zone z((i-1) % zones + 1) (tessera node --zone); 0: no zones
    # The routers' --schedule-interval (None: their default); 0 turns the scheduler off, for
    # tests that steer placement by hand and must not have it steer too.
    schedule_interval: float | None = None
    extra_router_args: list[str] = field(default_factory=list)
    # Every process serves Prometheus metrics on a free loopback port (Proc.metrics_url).
    metrics: bool = False
    extra_node_args: list[str] = field(default_factory=list)
    # Per-node extra arguments (e.g. each node's --peer-addresses file).
    node_args: Callable[[int], list[str]] | None = None
    tls: bool = False  # mutual TLS everywhere, certificates in ROOT/tls (see the module docstring)
    # Where the children run `python -m tools.cli` from, so which checkout's code they run
    # (None: this process's working directory). tools/bench_ab.py runs two checkouts side by side.
    cwd: str | None = None
    certs: ClusterCerts | None = field(default=None, init=False, repr=False)  # made by start() with tls
    client_tls: tls_mod.TlsConfig | None = field(default=None, init=False, repr=False)  # the launcher's own
    # Tokens on every client call (cluster up --auth, docs/auth.md); turns tls on. The
    # launcher's own calls use router 1's member certificate, so they need no token.
    auth: bool = False
    # The bootstrap admin token, when this start made it (the cluster's first start with auth);
    # None otherwise: it is shown once and kept nowhere but in the routers' table, as a hash.
    admin_token: str | None = field(default=None, init=False, repr=False)
    router: Proc | None = None  # router 1, where a single address is wanted
    router_procs: dict[int, Proc] = field(default_factory=dict)
    node_procs: dict[int, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.auth:
            self.tls = True  # members are known by their certificates (docs/auth.md)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        os.makedirs(os.path.join(self.root, "logs"), exist_ok=True)
        if self.tls:
            self._make_certs(range(1, self.nodes + 1))
        if self.auth:
            self._ensure_admin_token()
        ports = self._router_ports()
        for i in range(1, self.routers + 1):
            name = "router" if i == 1 else f"router{i}"
            log = os.path.join(self.root, "logs", f"{name}.log")
            self.router_procs[i] = Proc(name, self._router_argv(i, ports), log)
        self.router = self.router_procs[1]
        for p in self.router_procs.values():
            self._spawn(p, timeout)
        for i in range(1, self.nodes + 1):
            port = self.base_port + self.routers - 1 + i if self.base_port else 0
            log = os.path.join(self.root, "logs", f"node{i}.log")
            self.node_procs[i] = Proc(f"node{i}", self._node_argv(i, port), log)
            self._spawn(self.node_procs[i], timeout)

    # -- TLS --------------------------------------------------------------------------


    def _make_certs(self, nodes: Iterable[int]) -> None:
        from tools.certs import TLS_DIR, ensure_cluster_certs

        self.certs = ensure_cluster_certs(os.path.join(self.root, TLS_DIR), nodes, range(1, self.routers + 1))
        own = self.certs.routers[1] if self.auth else self.certs.client
        self.client_tls = tls_mod.TlsConfig.load(self.certs.ca, own.cert, own.key)

    def _ensure_admin_token(self) -> None:
        """The bootstrap admin token's hash in ROOT/auth (kept for restarts; never the token)."""
        from common.auth import new_token, token_hash

        directory = os.path.join(self.root, AUTH_DIR)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, ADMIN_HASH_FILE)
        if not os.path.exists(path):
            token = new_token()
            with open(path + ".tmp", "w") as f:
                f.write(token_hash(token) + "\n")
            os.replace(path + ".tmp", path)
            self.admin_token = token
        with open(path) as f:
            self._admin_hash = f.read().strip()

    def _auth_args(self, router: bool) -> list[str]:
        if not self.auth:
            return []
        return ["--auth", "--admin-token-hash", self._admin_hash] if router else ["--auth"]

    @property
    def tls_files(self) -> tuple[str, str, str] | None:
        """(ca, cert, key) of the client pair, what --ca/--cert/--key take; None without TLS."""
        if self.certs is None:
            return None
        return self.certs.ca, self.certs.client.cert, self.certs.client.key

    def _tls_args(self, issued: Issued | None) -> list[str]:
        if self.certs is None or issued is None:
            return []
        return ["--ca", self.certs.ca, "--cert", issued.cert, "--key", issued.key]

    def channel(self, address: str) -> grpc.Channel:
        """A blocking channel to one of the cluster's processes (TLS with the client pair when on)."""
        return tls_mod.channel(address, self.client_tls)

    @property
    def router_addresses(self) -> str:
        """Every router's address, comma-separated: what --router/--routers take."""
        return ",".join(p.address for _, p in sorted(self.router_procs.items()))

    def _router_ports(self) -> dict[int, int]:
        """Where each router listens. One router may pick its own port (port 0); a group must
        know its peers' addresses before it starts: consecutive ports from --base-port, or,
        without one, ports the kernel hands out now (a port another program grabs in between
        makes that router fail to start, with its own message)."""
        if self.base_port:
            return {i: self.base_port + i - 1 for i in range(1, self.routers + 1)}
        if self.routers == 1:
            return {1: 0}
        return {i: free_port() for i in range(1, self.routers + 1)}

    def _router_argv(self, i: int, ports: dict[int, int]) -> list[str]:
        peers = ",".join(f"{j}=127.0.0.1:{port}" for j, port in sorted(ports.items()) if j != i)
        return [
            sys.executable, "-m", "tools.cli", "router",
            "--id", str(i),
            "--listen", f"127.0.0.1:{ports[i]}",
            *(["--peers", peers] if peers else []),
            "--data-dir", os.path.join(self.root, "router" if i == 1 else f"router{i}"),
            "--partitions", str(self.partitions),
            "--max-down", str(self.max_down),
            *(["--split-size", str(self.split_size)] if self.split_size else []),
            "--log-level", self.log_level,
            *(["--log-format", self.log_format] if self.log_format != DEFAULT_FORMAT else []),
            *(["--metrics-listen", "127.0.0.1:0"] if self.metrics else []),
            *(["--schedule-interval", str(self.schedule_interval)] if self.schedule_interval is not None else []),
            *self._tls_args(self.certs.routers.get(i) if self.certs else None),
            *self._auth_args(router=True),
            *self.extra_router_args,
        ]

    def _node_argv(self, i: int, port: int) -> list[str]:
        assert self.router is not None
        return [
            sys.executable, "-m", "tools.cli", "node",
            "--store-id", str(i),
            "--listen", f"127.0.0.1:{port}",
            "--data-dir", os.path.join(self.root, f"node{i}"),
            "--routers", self.router_addresses,
            "--log-level", self.log_level,
            *(["--log-format", self.log_format] if self.log_format != DEFAULT_FORMAT else []),
            *(["--metrics-listen", "127.0.0.1:0"] if self.metrics else []),
            *(["--zone", self.zone_of(i)] if self.zones else []),
            *self._tls_args(self.certs.nodes.get(i) if self.certs else None),
            *self._auth_args(router=False),
            *self.extra_node_args,
            *(self.node_args(i) if self.node_args is not None else []),
        ]

    def _spawn(self, proc: Proc, timeout: float) -> None:
        """Start ``proc`` and wait until it prints its "listening on ADDR" line. A child that
        exits first, or says nothing of the kind within ``timeout``, is killed and reported in
        a RuntimeError that quotes its last words."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid())})
        proc.address = proc.peer_address = proc.wire_address = proc.metrics_url = ""
        proc.tail.clear()
        proc.popen = subprocess.Popen(
            proc.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
        )
        started_or_gone = threading.Event()
        proc.pump = threading.Thread(target=_pump, args=(proc, proc.popen, started_or_gone), name=f"pump-{proc.name}",
                                     daemon=True)
        proc.pump.start()
        settled = started_or_gone.wait(timeout)
        if settled and proc.address:
            return
        if settled:  # its output ended without the line: it is exiting, or has
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)  # the output ends a moment before the process can be reaped
        if proc.popen.poll() is None:
            why = "closed its output" if settled else f"printed no 'listening on' line within {timeout:g} s"
            proc.popen.kill()
            proc.popen.wait()
        else:
            why = proc.exit_status()
        proc.pump.join(5)  # the output up to its exit, for its last words
        raise RuntimeError(f"{proc.name} did not start ({why}; log {proc.log_path}): {proc.last_words()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every partition has a leader that serves a linearizable read."""
        routers = RouterSet(self.router_addresses)
        deadline = time.monotonic() + timeout
        last = "no answer from the router"
        while time.monotonic() < deadline:
            try:
                parts = _scan(routers, self.client_tls)
                with self.channel(routers.current) as ch:
                    got = meta_pb2_grpc.MetaStub(ch).GetStores(meta_pb2.GetStoresRequest(), timeout=2)
                    stores = {s.id: s.address for s in got.stores}
                if len(parts) < self.partitions:
                    last = f"{len(parts)} of {self.partitions} partitions exist"
                elif not all(p.leader_store_id for p in parts):
                    last = f"{sum(1 for p in parts if not p.leader_store_id)} partitions without a leader"
                elif all(self._probe(p, stores, self.client_tls) for p in parts):
                    return
                else:
                    last = "a leader did not answer a linearizable read"
            except grpc.RpcError as exc:
                last = f"router {routers.current}: {exc.code().name}"
                routers.failed(exc.code(), leader_hint(error_from_rpc(exc)))
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ready after {timeout:.0f}s: {last}")

    def wait_balanced(self, timeout: float = 30.0, quiet_s: float = 2.0) -> None:
        """Until placement has balanced the leaders (no store leads more than one partition more
        than another) and no partition's term moved for ``quiet_s``: a benchmark that counts
        elections starts after the scheduler's own leader moves, not during them."""
        routers = RouterSet(self.router_addresses)
        deadline = time.monotonic() + timeout
        last, seen, since = "no answer from the router", None, time.monotonic()
        while time.monotonic() < deadline:
            try:
                parts = _scan(routers, self.client_tls)
            except grpc.RpcError as exc:
                last = f"router {routers.current}: {exc.code().name}"
                routers.failed(exc.code(), leader_hint(error_from_rpc(exc)))
                time.sleep(0.1)
                continue
            terms = {p.id: (p.term, p.leader_store_id) for p in parts}
            if terms != seen:
                seen, since = terms, time.monotonic()
            led: dict[int, int] = {}
            for p in parts:
                for r in p.replicas:
                    led.setdefault(r.store_id, 0)
                if p.leader_store_id:
                    led[p.leader_store_id] = led.get(p.leader_store_id, 0) + 1
            spread = max(led.values()) - min(led.values()) if led else 0
            if spread <= 1 and time.monotonic() - since >= quiet_s:
                return
            last = f"leaders per store {dict(sorted(led.items()))}, terms steady for {time.monotonic() - since:.1f} s"
            time.sleep(0.2)
        raise TimeoutError(f"leaders not balanced and steady after {timeout:.0f}s: {last}")

    @staticmethod
    def _probe(p: meta_pb2.PartitionDescriptor, stores: dict[int, str], tls: tls_mod.TlsConfig | None) -> bool:
        addr = stores.get(p.leader_store_id)
        if not addr:
            return False
        with tls_mod.channel(addr, tls) as ch:
            try:
                kv_pb2_grpc.KVStub(ch).Get(
                    kv_pb2.GetRequest(
                        context=kv_pb2.RequestContext(partition_id=p.id, epoch=p.epoch),
                        key=p.start,
                        read_options=kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE),
                    ),
                    timeout=2,
                )
                return True
            except grpc.RpcError:
                return False

    def stop(self, grace: float = 10.0) -> None:
        running = [(p, popen) for p in [*self.node_procs.values(), *self.router_procs.values()]
                   if (popen := p.running) is not None]
        for _, popen in running:
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, popen in running:
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for p, _ in running:
            if p.pump is not None:
                p.pump.join(2)  # the log is complete when stop returns

    # -- faults ---------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` and reap it."""
        p = self.node_procs[i]
        assert p.popen is not None
        p.popen.kill()
        p.popen.wait()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start node ``i`` again on its data dir, on the same port when it is still free."""
        p = self.node_procs[i]
        deadline = time.monotonic() + timeout
        while True:
            p.argv = self._node_argv(i, p.port)
            try:
                self._spawn(p, timeout)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the old port may still be in TIME_WAIT / taken

    def kill_router(self, i: int) -> None:
        """SIGKILL router ``i`` and reap it."""
        popen = self.router_procs[i].running
        if popen is not None:
            popen.kill()
            popen.wait()

    def restart_router(self, i: int, timeout: float = 30.0) -> None:
        """Start router ``i`` again on its data dir and its port (its peers know it there)."""
        p = self.router_procs[i]
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._spawn(p, timeout)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the old port may still be in TIME_WAIT

    def node_address(self, i: int) -> str:
        return self.node_procs[i].address

    def zone_of(self, i: int) -> str:
        """Node ``i``'s zone: z1..zN round-robin ("" without zones)."""
        return f"z{(i - 1) % self.zones + 1}" if self.zones else ""

    def add_node(self, timeout: float = 30.0) -> int:
        """Start one more node (the next store id, an empty data dir); returns its number."""
        i = max(self.node_procs, default=0) + 1
        if self.tls:
            self._make_certs(range(1, i + 1))
        port = self.base_port + self.routers - 1 + i if self.base_port else 0
        log = os.path.join(self.root, "logs", f"node{i}.log")
        self.node_procs[i] = Proc(f"node{i}", self._node_argv(i, port), log)
        self._spawn(self.node_procs[i], timeout)
        self.nodes = max(self.nodes, i)
        return i


def free_port() -> int:
    """A loopback port the kernel handed out just now (free until somebody else binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scan(routers: RouterSet, tls: tls_mod.TlsConfig | None = None) -> list[meta_pb2.PartitionDescriptor]:
    """Every partition's descriptor from the current router (grpc.RpcError when it fails)."""
    with tls_mod.channel(routers.current, tls) as ch:
        return list(meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=2).partitions)


def _pump(proc: Proc, popen: subprocess.Popen[bytes], started_or_gone: threading.Event) -> None:
    """Copy the output of ``popen`` (``proc``'s current run) into its log, line by line, for as
    long as it writes (so it never blocks on a full pipe), keeping the last lines. Set
    ``started_or_gone`` once its "listening on ADDR" line gave ``proc`` its address, or when
    its output ends."""
    assert popen.stdout is not None
    with open(proc.log_path, "ab") as log:
        for line in popen.stdout:
            log.write(line)
            log.flush()
            proc.tail.append(line.decode(errors="replace").rstrip())
            if not proc.peer_address and (p := _PEERS_AT.search(line)):
                proc.peer_address = p.group(1).decode()
            if not proc.wire_address and (p := _WIRE_AT.search(line)):
                proc.wire_address = p.group(1).decode()
            elif not proc.metrics_url and (u := _METRICS_AT.search(line)):
                proc.metrics_url = u.group(1).decode()
            elif not started_or_gone.is_set() and (m := _LISTENING.search(line)):
                proc.address = m.group(1).decode()
                proc.port = int(proc.address.rsplit(":", 1)[1])
                started_or_gone.set()
    popen.stdout.close()
    started_or_gone.set()
