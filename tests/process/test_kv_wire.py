"""The KV wire (docs/decisions.md D28: node/kv_wire.py, router/client/wire.py) on a real
cluster of processes: the client speaks it to every node that offers one and gets the same
answers and errors as over KV.Stream; a node without one is served over KV.Stream; hostile
bytes on the wire port end that connection with one E frame (the right gRPC code, one line)
and nothing else; a half-closed connection is answered, then closed; a node killed under
load fails what was in flight retryably and loses no acknowledged write; many large values at
once never make a message over the limit, and a small request for many large answers cannot
make the node hold more than the stream's bound.

One module-scoped cluster serves the tests that leave it as they found it; the ones that
need another shape (a node without a wire) or kill a node start their own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from conftest import eventually, eventually_async
from router.client import AsyncClient, Cas, DeadlineExceeded, Delete, InvalidArgumentError, Put
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure
from router.client.multiplexed import StreamTransport
from router.client.retry import classify
from router.client.stream import NodeStream
from router.client.transport import UnaryTransport
from router.client.wire import NodeWire
from support.running import running_cluster
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster, Proc

pytestmark = pytest.mark.timeout(120)

HEADER_BYTES = 5  # 4-byte big-endian length, 1-byte kind
HELLO, REQUEST, ANSWER, END = ord("H"), ord("R"), ord("A"), ord("E")
MAX_FRAME_BYTES = 64 << 20
GOOD_HELLO = kv_pb2.WireHello(version=1).SerializeToString()
GARBAGE = b"\xff\xff\xff\xff"  # a field number of 0x0fffffff with wire type 7: never parses
EOF_WITHIN_S = 5.0


def frame(kind: int, payload: bytes) -> bytes:
    """Framed by hand (not common/wire/kv_frames.py), so the test pins the format itself."""
    return len(payload).to_bytes(4, "big") + bytes([kind]) + payload


def request(*items: kv_pb2.StreamRequestItem) -> bytes:
    return frame(REQUEST, kv_pb2.StreamRequest(requests=items).SerializeToString())


def _new_cluster(**kw: Any) -> Callable[[str], Cluster]:
    return lambda root: Cluster(root=root, schedule_interval=0, **kw)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # The scheduler stays off: no leader moves under the tests' feet.
    with running_cluster("tessera-kv-wire-", _new_cluster(nodes=3, partitions=3)) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------


def _partitions(c: Cluster) -> list[meta_pb2.PartitionDescriptor]:
    assert c.router is not None
    with c.channel(c.router.address) as ch:
        parts = meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions
    return sorted(parts, key=lambda p: p.start)


def _partition_of(c: Cluster, key: bytes) -> meta_pb2.PartitionDescriptor:
    assert c.router is not None
    with c.channel(c.router.address) as ch:
        return meta_pb2_grpc.MetaStub(ch).GetPartition(meta_pb2.GetPartitionRequest(key=key), timeout=5).partition


def _key_in(p: meta_pb2.PartitionDescriptor, suffix: bytes) -> bytes:
    key = p.start + b"\x01" + suffix  # the start of the range, past any boundary's prefixes
    assert key >= p.start and (not p.end or key < p.end), (p, key)
    return key


def _leader_proc(c: Cluster, key: bytes) -> Proc:
    p = _partition_of(c, key)
    assert p.leader_store_id, f"partition {p.id} has no leader"
    return c.node_procs[p.leader_store_id]


def _wire_endpoint(c: Cluster, address: str) -> str:
    with c.channel(address) as ch:
        return kv_pb2_grpc.KVStub(ch).WireEndpoint(kv_pb2.WireEndpointRequest(), timeout=5).address


def _streams(client: AsyncClient) -> StreamTransport:
    transport = client.transport
    assert isinstance(transport, StreamTransport), transport
    return transport


def _read_frames(reader_buf: bytearray) -> list[tuple[int, bytes]]:
    out = []
    while len(reader_buf) >= HEADER_BYTES:
        n = int.from_bytes(reader_buf[:4], "big")
        if len(reader_buf) < HEADER_BYTES + n:
            break
        out.append((reader_buf[4], bytes(reader_buf[HEADER_BYTES:HEADER_BYTES + n])))
        del reader_buf[:HEADER_BYTES + n]
    return out


def exchange(address: str, wire: bytes, *, half_close: bool = False,
             within_s: float = EOF_WITHIN_S) -> tuple[list[tuple[int, bytes]], float]:
    """Connect to a node's KV wire at ``address``, send ``wire`` (then shut our write side when
    ``half_close``), and read until the node closes. Returns the frames it sent and how long it
    took; fails when the node keeps the connection open past ``within_s``, resets it, or leaves
    a partial frame at its end."""
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    frames: list[tuple[int, bytes]] = []
    buf = bytearray()
    with socket.create_connection((host, int(port)), timeout=within_s) as s:
        s.sendall(wire)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        while True:
            left = started + within_s - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the node kept the connection open over {within_s:g} s; got {frames}")
            s.settimeout(left)
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                continue  # the check above fails it
            except ConnectionResetError:
                raise AssertionError(f"the node reset the connection instead of closing it; got {frames}") from None
            if not data:
                break
            buf += data
            frames += _read_frames(buf)
    assert not buf, f"the node's last frame was cut off: {bytes(buf[:40])!r}"
    return frames, time.monotonic() - started


def answers(frames: list[tuple[int, bytes]]) -> dict[int, kv_pb2.StreamResponseItem]:
    out: dict[int, kv_pb2.StreamResponseItem] = {}
    for kind, payload in frames:
        if kind == ANSWER:
            for item in kv_pb2.StreamResponse.FromString(payload).responses:
                assert item.request_id not in out, f"request {item.request_id} answered twice"
                out[item.request_id] = item
    return out


# -- 1. the client over the wire ----------------------------------------------------------------


def test_the_client_speaks_the_wire_to_every_node_and_kv_stream_reads_the_same_data(cluster: Cluster) -> None:
    """Put, lease and linearizable get, delete, compare-and-set, a batch and a scan over every
    partition, with the default client (the wire): every node's connection is a wire, and a
    KV.Stream client (use_wire=False) reads back exactly the same data."""
    assert cluster.router is not None
    router = cluster.router.address
    parts = _partitions(cluster)
    assert len(parts) == 3
    for p in cluster.node_procs.values():
        assert p.wire_address and _wire_endpoint(cluster, p.address) == p.wire_address, p

    async def over_the_wire() -> dict[bytes, tuple[bytes, int]]:
        # A small scan page, so the scan below is many requests and crosses every boundary.
        async with AsyncClient(router, deadline_s=20, scan_page_size=2) as wc:
            keys = [_key_in(p, b"wire-%d" % i) for p in parts for i in range(4)]
            data: dict[bytes, tuple[bytes, int]] = {}
            for k in keys:
                version = await wc.put(k, b"v1-" + k)
                data[k] = (b"v1-" + k, version)
            for k in keys:
                assert await wc.get(k) == data[k], k
                assert await wc.get(k, "linearizable") == data[k], k

            gone = keys[0]
            assert await wc.delete(gone) is True
            assert await wc.delete(gone) is False
            assert await wc.get(gone, "linearizable") is None
            del data[gone]

            k = keys[1]
            stale = await wc.cas(k, data[k][1] + 1000, b"never")
            assert stale == (False, data[k][1], data[k][0]), stale
            won = await wc.cas(k, data[k][1], b"v2")
            assert won.succeeded and won.current_version > data[k][1] and won.current_value == b"v2", won
            data[k] = (b"v2", won.current_version)
            created = await wc.cas(gone, 0, b"back")
            assert created.succeeded, created
            data[gone] = (b"back", created.current_version)

            b1, b2, b3 = keys[-3:]  # one partition's keys: a batch is atomic within one
            results = await wc.batch([Put(b1, b"batched"), Delete(b2), Cas(b3, data[b3][1], b"cas-in-batch")])
            assert [r.succeeded for r in results] == [True] * 3 and results[1].deleted, results
            data[b1] = (b"batched", results[0].version)
            del data[b2]
            data[b3] = (b"cas-in-batch", results[2].version)
            for key, want in data.items():
                assert await wc.get(key, "linearizable") == want, key

            scanned = [kv for kv in await wc.scan(b"", b"", limit=None) if kv.key in data]
            assert [(kv.key, (kv.value, kv.version)) for kv in scanned] == sorted(data.items())

            # Stale reads go to any replica: read until every node has had requests.
            transport = _streams(wc)
            addresses = [p.address for p in cluster.node_procs.values()]

            async def every_node_used() -> bool:
                for key in keys:
                    await wc.get(key, "stale")
                return all(transport.stream(a).items_sent > 0 for a in addresses)

            await eventually_async(every_node_used, 20, "stale reads on every node")
            for a in addresses:
                s = transport.stream(a)
                assert isinstance(s, NodeWire) and s.uses_wire, (a, s)
            return data

    async def over_kv_stream(data: dict[bytes, tuple[bytes, int]]) -> None:
        async with AsyncClient(router, deadline_s=20, use_wire=False) as sc:
            for key, want in data.items():
                assert await sc.get(key, "linearizable") == want, key
                assert await sc.get(key) == want, key
            scanned = [kv for kv in await sc.scan(b"", b"", limit=None) if kv.key in data]
            assert [(kv.key, (kv.value, kv.version)) for kv in scanned] == sorted(data.items())
            transport = _streams(sc)
            used = [transport.stream(p.address) for p in cluster.node_procs.values()]
            assert all(isinstance(s, NodeStream) for s in used), used
            assert sum(s.items_sent for s in used) >= 2 * len(data)

    data = asyncio.run(over_the_wire())
    asyncio.run(over_kv_stream(data))


def test_the_client_raises_the_same_errors_over_the_wire_as_over_kv_stream(cluster: Cluster) -> None:
    """A key, a value and a batch over the node's limits: the same InvalidArgumentError (field,
    limit, message) whichever carrier took the request."""
    assert cluster.router is not None
    router = cluster.router.address
    p = _partitions(cluster)[0]
    k = _key_in(p, b"limits")

    async def errors(use_wire: bool) -> list[tuple[str, str, int, str]]:
        out = []
        async with AsyncClient(router, deadline_s=20, use_wire=use_wire) as c:
            for what, call in (
                ("key", lambda: c.put(p.start + b"k" * 4097, b"v")),
                ("value", lambda: c.put(k, b"v" * ((1 << 20) + 1))),
                ("ops", lambda: c.batch([Put(k, b"v")] * 1025)),
                ("get key", lambda: c.get(p.start + b"g" * 4097, "linearizable")),
            ):
                with pytest.raises(InvalidArgumentError) as failed:
                    await call()
                e = failed.value
                out.append((what, e.field, e.limit, str(e)))
            transport = _streams(c)
            used = [s for proc in cluster.node_procs.values() if (s := transport.stream(proc.address)).items_sent]
            assert used and all(isinstance(s, NodeWire if use_wire else NodeStream) for s in used), used
            assert all(s.uses_wire for s in used if isinstance(s, NodeWire)), used
        return out

    wire = asyncio.run(errors(True))
    stream = asyncio.run(errors(False))
    assert wire == stream, (wire, stream)
    assert [(w, f, limit) for w, f, limit, _ in wire] == [
        ("key", "key", 4096), ("value", "value", 1 << 20), ("ops", "ops", 1024), ("get key", "key", 4096)]
    assert all("over the limit" in message for *_, message in wire), wire


def test_per_item_failures_are_the_same_on_the_wire_on_kv_stream_and_unary(cluster: Cluster) -> None:
    """Each failure one attempt can get (not leader, unknown partition, stale epoch, a bad
    argument) is the same RpcFailure (code, kind, message, structured error) on the wire, on
    KV.Stream and as a unary call."""
    p = _partitions(cluster)[0]
    leader = p.leader_store_id
    follower = next(r.store_id for r in p.replicas if r.store_id != leader)
    ctx = kv_pb2.RequestContext(partition_id=p.id, epoch=p.epoch)
    stale_epoch = kv_pb2.RequestContext(
        partition_id=p.id, epoch=meta_pb2.Epoch(conf_ver=p.epoch.conf_ver, version=p.epoch.version + 7))
    lin = kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE)
    cases: list[tuple[int, str, Message]] = [
        (follower, "get", kv_pb2.GetRequest(context=ctx, key=_key_in(p, b"x"), read_options=lin)),
        (leader, "put", kv_pb2.PutRequest(context=kv_pb2.RequestContext(partition_id=999_999), key=b"x", value=b"v")),
        (leader, "put", kv_pb2.PutRequest(context=stale_epoch, key=_key_in(p, b"x"), value=b"v")),
        (leader, "scan", kv_pb2.ScanRequest(context=ctx, start=_key_in(p, b"z"), end=_key_in(p, b"a"))),
        (leader, "put", kv_pb2.PutRequest(context=ctx, key=b"", value=b"v")),
    ]

    async def failures(
        make: Callable[[ChannelPool], StreamTransport | UnaryTransport],
    ) -> list[tuple[str, str | None, str, bytes]]:
        pool = ChannelPool()
        transport = make(pool)
        out = []
        try:
            for store, kind, req in cases:
                with pytest.raises(RpcFailure) as failed:
                    await transport.send(cluster.node_procs[store].address, kind, req, 10)
                f = failed.value
                out.append((f.code.name, f.kind, f.message, f.error.SerializeToString() if f.error else b""))
            if isinstance(transport, StreamTransport) and make is not _stream:
                s = transport.stream(cluster.node_procs[leader].address)
                assert isinstance(s, NodeWire) and s.uses_wire and s.items_sent >= 4, s
        finally:
            await transport.close()
            await pool.close()
        return out

    wire = asyncio.run(failures(_wire))
    stream = asyncio.run(failures(_stream))
    unary = asyncio.run(failures(UnaryTransport))
    assert wire == stream == unary, (wire, stream, unary)
    assert [(code, kind) for code, kind, *_ in wire] == [
        ("FAILED_PRECONDITION", "not_leader"),
        ("FAILED_PRECONDITION", "partition_not_found"),
        ("FAILED_PRECONDITION", "epoch_not_match"),
        ("INVALID_ARGUMENT", "invalid_argument"),
        ("INVALID_ARGUMENT", "invalid_argument"),
    ], wire


def _wire(pool: ChannelPool) -> StreamTransport:
    return StreamTransport(pool, wire=True)


def _stream(pool: ChannelPool) -> StreamTransport:
    return StreamTransport(pool, wire=False)


# -- 2. a node without a wire -------------------------------------------------------------------


def test_a_node_without_a_wire_says_so_and_is_served_over_kv_stream(caplog: pytest.LogCaptureFixture) -> None:
    """Node 1 runs with --kv-wire-listen none: it prints no wire address, answers WireEndpoint
    with "", and the client serves it over KV.Stream (uses_wire False) while it speaks the
    wire to the other two; everything works. The router's KV proxy has no wire either."""
    caplog.set_level(logging.INFO, logger="tessera.client.wire")
    make = _new_cluster(nodes=3, partitions=3, node_args=lambda i: ["--kv-wire-listen", "none"] if i == 1 else [])
    with running_cluster("tessera-kv-nowire-", make) as c:
        assert c.router is not None
        router = c.router.address
        bare, wired = c.node_procs[1], [c.node_procs[2], c.node_procs[3]]
        assert bare.wire_address == "" and _wire_endpoint(c, bare.address) == ""
        for p in wired:
            assert p.wire_address and _wire_endpoint(c, p.address) == p.wire_address
        assert _wire_endpoint(c, router) == ""
        parts = _partitions(c)
        keys = [_key_in(p, b"nowire-%d" % i) for p in parts for i in range(3)]

        async def go() -> None:
            async with AsyncClient(router, deadline_s=20) as client:
                transport = _streams(client)
                data = {}
                for k in keys:
                    data[k] = (b"v-" + k, await client.put(k, b"v-" + k))
                for k in keys:
                    assert await client.get(k, "linearizable") == data[k]
                assert [(kv.key, (kv.value, kv.version)) for kv in await client.scan(limit=None)] == sorted(
                    data.items())

                # Node 1 answers over KV.Stream whether or not it leads anything: a stale read
                # is served by any replica.
                for k in keys:
                    got = await transport.send(bare.address, "get", kv_pb2.GetRequest(
                        key=k, read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE)), 10)
                    assert isinstance(got, kv_pb2.GetResponse) and got.found, (k, got)
                s = transport.stream(bare.address)
                assert isinstance(s, NodeWire) and not s.uses_wire and s.items_sent == 0, s
                for p in wired:
                    await transport.send(p.address, "get", kv_pb2.GetRequest(
                        key=keys[0], read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE)), 10)
                    w = transport.stream(p.address)
                    assert isinstance(w, NodeWire) and w.uses_wire and w.items_sent > 0, (p.name, w)
                # The router's proxy: no wire, KV.Stream works (an empty scan needs no partition).
                empty = await transport.send(router, "scan", kv_pb2.ScanRequest(start=b"k", end=b"k"), 10)
                assert isinstance(empty, kv_pb2.ScanResponse) and not empty.kvs
                proxy = transport.stream(router)
                assert isinstance(proxy, NodeWire) and not proxy.uses_wire, proxy

        asyncio.run(go())
    fell_back = [r.getMessage() for r in caplog.records if "KV.Stream instead of the KV wire" in r.getMessage()]
    assert any(m.startswith(bare.address) and "it has none" in m for m in fell_back), fell_back
    assert not any(m.startswith(p.address) for p in wired for m in fell_back), fell_back


# -- 3. hostile input on the wire port --------------------------------------------------------


@dataclass
class Hostile:
    name: str
    wire: bytes
    code: grpc.StatusCode
    says: str
    answers: tuple[int, ...] = (0,)  # how many A frames may come before its E frame
    logged: bool = True  # a line in the node's log (rate-limited)


def _hostile_cases(get: kv_pb2.StreamRequestItem) -> list[Hostile]:
    over = MAX_FRAME_BYTES + 1
    bad, exhausted, precondition = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    grpc.StatusCode.FAILED_PRECONDITION)
    hello = frame(HELLO, GOOD_HELLO)
    return [
        # What a web browser or curl pointed at the port sends: "GET " is a length of 1.2 GB.
        Hostile("http", b"GET / HTTP/1.1\r\nHost: tessera\r\n\r\n", exhausted, "over the limit"),
        Hostile("garbage hello", frame(HELLO, GARBAGE), bad, "not a valid WireHello"),
        Hostile("garbage frame", frame(0x07, GARBAGE), bad, "unknown kind 7"),
        Hostile("length over the limit", over.to_bytes(4, "big") + bytes([REQUEST]), exhausted,
                f"a frame of {over} bytes is over the limit of {MAX_FRAME_BYTES} bytes"),
        Hostile("length 2^32-1 after the hello", hello + b"\xff\xff\xff\xff" + bytes([REQUEST]), exhausted,
                "over the limit"),
        Hostile("request before the hello", request(get), bad, "a request before the hello"),
        Hostile("second hello", hello + hello, bad, "a second hello"),
        Hostile("unknown kind", hello + frame(ord("Z"), b""), bad, "unknown kind 90"),
        Hostile("an answer from the client", hello + frame(ANSWER, b""), bad, "unknown kind 65"),
        Hostile("version 2", frame(HELLO, kv_pb2.WireHello(version=2).SerializeToString()), precondition,
                "speaks version 1, not 2", logged=False),
        Hostile("version 0 (empty hello)", frame(HELLO, b""), precondition, "not 0", logged=False),
        Hostile("malformed request", hello + frame(REQUEST, GARBAGE), bad, "not a valid tessera.v1.StreamRequest"),
        # The get's answer, when the leader has it at once (its lease), leaves before the E frame.
        Hostile("malformed request after a good one", hello + request(get) + frame(REQUEST, GARBAGE + b"\x00"), bad,
                "not a valid tessera.v1.StreamRequest", answers=(0, 1)),
    ]


def test_hostile_input_on_the_wire_port_gets_one_end_frame_and_the_node_goes_on(cluster: Cluster) -> None:
    """Each case on its own connection to a partition leader's wire port: exactly one E frame
    (its code, a one-line message saying why), nothing served after the bad frame, closed at
    once (a length over the limit is refused from its header). Then the node serves as before,
    on a connection that was open all along and on a new one, and its log has a rate-limited
    line per bad connection and no traceback."""
    assert cluster.router is not None
    router = cluster.router.address
    key = _key_in(_partitions(cluster)[1], b"hostile")
    node = _leader_proc(cluster, key)
    with open(node.log_path, errors="replace") as f:
        log_start = len(f.read())

    async def client_put_get(client: AsyncClient, value: bytes) -> None:
        version = await client.put(key, value)
        assert await client.get(key, "linearizable") == (value, version)
        s = _streams(client).stream(node.address)
        assert isinstance(s, NodeWire) and s.uses_wire

    async def go() -> None:
        async with AsyncClient(router, deadline_s=20) as before:
            await client_put_get(before, b"before")  # a connection open all along
            get = kv_pb2.StreamRequestItem(request_id=5, get=kv_pb2.GetRequest(key=key))
            wrong = []
            for case in _hostile_cases(get):
                frames, took = await asyncio.to_thread(exchange, node.wire_address, case.wire)
                ends = [kv_pb2.WireEnd.FromString(p) for kind, p in frames if kind == END]
                kinds = bytes(kind for kind, _ in frames)
                if len(ends) != 1 or kinds not in [b"A" * n + b"E" for n in case.answers]:
                    wrong.append(f"{case.name}: frames {kinds!r} (wanted {case.answers} A then one E): {ends}")
                    continue
                end = ends[0]
                if end.code != case.code.value[0] or case.says not in end.message:
                    wrong.append(f"{case.name}: code {end.code} {end.message!r}, wanted {case.code.name} "
                                 f"saying {case.says!r}")
                if not end.message.strip() or "\n" in end.message or len(end.message) > 1100:
                    wrong.append(f"{case.name}: not one line: {end.message!r}")
                served = answers(frames)
                if served and (served.keys() != {5} or served[5].code or not served[5].get.found):
                    wrong.append(f"{case.name}: answered {served}")
                if took > 2:
                    wrong.append(f"{case.name}: took {took:.1f} s to close")
            assert not wrong, "\n".join(wrong)
            await client_put_get(before, b"after, same connection")
        async with AsyncClient(router, deadline_s=20) as after:
            await client_put_get(after, b"after, new connection")

    asyncio.run(go())
    assert node.alive, f"{node.name} died: {node.last_words()}"

    def logged() -> list[str]:
        with open(node.log_path, errors="replace") as f:
            return f.read()[log_start:].splitlines()

    # Rate-limited (common/log_limit.py): of the bad connections a burst of 5 lines, and
    # perhaps one more refilled meanwhile; refused versions are not logged as bad input.
    bad = sum(case.logged for case in _hostile_cases(kv_pb2.StreamRequestItem()))
    assert bad > 6
    def closing_lines() -> list[str]:
        lines = [line for line in logged() if "closing a KV wire connection" in line]
        return lines if len(lines) >= 5 else []  # falsy: not yet

    lines = eventually(closing_lines, 10, "the node logging a burst of the bad connections")
    new = logged()
    assert not [line for line in new if "Traceback" in line], new
    assert len(lines) <= 6, lines


# -- 4. half-close ------------------------------------------------------------------------------


@pytest.mark.parametrize("mixed", [False, True], ids=["one get", "put, gets, scan, cas"])
def test_a_half_closed_connection_is_answered_then_closed(cluster: Cluster, mixed: bool) -> None:
    """Hello and one StreamRequest, then the client shuts its write side: every item is
    answered (A frames, matching request ids), then the node closes without an E frame."""
    assert cluster.router is not None
    p = _partitions(cluster)[2]
    key = _key_in(p, b"half-close")

    async def put() -> int:
        async with AsyncClient(cluster.router.address, deadline_s=20) as c:  # type: ignore[union-attr]
            return await c.put(key, b"v")

    version = asyncio.run(put())
    node = _leader_proc(cluster, key)
    items = [kv_pb2.StreamRequestItem(request_id=42, get=kv_pb2.GetRequest(key=key))]
    if mixed:
        lin = kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE)
        other = _key_in(p, b"half-close-2")
        items += [
            kv_pb2.StreamRequestItem(request_id=43, put=kv_pb2.PutRequest(key=other, value=b"w")),
            kv_pb2.StreamRequestItem(request_id=44, get=kv_pb2.GetRequest(key=key, read_options=lin)),
            kv_pb2.StreamRequestItem(request_id=45, scan=kv_pb2.ScanRequest(
                start=key, end=_key_in(p, b"half-close-3"))),
            kv_pb2.StreamRequestItem(request_id=46, compare_and_set=kv_pb2.CompareAndSetRequest(
                key=key, expected_version=version + 1000, value=b"never")),
        ]
    frames, _ = exchange(node.wire_address, frame(HELLO, GOOD_HELLO) + request(*items), half_close=True,
                         within_s=10)
    assert frames and {kind for kind, _ in frames} == {ANSWER}, frames
    got = answers(frames)
    assert sorted(got) == [i.request_id for i in items], got
    assert all(item.code == 0 for item in got.values()), got
    assert got[42].get.found and (got[42].get.value, got[42].get.version) == (b"v", version), got[42]
    if mixed:
        assert got[43].put.version > version
        assert (got[44].get.value, got[44].get.version) == (b"v", version)
        assert [(kv.key, kv.value, kv.version) for kv in got[45].scan.kvs] == [(key, b"v", version)]
        assert not got[46].compare_and_set.succeeded and got[46].compare_and_set.current_version == version


# -- 5. a node killed under load ----------------------------------------------------------------


@dataclass
class Watched:
    """A StreamTransport that counts each node's calls in flight and keeps every failure."""

    inner: StreamTransport
    in_flight: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, RpcFailure]] = field(default_factory=list)

    async def send(self, address: str, kind: str, req: Message, timeout: float) -> Message:
        self.in_flight[address] = self.in_flight.get(address, 0) + 1
        try:
            return await self.inner.send(address, kind, req, timeout)
        except RpcFailure as f:
            self.failures.append((address, f))
            raise
        finally:
            self.in_flight[address] -= 1

    async def close(self) -> None:
        await self.inner.close()


def test_a_node_killed_with_requests_in_flight_on_its_wire_loses_no_acknowledged_write() -> None:
    """12 writers through the wire; a partition leader is SIGKILLed while calls to it are in
    flight. Every call ends within its deadline, succeeded or failed retryably (the attempts at
    the dead node as a broken stream: retry elsewhere); writes after the new leaders are
    elected all succeed; every acknowledged write reads back; and once the node is restarted
    (on a new wire port) the client's next request to it goes over its wire again."""
    with running_cluster("tessera-kv-wire-kill-", _new_cluster(nodes=3, partitions=2)) as c:
        assert c.router is not None
        router = c.router.address
        parts = _partitions(c)
        victim = parts[0].leader_store_id
        victim_proc = c.node_procs[victim]
        asyncio.run(_kill_under_load(c, router, parts, victim, victim_proc))


async def _kill_under_load(c: Cluster, router: str, parts: list[meta_pb2.PartitionDescriptor], victim: int,
                           victim_proc: Proc) -> None:
    pool = ChannelPool()
    watched = Watched(StreamTransport(pool, wire=True))
    client = AsyncClient(router, deadline_s=15, transport=watched)
    acked: dict[bytes, tuple[bytes, int]] = {}
    failed: list[BaseException] = []
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        n = 0
        while not stop.is_set():
            p = parts[n % len(parts)]
            key, value = _key_in(p, b"load-%d-%d" % (w, n)), b"%d" % n
            n += 1
            try:
                acked[key] = (value, await client.put(key, value))
            except Exception as exc:
                failed.append(exc)

    try:
        workers = [asyncio.ensure_future(worker(w)) for w in range(12)]
        await eventually_async(lambda: len(acked) >= 100, 20, "100 acknowledged writes")
        s = watched.inner.stream(victim_proc.address)
        assert isinstance(s, NodeWire) and s.uses_wire, s
        # Kill it while calls to it are in flight: checked and killed in one turn of the loop.
        await eventually_async(lambda: watched.in_flight.get(victim_proc.address, 0) > 0, 10,
                               f"calls in flight to node {victim}")
        in_flight = watched.in_flight[victim_proc.address]
        failures_before = len(watched.failures)
        c.kill(victim)
        killed_at = time.monotonic()
        acked_at_kill = len(acked)

        def new_leaders() -> bool:
            return all(_partition_of(c, p.start).leader_store_id not in (0, victim) for p in parts)

        await eventually_async(lambda: asyncio.to_thread(new_leaders), 20, "new leaders without the killed node")
        elected_s = time.monotonic() - killed_at
        # Writes made now succeed, every one of them, on every partition.
        for p in parts:
            for i in range(10):
                key = _key_in(p, b"after-%d" % i)
                acked[key] = (b"after", await client.put(key, b"after"))
        await eventually_async(lambda: len(acked) >= acked_at_kill + 200, 30, "the load going on after the kill")
        stop.set()
        # No hang: every call ends within its deadline (15 s).
        await asyncio.wait_for(asyncio.gather(*workers), 30)

        # What the client saw: nothing but retryable failures (or none at all), and every
        # attempt that failed at the killed node failed the way a broken stream does.
        assert all(isinstance(e, DeadlineExceeded) for e in failed), failed
        at_victim = [f for a, f in watched.failures[failures_before:] if a == victim_proc.address]
        assert at_victim, f"{in_flight} calls were in flight to node {victim}, yet none failed there"
        for f in at_victim:
            d = classify(f)
            assert d.final is None and d.store_failed, f.describe()
        print(f"{in_flight} calls in flight at the kill; new leaders after {elected_s:.1f} s; "
              f"{len(acked)} writes acknowledged, {len(failed)} failed; at the killed node: "
              f"{sorted({(f.code.name, f.source) for f in at_victim})}")

        # No acknowledged write is lost: read back over KV.Stream, linearizably.
        async with AsyncClient(router, deadline_s=20, use_wire=False) as reader:
            lost = {}
            for key, want in acked.items():
                got = await reader.get(key, "linearizable")
                if got != want:
                    lost[key] = (want, got)
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {list(lost.items())[:5]}"

        # The node comes back on a new wire port; the client's next request finds it there.
        await asyncio.to_thread(c.restart, victim)
        assert victim_proc.wire_address

        async def stale_read_on_victim() -> bool:
            key = next(iter(acked))
            got = await watched.send(victim_proc.address, "get", kv_pb2.GetRequest(
                key=key, read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE, max_staleness_ms=60_000)), 2)
            return isinstance(got, kv_pb2.GetResponse)

        await eventually_async(stale_read_on_victim, 20, f"node {victim} serving again")
        assert s.uses_wire, "the client did not reconnect to the restarted node's wire"
    finally:
        stop.set()
        await client.close()
        await pool.close()


# -- TLS ------------------------------------------------------------------------------------------


def test_with_tls_the_wire_is_tls_and_plaintext_on_its_port_is_closed() -> None:
    """A cluster with TLS: the client (with the cluster's client certificate) speaks the wire
    over TLS to every leader; plaintext frames on a wire port get nothing served and the
    connection closed, without a traceback in the node's log."""
    with running_cluster("tessera-kv-wire-tls-", _new_cluster(nodes=3, partitions=2, tls=True)) as c:
        assert c.router is not None
        router = c.router.address
        parts = _partitions(c)

        async def go() -> None:
            async with AsyncClient(router, deadline_s=20, tls=c.client_tls) as client:
                for p in parts:
                    k = _key_in(p, b"tls")
                    version = await client.put(k, b"over tls")
                    assert await client.get(k, "linearizable") == (b"over tls", version)
                    s = _streams(client).stream(c.node_procs[p.leader_store_id].address)
                    assert isinstance(s, NodeWire) and s.uses_wire and s.items_sent > 0, s

        asyncio.run(go())
        node = c.node_procs[parts[0].leader_store_id]
        get = kv_pb2.StreamRequestItem(request_id=1, get=kv_pb2.GetRequest(key=_key_in(parts[0], b"tls")))
        host, _, port = node.wire_address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=EOF_WITHIN_S) as s:
            s.sendall(frame(HELLO, GOOD_HELLO) + request(get))
            got = b""
            try:
                while data := s.recv(1 << 16):
                    got += data
            except ConnectionResetError:
                pass  # closed either way
        assert b"over tls" not in got and not _read_frames(bytearray(got)), got
        asyncio.run(go())  # and the node goes on
        assert node.alive
        with open(node.log_path, errors="replace") as f:
            assert "Traceback" not in f.read()


# -- large values: bounded messages and bounded memory (found by these tests; fixed) ----------


def test_many_values_of_the_largest_size_at_once_never_make_a_frame_over_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """66 puts, then 66 gets, of 1 MiB values at once (a legitimate load: values at the node's
    limit, 66 callers): every call succeeds, and no frame goes over the limit, so no side
    ends the connection."""
    caplog.set_level(logging.DEBUG, logger="tessera.client.stream")
    n, value = 66, b"x" * (1 << 20)  # 66 MiB in one frame, either way
    # One partition that does not split under the 66 MiB (a split would move leaders).
    with running_cluster("tessera-kv-wire-big-", _new_cluster(nodes=3, partitions=1, split_size=1 << 30)) as c:
        assert c.router is not None
        router = c.router.address

        async def go() -> None:
            async with AsyncClient(router, deadline_s=30) as client:
                await client.put(b"warm", b"up")  # the route and the wire, before the load
                keys = [b"big-%03d" % i for i in range(n)]
                versions = await asyncio.gather(*(client.put(k, value) for k in keys))
                got = await asyncio.gather(*(client.get(k) for k in keys))
                assert got == [(value, v) for v in versions]

        asyncio.run(go())
        logs = {}
        for p in c.node_procs.values():
            with open(p.log_path, errors="replace") as f:
                logs[p.name] = [line for line in f if "over the limit" in line]
    assert not any(logs.values()), f"a node ended a connection over a frame's size: {logs}"
    broke = [r.getMessage() for r in caplog.records if "broke with" in r.getMessage()]
    assert not broke, f"the client's connection broke: {broke}"


def _peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) >> 10 for line in f if line.startswith("VmHWM:"))


def test_a_small_frame_of_gets_cannot_make_the_node_hold_a_large_answer(cluster: Cluster) -> None:
    """One ~2 KiB request frame asking 100 times for a 1 MiB value: the node's memory grows by
    well under the 100 MiB asked for (the stream's bound is 64 MiB), and no answer frame is over
    the frame limit."""
    assert cluster.router is not None
    key = _key_in(_partitions(cluster)[0], b"amplified")

    async def put() -> None:
        async with AsyncClient(cluster.router.address, deadline_s=20) as c:  # type: ignore[union-attr]
            await c.put(key, b"x" * (1 << 20))

    asyncio.run(put())
    node = _leader_proc(cluster, key)
    assert node.popen is not None
    peak_before = _peak_rss_mib(node.popen.pid)
    gets = [kv_pb2.StreamRequestItem(request_id=i, get=kv_pb2.GetRequest(key=key)) for i in range(1, 101)]
    wire = frame(HELLO, GOOD_HELLO) + request(*gets)
    assert len(wire) < 2048
    frames, _ = exchange(node.wire_address, wire, half_close=True, within_s=30)
    grew = _peak_rss_mib(node.popen.pid) - peak_before
    assert sorted(answers(frames)) == list(range(1, 101))
    assert node.alive
    # The stream's bound is 64 MiB of answers; the node measured 108 MiB of growth once answers
    # were let go as they were packed (200 before: every packed message built at once).
    assert grew < 160, f"node's peak memory grew by {grew} MiB for a {len(wire)}-byte frame"
    assert max(len(p) for _, p in frames) <= MAX_FRAME_BYTES, [len(p) for _, p in frames]
