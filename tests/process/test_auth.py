"""Who may do what (docs/auth.md), against a real ``--auth`` cluster: 3 nodes, 1 router, mTLS.

What must hold:
- every RPC of every service (KV on nodes and on the router's proxy, Meta with its admin and
  member-only calls, the Raft transport on nodes and routers) refuses a call with no token, a
  malformed one, an unknown one, a revoked one (UNAUTHENTICATED) and one whose role is too low
  (PERMISSION_DENIED), and none of those calls changes the data or placement;
- health stays open; each role can do what it should (so the refusals above can fail);
- members (mTLS member certificates) pass with no token; a client certificate with an admin
  token does admin work but never passes as a member;
- a revoked token stops working on nodes within the documented bound (RevokeToken waits for
  the nodes), and its open KV streams are ended;
- ``--auth`` without TLS: a node and a router refuse to start, naming the flag.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from common import auth, tls
from support.auth_cluster import REVOKE_BOUND_S, RPC_TIMEOUT_S, Env, auth_cluster, client, meta
from tesserapb import kv_pb2, meta_pb2, raft_pb2
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")


def _grpc_call(ch: grpc.Channel, method: str, kind: str, request: Message, md: tuple[tuple[str, str], ...]) -> Any:
    """One call of any shape; returns the (last) response, raises grpc.RpcError."""
    ser = type(request).SerializeToString
    if kind == "uu":
        return ch.unary_unary(method, request_serializer=ser, response_deserializer=bytes)(
            request, metadata=md, timeout=RPC_TIMEOUT_S)
    if kind == "us":
        call = ch.unary_stream(method, request_serializer=ser, response_deserializer=bytes)(
            request, metadata=md, timeout=1.0)
        try:
            return next(iter(call))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None  # open, nothing to say yet: the call was accepted
            raise
    it = iter([request])
    if kind == "su":
        return ch.stream_unary(method, request_serializer=ser, response_deserializer=bytes)(
            it, metadata=md, timeout=RPC_TIMEOUT_S)
    call = ch.stream_stream(method, request_serializer=ser, response_deserializer=bytes)(
        it, metadata=md, timeout=RPC_TIMEOUT_S)
    return list(call)


def code_of(fn: Callable[[], Any]) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with auth_cluster("tessera-auth-") as e:
        yield e


def snapshot(e: Env) -> tuple[Any, ...]:
    """The data and the placement state, read as a member (no token), to compare before/after."""
    assert e.cluster.router is not None
    with tls.channel(e.cluster.router.address, e.member_tls) as ch:
        def m(method: str, req: Message) -> Any:
            return _grpc_call_typed(ch, "/tessera.v1.Meta/" + method, req)
        parts = meta_pb2.ScanPartitionsResponse.FromString(m("ScanPartitions", meta_pb2.ScanPartitionsRequest()))
        stores = meta_pb2.GetStoresResponse.FromString(m("GetStores", meta_pb2.GetStoresRequest()))
        ops = meta_pb2.ListOperationsResponse.FromString(m("ListOperations", meta_pb2.ListOperationsRequest()))
        tokens = meta_pb2.ListTokensResponse.FromString(m("ListTokens", meta_pb2.ListTokensRequest()))
        scan = kv_pb2.ScanResponse.FromString(
            _grpc_call_typed(ch, "/tessera.v1.KV/Scan", kv_pb2.ScanRequest(read_options=linearizable())))
    return (
        [(p.id, p.start, p.end, p.epoch.conf_ver, p.epoch.version, p.leader_store_id,
          sorted((r.store_id, r.role) for r in p.replicas)) for p in parts.partitions],
        sorted((s.id, s.address, s.state) for s in stores.stores),
        [o.operation.id for o in ops.operations],
        [(t.id, t.role, t.revoked) for t in tokens.tokens],
        [(kv.key, kv.value, kv.version) for kv in scan.kvs],
    )


def linearizable() -> kv_pb2.ReadOptions:
    return kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE)


def _held_stream(
    ch: grpc.Channel, first: kv_pb2.StreamRequest, md: tuple[tuple[str, str], ...]
) -> tuple[Iterator[kv_pb2.StreamResponse], queue.Queue[kv_pb2.StreamRequest | None]]:
    """A KV.Stream opened with ``first`` that stays open without sending more, so a test can see
    the server end it (the revocation tests, on a node and on the router's proxy). Put a request
    on the queue to send it; put None to end the stream from our side."""
    outbox: queue.Queue[kv_pb2.StreamRequest | None] = queue.Queue()
    outbox.put(first)

    def requests() -> Iterator[kv_pb2.StreamRequest]:
        while (item := outbox.get()) is not None:
            yield item

    stream = ch.stream_stream("/tessera.v1.KV/Stream", request_serializer=kv_pb2.StreamRequest.SerializeToString,
                              response_deserializer=kv_pb2.StreamResponse.FromString)(requests(), metadata=md,
                                                                                      timeout=60)
    return stream, outbox


def _grpc_call_typed(ch: grpc.Channel, method: str, req: Message) -> bytes:
    return ch.unary_unary(method, request_serializer=type(req).SerializeToString, response_deserializer=bytes)(
        req, timeout=RPC_TIMEOUT_S)


def kv_rpcs(ctx: kv_pb2.RequestContext) -> list[tuple[str, str, Message, auth.Need]]:
    k = "/tessera.v1.KV/"
    put = kv_pb2.PutRequest(context=ctx, key=b"victim", value=b"x")
    return [
        (k + "Get", "uu", kv_pb2.GetRequest(context=ctx, key=b"existing"), auth.Need.READ),
        (k + "Scan", "uu", kv_pb2.ScanRequest(context=ctx), auth.Need.READ),
        # Where the node's KV wire listens (D28): a read, like the Stream it stands for.
        (k + "WireEndpoint", "uu", kv_pb2.WireEndpointRequest(), auth.Need.READ),
        (k + "Put", "uu", put, auth.Need.WRITE),
        (k + "Delete", "uu", kv_pb2.DeleteRequest(context=ctx, key=b"existing"), auth.Need.WRITE),
        (k + "CompareAndSet", "uu", kv_pb2.CompareAndSetRequest(context=ctx, key=b"existing", delete=True),
         auth.Need.WRITE),
        (k + "Batch", "uu", kv_pb2.BatchRequest(context=ctx, ops=[kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"victim"))]),
         auth.Need.WRITE),
        # The stream opens for a read token, and ends at its first write: as WRITE here.
        (k + "Stream", "ss", kv_pb2.StreamRequest(requests=[kv_pb2.StreamRequestItem(request_id=1, put=put)]),
         auth.Need.WRITE),
    ]


def raft_rpcs(to_store: int) -> list[tuple[str, str, Message, auth.Need]]:
    r = "/tessera.v1.RaftTransport/"
    msg = raft_pb2.RaftMessage(partition_id=1)
    return [
        (r + "PeerEndpoint", "uu", raft_pb2.PeerEndpointRequest(to_store=to_store), auth.Need.MEMBER),
        (r + "Stream", "ss", raft_pb2.RaftBatch(from_store=9, to_store=to_store, msgs=[msg], seq=1), auth.Need.MEMBER),
        (r + "SendSnapshot", "su", raft_pb2.SnapshotChunk(message=msg, last=True), auth.Need.MEMBER),
    ]


def meta_rpcs(pid: int, admin_id: int) -> list[tuple[str, str, Message, auth.Need]]:
    m = "/tessera.v1.Meta/"
    op = meta_pb2.Operation(partition_id=pid, transfer_leader=meta_pb2.TransferLeader(to_store_id=2))
    return [
        (m + "GetPartition", "uu", meta_pb2.GetPartitionRequest(key=b"k"), auth.Need.READ),
        (m + "ScanPartitions", "uu", meta_pb2.ScanPartitionsRequest(), auth.Need.READ),
        (m + "GetStores", "uu", meta_pb2.GetStoresRequest(), auth.Need.READ),
        (m + "ListOperations", "uu", meta_pb2.ListOperationsRequest(), auth.Need.READ),
        (m + "GetRouters", "uu", meta_pb2.GetRoutersRequest(), auth.Need.READ),
        (m + "SubmitOperation", "uu", meta_pb2.SubmitOperationRequest(operation=op), auth.Need.ADMIN),
        (m + "SetStoreState", "uu", meta_pb2.SetStoreStateRequest(store_id=3, state=meta_pb2.STORE_DRAINING),
         auth.Need.ADMIN),
        (m + "CreateToken", "uu", meta_pb2.CreateTokenRequest(role="admin"), auth.Need.ADMIN),
        (m + "RevokeToken", "uu", meta_pb2.RevokeTokenRequest(id=admin_id), auth.Need.ADMIN),
        (m + "ListTokens", "uu", meta_pb2.ListTokensRequest(), auth.Need.ADMIN),
        (m + "StoreHeartbeat", "uu", meta_pb2.StoreHeartbeatRequest(address="127.0.0.1:1"), auth.Need.MEMBER),
        (m + "ReportLeader", "uu", meta_pb2.ReportLeaderRequest(partition_id=pid, leader_store_id=3, term=10**6),
         auth.Need.MEMBER),
        (m + "WatchOperations", "us", meta_pb2.WatchOperationsRequest(store_id=1), auth.Need.MEMBER),
    ]


def targets(e: Env) -> list[tuple[str, list[tuple[str, str, Message, auth.Need]]]]:
    """(address, its RPCs): the partition's leader node, another node, and the router."""
    parts = meta(e, "ScanPartitions", meta_pb2.ScanPartitionsRequest(), e.admin).partitions
    p = parts[0]
    ctx = kv_pb2.RequestContext(partition_id=p.id, epoch=p.epoch, request_id=os.urandom(16))
    stores = {s.id: s.address for s in meta(e, "GetStores", meta_pb2.GetStoresRequest(), e.admin).stores}
    follower = next(s for s in stores if s != p.leader_store_id)
    assert e.cluster.router is not None
    return [
        (stores[p.leader_store_id], kv_rpcs(ctx) + raft_rpcs(p.leader_store_id)),
        (stores[follower], kv_rpcs(ctx) + raft_rpcs(follower)),
        (e.cluster.router.address, kv_rpcs(ctx) + meta_rpcs(p.id, 1) + raft_rpcs(1)),
    ]


LOWER = {auth.Need.WRITE: "read", auth.Need.ADMIN: "write", auth.Need.MEMBER: "admin"}


def test_every_rpc_refuses_bad_credentials_and_changes_nothing(env: Env) -> None:
    before = snapshot(env)
    cases = {
        "none": (None, grpc.StatusCode.UNAUTHENTICATED),
        "malformed": ("not-a-token", grpc.StatusCode.UNAUTHENTICATED),
        "unknown": (auth.new_token(), grpc.StatusCode.UNAUTHENTICATED),
        "revoked": (env.revoked, grpc.StatusCode.UNAUTHENTICATED),
    }
    wrong = []
    calls = 0
    for address, rpcs in targets(env):
        with tls.channel(address, env.client_tls) as ch:
            for method, kind, request, need in rpcs:
                tried = dict(cases)
                if need in LOWER:
                    tried["low role"] = (env.tokens[LOWER[need]], grpc.StatusCode.PERMISSION_DENIED)
                for case, (token, expected) in tried.items():
                    md = (("authorization", f"Bearer {token}"),) if token else ()
                    got = code_of(lambda: _grpc_call(ch, method, kind, request, md))  # noqa: B023
                    calls += 1
                    if got != expected:
                        wrong.append(f"{address} {method} with {case} token: {got.name}, expected {expected.name}")
    assert not wrong, "\n".join(wrong)
    assert calls > 150
    assert snapshot(env) == before


def test_health_is_open_and_each_role_does_what_it_may(env: Env) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert env.cluster.router is not None
    with tls.channel(env.cluster.router.address, env.client_tls) as ch:
        stub = health_pb2_grpc.HealthStub(ch)  # declared without its methods by types-grpcio-health-checking
        resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)  # type: ignore[attr-defined]
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    from router.client import AccessDeniedError

    with client(env, env.tokens["read"]) as cl:
        assert cl.get(b"existing") is not None
        with pytest.raises(AccessDeniedError, match="PERMISSION_DENIED"):
            cl.put(b"r", b"1")
    with client(env, env.tokens["write"]) as cl:
        assert cl.put(b"w", b"1") > 0
        assert cl.delete(b"w")
    listed = meta(env, "ListTokens", meta_pb2.ListTokensRequest(), env.tokens["admin"])
    assert {t.role for t in listed.tokens} >= {"read", "write", "admin"}
    assert not {"token", "hash"} & set(meta_pb2.TokenInfo.DESCRIPTOR.fields_by_name)  # never a secret
    with pytest.raises(grpc.RpcError) as denied:
        meta(env, "ListTokens", meta_pb2.ListTokensRequest(), env.tokens["write"])
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs role admin" in (denied.value.details() or "")


def test_members_pass_without_a_token_and_clients_never_pass_as_members(env: Env) -> None:
    from tesserapb import meta_pb2_grpc

    parts = meta(env, "ScanPartitions", meta_pb2.ScanPartitionsRequest(), None, env.member_tls)
    assert parts.partitions  # a member's read: no token
    assert env.cluster.router is not None
    # A member may call member-only RPCs (a node's heartbeat path), with no token.
    with tls.channel(env.cluster.router.address, env.member_tls) as ch:
        got = _grpc_call(ch, "/tessera.v1.RaftTransport/PeerEndpoint", "uu", raft_pb2.PeerEndpointRequest(to_store=1),
                         ())
        assert got is not None
    # A client certificate with an admin token: admin work yes, member work never.
    op_free = meta(env, "ListOperations", meta_pb2.ListOperationsRequest(), env.admin)
    assert op_free is not None
    with tls.channel(env.cluster.router.address, env.client_tls) as ch:
        stub = meta_pb2_grpc.MetaStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            stub.StoreHeartbeat(meta_pb2.StoreHeartbeatRequest(address="127.0.0.1:1"),
                                metadata=auth.call_metadata(env.admin), timeout=RPC_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "members only" in (refused.value.details() or "")


def test_a_revoked_token_stops_on_nodes_at_once_and_its_open_streams_end(env: Env) -> None:
    created = meta(env, "CreateToken", meta_pb2.CreateTokenRequest(role="write", name="soon revoked"), env.admin)
    assert list(created.stores_behind) == []  # every node accepts it as the answer comes
    token = created.token
    parts = meta(env, "ScanPartitions", meta_pb2.ScanPartitionsRequest(), env.admin).partitions
    stores = {s.id: s.address for s in meta(env, "GetStores", meta_pb2.GetStoresRequest(), env.admin).stores}
    leader = stores[parts[0].leader_store_id]
    md = auth.call_metadata(token)
    ctx = kv_pb2.RequestContext(partition_id=parts[0].id, epoch=parts[0].epoch)
    get = kv_pb2.StreamRequest(requests=[kv_pb2.StreamRequestItem(
        request_id=1, get=kv_pb2.GetRequest(context=ctx, key=b"existing", read_options=linearizable()))])
    with tls.channel(leader, env.client_tls) as ch:
        stream, outbox = _held_stream(ch, get, md)
        first = next(stream)
        assert first.responses[0].code == 0 and first.responses[0].get.found
        started = time.monotonic()
        revoked = meta(env, "RevokeToken", meta_pb2.RevokeTokenRequest(id=created.info.id), env.admin)
        assert list(revoked.stores_behind) == []
        # A new call on the node is refused now (RevokeToken waited for every node) ...
        got = code_of(lambda: _grpc_call(ch, "/tessera.v1.KV/Get", "uu", get.requests[0].get, md))
        assert got == grpc.StatusCode.UNAUTHENTICATED
        # ... and the stream opened before is ended, without another message from us.
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        outbox.put(None)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (ended.value.details() or "")
        assert time.monotonic() - started < REVOKE_BOUND_S


@pytest.mark.parametrize("server", ["node", "router"])
def test_auth_without_tls_refuses_to_start(server: str, tmp_path: Any) -> None:
    argv = [TESSERA, server, "--auth", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]
    argv += ["--store-id", "1", "--routers", "127.0.0.1:1"] if server == "node" else []
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--auth needs mutual TLS" in done.stderr and "--ca, --cert" in done.stderr


def test_the_routers_proxy_ends_a_revoked_tokens_stream_within_its_sweep(env: Env) -> None:
    created = meta(env, "CreateToken", meta_pb2.CreateTokenRequest(role="read"), env.admin)
    md = auth.call_metadata(created.token)
    get = kv_pb2.StreamRequest(requests=[kv_pb2.StreamRequestItem(
        request_id=1, get=kv_pb2.GetRequest(key=b"existing", read_options=linearizable()))])
    assert env.cluster.router is not None
    with tls.channel(env.cluster.router.address, env.client_tls) as ch:
        stream, outbox = _held_stream(ch, get, md)
        first = next(stream)
        assert first.responses[0].code == 0 and first.responses[0].get.value == b"v"
        started = time.monotonic()
        meta(env, "RevokeToken", meta_pb2.RevokeTokenRequest(id=created.info.id), env.admin)
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        outbox.put(None)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - started < REVOKE_BOUND_S


def test_tokens_are_replicated_a_new_placement_leader_knows_them(tmp_path: Any) -> None:
    from router.client import AccessDeniedError

    c = Cluster(root=str(tmp_path / "c"), nodes=3, routers=3, partitions=1, auth=True, schedule_interval=0)
    try:
        c.start()
        c.wait_ready(90)
        assert c.admin_token is not None and c.tls_files is not None and c.certs is not None
        e = Env(c, c.admin_token, {}, "", tls.TlsConfig.load(*c.tls_files),
                tls.TlsConfig.load(c.certs.ca, c.certs.nodes[1].cert, c.certs.nodes[1].key))

        def leader() -> int:
            routers = meta(e, "GetRouters", meta_pb2.GetRoutersRequest(), e.admin)
            return int(routers.leader)

        from conftest import eventually

        first = eventually(leader, 30, "a placement leader")
        writer = meta_at(e, first, "CreateToken", meta_pb2.CreateTokenRequest(role="write"), e.admin)
        c.kill_router(first)
        second = eventually(lambda: (lead := leader_at(e, first)) and lead != first and lead, 30,
                            "another placement leader")
        with client(e, writer.token) as cl:  # Meta at the new leader and the nodes: both know it
            assert cl.put(b"after-failover", b"1") > 0
        meta_at(e, second, "RevokeToken", meta_pb2.RevokeTokenRequest(id=writer.info.id), e.admin)
        with client(e, writer.token) as cl, pytest.raises(AccessDeniedError, match="UNAUTHENTICATED"):
            cl.put(b"after-revoke", b"1")
    finally:
        c.stop()


def _router_address(e: Env, router_id: int) -> str:
    return e.cluster.router_procs[router_id].address


def meta_at(e: Env, router_id: int, method: str, request: Message, token: str | None) -> Any:
    from tesserapb import meta_pb2_grpc

    with tls.channel(_router_address(e, router_id), e.client_tls) as ch:
        return getattr(meta_pb2_grpc.MetaStub(ch), method)(request, metadata=auth.call_metadata(token),
                                                           timeout=RPC_TIMEOUT_S)


def leader_at(e: Env, dead: int) -> int:
    """The placement leader as a live router sees it (0: none yet)."""
    alive = next(i for i in e.cluster.router_procs if i != dead)
    return int(meta_at(e, alive, "GetRouters", meta_pb2.GetRoutersRequest(), e.admin).leader)
