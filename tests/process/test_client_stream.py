"""The multiplexed KV.Stream transport (``wire=False``: the KV wire has tests/process/test_kv_wire.py),
exercised against a real KV.Stream server: the
router's own KV proxy (no node needed). Requests whose answers need no partition (an empty
scan range, a malformed scan) come back immediately, so these tests check the framing,
packing, tag matching, per-item error mapping, per-request timeouts, and what happens when
the stream breaks and the server comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import eventually_async
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure
from router.client.multiplexed import StreamTransport
from router.client.retry import classify
from router.client.transport import UnaryTransport
from router.testing import RouterProcess
from tesserapb import kv_pb2

pytestmark = pytest.mark.timeout(60)

EMPTY = kv_pb2.ScanRequest(start=b"k", end=b"k", limit=10)  # answered at once, no partition needed
BACKWARDS = kv_pb2.ScanRequest(start=b"b", end=b"a", limit=10)  # INVALID_ARGUMENT on field "end"


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    r = RouterProcess(tmp_path / "router").start()
    yield r
    r.kill()


def test_concurrent_requests_share_one_stream_and_errors_map_per_item(router):
    async def go():
        pool = ChannelPool()
        transport = StreamTransport(pool, wire=False)
        try:
            calls = [transport.send(router.address, "scan", EMPTY, 5) for _ in range(40)]
            calls += [transport.send(router.address, "scan", BACKWARDS, 5) for _ in range(10)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            stream = transport.stream(router.address)
            return results, stream.items_sent, stream.batches_sent
        finally:
            await transport.close()
            await pool.close()

    results, items, batches = asyncio.run(go())
    ok, bad = results[:40], results[40:]
    assert all(isinstance(r, kv_pb2.ScanResponse) and not r.kvs and not r.more for r in ok), ok[:3]
    for f in bad:
        assert isinstance(f, RpcFailure), f
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and f.kind == "invalid_argument"
        assert f.error is not None and f.error.invalid_argument.field == "end"
    assert items == 50
    assert batches <= 3  # everything queued together went out together


def test_unary_and_stream_failures_look_the_same(router):
    async def go():
        pool = ChannelPool()
        try:
            out = []
            for transport in (UnaryTransport(pool), StreamTransport(pool, wire=False)):
                try:
                    await transport.send(router.address, "scan", BACKWARDS, 5)
                except RpcFailure as f:
                    assert f.error is not None, f
                    out.append((f.code, f.kind, f.error.invalid_argument.field, f.source))
                await transport.close()
            return out
        finally:
            await pool.close()

    unary, stream = asyncio.run(go())
    assert unary == stream == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument", "end", "node")


def test_a_request_times_out_alone_and_the_stream_lives_on(router):
    async def go():
        pool = ChannelPool()
        transport = StreamTransport(pool, wire=False)
        try:
            started = time.monotonic()
            # Not bootstrapped: the proxy keeps retrying this get far beyond our timeout.
            with pytest.raises(RpcFailure) as e:
                await transport.send(router.address, "get", kv_pb2.GetRequest(key=b"k"), 0.3)
            took = time.monotonic() - started
            after = await transport.send(router.address, "scan", EMPTY, 5)
            return e.value, took, after
        finally:
            await transport.close()
            await pool.close()

    failure, took, after = asyncio.run(go())
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED and 0.25 < took < 2
    assert classify(failure).store_failed and classify(failure).final is None
    assert isinstance(after, kv_pb2.ScanResponse)


def test_broken_stream_fails_in_flight_requests_retryably_then_reconnects(router):
    restarted = RouterProcess(router.data_dir, listen=router.address, log_path=router.log_path)

    async def go():
        pool = ChannelPool()
        transport = StreamTransport(pool, wire=False)
        try:
            await transport.send(router.address, "scan", EMPTY, 5)
            stream = transport.stream(router.address)
            in_flight = [asyncio.ensure_future(transport.send(router.address, "get", kv_pb2.GetRequest(key=b"k"), 30))
                         for _ in range(3)]
            await eventually_async(lambda: stream.items_sent == 4, 5, "four items on the stream")
            router.kill()
            failures = await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), 10)

            await asyncio.to_thread(restarted.start)
            deadline = time.monotonic() + 10
            while True:  # polls an async call, which eventually_async cannot await
                try:
                    return failures, await transport.send(router.address, "scan", EMPTY, 2)
                except RpcFailure as f:
                    assert classify(f).final is None, f.describe()
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await transport.close()
            await pool.close()

    try:
        failures, after = asyncio.run(go())
    finally:
        restarted.kill()
    for f in failures:
        assert isinstance(f, RpcFailure), f
        assert f.source == "stream" and f.code == grpc.StatusCode.UNAVAILABLE
        d = classify(f)
        assert d.final is None and d.store_failed and d.backoff
    assert isinstance(after, kv_pb2.ScanResponse)
