"""Transport security (docs/security.md): mutual TLS on the Raft wires, gRPC servers and the
CLI, with real servers on loopback and a real ``tessera cluster up --tls``.

What must hold: members exchange Raft traffic over TLS on both wires (gRPC stream and the
TCP wire, D23); a peer whose certificate the cluster CA did not sign, or a client's
certificate, cannot get a batch stepped; a client without a certificate, with one from
another CA, or in plaintext is refused with a message that says what to do, and changes
nothing; the CLI takes --ca/--cert/--key and $TESSERA_*; a restarted ``cluster up --tls``
keeps its certificates.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from common import aio, tls
from conftest import eventually, eventually_async
from node import tcp_transport
from node.raft import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from node.raft_codec import message_to_pb
from node.transport import SERVER_OPTIONS, RaftTransport, RaftTransportService, register
from support import cluster_up
from tesserapb import kv_pb2, kv_pb2_grpc, raft_pb2
from tools import certs

pytestmark = pytest.mark.timeout(120)

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")


# -- certificates ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[certs.ClusterCerts, certs.ClusterCerts]:
    """The cluster's certificates, and a foreign cluster's (another CA)."""
    root = tmp_path_factory.mktemp("pki")
    return (certs.ensure_cluster_certs(str(root / "ours"), nodes=[1, 2], routers=[]),
            certs.ensure_cluster_certs(str(root / "theirs"), nodes=[1], routers=[]))


def member(c: certs.ClusterCerts, i: int, ca: str | None = None) -> tls.TlsConfig:
    return tls.TlsConfig.load(ca or c.ca, c.nodes[i].cert, c.nodes[i].key)


# -- the Raft transport, both wires -----------------------------------------------------------


class Store:
    """A receiving store over TLS (or plaintext): gRPC server + TCP batch listener."""

    def __init__(self, snapshot_dir: str, config: tls.TlsConfig | None) -> None:
        self.config = config
        self.received: list[raft_pb2.RaftMessage] = []
        self.service = RaftTransportService(2, lambda _f, msgs: self.received.extend(msgs), self._snap, snapshot_dir)
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        register(self.server, self.service)
        self.listener: tcp_transport.BatchListener | None = None
        self.port = 0

    @staticmethod
    async def _snap(*_: object) -> tuple[bool, str]:
        return False, "no"

    async def start(self) -> None:
        self.port = tls.add_port(self.server, "127.0.0.1:0", self.config)
        self.listener = await tcp_transport.serve(
            "127.0.0.1", 0, self.service, self.config.server_ssl_context if self.config else None
        )
        self.service.tcp_address = self.tcp_address
        await self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tcp_address(self) -> str:
        assert self.listener is not None
        return f"127.0.0.1:{self.listener.port}"

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.server.stop(None)


def heartbeat(i: int) -> raft_pb2.RaftMessage:
    return message_to_pb(1, (1, 1), Message(MessageType.HEARTBEAT, 1, 2, term=1, commit=i))


def sender(store: Store, wire: str, config: tls.TlsConfig | None) -> RaftTransport:
    """A sender to store 2: "grpc" (the stream), "tcp" (the TCP wire, its port asked over gRPC)
    or "tcp-direct" (the TCP wire dialled at once, never touching the gRPC server)."""
    endpoint = {"grpc": None, "tcp": lambda s: None, "tcp-direct": lambda s: store.tcp_address}[wire]
    return RaftTransport(1, lambda s: store.address, tcp_endpoint=endpoint, tls=config, connect_timeout=2.0)


async def send_until(tr: RaftTransport, cond: object, timeout: float, what: str) -> None:
    """Keep sending (senders drop what they queue while backing off) until ``cond()``."""
    n = 0

    def check() -> bool:
        nonlocal n
        n += 1
        tr.send(2, [heartbeat(n)])
        return bool(cond())  # type: ignore[operator]

    await eventually_async(check, timeout, what, interval=0.02)


@pytest.mark.parametrize("wire", ["grpc", "tcp", "tcp-direct"])
def test_members_exchange_raft_batches_over_tls(tmp_path: Path, pki, wire: str) -> None:
    ours, _ = pki

    async def main() -> None:
        store = Store(str(tmp_path / "snap"), member(ours, 2))
        await store.start()
        tr = sender(store, wire, member(ours, 1))
        try:
            await send_until(tr, lambda: len(store.received) >= 10, 10, "batches delivered over TLS")
            assert store.service.streams_refused == 0
            live = store.listener._live if store.listener is not None else set()  # the TCP wire's peers
            if wire == "grpc":
                assert not live  # the stream carried them
            else:
                assert [r.transport is not None and r.transport.get_extra_info("ssl_object") is not None
                        for r in live] == [True]
        finally:
            await tr.close()
            await store.stop()

    aio.run(main())  # the node's loop (uvloop): its TLS is the one that must hold


def test_snapshots_stream_over_tls_and_not_from_a_foreign_node(tmp_path: Path, pki) -> None:
    ours, theirs = pki
    first = message_to_pb(1, (1, 1), Message(MessageType.SNAP, 1, 2, term=2,
                                             snapshot=Snapshot(SnapshotMeta(10, 2, ConfState(voters=frozenset({1}))))))

    async def main() -> None:
        store = Store(str(tmp_path / "snap"), member(ours, 2))
        await store.start()
        good = sender(store, "grpc", member(ours, 1))
        rogue = sender(store, "grpc", member(theirs, 1, ca=ours.ca))
        try:
            # The store's installer says no to everything: its verdict coming back proves the
            # image crossed the TLS channel and was read to the end.
            assert await good.send_snapshot(2, first, [b"image"], timeout=10) == (False, "no")
            assert store.service.snapshots_refused == 1
            ok, reason = await rogue.send_snapshot(2, first, [b"image"], timeout=10)
            assert not ok and reason, reason
            assert store.service.snapshots_refused == 1 and store.service.snapshots_received == 0
        finally:
            await good.close()
            await rogue.close()
            await store.stop()

    aio.run(main())


@pytest.mark.parametrize("wire", ["grpc", "tcp", "tcp-direct"])
@pytest.mark.parametrize("trusts", ["our-ca", "their-ca"])
def test_a_node_with_a_foreign_certificate_cannot_join_raft_traffic(tmp_path: Path, pki, wire: str,
                                                                    trusts: str) -> None:
    """A rogue node with a certificate another CA signed: whether it trusts our CA (so it
    would accept our server) or its own, its connection is refused and nothing it sends is
    stepped, on either wire, even dialling the TCP listener directly."""
    ours, theirs = pki

    async def main() -> None:
        store = Store(str(tmp_path / "snap"), member(ours, 2))
        await store.start()
        rogue = member(theirs, 1, ca=ours.ca if trusts == "our-ca" else None)
        tr = sender(store, wire, rogue)
        try:
            await send_until(tr, lambda: tr.stream_failures >= 3, 20, "the rogue's connections failing")
            assert store.received == [] and store.service.batches_received == 0
            status = tr.peer_status()[2]
            assert status["last_error"], status
        finally:
            await tr.close()
            await store.stop()

    aio.run(main())  # the node's loop (uvloop): its TLS is the one that must hold


def test_a_client_certificate_cannot_speak_raft_on_the_tcp_wire(tmp_path: Path, pki) -> None:
    """The cluster CA signs clients too; a client's certificate passes the handshake but is
    not a member's, so the batch listener drops the connection before reading a byte."""
    ours, _ = pki

    async def main() -> None:
        store = Store(str(tmp_path / "snap"), member(ours, 2))
        await store.start()
        client = tls.TlsConfig.load(ours.ca, ours.client.cert, ours.client.key)
        tr = sender(store, "tcp-direct", client)
        try:
            await send_until(tr, lambda: store.service.streams_refused >= 2, 20, "the listener refusing a client")
            assert store.received == []
        finally:
            await tr.close()
            await store.stop()

    aio.run(main())  # the node's loop (uvloop): its TLS is the one that must hold


@pytest.mark.parametrize("wire", ["grpc", "tcp-direct"])
def test_plaintext_and_tls_do_not_mix(tmp_path: Path, pki, wire: str) -> None:
    ours, _ = pki

    async def main() -> None:
        for server_tls, client_tls in ((member(ours, 2), None), (None, member(ours, 1))):
            store = Store(str(tmp_path / f"snap{server_tls is None}"), server_tls)
            await store.start()
            tr = sender(store, wire, client_tls)
            try:
                await send_until(tr, lambda: tr.stream_failures >= 2, 20, "mixed connections failing")  # noqa: B023
                assert store.received == []
            finally:
                await tr.close()
                await store.stop()

    aio.run(main())  # the node's loop (uvloop): its TLS is the one that must hold


def test_peer_identity_names_the_verified_certificate_and_a_certless_client_is_refused(pki) -> None:
    ours, _ = pki

    async def whoami(_req: bytes, context: grpc.aio.ServicerContext) -> bytes:
        who = tls.peer_identity(context)
        return f"{who.role}/{who.name}".encode() if who else b"anonymous"

    handler = grpc.method_handlers_generic_handler(
        "t.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)}
    )

    async def call(address: str, creds: grpc.ChannelCredentials | None) -> bytes:
        channel = grpc.aio.secure_channel(address, creds) if creds else grpc.aio.insecure_channel(address)
        async with channel:
            answer: bytes = await channel.unary_unary("/t.Who/Am")(b"", timeout=5)  # type: ignore[arg-type]
            return answer

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        plain = grpc.aio.server()
        plain.add_generic_rpc_handlers((handler,))
        secure_at = f"127.0.0.1:{tls.add_port(server, '127.0.0.1:0', member(ours, 2))}"
        plain_at = f"127.0.0.1:{tls.add_port(plain, '127.0.0.1:0', None)}"
        await server.start()
        await plain.start()
        try:
            assert await call(secure_at, member(ours, 1).channel_credentials) == b"member/node-1"
            client = tls.TlsConfig.load(ours.ca, ours.client.cert, ours.client.key)
            assert await call(secure_at, client.channel_credentials) == b"client/client"
            assert await call(plain_at, None) == b"anonymous"
            # A TLS client with no certificate of its own (it trusts our CA) is refused.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(secure_at, grpc.ssl_channel_credentials(root_certificates=client.ca))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)
            await plain.stop(None)

    aio.run(main())  # the node's loop (uvloop): its TLS is the one that must hold


# -- a whole cluster: tessera cluster up --tls and the CLI ----------------------------------------


def _up(data_dir: str, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `tessera cluster up` (two partitions) and read its output up to the "try:" hint."""
    return cluster_up.up(data_dir, "--partitions", "2", *extra)


_stop = cluster_up.stop


def _kv(router: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    return subprocess.run([TESSERA, "kv", *args, "--router", router, "--timeout", "3"], capture_output=True,
                          text=True, timeout=60, check=False, env={**clean, **(env or {})})


@dataclass
class Secured:
    """A running `cluster up --tls`: its process, data dir, router address and tls dir."""

    proc: subprocess.Popen[str]
    data: str
    router: str
    tls_dir: Path


def _router_of(lines: list[str]) -> str:
    m = re.search(r"ready: router (\S+)", "\n".join(lines))
    assert m is not None, lines
    return m.group(1)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = str(tmp_path_factory.mktemp("secured") / "data")
    proc, lines = _up(data, "--tls")
    state = Secured(proc, data, "", Path(data) / "tls")
    try:
        state.router = _router_of(lines)
        assert not any(line.startswith("plaintext") for line in lines), lines
        assert any(f"TESSERA_CA={state.tls_dir}/ca.pem" in line for line in lines), lines
        yield state
    finally:
        if state.proc.poll() is None:
            _stop(state.proc, data)


def _flags(d: Path, cert: str = "client") -> list[str]:
    return ["--ca", str(d / "ca.pem"), "--cert", str(d / f"{cert}.pem"), "--key", str(d / f"{cert}.key")]


def test_cluster_up_tls_serves_the_cli_with_flags_and_with_env_vars(secured) -> None:
    router, d = secured.router, secured.tls_dir
    assert sorted(os.listdir(d)) == ["ca.key", "ca.pem", "client.key", "client.pem", "node-1.key", "node-1.pem",
                                     "node-2.key", "node-2.pem", "node-3.key", "node-3.pem", "router-1.key",
                                     "router-1.pem"]
    put = _kv(router, "put", "k", "v1", *_flags(d))
    assert put.returncode == 0, put.stderr
    env = {"TESSERA_CA": str(d / "ca.pem"), "TESSERA_CERT": str(d / "client.pem"),
           "TESSERA_KEY": str(d / "client.key")}
    got = _kv(router, "get", "k", "--consistency", "linearizable", env=env)
    assert (got.returncode, got.stdout) == (0, "v1"), got.stderr
    # Flags and the environment mix, flags first (here: the key from the environment).
    got = _kv(router, "get", "k", "--ca", str(d / "ca.pem"), "--cert", str(d / "client.pem"),
              env={"TESSERA_KEY": str(d / "client.key")})
    assert (got.returncode, got.stdout) == (0, "v1"), got.stderr
    # Only some of the three: a usage error naming the missing one, before any connection.
    half = _kv(router, "get", "k", "--ca", str(d / "ca.pem"))
    assert half.returncode == 2 and "missing --cert, --key" in half.stderr, half.stderr


def test_the_routers_kv_proxy_reaches_the_nodes_over_tls(secured) -> None:
    """A thin client's call to the router is forwarded to the leader over the router's own
    member certificate (router/proxy.py's client)."""
    d = secured.tls_dir
    client = tls.TlsConfig.load(str(d / "ca.pem"), str(d / "client.pem"), str(d / "client.key"))
    with tls.channel(secured.router, client) as ch:
        stub = kv_pb2_grpc.KVStub(ch)
        stub.Put(kv_pb2.PutRequest(key=b"proxied", value=b"via-router"), timeout=10)
        got = stub.Get(kv_pb2.GetRequest(key=b"proxied"), timeout=10)
    assert got.value == b"via-router"


def test_clients_without_the_clusters_certificate_are_refused_and_change_nothing(secured, pki) -> None:
    router, d = secured.router, secured.tls_dir
    _, theirs = pki
    assert _kv(router, "put", "guarded", "before", *_flags(d)).returncode == 0

    plain = _kv(router, "put", "guarded", "plaintext")
    assert plain.returncode == 1
    assert "cannot reach the router" in plain.stderr and "give --ca, --cert and --key" in plain.stderr, plain.stderr

    foreign = ["--ca", theirs.ca, "--cert", theirs.client.cert, "--key", theirs.client.key]
    other_ca = _kv(router, "put", "guarded", "foreign", *foreign)
    assert other_ca.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in other_ca.stderr and "not signed by the --ca" in other_ca.stderr

    # Trusting our CA is not enough: its own certificate must be one our CA signed.
    rogue = _kv(router, "put", "guarded", "rogue", "--ca", str(d / "ca.pem"), "--cert", theirs.client.cert,
                "--key", theirs.client.key)
    assert rogue.returncode == 1 and "refused this client's certificate" in rogue.stderr, rogue.stderr

    got = _kv(router, "get", "guarded", "--consistency", "linearizable", *_flags(d))
    assert (got.returncode, got.stdout) == (0, "before"), got.stderr


def test_a_restarted_cluster_up_tls_keeps_its_certificates(secured) -> None:
    """Last in the module: it stops the shared cluster and starts it again on its data dir."""
    d = secured.tls_dir
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert _kv(secured.router, "put", "kept", "yes", *_flags(d)).returncode == 0
    _stop(secured.proc, secured.data)
    secured.proc, lines = _up(secured.data, "--tls")  # the fixture stops this one
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    got = _kv(_router_of(lines), "get", "kept", "--consistency", "linearizable", *_flags(d))
    assert (got.returncode, got.stdout) == (0, "yes"), got.stderr


def test_plaintext_cluster_up_says_it_is_plaintext_first(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    proc = subprocess.Popen([TESSERA, "cluster", "up", "--base-port", "0", "--data-dir", data],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("plaintext: no TLS") and "--tls" in first, first
    finally:
        proc.kill()  # its children die with it (PR_SET_PDEATHSIG)
        proc.wait(10)
    eventually(lambda: not cluster_up.children_of(data), 10, "no processes left behind")
    assert not os.path.exists(os.path.join(data, "tls"))
