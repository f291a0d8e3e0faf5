"""Hostile input against a live cluster (docs/hostile-input.md): random bytes, half-valid
protobuf, oversized fields, huge batches, deep scans, unknown enum values, zero and huge
numbers, on every RPC of every service the router and the nodes serve (KV, Meta, the Raft
transport with its snapshot stream, health, reflection) and on the nodes' plain-TCP Raft and
KV wire ports, while a register workload runs alongside.

What must hold: every call ends OK or with a clean status, never UNKNOWN or INTERNAL, and a
failed one says why in one non-empty line; no process dies; the logs stay small (the rate
limit holds); the node processes' open files and threads do not grow; the register history
stays linearizable.

Bounded: hypothesis ``max_examples`` per test (TESSERA_FUZZ_EXAMPLES, default 300) and a
per-example deadline; the file runs in well under a minute. ``TESSERA_FUZZ_EXAMPLES=5000``
runs a long, randomized campaign (without it the examples are derandomized, so CI is
repeatable).

What is *not* sent: requests that would be legitimate control-plane orders or forged peer
traffic for real partitions and stores (``harmless`` below rewrites their ids out of the way).
The Raft transport trusts its peers and Meta trusts its callers (mTLS and tokens are what
keep strangers out); the point here is that no *input* can crash a process, leak, or fill the
log, not that an authenticated peer cannot lie.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import message as pbm
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import eventually
from support.proto_fuzz import Method, messages, methods, mutated
from tesserapb import kv_pb2, meta_pb2, meta_pb2_grpc, raft_pb2
from tools.cluster import Cluster
from tools.nemesis.history_checks import check_register
from tools.nemesis.workloads import Context, PartitionRange, Recorder, RegisterWorkload
from tools.procstat import rss_bytes

pytestmark = pytest.mark.timeout(240)

EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=20),  # one example is one call (5 s at most) and its checks
    derandomize="TESSERA_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

CALL_TIMEOUT_S = 8.0
WATCH_S = 0.2  # a server-streaming watch that answers nothing is cancelled after this (by us)
CLEAN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,  # the routing errors: not leader, wrong epoch, not here
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # busy, or a message over gRPC's size limit
    grpc.StatusCode.UNAVAILABLE,  # "retry": a read barrier or write not confirmed in time
    grpc.StatusCode.UNIMPLEMENTED,
}

NODE_SERVICES = (
    kv_pb2.DESCRIPTOR.services_by_name["KV"],
    raft_pb2.DESCRIPTOR.services_by_name["RaftTransport"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
ROUTER_SERVICES = (meta_pb2.DESCRIPTOR.services_by_name["Meta"], *NODE_SERVICES)
NODE_METHODS = methods(*NODE_SERVICES)
ROUTER_METHODS = methods(*ROUTER_SERVICES)
REAL_IDS = 1000  # partition, store and group ids below this may be real: harmless() moves them


def _away(n: int) -> int:
    return n + REAL_IDS if 0 < n < REAL_IDS else n


def _harmless_raft(m: raft_pb2.RaftMessage) -> None:
    m.partition_id = _away(m.partition_id)


def harmless(method: str, payload: bytes) -> bytes:
    """``payload`` with whatever would be a real order or forged peer traffic moved out of the
    way (see the module docstring); bytes that do not parse go as they are."""
    payload = payload.replace(b"reg/", b"rex/")  # never the register workload's keys
    name = method.rsplit("/", 1)[1]
    service = method.split("/")[1]
    parsers: dict[tuple[str, str], type[pbm.Message]] = {
        ("tessera.v1.RaftTransport", "Stream"): raft_pb2.RaftBatch,
        ("tessera.v1.RaftTransport", "SendSnapshot"): raft_pb2.SnapshotChunk,
        ("tessera.v1.Meta", "StoreHeartbeat"): meta_pb2.StoreHeartbeatRequest,
        ("tessera.v1.Meta", "ReportLeader"): meta_pb2.ReportLeaderRequest,
        ("tessera.v1.Meta", "SubmitOperation"): meta_pb2.SubmitOperationRequest,
        ("tessera.v1.Meta", "SetStoreState"): meta_pb2.SetStoreStateRequest,
    }
    cls = parsers.get((service, name))
    if cls is None:
        return payload
    try:
        msg: Any = cls.FromString(payload)
    except Exception:
        return payload
    if isinstance(msg, raft_pb2.RaftBatch):
        for m in msg.msgs:
            _harmless_raft(m)
    elif isinstance(msg, raft_pb2.SnapshotChunk):
        _harmless_raft(msg.message)
    elif isinstance(msg, meta_pb2.StoreHeartbeatRequest):
        if msg.address:  # would register a store or speak for one: refused before that instead
            msg.delta = False
            msg.gone.append(_away(1))
    elif isinstance(msg, meta_pb2.ReportLeaderRequest):
        msg.partition_id = _away(msg.partition_id)
    elif isinstance(msg, meta_pb2.SubmitOperationRequest):
        msg.operation.partition_id = _away(msg.operation.partition_id) or REAL_IDS
    elif isinstance(msg, meta_pb2.SetStoreStateRequest):
        msg.store_id = _away(msg.store_id) or REAL_IDS
    out = msg.SerializeToString()
    return payload if cls.FromString(payload) == cls.FromString(out) else out


# -- the cluster and the workload beside it ----------------------------------------------------


@dataclass
class Watched:
    """A process of the cluster and what it had open and logged before the fuzz."""

    name: str
    pid: int
    log_path: str
    fds: int = 0
    threads: int = 0
    lines: int = 0
    rss_mib: int = 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _threads(pid: int) -> int:
    return _status(pid, "Threads")


def _rss_mib(pid: int) -> int:
    return rss_bytes(pid) >> 20


def _lines(path: str) -> list[str]:
    with open(path, errors="replace") as f:
        return f.read().splitlines()


@dataclass
class Fuzzed:
    cluster: Cluster
    procs: list[Watched]
    targets: list[tuple[str, str, list[Method]]]  # (name, address, methods)
    workload: RegisterWorkload
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failure: list[BaseException] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def _run_workload(f: Fuzzed) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        wl = f.workload
        await wl.setup()
        tasks = [asyncio.ensure_future(wl.worker(w, stop)) for w in range(wl.workers)]
        while not f.stop.is_set():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        await wl.final()

    try:
        asyncio.run(main())
    except BaseException as exc:
        f.failure.append(exc)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    root = tempfile.mkdtemp(prefix="tessera-fuzz-")
    # The scheduler stays off: nothing fuzzed may order moves, and none are needed (3 stores,
    # 3 replicas each).
    c = Cluster(root=root, nodes=3, partitions=4, schedule_interval=0)
    try:
        c.start()
        c.wait_ready(60)
        assert c.router is not None
        with grpc.insecure_channel(c.router.address) as ch:
            parts = meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions
        ranges = sorted((PartitionRange(p.id, p.start, p.end) for p in parts), key=lambda p: p.start)
        ctx = Context(c.router.address, ranges, Recorder(), seed=12, op_timeout=5.0)
        procs = [
            Watched(p.name, p.popen.pid, p.log_path)
            for p in [c.router, *c.node_procs.values()] if p.popen is not None
        ]
        targets = [("router", c.router.address, ROUTER_METHODS)]
        targets += [(p.name, p.address, NODE_METHODS) for p in c.node_procs.values()]
        f = Fuzzed(c, procs, targets, RegisterWorkload(ctx, workers=4, think_s=0.02))
        for p in procs:
            p.fds, p.threads, p.lines = _fds(p.pid), _threads(p.pid), len(_lines(p.log_path))
            p.rss_mib = _rss_mib(p.pid)
        f.thread = threading.Thread(target=_run_workload, args=(f,), daemon=True)
        f.thread.start()
        eventually(lambda: len(f.workload.ctx.recorder.ops) > 20, 30, "the register workload runs")
        yield f
        f.stop.set()
        f.thread.join(60)
    finally:
        c.stop()
        if os.environ.get("TESSERA_FUZZ_KEEP"):
            print(f"\nthe fuzzed cluster's logs are in {root}/logs")
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- calling with raw bytes --------------------------------------------------------------------


KV_STREAM = "/tessera.v1.KV/Stream"


def call(f: Fuzzed, address: str, method: Method, payloads: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """One call of ``method`` with exactly these request bytes; its status code and details
    (the items of a KV.Stream answer are checked here, as they come)."""
    payloads = [harmless(method.path, p) for p in payloads]
    with grpc.insecure_channel(address) as ch:
        try:
            rpc: Any = getattr(ch, method.kind)(method.path)  # no serializers: bytes in, bytes out
            if method.kind == "unary_unary":
                rpc(payloads[0], timeout=CALL_TIMEOUT_S)
            elif method.kind == "stream_unary":
                rpc(iter(payloads), timeout=CALL_TIMEOUT_S)
            elif method.kind == "stream_stream":
                for response in rpc(iter(payloads), timeout=CALL_TIMEOUT_S):
                    if method.path == KV_STREAM:
                        # Each item of a KV.Stream fails on its own, in its item: the same rules.
                        for item in kv_pb2.StreamResponse.FromString(response).responses:
                            if item.code:
                                code = next(c for c in grpc.StatusCode if c.value[0] == item.code)
                                check_clean(f, address, method, code, item.message)
            else:  # a watch: answers until cancelled
                stream = rpc(payloads[0], timeout=CALL_TIMEOUT_S)
                timer = threading.Timer(WATCH_S, stream.cancel)
                timer.start()
                try:
                    for _ in stream:
                        pass
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.CANCELLED:
                        raise
                finally:
                    timer.cancel()
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_clean(f: Fuzzed, target: str, method: Method, code: grpc.StatusCode, details: str) -> None:
    f.statuses[code.name] = f.statuses.get(code.name, 0) + 1
    where = f"{target} {method.path}"
    if code == grpc.StatusCode.OK:
        return
    if method.path.startswith("/grpc.health.v1.Health/") and code == grpc.StatusCode.NOT_FOUND:
        return  # the health protocol's answer for a service it does not know: a bare NOT_FOUND
    assert code in CLEAN, f"{where}: {code.name}: {details!r}"
    assert details.strip() and "\n" not in details and len(details) < 2000, f"{where}: {code.name}: {details!r}"


def _target_and_method(f: Fuzzed) -> st.SearchStrategy[tuple[str, str, Method]]:
    return st.sampled_from([(n, a, m) for n, a, ms in f.targets for m in ms])


# -- the tests -----------------------------------------------------------------------------


def test_random_bytes_on_every_rpc(fuzzed: Fuzzed) -> None:
    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        target, address, method = data.draw(_target_and_method(fuzzed))
        n = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        payloads = data.draw(st.lists(st.binary(max_size=64), min_size=n, max_size=n))
        check_clean(fuzzed, target, method, *call(fuzzed, address, method, payloads))

    run()


def test_nonsense_values_and_half_valid_messages_on_every_rpc(fuzzed: Fuzzed) -> None:
    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        target, address, method = data.draw(_target_and_method(fuzzed))
        n = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        payloads = []
        for _ in range(n):
            msg = data.draw(messages(method.request))
            payloads.append(data.draw(mutated(msg.SerializeToString())))
        check_clean(fuzzed, target, method, *call(fuzzed, address, method, payloads))

    run()


def _read_options(**fields: Any) -> kv_pb2.ReadOptions:
    return kv_pb2.ReadOptions(**fields)  # any int for the enum: that is the point


def _kv_extremes(p: int) -> list[tuple[str, pbm.Message]]:
    """Requests at and past the node's limits (docs/cli.md, tessera node --max-*)."""
    ctx = kv_pb2.RequestContext(partition_id=p)
    big = b"k" * 4097
    return [
        ("Put", kv_pb2.PutRequest(context=ctx, key=big, value=b"v")),
        ("Put", kv_pb2.PutRequest(context=ctx, key=b"fuzz", value=b"v" * ((1 << 20) + 1))),
        ("Put", kv_pb2.PutRequest(context=ctx, key=b"", value=b"v")),
        # The longest key allowed, of bytes whose repr is 4 characters each: a routing error
        # that quotes it must still fit gRPC's trailers (common.wire.errors.clip).
        ("Put", kv_pb2.PutRequest(context=ctx, key=b"\xfe" * 4096, value=b"v")),
        ("Get", kv_pb2.GetRequest(context=ctx, key=b"\x01" * 4096)),
        ("Put", kv_pb2.PutRequest(context=kv_pb2.RequestContext(partition_id=p, request_id=b"r" * 65), key=b"fuzz")),
        ("Put", kv_pb2.PutRequest(context=kv_pb2.RequestContext(partition_id=(1 << 64) - 1), key=b"fuzz")),
        ("Put", kv_pb2.PutRequest(context=kv_pb2.RequestContext(
            partition_id=p, epoch=meta_pb2.Epoch(conf_ver=(1 << 64) - 1, version=(1 << 64) - 1)), key=b"fuzz")),
        ("Batch", kv_pb2.BatchRequest(context=ctx, ops=[
            kv_pb2.WriteOp(put=kv_pb2.PutOp(key=b"fuzz%d" % i, value=b"v")) for i in range(1025)])),
        ("Batch", kv_pb2.BatchRequest(context=ctx)),
        ("Batch", kv_pb2.BatchRequest(context=ctx, ops=[kv_pb2.WriteOp()])),
        ("Scan", kv_pb2.ScanRequest(context=ctx, limit=(1 << 32) - 1)),
        ("Scan", kv_pb2.ScanRequest(context=ctx, start=b"z", end=b"a")),
        ("Scan", kv_pb2.ScanRequest(start=big)),
        ("Scan", kv_pb2.ScanRequest(limit=10_000, read_options=_read_options(consistency=3))),
        ("Get", kv_pb2.GetRequest(key=b"fuzz", read_options=_read_options(consistency=99))),
        ("Get", kv_pb2.GetRequest(key=b"fuzz", read_options=_read_options(consistency=-1))),
        ("Get", kv_pb2.GetRequest(key=b"fuzz", read_options=_read_options(
            consistency=kv_pb2.STALE, max_staleness_ms=(1 << 32) - 1))),
        ("CompareAndSet", kv_pb2.CompareAndSetRequest(context=ctx, key=b"fuzz", expected_version=(1 << 64) - 1)),
    ]


def test_requests_at_and_past_every_limit_get_a_clear_answer(fuzzed: Fuzzed) -> None:
    """Oversized keys and values, huge batches and streams, deep scans, unknown enums, huge ids
    and epochs, on every node and through the router's proxy, unary and on KV.Stream."""
    by_path = {m.path: m for m in ROUTER_METHODS}
    stream = by_path["/tessera.v1.KV/Stream"]
    for target, address, _ in fuzzed.targets:
        for p in (0, 1, 999_999):
            cases = _kv_extremes(p)
            for name, req in cases:
                method = by_path[f"/tessera.v1.KV/{name}"]
                check_clean(fuzzed, target, method, *call(fuzzed, address, method, [req.SerializeToString()]))
            # All of them at once on one stream, twice over, and a stream of 5,000 gets.
            kind = {"Put": "put", "Batch": "batch", "Scan": "scan", "Get": "get", "CompareAndSet": "compare_and_set"}
            items = []
            for i, (n, r) in enumerate(cases * 2):
                items.append(kv_pb2.StreamRequestItem(request_id=i))
                getattr(items[-1], kind[n]).CopyFrom(r)
            items.append(kv_pb2.StreamRequestItem(request_id=1))  # carries no request
            gets = [kv_pb2.StreamRequestItem(request_id=i, get=kv_pb2.GetRequest(key=b"fuzz%d" % i))
                    for i in range(5000)]
            for batch in (items, gets):
                payload = kv_pb2.StreamRequest(requests=batch).SerializeToString()
                check_clean(fuzzed, target, stream, *call(fuzzed, address, stream, [payload]))


def test_an_unknown_consistency_is_invalid_argument_on_a_node_and_through_the_proxy(fuzzed: Fuzzed) -> None:
    by_path = {m.path: m for m in ROUTER_METHODS}
    for target, address, _ in fuzzed.targets:
        for value in (4, 99, -1):
            for name, req in (("Get", kv_pb2.GetRequest(key=b"fuzz", read_options=_read_options(consistency=value))),
                              ("Scan", kv_pb2.ScanRequest(read_options=_read_options(consistency=value)))):
                method = by_path[f"/tessera.v1.KV/{name}"]
                code, details = call(fuzzed, address, method, [req.SerializeToString()])
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (target, name, value, code, details)
                assert f"unknown consistency {value}" in details, (target, name, details)


def test_a_snapshot_no_replica_here_could_take_is_refused_before_it_is_spooled(fuzzed: Fuzzed) -> None:
    """A stranger streaming a huge image for a partition the node does not host (or for a
    replica it is not) is refused at the first chunk: the node stops reading, so the sender
    gets only as far as gRPC's flow control lets it, and nothing fills the disk."""
    pulled = 0

    def chunks(first: raft_pb2.RaftMessage) -> Iterator[bytes]:
        nonlocal pulled
        yield raft_pb2.SnapshotChunk(message=first).SerializeToString()
        for _ in range(64):
            pulled += 1
            yield raft_pb2.SnapshotChunk(data=b"s" * (1 << 20)).SerializeToString()
        yield raft_pb2.SnapshotChunk(last=True).SerializeToString()

    for node in fuzzed.cluster.node_procs.values():
        for first, why in ((raft_pb2.RaftMessage(partition_id=REAL_IDS + 7), "is not hosted here"),
                           (raft_pb2.RaftMessage(partition_id=1, dst=REAL_IDS + 7), "this store hosts replica")):
            pulled = 0
            with grpc.insecure_channel(node.address) as ch:
                rpc: Any = ch.stream_unary("/tessera.v1.RaftTransport/SendSnapshot")
                ack = raft_pb2.SnapshotAck.FromString(rpc(chunks(first), timeout=CALL_TIMEOUT_S))
            assert not ack.accepted and why in ack.reason, ack
            assert pulled < 32, f"{node.name} read {pulled} MiB of an image it had refused at its first chunk"


def test_garbage_on_the_raft_tcp_port_closes_the_connection(fuzzed: Fuzzed) -> None:
    """Garbage, a huge length prefix, a frame that is not a RaftBatch, one for another store,
    a truncated frame: the node closes that connection (or waits for the rest of a frame it
    may take), allocates nothing up front, and goes on."""
    nodes = list(fuzzed.cluster.node_procs.values())

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(nodes))
        host, _, port = node.peer_address.rpartition(":")
        shape = data.draw(st.sampled_from(["garbage", "huge", "not_a_batch", "other_store", "truncated"]))
        if shape == "garbage":
            wire, closes = data.draw(st.binary(min_size=1, max_size=64)), False
        elif shape == "huge":
            wire, closes = struct.pack(">I", data.draw(st.integers((64 << 20) + 1, (1 << 32) - 1))), True
        elif shape == "not_a_batch":
            body = b"\xff\xff\xff\xff" + data.draw(st.binary(max_size=16))
            wire, closes = struct.pack(">I", len(body)) + body, True
        elif shape == "other_store":
            body = harmless("/tessera.v1.RaftTransport/Stream",
                            raft_pb2.RaftBatch(from_store=1, to_store=REAL_IDS + 7, seq=1).SerializeToString())
            wire, closes = struct.pack(">I", len(body)) + body, True
        else:
            wire, closes = struct.pack(">I", 1 << 20) + b"x" * data.draw(st.integers(0, 100)), False
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(wire)
            if closes:
                s.settimeout(5)
                try:
                    assert s.recv(1) == b"", f"{shape}: the node kept the connection open"
                except ConnectionResetError:
                    pass  # aborted: as good as closed

    run()
    for p in nodes:
        assert p.alive, f"{p.name} died: {p.last_words()}"


KV_WIRE = Method("kv-wire", kv_pb2.StreamRequest, True, True)  # for check_clean's messages and counts
WIRE_HELLO, WIRE_REQUEST, WIRE_ANSWER, WIRE_END = (ord(k) for k in "HRAE")


def _wire_frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload), kind) + payload


def _wire_exchange(address: str, wire: bytes) -> list[tuple[int, bytes]]:
    """Send ``wire`` to a node's KV wire, half-close, and read its frames until it closes."""
    host, _, port = address.rpartition(":")
    got, frames = bytearray(), list[tuple[int, bytes]]()
    deadline = time.monotonic() + CALL_TIMEOUT_S
    with socket.create_connection((host, int(port)), timeout=CALL_TIMEOUT_S) as s:
        s.sendall(wire)
        s.shutdown(socket.SHUT_WR)
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                raise AssertionError(f"{address}: open after {CALL_TIMEOUT_S:g} s; got {frames}") from None
            if not data:
                break
            got += data
            while len(got) >= 5 and len(got) >= 5 + int.from_bytes(got[:4], "big"):
                n = int.from_bytes(got[:4], "big")
                frames.append((got[4], bytes(got[5:5 + n])))
                del got[:5 + n]
    assert not got, f"{address}: a cut-off frame at the end: {bytes(got[:20])!r}"
    return frames


def test_random_frames_on_the_kv_wire_port_end_cleanly(fuzzed: Fuzzed) -> None:
    """Random bytes, random frames (with and without a hello first) and half-valid
    StreamRequests after a good hello, on the nodes' KV wire ports (D28), each connection
    half-closed: the node answers what it takes (items with clean codes), ends the connection
    with at most one E frame (a clean code, one line) as its last frame, and closes it."""
    nodes = list(fuzzed.cluster.node_procs.values())
    hello = _wire_frame(WIRE_HELLO, kv_pb2.WireHello(version=1).SerializeToString())
    kinds = st.sampled_from([WIRE_HELLO, WIRE_REQUEST, WIRE_REQUEST, WIRE_ANSWER, WIRE_END, 0, 255])

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(nodes))
        shape = data.draw(st.sampled_from(["bytes", "frames", "half_valid"]))
        if shape == "bytes":
            wire = data.draw(st.binary(min_size=1, max_size=64))
        elif shape == "frames":
            frames = data.draw(st.lists(st.tuples(kinds, st.binary(max_size=32)), min_size=1, max_size=4))
            wire = (hello if data.draw(st.booleans()) else b"") + b"".join(
                _wire_frame(k, harmless(KV_STREAM, p) if k == WIRE_REQUEST else p) for k, p in frames)
        else:
            n = data.draw(st.integers(1, 3))
            payloads = [data.draw(mutated(data.draw(messages(kv_pb2.StreamRequest)).SerializeToString()))
                        for _ in range(n)]
            wire = hello + b"".join(_wire_frame(WIRE_REQUEST, harmless(KV_STREAM, p)) for p in payloads)
        got = _wire_exchange(node.wire_address, wire)
        where = f"{node.name} KV wire"
        for i, (kind, payload) in enumerate(got):
            if kind == WIRE_ANSWER:
                for item in kv_pb2.StreamResponse.FromString(payload).responses:
                    if item.code:
                        code = next(c for c in grpc.StatusCode if c.value[0] == item.code)
                        check_clean(fuzzed, where, KV_WIRE, code, item.message)
            else:
                assert kind == WIRE_END and i == len(got) - 1, f"{where}: frames {[k for k, _ in got]}"
                end = kv_pb2.WireEnd.FromString(payload)
                code = next(c for c in grpc.StatusCode if c.value[0] == end.code)
                check_clean(fuzzed, where, KV_WIRE, code, end.message)

    run()
    for p in nodes:
        assert p.alive, f"{p.name} died: {p.last_words()}"


def test_after_the_fuzz_every_process_lives_and_leaks_nothing_and_the_register_stayed_linearizable(
    fuzzed: Fuzzed,
) -> None:
    c = fuzzed.cluster
    for p in [*c.router_procs.values(), *c.node_procs.values()]:
        assert p.alive, f"{p.name} died: {p.last_words()}"
    assert sum(fuzzed.statuses.values()) > 0, "nothing was fuzzed (run the whole file)"

    # Open files and threads come back to where they were (the fuzz's connections closed).
    def settled() -> bool:
        grown = [f"{w.name}: fds {w.fds} -> {_fds(w.pid)}, threads {w.threads} -> {_threads(w.pid)}"
                 for w in fuzzed.procs if _fds(w.pid) > w.fds + 8 or _threads(w.pid) > w.threads + 4]
        assert not grown, "; ".join(grown)
        return True

    eventually(settled, 30, "open files and threads of every process back near their start")
    # Memory: a loose bound (the allocator keeps what 1 MiB values and 5,000-item streams
    # took), far below what a leak per request would reach over a long campaign.
    print("resident MiB before -> after:", {w.name: (w.rss_mib, _rss_mib(w.pid)) for w in fuzzed.procs},
          "statuses:", fuzzed.statuses)
    grown = {w.name: (w.rss_mib, _rss_mib(w.pid)) for w in fuzzed.procs if _rss_mib(w.pid) > w.rss_mib + 400}
    assert not grown, f"resident memory grew (MiB before, after): {grown}"

    # The log: a handful of lines per kind of bad input, no tracebacks.
    for w in fuzzed.procs:
        new = _lines(w.log_path)[w.lines:]
        assert len(new) < 150, f"{w.name} logged {len(new)} lines during the fuzz: {new[-10:]}"
        assert not [line for line in new if "Traceback" in line], f"{w.name} logged a traceback: {new[-20:]}"

    fuzzed.stop.set()
    assert fuzzed.thread is not None
    fuzzed.thread.join(60)
    assert not fuzzed.thread.is_alive(), "the register workload did not stop"
    assert not fuzzed.failure, f"the register workload failed: {fuzzed.failure!r}"
    ops = fuzzed.workload.ctx.recorder.ops
    oks = sum(1 for op in ops if op.type == "ok")
    assert oks > 50, f"only {oks} register operations succeeded during the fuzz: {dict(fuzzed.workload.errors)}"
    verdict = check_register(ops, time_limit_s=30)
    assert verdict.ok, verdict.report()
