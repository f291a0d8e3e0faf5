"""The check on every RPC: a grpc.aio server interceptor (docs/auth.md).

Why an interceptor: one line where a server is made (node/server.py, router/main.py) covers
every service it hosts, present and future (a method not in common.auth.POLICY needs a
member's certificate), and no servicer changes. The interceptor wraps each method's handler
once (cached per method), so a call costs: one metadata scan, one sha256 of the token, one
dict lookup (the hash is cached per token string); a unary call with a good token then runs
the servicer's own handler, unwrapped. Streams are checked when they open.

A call that fails the check ends before its servicer runs, so it changes nothing:
UNAUTHENTICATED without a usable token (none, malformed, unknown, revoked), PERMISSION_DENIED
with a valid token whose role is too low, or with a client certificate on a member-only RPC.

Open streams: a token's streams are registered; :meth:`AuthInterceptor.refresh` (called by the
node after each token-table update, by the router every second) ends those whose token is no
longer valid with UNAUTHENTICATED. A ``read`` token's KV.Stream is ended with
PERMISSION_DENIED at the first write item it carries, before the servicer sees the message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from common import auth
from common.auth import Grant, Need
from common.tls import PeerIdentity, peer_identity

log = logging.getLogger("tessera.auth")

Lookup = Callable[[str], Grant | None]
_DIGEST_CACHE = 4096  # tokens whose sha256 is remembered (a token's hash never changes)
_KV_STREAM = "/tessera.v1.KV/Stream"


@dataclass(slots=True)
class _Denied:
    code: grpc.StatusCode
    message: str


@dataclass(slots=True, eq=False)  # kept in a set: identity, not value
class OpenStream:
    """A token-authenticated stream that may have to be ended from outside: ``stop`` ends it
    (a gRPC stream's task is cancelled; a KV wire connection is closed)."""

    token_hash: str
    need: Need
    stop: Callable[[], object] | None
    denied: _Denied | None = None

    def end(self, code: grpc.StatusCode, message: str) -> None:
        if self.denied is None and self.stop is not None:
            self.denied = _Denied(code, message)
            self.stop()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call against ``lookup`` (token hash -> Grant or None) and the policy."""

    def __init__(self, lookup: Lookup, *, where: str = "") -> None:
        self.lookup = lookup
        self.where = where  # "node 3", "router 1": for log lines
        # method -> (its handler, the handler wrapped in the full check, the role a token needs
        # for the fast path, or None when the method never takes it: streams, member-only, open)
        self._methods: dict[str, tuple[grpc.RpcMethodHandler[Any, Any] | None, grpc.RpcMethodHandler[Any, Any] | None,
                                       Need | None]] = {}
        self._digests: dict[str, str] = {}  # token -> sha256, for the tokens seen lately
        self._streams: set[OpenStream] = set()
        self.denied = 0  # calls refused (tests, logs)

    # -- the decision ---------------------------------------------------------------------

    def check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Grant | None, str]:
        """(grant, token hash) for an allowed call: a member's call has no grant. Raises
        Refusal otherwise."""
        if auth.need_of(method) is Need.OPEN:
            return None, ""
        return self.check_credentials(method, auth.bearer_from(context.invocation_metadata()),
                                      lambda: peer_identity(context))

    def check_credentials(
        self, method: str, token: str | None, identity: Callable[[], PeerIdentity | None]
    ) -> tuple[Grant | None, str]:
        """:meth:`check` for a caller known by its ``token`` and its certificate's identity
        (asked for only when it matters): the KV wire's hello (node.kv_wire) is checked as the
        KV.Stream it stands for. Raises :class:`Refusal`."""
        need = auth.need_of(method)
        if need is Need.OPEN:
            return None, ""
        if need is Need.MEMBER or token is None:
            who = identity()
            if who is not None and who.is_member:
                return None, ""
            if token is None:
                raise Refusal(grpc.StatusCode.UNAUTHENTICATED,
                               f"{_short(method)} is for cluster members only (a member's certificate)"
                               if need is Need.MEMBER else
                               f"no token: this cluster requires one (give --token or ${auth.TOKEN_ENV}; "
                               f"gRPC metadata 'authorization: Bearer TOKEN')")
        if not auth.well_formed(token):
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED,
                           "malformed token (expected 'authorization: Bearer tsk_...')")
        digest = self._digest(token)
        grant = self.lookup(digest)
        if grant is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
        if need is Need.MEMBER:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED,
                           f"{_short(method)} is for cluster members only; a client certificate may not call "
                           f"it, whatever its token")
        if grant.role < need:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED,
                           f"token {grant.token_id} has role {grant.role.label}; {_short(method)} needs "
                           f"{need.label}")
        return grant, digest

    # -- wrapping handlers ----------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        known = self._methods.get(method)
        if known is None:
            handler = await continuation(handler_call_details)
            known = self._methods[method] = self._learn(method, handler)
        handler, wrapped, fast_need = known
        if fast_need is not None:
            # The fast path, for unary-response calls with a good token: the metadata gRPC has
            # already read, the token's cached hash, one lookup, and the servicer's own handler
            # (no wrapper). Anything else goes through the wrapper's full check, which also
            # words the refusal.
            token = auth.bearer_from(handler_call_details.invocation_metadata)
            if token is not None and auth.well_formed(token):
                grant = self.lookup(self._digest(token))
                if grant is not None and grant.role >= fast_need:
                    return handler
        return wrapped

    def _learn(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any] | None
    ) -> tuple[grpc.RpcMethodHandler[Any, Any] | None, grpc.RpcMethodHandler[Any, Any] | None, Need | None]:
        if handler is None:
            return None, None, None
        need = auth.need_of(method)
        unary_response = handler.unary_unary is not None or handler.stream_unary is not None
        fast = need if unary_response and need not in (Need.OPEN, Need.MEMBER) else None
        return handler, self._wrap(method, handler), fast

    def _digest(self, token: str) -> str:
        digest = self._digests.get(token)
        if digest is None:
            if len(self._digests) >= _DIGEST_CACHE:
                self._digests.clear()  # many distinct tokens (a scan for one): start again
            digest = self._digests[token] = auth.token_hash(token)
        return digest

    def _wrap(self, method: str, h: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if auth.need_of(method) is Need.OPEN:
            return h
        check = self.check
        kw = {"request_deserializer": h.request_deserializer, "response_serializer": h.response_serializer}

        async def refuse(context: Any, exc: Refusal) -> None:
            self.denied += 1
            await context.abort(exc.code, exc.message)

        def checked(inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
            # One answer per call (unary_unary or stream_unary): check once, before the servicer
            # sees the request or the request iterator; the two differ in nothing else.
            async def behavior(request_or_requests: Any, context: Any) -> Any:
                try:
                    check(method, context)
                except Refusal as exc:
                    await refuse(context, exc)
                return await inner(request_or_requests, context)

            return behavior

        if h.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(checked(h.unary_unary), **kw)
        if h.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(checked(h.stream_unary), **kw)
        streaming: Any = h.unary_stream if h.unary_stream is not None else h.stream_stream
        assert streaming is not None
        if not inspect.isasyncgenfunction(streaming) and not _is_asyncgen_method(streaming):
            raise TypeError(f"{method}: a streaming handler must be an async generator to be checked")
        reads_only = self._reads_only if method == _KV_STREAM else None

        async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                grant, digest = check(method, context)
            except Refusal as exc:
                await refuse(context, exc)
            if grant is None:  # a member: not revocable
                async for resp in streaming(request, context):
                    yield resp
                return
            task = asyncio.current_task()
            entry = self.open_stream(digest, method, task.cancel if task is not None else None)
            if reads_only is not None and grant.role < auth.Role.WRITE:
                request = reads_only(request, entry, grant)
            try:
                async for resp in streaming(request, context):
                    yield resp
            except asyncio.CancelledError:
                if entry.denied is None:
                    raise
                self.denied += 1
                await context.abort(entry.denied.code, entry.denied.message)
            finally:
                self.close_stream(entry)

        if h.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streamed, **kw)
        return grpc.stream_stream_rpc_method_handler(streamed, **kw)

    @staticmethod
    async def _reads_only(requests: AsyncIterator[Any], entry: OpenStream, grant: Grant) -> AsyncIterator[Any]:
        """A read token's KV.Stream: a message with a write item is never passed on; the stream
        ends with PERMISSION_DENIED instead."""
        async for req in requests:
            for item in req.requests:
                kind = item.WhichOneof("request")
                if kind in auth.STREAM_WRITE_KINDS:
                    entry.end(grpc.StatusCode.PERMISSION_DENIED,
                              f"token {grant.token_id} has role {grant.role.label}; a {kind} on KV.Stream "
                              f"needs role write")
                    await asyncio.Event().wait()  # the stream's task is being cancelled
            yield req

    # -- token-table changes --------------------------------------------------------------

    def open_stream(self, digest: str, method: str, stop: Callable[[], object] | None) -> OpenStream:
        """Register a token's open stream: :meth:`refresh` calls ``stop`` once the token is no
        longer good for ``method`` (the entry's ``denied`` says why). Forget it with
        :meth:`close_stream` when the stream ends."""
        entry = OpenStream(digest, auth.need_of(method), stop)
        self._streams.add(entry)
        return entry

    def close_stream(self, entry: OpenStream) -> None:
        self._streams.discard(entry)

    def refresh(self) -> int:
        """End the open streams whose token is no longer valid (revoked, or its role now too
        low); the number ended."""
        ended = 0
        for entry in list(self._streams):
            grant = self.lookup(entry.token_hash)
            if grant is None or grant.role < entry.need:
                entry.end(grpc.StatusCode.UNAUTHENTICATED, "token revoked while the stream was open")
                ended += 1
        if ended:
            log.info("%s: ended %d stream(s) of revoked tokens", self.where or "auth", ended)
        return ended

    @property
    def open_streams(self) -> int:
        return len(self._streams)


class Refusal(Exception):
    """A call refused: its gRPC status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _short(method: str) -> str:
    """``/tessera.v1.KV/Put`` -> ``KV.Put``."""
    service, _, name = method.rpartition("/")
    return f"{service.rpartition('.')[2]}.{name}"


def _is_asyncgen_method(fn: Any) -> bool:
    return inspect.isasyncgenfunction(getattr(fn, "__func__", None))
