"""A server interceptor that makes hostile input the caller's problem, not the log's.

Left alone, grpc.aio answers a request whose bytes do not parse with UNKNOWN ("Unexpected
<class 'google.protobuf.message.DecodeError'>") and writes a full traceback to the log for
each one; so does any exception a handler lets escape. A client sending garbage in a loop
could fill the disk with tracebacks. :class:`RequestGuard`, passed to
``grpc.aio.server(interceptors=[...])``, wraps every method handler the server serves
(generated services, health, reflection alike) so that:

- a request (or any message of a request stream) that does not parse ends the call with
  INVALID_ARGUMENT, a one-line message naming the message type, and a
  ``tessera.v1.InvalidArgument`` detail (field ``request``); one log line at most, rate-limited
  (:class:`common.log_limit.LogLimiter`);
- a NotImplementedError (a generated servicer base class's method left unimplemented) ends
  the call with UNIMPLEMENTED;
- any other exception a handler lets escape (a bug: handlers are meant to turn bad input into
  INVALID_ARGUMENT themselves) ends the call with INTERNAL and a one-line message naming the
  exception's type; its traceback is logged, rate-limited.

How: grpc.aio deserializes a request with the handler's ``request_deserializer`` before the
handler runs (for a stream, as the handler iterates), outside anything the handler could
catch. The guard swaps that deserializer for one that returns a :class:`Malformed` marker
instead of raising, and wraps the behavior so the marker is answered before the handler sees
it. A request stream is cut at the first malformed message: the handler sees the stream end
there (so it finishes what it had started, as on a half-close), and the call then ends with
INVALID_ARGUMENT. Handlers must read request streams by iterating them (not with
``context.read()``), which every Tessera servicer does. Interceptors run for registered method
handlers too (verified with grpcio 1.85); the wrapped handler is built once per method.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from common.log_limit import LogLimiter
from common.wire import errors as wire_errors

MAX_DETAIL_CHARS = 200
"""A status message built from an exception is cut to this (and to one line)."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """What the guarded deserializer returns for bytes that do not parse."""

    message: str


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line of at most ``limit`` characters (for status messages and logs)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def message_name(deserializer: Callable[[bytes], Any]) -> str:
    """The protobuf type a ``Type.FromString`` deserializer parses, else its own name."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return str(name) if name else getattr(deserializer, "__qualname__", "message")


def guard_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer`` that answers :class:`Malformed` instead of raising."""
    what = message_name(deserializer)

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or anything else a parser can raise on garbage
            return Malformed(one_line(f"request is not a valid {what} ({len(raw)} bytes): {exc}"))

    return parse


class _Cut:
    """A request stream that ends at its first malformed message, remembering it."""

    __slots__ = ("bad", "source")

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.source = source
        self.bad: Malformed | None = None

    async def messages(self) -> AsyncIterator[Any]:
        async for m in self.source:
            if isinstance(m, Malformed):
                self.bad = m
                return
            yield m


class RequestGuard(grpc.aio.ServerInterceptor):
    """Pass one to ``grpc.aio.server(interceptors=[RequestGuard(log)])``: see the module
    docstring. ``limiter`` is where the one-line reports go (rate-limited)."""

    def __init__(self, logger: logging.Logger, limiter: LogLimiter | None = None) -> None:
        self.limiter = limiter or LogLimiter(logger)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self.malformed = 0  # counters, for tests and stats
        self.unexpected = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        if len(self._wrapped) < 1024:  # one per served method; never grows with client input
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    # -- answers ----------------------------------------------------------------------

    async def _reject(self, context: grpc.aio.ServicerContext, method: str, bad: Malformed) -> None:
        self.malformed += 1
        self.limiter.warning("malformed", "%s: refused a malformed request from %s: %s", method, _peer(context),
                             bad.message)
        failure = wire_errors.WireError.of(wire_errors.invalid_argument("request", bad.message), bad.message)
        await wire_errors.abort(context, failure)

    async def _failed(self, context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
        if isinstance(exc, NotImplementedError):
            # What a generated servicer base class raises for a method its subclass does not
            # implement (grpc's health service and List, for one): the caller's mistake.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
        self.unexpected += 1
        self.limiter.error("unexpected", "%s: the handler failed on a request from %s: %s",
                           method, _peer(context), one_line(repr(exc)), exc_info=True)
        await context.abort(grpc.StatusCode.INTERNAL, one_line(f"internal error in {method}: {type(exc).__name__}"))

    # -- wrapping ---------------------------------------------------------------------

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """``handler`` with its deserializer guarded and its behavior wrapped (see above)."""
        deserializer = handler.request_deserializer
        parse = guard_deserializer(deserializer) if deserializer is not None else None
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(handler.unary_unary, method), parse, serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, method), parse, serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(handler.stream_unary, method), parse, serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(handler.stream_stream, method), parse, serializer)
        return handler

    def _unary_unary(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await self._reject(context, method, request)
            try:
                # A synchronous handler (a generated base class's unimplemented method, as
                # grpc's health servicer leaves List) answers at once: called on the loop.
                response = inner(request, context)
                return await response if inspect.isawaitable(response) else response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._failed(context, method, exc)

        return behavior

    def _unary_stream(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(inner):  # writes with context.write
            return self._unary_unary(inner, method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await self._reject(context, method, request)
            try:
                async for response in inner(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._failed(context, method, exc)

        return behavior

    def _stream_unary(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def behavior(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            cut = _Cut(requests)
            try:
                response = inner(cut.messages(), context)
                if inspect.isawaitable(response):
                    response = await response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._failed(context, method, exc)
            if cut.bad is not None:
                await self._reject(context, method, cut.bad)
            return response

        return behavior

    def _stream_stream(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(inner):  # writes with context.write
            return self._stream_unary(inner, method)

        async def behavior(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            cut = _Cut(requests)
            try:
                async for response in inner(cut.messages(), context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._failed(context, method, exc)
            if cut.bad is not None:
                await self._reject(context, method, cut.bad)

        return behavior


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:
        return "?"
