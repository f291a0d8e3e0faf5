"""Services a gRPC server takes before they exist: the node listens (health says NOT_SERVING)
while it replays its WAL, and its KV and Raft services join once they can serve.

A grpc.aio server takes no handlers after it starts, so the node registers one
:class:`LateServices` handler up front. Until :meth:`LateServices.add` is given the real
servicers, every call to their methods ends at once with UNAVAILABLE, the same code a node that
is down gives, which the client library and the Raft transport already retry; health and
reflection, registered normally, answer all along. ``grpc_health_probe`` or a load balancer
thus sees NOT_SERVING during a long replay instead of a refused connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor


class _Collect:
    """Stands in for a server to the generated ``add_XServicer_to_server`` functions."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers.append(grpc.method_handlers_generic_handler(service, dict(method_handlers)))


class LateServices(grpc.GenericRpcHandler):
    def __init__(self, services: tuple[ServiceDescriptor, ...], why: Callable[[], str]) -> None:
        """``services``: what will be added later; ``why``: the message UNAVAILABLE carries meanwhile."""
        self._why = why
        self._handlers: list[grpc.GenericRpcHandler] = []
        self._waiting: dict[str, grpc.RpcMethodHandler] = {}
        for svc in services:
            for m in svc.methods:
                self._waiting[f"/{svc.full_name}/{m.name}"] = self._unavailable(m.client_streaming, m.server_streaming)

    def add(self, register: Callable[[Any], None]) -> None:
        """Serve what ``register`` adds (called with a stand-in server, e.g.
        ``lambda s: kv_pb2_grpc.add_KVServicer_to_server(servicer, s)``), from now on."""
        collect = _Collect()
        register(collect)
        self._handlers.extend(collect.handlers)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        for h in self._handlers:
            found = h.service(handler_call_details)
            if found is not None:
                return found
        return self._waiting.get(handler_call_details.method)

    def _unavailable(self, client_streaming: bool, server_streaming: bool) -> grpc.RpcMethodHandler:
        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._why())

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._why())
            yield b""  # pragma: no cover - abort raised

        # No (de)serializers: the bytes are never looked at.
        if client_streaming and server_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming)
        if client_streaming:
            return grpc.stream_unary_rpc_method_handler(unary)
        if server_streaming:
            return grpc.unary_stream_rpc_method_handler(streaming)
        return grpc.unary_unary_rpc_method_handler(unary)
