"""common/wire/guard.py on a real grpc.aio server on loopback: malformed bytes on every kind of
call end with INVALID_ARGUMENT and one rate-limited log line, a handler's escaped exception
with INTERNAL and one line, good requests are untouched; without the guard grpc answers
UNKNOWN (what the guard is for)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.log_limit import LogLimiter
from common.wire.errors import error_from_rpc
from common.wire.guard import RequestGuard
from tesserapb import raft_pb2, raft_pb2_grpc

pytestmark = pytest.mark.timeout(60)

GARBAGE = b"\xff\xff\xff\xff"  # a field number of 0x0fffffff with wire type 7: never parses


class Service(raft_pb2_grpc.RaftTransportServicer):
    """Echoes what it is sent; ``PeerEndpoint`` with to_store 13 fails as a buggy handler would."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def PeerEndpoint(self, request: raft_pb2.PeerEndpointRequest, context: Any) -> raft_pb2.PeerEndpointResponse:
        if request.to_store == 13:
            raise KeyError("no such store")
        return raft_pb2.PeerEndpointResponse(store_id=request.to_store)

    async def Stream(self, request_iterator: AsyncIterator[raft_pb2.RaftBatch], context: Any
                     ) -> AsyncIterator[raft_pb2.RaftBatchAck]:
        async for batch in request_iterator:
            self.seen.append(batch.seq)
            yield raft_pb2.RaftBatchAck(seq=batch.seq)

    async def SendSnapshot(self, request_iterator: AsyncIterator[raft_pb2.SnapshotChunk], context: Any
                           ) -> raft_pb2.SnapshotAck:
        n = 0
        async for _ in request_iterator:
            n += 1
        return raft_pb2.SnapshotAck(accepted=True, reason=f"{n} chunks")


Scenario = Callable[[grpc.aio.Channel, Service, RequestGuard | None], Awaitable[None]]


def serve(scenario: Scenario, *, guarded: bool = True) -> str:
    """Run ``scenario`` against a fresh server; returns what the guard logged."""
    out = io.StringIO()
    logger = logging.getLogger("tessera.test.guard")
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    logger.propagate = False

    async def main() -> None:
        guard = RequestGuard(logger, LogLimiter(logger, burst=3, interval_s=60.0)) if guarded else None
        server = grpc.aio.server(interceptors=[guard] if guard else [])
        service = Service()
        raft_pb2_grpc.add_RaftTransportServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await scenario(channel, service, guard)
        finally:
            await server.stop(None)

    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return out.getvalue()


def raw_unary(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def assert_invalid(exc: grpc.aio.AioRpcError, type_name: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    details = exc.details() or ""
    assert "\n" not in details and f"not a valid {type_name}" in details, details
    err = error_from_rpc(exc)
    assert err is not None and err.invalid_argument.field == "request", err


def test_malformed_unary_requests_get_invalid_argument_and_the_log_stays_small() -> None:
    async def scenario(channel: grpc.aio.Channel, service: Service, guard: RequestGuard | None) -> None:
        call = raw_unary(channel, "/tessera.v1.RaftTransport/PeerEndpoint")
        for _ in range(50):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(GARBAGE, timeout=5)
            assert_invalid(failed.value, "tessera.v1.PeerEndpointRequest")
        # A good request on the same method is served as before.
        ok = await call(raft_pb2.PeerEndpointRequest(to_store=7).SerializeToString(), timeout=5)
        assert raft_pb2.PeerEndpointResponse.FromString(ok).store_id == 7
        # So is one of a service the project did not write (health), and its garbage refused.
        check = raw_unary(channel, "/grpc.health.v1.Health/Check")
        assert health_pb2.HealthCheckResponse.FromString(await check(b"", timeout=5)).status == 1
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await check(GARBAGE, timeout=5)
        assert_invalid(failed.value, "grpc.health.v1.HealthCheckRequest")
        assert guard is not None and guard.malformed == 51

    logged = serve(scenario)
    assert len(logged.splitlines()) == 3, logged  # the burst; the rest counted, not written
    assert "Traceback" not in logged


def test_a_malformed_message_in_a_request_stream_ends_it_after_the_good_ones() -> None:
    async def scenario(channel: grpc.aio.Channel, service: Service, guard: RequestGuard | None) -> None:
        good = [raft_pb2.RaftBatch(seq=i).SerializeToString() for i in (1, 2)]
        method: Any = channel.stream_stream("/tessera.v1.RaftTransport/Stream", request_serializer=None,
                                            response_deserializer=raft_pb2.RaftBatchAck.FromString)
        call = method(iter([*good, GARBAGE, raft_pb2.RaftBatch(seq=3).SerializeToString()]), timeout=5)
        acks = []
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for ack in call:
                acks.append(ack.seq)
        assert_invalid(failed.value, "tessera.v1.RaftBatch")
        assert acks == [1, 2] and service.seen == [1, 2]  # nothing after the bad message

        snap: Any = channel.stream_unary("/tessera.v1.RaftTransport/SendSnapshot", request_serializer=None,
                                    response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await snap(iter([raft_pb2.SnapshotChunk(last=True).SerializeToString(), GARBAGE]), timeout=5)
        assert_invalid(failed.value, "tessera.v1.SnapshotChunk")
        ok = raft_pb2.SnapshotAck.FromString(await snap(iter([b"", b""]), timeout=5))
        assert ok.accepted and ok.reason == "2 chunks"

        watch_method: Any = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None,
                                                 response_deserializer=None)
        watch = watch_method(GARBAGE, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in watch:
                pass
        assert_invalid(failed.value, "grpc.health.v1.HealthCheckRequest")

    serve(scenario)


def test_an_exception_a_handler_lets_escape_is_internal_in_one_line_and_one_traceback() -> None:
    async def scenario(channel: grpc.aio.Channel, service: Service, guard: RequestGuard | None) -> None:
        call = raw_unary(channel, "/tessera.v1.RaftTransport/PeerEndpoint")
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(raft_pb2.PeerEndpointRequest(to_store=13).SerializeToString(), timeout=5)
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            assert failed.value.details() == "internal error in /tessera.v1.RaftTransport/PeerEndpoint: KeyError"
        assert guard is not None and guard.unexpected == 20

    logged = serve(scenario)
    assert logged.count("Traceback") == 3, logged  # the burst, then counted
    assert "KeyError('no such store')" in logged


def test_without_the_guard_grpc_answers_garbage_with_unknown() -> None:
    """The control: what the guard replaces (if grpc ever answers INVALID_ARGUMENT by itself,
    this fails and the guard's deserializer wrapper can go)."""

    async def scenario(channel: grpc.aio.Channel, service: Service, guard: RequestGuard | None) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await raw_unary(channel, "/tessera.v1.RaftTransport/PeerEndpoint")(GARBAGE, timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNKNOWN, failed.value

    serve(scenario, guarded=False)
