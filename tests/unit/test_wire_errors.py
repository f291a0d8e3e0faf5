"""WireError, the one failure type of the KV servicers (node and router proxy): the code its
structured error implies, how it ends a unary call, how it answers one stream item, and that
a client reads the structured error back."""

from __future__ import annotations

import asyncio
from typing import cast

import grpc
import pytest

from common.wire import errors as wire_errors
from common.wire.errors import WireError
from tesserapb import kv_pb2


class _Aborted(Exception):
    pass


class _Context:
    """The two ways a grpc.aio servicer context ends a call, recorded; both raise, as gRPC's do."""

    def __init__(self) -> None:
        self.status: grpc.Status | None = None
        self.plain: tuple[grpc.StatusCode, str] | None = None

    async def abort_with_status(self, status: grpc.Status) -> None:
        self.status = status
        raise _Aborted

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.plain = (code, details)
        raise _Aborted


def _abort(failure: WireError) -> _Context:
    context = _Context()
    with pytest.raises(_Aborted):
        asyncio.run(wire_errors.abort(cast(grpc.aio.ServicerContext, context), failure))
    return context


def test_of_picks_the_code_errors_proto_gives_each_kind():
    cases = [
        (wire_errors.not_leader(1, 2, "h:2"), grpc.StatusCode.FAILED_PRECONDITION),
        (wire_errors.partition_not_found(1), grpc.StatusCode.FAILED_PRECONDITION),
        (wire_errors.server_busy("apply lag", 50), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (wire_errors.invalid_argument("key", "too long", 4096), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for error, code in cases:
        failure = WireError.of(error, "why")
        assert (failure.code, failure.message, failure.error, str(failure)) == (code, "why", error, "why")
    with pytest.raises(ValueError):
        WireError(grpc.StatusCode.UNAVAILABLE, "why", wire_errors.not_leader(1))


def test_abort_attaches_the_structured_error_the_client_reads_back():
    error = wire_errors.not_leader(7, 3, "h:3")
    context = _abort(WireError.of(error, "not the leader"))
    assert context.plain is None and context.status is not None
    st = context.status
    assert (st.code, st.details) == (grpc.StatusCode.FAILED_PRECONDITION, "not the leader")
    rpc = grpc.aio.AioRpcError(st.code, grpc.aio.Metadata(), grpc.aio.Metadata(*st.trailing_metadata), st.details)
    assert wire_errors.error_from_rpc(rpc) == error


def test_abort_without_a_structured_error_ends_with_the_code_alone():
    context = _abort(WireError(grpc.StatusCode.UNAVAILABLE, "replica stopped"))
    assert context.status is None and context.plain == (grpc.StatusCode.UNAVAILABLE, "replica stopped")


def test_fill_answers_one_stream_item_and_keeps_its_request_id():
    error = wire_errors.server_busy("queue full", 10)
    item = kv_pb2.StreamResponseItem(request_id=5)
    WireError.of(error, "busy").fill(item)
    assert (item.request_id, item.code, item.message, item.error) == (
        5, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "busy", error
    )
    plain = kv_pb2.StreamResponseItem(request_id=6)
    WireError(grpc.StatusCode.DEADLINE_EXCEEDED, "late").fill(plain)
    deadline_code = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert (plain.code, plain.message, plain.HasField("error")) == (deadline_code, "late", False)
