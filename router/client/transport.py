"""How one attempt reaches a node: ``send(address, kind, request, timeout) -> response``.

``kind`` is the request's field name in StreamRequestItem ("get", "put", "delete",
"compare_and_set", "scan", "batch"). Failures raise RpcFailure. The client depends only on
this shape, so a test can hand it a plain async function (``FunctionTransport``) instead of
a network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import grpc
from google.protobuf.message import Message

from router.client.channels import ChannelPool
from router.client.errors import failure_from_rpc_error
from tesserapb import kv_pb2_grpc

SendFn = Callable[[str, str, Message, float], Awaitable[Message]]

UNARY_METHODS = {
    "get": "Get",
    "put": "Put",
    "delete": "Delete",
    "compare_and_set": "CompareAndSet",
    "scan": "Scan",
    "batch": "Batch",
}


@runtime_checkable
class Transport(Protocol):
    async def send(self, address: str, kind: str, request: Message, timeout: float) -> Message: ...

    async def close(self) -> None: ...


class UnaryTransport:
    """One unary KV call per attempt (the fallback path, and what thin clients use)."""

    def __init__(self, pool: ChannelPool) -> None:
        self._pool = pool
        self._stubs: dict[str, kv_pb2_grpc.KVStub] = {}

    async def send(self, address: str, kind: str, request: Message, timeout: float) -> Message:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = kv_pb2_grpc.KVStub(self._pool.get(address))
        try:
            return await getattr(stub, UNARY_METHODS[kind])(request, timeout=timeout, metadata=self._pool.metadata)
        except grpc.RpcError as exc:
            raise failure_from_rpc_error(exc, address) from None

    async def close(self) -> None:
        self._stubs.clear()


class FunctionTransport:
    """Adapts a bare ``send`` function (tests, instrumentation)."""

    def __init__(self, fn: SendFn) -> None:
        self._fn = fn

    async def send(self, address: str, kind: str, request: Message, timeout: float) -> Message:
        return await self._fn(address, kind, request, timeout)

    async def close(self) -> None:
        pass
