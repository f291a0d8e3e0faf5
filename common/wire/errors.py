"""Structured errors on the wire: a gRPC status whose details hold one ``tessera.v1.Error``.

Servicers (the node's KV service, the router's KV proxy and Meta service) raise
:class:`WireError` where a call fails and end the call with :func:`abort`, or answer one
item of a ``KV.Stream`` with :meth:`WireError.fill`; :func:`to_status` builds the status
itself. Clients call :func:`error_from_rpc` to get the payload back and branch on
``error.WhichOneof("kind")``.  Codes follow errors.proto: routing errors are
FAILED_PRECONDITION, busy is RESOURCE_EXHAUSTED, bad input is INVALID_ARGUMENT.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from tesserapb import errors_pb2, kv_pb2

_CODE_BY_KIND = {
    "not_leader": grpc.StatusCode.FAILED_PRECONDITION,
    "epoch_not_match": grpc.StatusCode.FAILED_PRECONDITION,
    "key_not_in_partition": grpc.StatusCode.FAILED_PRECONDITION,
    "partition_not_found": grpc.StatusCode.FAILED_PRECONDITION,
    "server_busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
}

MAX_MESSAGE_CHARS = 1024
"""A status message is cut to this many characters. Messages quote keys, and a key may be 4 KiB
of bytes whose repr is four times that: the status travels in gRPC trailers, which a client
refuses past 8-16 KiB (docs/hostile-input.md)."""


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, saying how long it was."""
    if len(message) <= limit:
        return message
    tail = f"... ({len(message)} characters)"
    return message[: limit - len(tail)] + tail


ROUTING_KINDS = frozenset({"not_leader", "epoch_not_match", "key_not_in_partition", "partition_not_found"})


def code_for(error: errors_pb2.Error) -> grpc.StatusCode:
    return _CODE_BY_KIND[error.WhichOneof("kind")]


def to_status(error: errors_pb2.Error, message: str) -> grpc.Status:
    code = code_for(error)
    detail = any_pb2.Any()
    detail.Pack(error)
    st = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    return rpc_status.to_status(st)


class WireError(Exception):
    """A failed call as the caller will see it: a gRPC status code, a message and, for the
    failures errors.proto describes, the ``tessera.v1.Error`` a client branches on.

    Failures without a structured error (UNAVAILABLE while a replica stops, DEADLINE_EXCEEDED
    in the proxy) carry the code alone: the client decides from the code.
    """

    def __init__(self, code: grpc.StatusCode, message: str, error: errors_pb2.Error | None = None) -> None:
        # One code per kind (errors.proto): a unary call's status takes it from the error, a
        # stream item from ``code``, and the two must not tell a client different things.
        if error is not None and code != code_for(error):
            raise ValueError(f"{error.WhichOneof('kind')} is {code_for(error).name}, not {code.name}")
        message = clip(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.error = error

    @classmethod
    def of(cls, error: errors_pb2.Error, message: str) -> WireError:
        """The failure ``error`` describes, with the code errors.proto gives its kind."""
        return cls(code_for(error), message, error)

    def fill(self, item: kv_pb2.StreamResponseItem) -> None:
        """Make ``item`` this failure's answer: inside a ``KV.Stream`` each request fails on
        its own, in its item, while the stream itself goes on."""
        item.code = self.code.value[0]
        item.message = self.message
        if self.error is not None:
            item.error.CopyFrom(self.error)


async def abort(context: grpc.aio.ServicerContext, failure: WireError) -> NoReturn:
    """End the call with ``failure``'s status and its structured error, if any (by raising)."""
    if failure.error is not None:
        await context.abort_with_status(to_status(failure.error, failure.message))
    await context.abort(failure.code, failure.message)


def error_from_rpc(exc: grpc.RpcError) -> errors_pb2.Error | None:
    """The ``tessera.v1.Error`` attached to a failed call, if any."""
    try:
        # from_call reads code(), details() and trailing_metadata(), which every RpcError a call
        # raises has (grpc.aio's too), but its stub asks for a grpc.Call, which an aio error is not.
        st = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    if st is None:
        return None
    for detail in st.details:
        if detail.Is(errors_pb2.Error.DESCRIPTOR):
            err = errors_pb2.Error()
            detail.Unpack(err)
            return err
    return None


def invalid_argument(field: str, message: str, limit: int = 0) -> errors_pb2.Error:
    return errors_pb2.Error(invalid_argument=errors_pb2.InvalidArgument(field=field, limit=limit, message=message))


def not_leader(partition_id: int, leader_store_id: int = 0, leader_address: str = "") -> errors_pb2.Error:
    return errors_pb2.Error(
        not_leader=errors_pb2.NotLeader(
            partition_id=partition_id, leader_store_id=leader_store_id, leader_address=leader_address
        )
    )


def server_busy(reason: str, backoff_ms: int = 0) -> errors_pb2.Error:
    return errors_pb2.Error(server_busy=errors_pb2.ServerBusy(reason=reason, backoff_ms=backoff_ms))


def partition_not_found(partition_id: int) -> errors_pb2.Error:
    return errors_pb2.Error(partition_not_found=errors_pb2.PartitionNotFound(partition_id=partition_id))


def leader_hint(error: errors_pb2.Error | None) -> str:
    """The leader address a NotLeader error names ("" when none, or another kind of error)."""
    if error is None or error.WhichOneof("kind") != "not_leader":
        return ""
    return error.not_leader.leader_address
