"""The client's retry machinery without a network: the backoff policy and failure
classification as pure functions, the error mapping, and whole calls through an injected
transport function and a canned partition map (request ids, leader hints, cache updates,
deadlines, scans across partitions, batches)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message

from common.keyspace import even_ranges
from common.wire import errors as wire_errors
from router.client import (
    AsyncClient,
    BackoffPolicy,
    Client,
    ClientClosedError,
    CrossPartitionBatchError,
    DeadlineExceeded,
    Delete,
    InvalidArgumentError,
    Put,
    RouterUnavailableError,
    ServerError,
)
from router.client.errors import RpcFailure, failure_from_rpc_error, failure_from_stream_item, status_code
from router.client.retry import MAX_SERVER_BACKOFF_MS, classify
from tesserapb import errors_pb2, kv_pb2, meta_pb2

pytestmark = pytest.mark.timeout(30)

FAST = BackoffPolicy(initial_s=0.001, max_s=0.005)
T = TypeVar("T")

# What the client sends a node: one of the KV service's requests, each with its RequestContext.
KVRequest = (
    kv_pb2.GetRequest
    | kv_pb2.PutRequest
    | kv_pb2.DeleteRequest
    | kv_pb2.CompareAndSetRequest
    | kv_pb2.ScanRequest
    | kv_pb2.BatchRequest
)
# One scripted answer: a response, a failure to raise, or a function of (address, kind, request).
Step = Message | BaseException | Callable[[str, str, KVRequest], Message]


# -- fixtures without a network ------------------------------------------------------------


def descriptors(n: int = 4, leader: int = 1) -> list[meta_pb2.PartitionDescriptor]:
    out = []
    for i, (start, end) in enumerate(even_ranges(n), start=1):
        out.append(meta_pb2.PartitionDescriptor(
            id=i, start=start, end=end, epoch=meta_pb2.Epoch(conf_ver=1, version=1),
            replicas=[meta_pb2.Replica(store_id=s, replica_id=i * 10 + s) for s in (1, 2, 3)],
            leader_store_id=leader, term=1))
    return out


STORES = [meta_pb2.Store(id=s, address=f"store{s}:7200", state=meta_pb2.STORE_UP) for s in (1, 2, 3)]
ADDR = {f"store{s}:7200": s for s in (1, 2, 3)}


class CannedMeta:
    """A MetaSource answering from lists (no server)."""

    def __init__(
        self,
        parts: Sequence[meta_pb2.PartitionDescriptor] | None = None,
        stores: Sequence[meta_pb2.Store] | None = None,
        fail: RpcFailure | None = None,
    ) -> None:
        self.parts = descriptors() if parts is None else parts
        self.stores = STORES if stores is None else stores
        self.fail = fail
        self.scans = 0

    async def scan_partitions(self, timeout: float) -> list[meta_pb2.PartitionDescriptor]:
        self.scans += 1
        if self.fail:
            raise self.fail
        return list(self.parts)

    async def get_stores(self, timeout: float) -> list[meta_pb2.Store]:
        return list(self.stores)

    async def close(self) -> None:
        pass


class Script:
    """A transport function: answers attempts from a list of steps (a response, an exception,
    or a function of the request), recording every attempt."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[str, str, KVRequest]] = []  # (address, kind, request)

    async def __call__(self, address: str, kind: str, request: Message, timeout: float) -> Message:
        assert isinstance(request, KVRequest), request
        self.calls.append((address, kind, request))
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step(address, kind, request)
        return step

    def stores(self) -> list[int]:
        return [ADDR[a] for a, _, _ in self.calls]


def failure(
    error: errors_pb2.Error | None = None, code: grpc.StatusCode | None = None, message: str = "x"
) -> RpcFailure:
    code = code or (wire_errors.code_for(error) if error is not None else grpc.StatusCode.UNAVAILABLE)
    return RpcFailure(code, message, error=error, address="store1:7200")


def client(script: Script, meta: CannedMeta | None = None, **kw: Any) -> AsyncClient:
    kw.setdefault("backoff", FAST)
    return AsyncClient(None, meta=meta or CannedMeta(), transport=script, **kw)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- pure policy ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_bounded_jitter_and_a_cap():
    p = BackoffPolicy()  # the client's numbers: 10 ms doubling to 0.5 s, jitter 0.5
    assert p == BackoffPolicy(initial_s=0.01, max_s=0.5, multiplier=2, jitter=0.5)
    assert [p.delay(n, 0.0) for n in range(4)] == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert p.delay(3, 0.999) == pytest.approx(0.04, rel=0.01)
    assert p.delay(30, 0.0) == 0.5 and p.delay(10_000, 0.0) == 0.5
    for n in range(12):
        for r in (0.0, 0.3, 0.99):
            d = p.delay(n, r)
            ceiling = min(0.5, 0.01 * 2**n)
            assert ceiling * 0.5 <= d <= ceiling
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s=0)


def test_classify_routing_errors():
    d = classify(failure(wire_errors.not_leader(3, 2, "store2:7200")))
    assert (d.leader_store_id, d.leader_address, d.backoff, d.final) == (2, "store2:7200", False, None)
    d = classify(failure(wire_errors.not_leader(3)))
    assert d.backoff and d.clear_leader and d.refresh and not d.leader_store_id

    current = descriptors()[0]
    enm = errors_pb2.Error(epoch_not_match=errors_pb2.EpochNotMatch(current=current, related=descriptors()[1:2]))
    d = classify(failure(enm))
    assert [x.id for x in d.descriptors] == [1, 2] and not d.backoff and not d.refresh
    knp = errors_pb2.Error(key_not_in_partition=errors_pb2.KeyNotInPartition(key=b"k", partition=current))
    assert [x.id for x in classify(failure(knp)).descriptors] == [1]
    d = classify(failure(wire_errors.partition_not_found(4)))
    assert d.drop_partition and d.refresh and d.backoff


def test_classify_busy_unavailable_and_final_errors():
    d = classify(failure(wire_errors.server_busy("apply lag", 250)))
    assert d.backoff and d.min_backoff_s == 0.25 and d.final is None
    # A server's hint is honoured, but bounded: a huge one cannot park the client.
    d = classify(failure(wire_errors.server_busy("disk full", 3_600_000)))
    assert d.backoff and d.min_backoff_s == MAX_SERVER_BACKOFF_MS / 1000.0 == 10.0
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        d = classify(RpcFailure(code, "down", address="a"))
        assert d.backoff and d.store_failed and d.final is None
        r = classify(RpcFailure(code, "down", source="router"))
        assert r.backoff and r.refresh and not r.store_failed

    d = classify(failure(wire_errors.invalid_argument("value", "too large", limit=1 << 20)))
    assert isinstance(d.final, InvalidArgumentError)
    assert (d.final.field, d.final.limit) == ("value", 1 << 20) and "too large" in str(d.final)
    d = classify(RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "no detail"))
    assert isinstance(d.final, InvalidArgumentError) and d.final.field == ""
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.FAILED_PRECONDITION):
        d = classify(RpcFailure(code, "boom"))
        assert isinstance(d.final, ServerError) and d.final.code == code


def test_a_stream_that_dies_with_its_node_is_retried_whatever_its_status():
    # A SIGKILLed node's multiplexed stream can end with INTERNAL ("Internal error from Core").
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE):
        d = classify(RpcFailure(code, "Internal error from Core", address="a", source="stream"))
        assert d.final is None and d.backoff and d.store_failed, code
    # The same code as an answer to one request is the server's verdict: final.
    d = classify(RpcFailure(grpc.StatusCode.INTERNAL, "bug", address="a", source="node"))
    assert isinstance(d.final, ServerError)


# -- error mapping -------------------------------------------------------------------------


def test_stream_items_map_like_unary_errors():
    item = kv_pb2.StreamResponseItem(request_id=5, code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                                     message="not leader", error=wire_errors.not_leader(7, 3, "h:3"))
    f = failure_from_stream_item(item, "h:1")
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.kind == "not_leader"
    assert f.error is not None and f.error.not_leader.leader_address == "h:3" and f.address == "h:1"
    plain = failure_from_stream_item(kv_pb2.StreamResponseItem(code=14, message="gone"), "h:1")
    assert plain.code == grpc.StatusCode.UNAVAILABLE and plain.error is None
    assert status_code(0) == grpc.StatusCode.OK and status_code(999) == grpc.StatusCode.UNKNOWN


def test_unary_rpc_errors_keep_their_structured_detail():
    err = wire_errors.invalid_argument("key", "longer than 4096 bytes", limit=4096)
    st = wire_errors.to_status(err, "key too long")
    exc = grpc.aio.AioRpcError(st.code, grpc.aio.Metadata(), grpc.aio.Metadata(*st.trailing_metadata), st.details)
    f = failure_from_rpc_error(exc, "h:1")
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and f.kind == "invalid_argument"
    final = classify(f).final
    assert isinstance(final, InvalidArgumentError) and (final.field, final.limit) == ("key", 4096)


# -- whole calls through an injected transport ---------------------------------------------


def test_write_request_id_is_the_same_across_all_retries():
    script = Script(
        failure(code=grpc.StatusCode.UNAVAILABLE),  # leader unreachable
        failure(wire_errors.not_leader(1, 2, "store2:7200")),  # a follower knows better
        failure(wire_errors.server_busy("queue full", 1)),
        kv_pb2.PutResponse(version=9),
    )

    async def go():
        async with client(script) as c:
            assert await c.put(b"k", b"v") == 9
            first = [req.context.request_id for _, _, req in script.calls]
            script.steps = [kv_pb2.PutResponse(version=10)]
            await c.put(b"k", b"v")
            return first, script.calls[-1][2].context.request_id

    ids, other = run(go())
    assert len(ids) == 4 and len(set(ids)) == 1 and len(ids[0]) == 16
    assert other != ids[0] and len(other) == 16
    assert script.stores()[:4] == [1, 2, 2, 2]  # leader, then another replica, then the hinted leader


def test_reads_carry_no_request_id_and_route_with_partition_and_epoch():
    script = Script(kv_pb2.GetResponse(found=True, value=b"v", version=3))

    async def go():
        async with client(script) as c:
            return await c.get(b"\x90", consistency="linearizable")

    assert run(go()) == (b"v", 3)
    _, kind, req = script.calls[0]
    assert isinstance(req, kv_pb2.GetRequest)
    assert kind == "get" and req.context.request_id == b""
    assert req.context.partition_id == 3 and (req.context.epoch.conf_ver, req.context.epoch.version) == (1, 1)
    assert req.read_options.consistency == kv_pb2.LINEARIZABLE


def test_get_missing_key_is_none_not_an_exception():
    async def go():
        async with client(Script(kv_pb2.GetResponse(found=False))) as c:
            return await c.get(b"nope")

    assert run(go()) is None


def test_epoch_not_match_updates_the_cache_and_retries_with_the_new_epoch():
    old = descriptors()[1]  # [0x40, 0x80)
    left = meta_pb2.PartitionDescriptor(id=2, start=b"\x40", end=b"\x60", epoch=meta_pb2.Epoch(conf_ver=1, version=2),
                                        replicas=old.replicas, leader_store_id=1, term=1)
    right = meta_pb2.PartitionDescriptor(id=9, start=b"\x60", end=b"\x80", epoch=meta_pb2.Epoch(conf_ver=1, version=2),
                                         replicas=old.replicas, leader_store_id=3, term=1)
    enm = errors_pb2.Error(epoch_not_match=errors_pb2.EpochNotMatch(current=left, related=[right]))
    script = Script(failure(enm), kv_pb2.PutResponse(version=1))
    meta = CannedMeta()

    async def go():
        async with client(script, meta=meta) as c:
            await c.put(b"\x70", b"v")
            return [None if r is None else r.id for r in (c.cache.lookup(b"\x45"), c.cache.lookup(b"\x70"))]

    assert run(go()) == [2, 9]
    retry = script.calls[1][2].context
    assert retry.partition_id == 9 and retry.epoch.version == 2
    assert script.stores() == [1, 3]  # the new partition's leader
    assert meta.scans == 1  # the error's payload was enough: no router round trip


def test_partition_not_found_refreshes_from_the_router():
    meta = CannedMeta()
    script = Script(failure(wire_errors.partition_not_found(1)), kv_pb2.DeleteResponse(deleted=True))

    async def go():
        async with client(script, meta=meta) as c:
            return await c.delete(b"a")

    assert run(go()) is True
    assert meta.scans == 2


def test_leaderless_partition_backs_off_and_asks_the_router():
    meta = CannedMeta(parts=descriptors(leader=0))
    script = Script(failure(wire_errors.not_leader(1)), failure(wire_errors.not_leader(1)),
                    kv_pb2.PutResponse(version=1))

    async def go():
        async with client(script, meta=meta) as c:
            return await c.put(b"a", b"v")

    assert run(go()) == 1
    assert meta.scans >= 2 and len(script.calls) == 3


def test_invalid_argument_is_final_after_one_attempt():
    script = Script(failure(wire_errors.invalid_argument("value", "too big", limit=1024)))

    async def go():
        async with client(script) as c:
            await c.put(b"k", b"x" * 2000)

    with pytest.raises(InvalidArgumentError) as e:
        run(go())
    assert (e.value.field, e.value.limit) == ("value", 1024)
    assert len(script.calls) == 1


def test_bad_arguments_are_rejected_locally():
    async def go():
        async with client(Script(kv_pb2.GetResponse())) as c:
            for call, field in [
                (c.get("text-not-bytes"), "key"),  # type: ignore[arg-type]  # not bytes on purpose: refused at run time
                (c.get(b"k", consistency="eventual"), "consistency"),
                (c.scan(b"b", b"a"), "end"),
                (c.batch([("upsert", b"k")]), "ops"),
            ]:
                with pytest.raises(InvalidArgumentError) as e:
                    await call
                assert e.value.field == field

    run(go())


def test_deadline_on_a_write_says_the_outcome_is_unknown():
    script = Script(failure(code=grpc.StatusCode.UNAVAILABLE))

    async def go():
        async with client(script, deadline_s=0.3) as c:
            await c.put(b"k", b"v")

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as e:
        run(go())
    assert 0.25 < time.monotonic() - started < 2
    assert isinstance(e.value, TimeoutError) and e.value.sent
    assert "may or may not have been applied" in str(e.value) and "UNAVAILABLE" in e.value.last_error
    assert len({ADDR[a] for a, _, _ in script.calls}) == 3  # tried every replica
    assert len({req.context.request_id for _, _, req in script.calls}) == 1


def test_unreachable_router_is_reported_as_such():
    meta = CannedMeta(fail=RpcFailure(grpc.StatusCode.UNAVAILABLE, "connection refused",
                                      address="127.0.0.1:9", source="router"))

    async def go():
        async with client(Script(kv_pb2.GetResponse()), meta=meta, deadline_s=0.2) as c:
            await c.get(b"k")

    with pytest.raises(RouterUnavailableError) as e:
        run(go())
    assert e.value.unreachable and "connection refused" in e.value.last_error and not e.value.sent


def test_no_partition_for_key_is_not_reported_as_unreachable():
    async def go():
        async with client(Script(kv_pb2.GetResponse()), meta=CannedMeta(parts=[]), deadline_s=0.2) as c:
            await c.get(b"k")

    with pytest.raises(RouterUnavailableError) as e:
        run(go())
    assert not e.value.unreachable and "no partition" in str(e.value)


def test_unknown_server_errors_are_raised_at_once():
    script = Script(RpcFailure(grpc.StatusCode.INTERNAL, "disk on fire", address="store1:7200"))

    async def go():
        async with client(script) as c:
            await c.cas(b"k", 0, b"v")

    with pytest.raises(ServerError) as e:
        run(go())
    assert "disk on fire" in str(e.value) and len(script.calls) == 1


def fake_scan_node(
    data: dict[bytes, bytes], server_limit: int = 1000
) -> Callable[[str, str, KVRequest], kv_pb2.ScanResponse]:
    """The node's Scan contract in a few lines: clamp to the addressed partition, stop at the
    limit, report more/resume_key."""
    parts = {p.id: p for p in descriptors()}

    def answer(address: str, kind: str, req: KVRequest) -> kv_pb2.ScanResponse:
        assert isinstance(req, kv_pb2.ScanRequest), req
        p = parts[req.context.partition_id]
        end = min([e for e in (req.end, p.end) if e], default=b"")
        keys = sorted(k for k in data if k >= req.start and (not end or k < end))
        limit = min(req.limit or server_limit, server_limit)
        page = keys[:limit]
        resp = kv_pb2.ScanResponse(kvs=[kv_pb2.KeyValue(key=k, value=data[k], version=1) for k in page])
        if len(keys) > limit:
            resp.more, resp.resume_key = True, page[-1] + b"\x00"
        elif p.end and (not req.end or p.end < req.end):
            resp.more, resp.resume_key = True, p.end
        return resp

    return answer


def test_scan_walks_partitions_in_key_order_with_limits():
    data = {bytes([b, i]): bytes([i]) for b in (0x10, 0x50, 0x51, 0x90, 0xF0) for i in range(3)}
    script = Script(fake_scan_node(data, server_limit=4))

    async def go():
        async with client(script, scan_page_size=4) as c:
            everything = await c.scan()
            limited = await c.scan(b"\x50", b"", limit=5)
            ranged = await c.scan(b"\x50\x02", b"\x91")
            page = await c.scan_page(b"", b"", 4)
            unlimited = await c.scan(limit=None)
            return everything, limited, ranged, page, unlimited

    everything, limited, ranged, page, unlimited = run(go())
    assert [kv.key for kv in everything] == sorted(data) and everything == unlimited
    assert [kv.key for kv in limited] == sorted(k for k in data if k >= b"\x50")[:5]
    assert [kv.key for kv in ranged] == [b"\x50\x02", b"\x51\x00", b"\x51\x01", b"\x51\x02",
                                         b"\x90\x00", b"\x90\x01", b"\x90\x02"]
    # A page crosses partition boundaries until its limit, and says where to go on.
    assert page.more and [kv.key for kv in page.kvs] == sorted(data)[:4] and page.resume_key == b"\x50\x00\x00"
    assert all(kind == "scan" for _, kind, _ in script.calls)


def test_batch_must_stay_in_one_partition():
    script = Script(kv_pb2.BatchResponse(results=[kv_pb2.WriteResult(version=4, succeeded=True),
                                                  kv_pb2.WriteResult(deleted=True, succeeded=True)]))

    async def go():
        async with client(script) as c:
            ok = await c.batch([Put(b"a", b"1"), Delete(b"b")])
            with pytest.raises(CrossPartitionBatchError) as e:
                await c.batch([("put", b"a", b"1"), ("delete", b"\x90")])
            return ok, e.value

    ok, err = run(go())
    assert ok == [(4, False, True), (0, True, True)]
    assert isinstance(err, InvalidArgumentError) and err.field == "ops"
    assert len(script.calls) == 1  # the cross-partition batch was never sent
    req = script.calls[0][2]
    assert isinstance(req, kv_pb2.BatchRequest)
    assert [op.WhichOneof("op") for op in req.ops] == ["put", "delete"] and len(req.context.request_id) == 16


def test_stale_reads_go_to_any_replica():
    script = Script(kv_pb2.GetResponse(found=True, value=b"v", version=1))

    async def go():
        import random
        async with client(script, rng=random.Random(3)) as c:
            for _ in range(30):
                await c.get(b"k", consistency="stale", max_staleness_ms=500)

    run(go())
    assert set(script.stores()) == {1, 2, 3}
    first = script.calls[0][2]
    assert isinstance(first, kv_pb2.GetRequest) and first.read_options.max_staleness_ms == 500


def test_sync_client_runs_the_async_client_on_its_own_thread():
    script = Script(kv_pb2.PutResponse(version=5))
    with Client(None, meta=CannedMeta(), transport=script, backoff=FAST) as c:
        assert c.put(b"k", b"v") == 5
        script.steps = [kv_pb2.CompareAndSetResponse(succeeded=False, current_version=5, current_value=b"v")]
        assert c.cas(b"k", 4, b"w") == (False, 5, b"v")
        with pytest.raises(InvalidArgumentError):
            c.get(b"k", consistency="bogus")
    with pytest.raises(ClientClosedError):
        c.put(b"k", b"v")
    assert not c._thread.is_alive()
