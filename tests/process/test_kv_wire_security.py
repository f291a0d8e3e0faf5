"""The KV wire (D28) under mutual TLS and tokens, against a real ``--auth`` cluster (3 nodes,
1 router; tests/support/auth_cluster.py).

A KV wire connection stands for a KV.Stream and must be checked like one (docs/auth.md,
docs/security.md): TLS with the cluster's server context (so plaintext and certificates of
another CA never get a frame read), the hello's token against the node's token table (none,
malformed, unknown, revoked: UNAUTHENTICATED; a read token's connection ended with
PERMISSION_DENIED at its first write item; a member's certificate needs no token), and a token
revoked while its connection is open ends that connection within the documented bound. Every
refusal is one ``E`` frame and then the node closes; nothing a refused connection carries is
applied. ``KV.WireEndpoint`` (where the wire listens) is a KV read like any other.

The connections here are spoken by hand (:class:`RawWire`: a blocking socket, the ssl module,
the frames of common/wire/kv_frames.py) so that each test chooses exactly what the node sees;
the first test checks that the client library really takes the wire, over TLS.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from common import auth, tls
from common.wire import kv_frames as kf
from support.auth_cluster import REVOKE_BOUND_S, RPC_TIMEOUT_S, Env, auth_cluster, client, meta
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2
from tools import certs

pytestmark = pytest.mark.timeout(120)

READ_TIMEOUT_S = 5.0  # the most a test waits for a frame (or the end) the node owes it
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with auth_cluster("tessera-kv-wire-sec-") as e:
        yield e


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> certs.ClusterCerts:
    """Another cluster's CA and certificates (a client and a node of theirs)."""
    return certs.ensure_cluster_certs(str(tmp_path_factory.mktemp("foreign")), nodes=[1], routers=[])


# -- speaking the wire by hand ------------------------------------------------------------------


class RawWire:
    """One KV wire connection (TLS with ``ctx``, else plaintext), frames sent and read by hand."""

    def __init__(self, address: str, ctx: ssl.SSLContext | None) -> None:
        host, _, port = address.rpartition(":")
        raw = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host) if ctx is not None else raw
        except BaseException:
            raw.close()
            raise
        self.reader = kf.FrameReader()
        self.frames: deque[tuple[int, bytes]] = deque()
        self.received = b""  # every byte read (what a plaintext peer got back)
        self.eof = False
        self.error: BaseException | None = None  # how the connection ended, when not by a clean EOF

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def next(self, timeout: float = READ_TIMEOUT_S) -> tuple[int, bytes] | None:
        """The next frame; None once the node closed the connection. TimeoutError if neither."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame and no end within {timeout:g} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except (ssl.SSLError, ConnectionError) as exc:  # refused handshake, reset
                self.error, data = exc, b""
            if not data:
                self.eof = True
                continue
            self.received += data
            self.frames.extend(self.reader.feed(data))
        return self.frames.popleft()

    def answer(self, timeout: float = READ_TIMEOUT_S) -> kv_pb2.StreamResponse:
        """The next frame, which must be an answer."""
        got = self.next(timeout)
        assert got is not None, f"the connection ended instead of answering ({self.error!r})"
        kind, payload = got
        if kind == kf.END:
            raise AssertionError(f"ended instead of answering: {kv_pb2.WireEnd.FromString(payload)}")
        assert kind == kf.ANSWER, kind
        return kv_pb2.StreamResponse.FromString(payload)

    def rest(self, timeout: float = READ_TIMEOUT_S) -> list[tuple[int, bytes]]:
        """Every frame up to the end of the connection (which must come within ``timeout``)."""
        deadline = time.monotonic() + timeout
        out = []
        while (got := self.next(max(0.0, deadline - time.monotonic()))) is not None:
            out.append(got)
        return out

    def bytes_until_end(self, timeout: float = READ_TIMEOUT_S) -> bytes:
        """Every byte the node sends until it closes (not read as frames: a plaintext peer of a
        TLS listener may get a TLS alert)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the connection did not end within {timeout:g} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except (ssl.SSLError, ConnectionError) as exc:
                self.error, data = exc, b""
            self.received += data
            self.eof = not data
        return self.received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWire:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def hello(token: str | None) -> bytes:
    return kf.frame(kf.HELLO, kv_pb2.WireHello(version=kf.VERSION, token=token or "").SerializeToString())


def request(*items: kv_pb2.StreamRequestItem) -> bytes:
    return kf.frame(kf.REQUEST, kv_pb2.StreamRequest(requests=list(items)).SerializeToString())


def _ctx() -> kv_pb2.RequestContext:
    return kv_pb2.RequestContext(request_id=os.urandom(16))  # partition 0: the node routes by key


def put_item(tag: int, key: bytes, value: bytes) -> kv_pb2.StreamRequestItem:
    return kv_pb2.StreamRequestItem(request_id=tag, put=kv_pb2.PutRequest(context=_ctx(), key=key, value=value))


def get_item(tag: int, key: bytes) -> kv_pb2.StreamRequestItem:
    return kv_pb2.StreamRequestItem(request_id=tag, get=kv_pb2.GetRequest(
        context=_ctx(), key=key, read_options=kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE)))


def ended_with(conn: RawWire, code: grpc.StatusCode, timeout: float = READ_TIMEOUT_S) -> kv_pb2.WireEnd:
    """The connection's remaining frames are one ``E`` frame with ``code``, then its end."""
    frames = conn.rest(timeout)
    assert [kind for kind, _ in frames] == [kf.END], [(chr(k), kv_pb2.WireEnd.FromString(p) if k == kf.END else p)
                                                     for k, p in frames]
    end = kv_pb2.WireEnd.FromString(frames[0][1])
    assert end.code == code.value[0], f"{end}: expected {code.name}"
    return end


def answers_in(data: bytes) -> list[int]:
    """The kinds of the frames ``data`` begins with (what a plaintext peer might mistake for
    frames; a TLS alert parses as an oversized frame, so: none)."""
    try:
        return [kind for kind, _ in kf.FrameReader().feed(data)]
    except kf.FrameTooLarge:
        return []


# -- the cluster -------------------------------------------------------------------------------


def leader_store(e: Env) -> int:
    parts = meta(e, "ScanPartitions", meta_pb2.ScanPartitionsRequest(), e.admin).partitions
    assert len(parts) == 1 and parts[0].leader_store_id, parts
    return int(parts[0].leader_store_id)


def leader_wire(e: Env) -> str:
    address = e.cluster.node_procs[leader_store(e)].wire_address
    assert address, "the leader printed no 'takes KV wire clients at' line"
    return address


def stored(e: Env, key: bytes) -> Any:
    """The key's (value, version) as the admin reads it (linearizable), None when absent."""
    with client(e, e.admin) as cl:
        return cl.get(key, consistency="linearizable")


def client_ctx(e: Env) -> ssl.SSLContext:
    return e.client_tls.client_ssl_context


# -- 1. the client library takes the wire, over TLS -------------------------------------------------


def test_the_client_library_speaks_the_wire_over_tls_with_its_token(env: Env) -> None:
    from router.client import AsyncClient
    from router.client.multiplexed import StreamTransport

    leader = env.cluster.node_procs[leader_store(env)]
    keys = [f"client-{i}".encode() for i in range(20)]

    async def main() -> None:
        async with AsyncClient(env.cluster.router_addresses, tls=env.client_tls, token=env.tokens["write"],
                               deadline_s=10) as cl:
            versions = await asyncio.gather(*(cl.put(k, b"v-" + k) for k in keys))
            assert all(v > 0 for v in versions)
            got = await asyncio.gather(*(cl.get(k, consistency="linearizable") for k in keys))
            assert [g.value if g else None for g in got] == [b"v-" + k for k in keys]
            transport = cl.transport
            assert isinstance(transport, StreamTransport)
            wire: Any = transport.stream(leader.address)
            assert wire.uses_wire, "the client fell back to KV.Stream"
            # The connection is the node's wire port, TLS, and the peer is that node (member cert).
            t = wire._conn.transport
            assert t.get_extra_info("peername")[1] == int(leader.wire_address.rpartition(":")[2])
            ssl_object = t.get_extra_info("ssl_object")
            assert ssl_object is not None, "the KV wire connection is not TLS"
            who = tls.identity_from_peercert(ssl_object.getpeercert())
            assert who is not None and who.is_member and who.name == leader.name.replace("node", "node-"), who

    asyncio.run(main())
    with client(env, env.admin) as cl:
        assert cl.get(keys[0], consistency="linearizable").value == b"v-" + keys[0]


# -- 2. no TLS, or TLS with a certificate the cluster CA did not sign: no frame read ----------------


def test_plaintext_to_the_tls_wire_gets_no_answer_and_writes_nothing(env: Env) -> None:
    with RawWire(leader_wire(env), None) as conn:  # plaintext, with a good token even
        conn.send(hello(env.admin), request(put_item(1, b"plaintext", b"x")))
        back = conn.bytes_until_end()  # the node closes it (not waiting for a handshake) ...
        assert not {kf.ANSWER, kf.END} & set(answers_in(back)), back  # ... having said nothing
    assert stored(env, b"plaintext") is None


@pytest.mark.parametrize("who", ["foreign-client", "foreign-member", "no-certificate"])
def test_a_certificate_the_cluster_ca_did_not_sign_cannot_complete_the_handshake(
    env: Env, foreign: certs.ClusterCerts, who: str
) -> None:
    """Each trusts our CA (so it would accept the node) and says hello as what it claims to be:
    a client with a good admin token, a member (another cluster's node) with none."""
    if who == "no-certificate":
        ctx = ssl.create_default_context(cadata=env.client_tls.ca.decode())
    else:
        theirs = foreign.client if who == "foreign-client" else foreign.nodes[1]
        ctx = tls.TlsConfig.load(env.client_tls.ca_path, theirs.cert, theirs.key).client_ssl_context
    token = None if who == "foreign-member" else env.admin
    key = f"foreign-{who}".encode()
    try:
        conn = RawWire(leader_wire(env), ctx)
    except (ssl.SSLError, ConnectionError):
        pass  # the handshake failed on our side already (TLS 1.2)
    else:
        with conn:
            # TLS 1.3: the client's side of the handshake ends before the node has checked the
            # client's certificate; the node's refusal is an alert or the close, and no frame.
            try:
                conn.send(hello(token), request(put_item(1, key, b"x")))
            except (ssl.SSLError, ConnectionError):
                pass
            else:
                assert conn.rest() == [], "the node read the frames of a certificate it should refuse"
    assert stored(env, key) is None


# -- 3. hellos without a usable token ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["none", "malformed", "unknown", "revoked"])
def test_a_hello_without_a_usable_token_is_ended_unauthenticated_and_its_put_not_applied(env: Env, case: str) -> None:
    token = {"none": None, "malformed": "not-a-token", "unknown": auth.new_token(), "revoked": env.revoked}[case]
    key = f"refused-{case}".encode()
    with RawWire(leader_wire(env), client_ctx(env)) as conn:
        conn.send(hello(token), request(put_item(1, key, b"x")))  # the put right after the hello
        end = ended_with(conn, UNAUTHENTICATED)
        assert end.message
        assert conn.error is None, f"not a clean close after the E frame: {conn.error!r}"
    assert stored(env, key) is None
    # The same frames with a write token are applied: the refusal above was the token's.
    with RawWire(leader_wire(env), client_ctx(env)) as conn:
        conn.send(hello(env.tokens["write"]), request(put_item(1, key, b"x")))
        (item,) = conn.answer().responses
        assert (item.request_id, item.code, item.message) == (1, 0, "")
        assert item.put.version > 0
    assert stored(env, key).value == b"x"


def test_a_request_before_the_hello_is_not_served(env: Env) -> None:
    """No way around the hello: a put sent first (a good token's hello after it) ends the
    connection and is not applied."""
    with RawWire(leader_wire(env), client_ctx(env)) as conn:
        conn.send(request(put_item(1, b"before-hello", b"x")), hello(env.tokens["write"]))
        end = ended_with(conn, grpc.StatusCode.INVALID_ARGUMENT)
        assert "before the hello" in end.message, end.message
    assert stored(env, b"before-hello") is None


# -- 4. a read token -----------------------------------------------------------------------------------


def _write_item(kind: str, key: bytes, version: int) -> kv_pb2.StreamRequestItem:
    if kind == "put":
        return put_item(2, key, b"after")
    if kind == "delete":
        return kv_pb2.StreamRequestItem(request_id=2, delete=kv_pb2.DeleteRequest(context=_ctx(), key=key))
    if kind == "compare_and_set":
        return kv_pb2.StreamRequestItem(request_id=2, compare_and_set=kv_pb2.CompareAndSetRequest(
            context=_ctx(), key=key, expected_version=version, value=b"after"))
    return kv_pb2.StreamRequestItem(request_id=2, batch=kv_pb2.BatchRequest(
        context=_ctx(), ops=[kv_pb2.WriteOp(put=kv_pb2.PutOp(key=key, value=b"after"))]))


@pytest.mark.parametrize("kind", sorted(auth.STREAM_WRITE_KINDS))
def test_a_read_token_reads_over_the_wire_and_its_first_write_ends_the_connection(env: Env, kind: str) -> None:
    key = f"read-token-{kind}".encode()
    with client(env, env.admin) as cl:
        version = cl.put(key, b"before")
    with RawWire(leader_wire(env), client_ctx(env)) as conn:
        conn.send(hello(env.tokens["read"]), request(get_item(1, key)))
        (item,) = conn.answer().responses
        assert (item.request_id, item.code, item.get.found, item.get.value) == (1, 0, True, b"before"), item
        conn.send(request(_write_item(kind, key, version)))
        end = ended_with(conn, PERMISSION_DENIED)
        assert kind in end.message and "write" in end.message, end.message
    got = stored(env, key)
    assert (got.value, got.version) == (b"before", version)


# -- 5. a member's certificate -------------------------------------------------------------------------


def test_a_member_certificate_passes_without_a_token(env: Env) -> None:
    with RawWire(leader_wire(env), env.member_tls.client_ssl_context) as conn:
        conn.send(hello(None), request(put_item(1, b"by-member", b"m")))
        (put,) = conn.answer().responses
        assert (put.code, put.message) == (0, "") and put.put.version > 0
        conn.send(request(get_item(2, b"by-member")))
        (got,) = conn.answer().responses
        assert (got.code, got.get.value) == (0, b"m")
    assert stored(env, b"by-member").value == b"m"


# -- 6. revocation ---------------------------------------------------------------------------------------


def test_revoking_a_token_ends_its_open_wire_connections_and_refuses_new_ones(env: Env) -> None:
    created = meta(env, "CreateToken", meta_pb2.CreateTokenRequest(role="write", name="wire, soon revoked"), env.admin)
    assert list(created.stores_behind) == []
    token = created.token
    leader = leader_store(env)
    conns = {i: RawWire(p.wire_address, client_ctx(env)) for i, p in env.cluster.node_procs.items()}
    try:
        for i, conn in conns.items():
            # An answer on every node's connection: its hello was taken (a follower's answer to a
            # linearizable get is an error item, but an answer all the same).
            item = put_item(1, b"before-revoke", b"1") if i == leader else get_item(1, b"existing")
            conn.send(hello(token), request(item))
            (answer,) = conn.answer().responses
            assert answer.request_id == 1
            if i == leader:
                assert answer.code == 0 and answer.put.version > 0, answer
        started = time.monotonic()
        revoked = meta(env, "RevokeToken", meta_pb2.RevokeTokenRequest(id=created.info.id), env.admin)
        assert list(revoked.stores_behind) == []
        for i, conn in conns.items():
            # Without another frame from us: the node ends the connection as its table updates.
            end = ended_with(conn, UNAUTHENTICATED, timeout=max(0.0, started + REVOKE_BOUND_S - time.monotonic()))
            assert "revoked" in end.message, (i, end.message)
        assert time.monotonic() - started < REVOKE_BOUND_S
    finally:
        for conn in conns.values():
            conn.close()
    # A new connection with that token is refused at its hello, and its put is not applied.
    with RawWire(env.cluster.node_procs[leader].wire_address, client_ctx(env)) as conn:
        conn.send(hello(token), request(put_item(1, b"after-revoke", b"1")))
        ended_with(conn, UNAUTHENTICATED)
    assert stored(env, b"after-revoke") is None


def test_the_client_library_on_the_wire_is_refused_once_its_token_is_revoked(env: Env) -> None:
    from router.client import AccessDeniedError, AsyncClient
    from router.client.multiplexed import StreamTransport

    created = meta(env, "CreateToken", meta_pb2.CreateTokenRequest(role="write"), env.admin)
    address = env.cluster.node_procs[leader_store(env)].address

    async def main() -> None:
        async with AsyncClient(env.cluster.router_addresses, tls=env.client_tls, token=created.token,
                               deadline_s=5) as cl:
            assert await cl.put(b"client-before-revoke", b"1") > 0
            transport = cl.transport
            assert isinstance(transport, StreamTransport)
            wire: Any = transport.stream(address)
            assert wire.uses_wire
            await asyncio.to_thread(meta, env, "RevokeToken", meta_pb2.RevokeTokenRequest(id=created.info.id),
                                    env.admin)
            started = time.monotonic()
            while wire.uses_wire:  # the node's E frame ends the open connection
                assert time.monotonic() - started < REVOKE_BOUND_S, "the open wire connection was not ended"
                await asyncio.sleep(0.01)
            with pytest.raises(AccessDeniedError, match="UNAUTHENTICATED"):
                await cl.put(b"client-after-revoke", b"1")

    asyncio.run(main())
    assert stored(env, b"client-after-revoke") is None


# -- 7. KV.WireEndpoint ------------------------------------------------------------------------------------


def test_wire_endpoint_needs_a_token_like_any_kv_read(env: Env) -> None:
    def endpoint(address: str, token: str | None, config: tls.TlsConfig) -> tuple[grpc.StatusCode, str]:
        with tls.channel(address, config) as ch:
            try:
                got = kv_pb2_grpc.KVStub(ch).WireEndpoint(kv_pb2.WireEndpointRequest(),
                                                          metadata=auth.call_metadata(token), timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as exc:
                return exc.code(), ""
            return grpc.StatusCode.OK, got.address

    assert env.cluster.router is not None
    wrong = []
    places = [(p.address, p.wire_address) for p in env.cluster.node_procs.values()]
    places.append((env.cluster.router.address, ""))  # the router's KV proxy has no wire
    for address, wire in places:
        cases: list[tuple[str, str | None, tls.TlsConfig, tuple[grpc.StatusCode, str]]] = [
            ("none", None, env.client_tls, (UNAUTHENTICATED, "")),
            ("malformed", "not-a-token", env.client_tls, (UNAUTHENTICATED, "")),
            ("unknown", auth.new_token(), env.client_tls, (UNAUTHENTICATED, "")),
            ("revoked", env.revoked, env.client_tls, (UNAUTHENTICATED, "")),
            *((role, env.tokens[role], env.client_tls, (grpc.StatusCode.OK, wire)) for role in auth.ROLE_NAMES),
            ("member, no token", None, env.member_tls, (grpc.StatusCode.OK, wire)),
        ]
        for case, token, config, expected in cases:
            got = endpoint(address, token, config)
            if got != expected:
                wrong.append(f"{address} WireEndpoint with {case}: {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)
    # Each node's wire listens on the host it serves gRPC at (where the client dials it).
    assert all(wire and wire.rpartition(":")[0] == address.rpartition(":")[0] for address, wire in places[:-1])

