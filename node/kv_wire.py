"""The KV wire: KV.Stream's requests and answers on a plain TCP (or TLS) connection (D28).

Why: a Python grpc.aio stream costs the node (and the client) 50-100 µs of CPU per message,
where a length-prefixed frame read in ``data_received`` costs a few (docs/kv-wire.md has
the measurement). Every client write and read pays it, so the client library speaks this
wire to every node that offers one (``KV.WireEndpoint``) and KV.Stream to the others; the
gRPC services stay, unchanged, for everything else and for any gRPC client.

A connection is one KV.Stream: the first frame is a hello (version, bearer token), then
StreamRequests, served by the same :class:`~node.kv_stream.StreamSession` with the same
checks, budget and answers. It is checked like the stream it stands for: TLS with the
cluster's server context (a certificate the cluster CA signed), the hello's token against
the node's token table (``common.auth_server.AuthInterceptor.check_credentials``), a read
token's connection ended at its first write item, a revoked token's at the table update.
Whatever ends a connection (a refusal, a malformed or oversized frame, an unknown frame
kind, the node stopping) is said in one ``E`` frame (a gRPC status code and a one-line
message) before the node closes it; what a client can trigger at will is logged
rate-limited (docs/hostile-input.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, cast

import grpc
from google.protobuf.message import DecodeError

from common import auth
from common.auth_server import Refusal
from common.log_limit import LogLimiter
from common.sockets import keep_alive, no_delay
from common.tls import HANDSHAKE_TIMEOUT_S, PeerIdentity, identity_from_peercert
from common.trace import mark
from common.wire import kv_frames as kf
from common.wire.guard import one_line
from node.kv_stream import StreamSession
from tesserapb import kv_pb2

if TYPE_CHECKING:
    from common.auth_server import AuthInterceptor, OpenStream
    from node.kv_service import KVService

log = logging.getLogger("tessera.kv_wire")
limited_log = LogLimiter(log)

_STREAM_METHOD = "/tessera.v1.KV/Stream"  # what a connection is checked as
HELLO_TIMEOUT_S = 10.0  # a connection that says nothing for this long after connecting is closed


class KvWireConn(asyncio.Protocol):
    """One client connection: frames in, each request taken at once, answers packed per loop
    turn into one frame."""

    def __init__(self, kv: KVService, checker: AuthInterceptor | None, live: set[KvWireConn]) -> None:
        self.kv = kv
        self.checker = checker
        self.live = live
        self.frames = kf.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.session: StreamSession | None = None  # from the hello on
        self.read_only = False  # a read token: the first write item ends the connection
        self.entry: OpenStream | None = None  # the token's registration (revocation ends us)
        self._flushing = False
        self._ended = False
        self._draining: asyncio.Future[None] | None = None
        self._hello_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.live.add(self)
        no_delay(transport)
        keep_alive(transport)
        # Holding a connection costs the node a socket and a buffer: one that never says hello
        # (a certificate is enough to get this far) does not keep them.
        self._hello_timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._no_hello)

    def data_received(self, data: bytes) -> None:
        mark("kv.read")
        if self._ended:
            return
        try:
            for kind, payload in self.frames.feed(data):
                if kind == kf.REQUEST and self.session is not None:
                    self._request(payload)
                elif kind == kf.HELLO and self.session is None:
                    self._hello(payload)
                else:
                    what = "a second hello" if kind == kf.HELLO else (
                        "a request before the hello" if kind == kf.REQUEST else f"a frame of unknown kind {kind}")
                    self.end(grpc.StatusCode.INVALID_ARGUMENT, f"KV wire: {what}", bad=True)
                if self._ended:
                    return
        except kf.FrameTooLarge as exc:
            self.end(grpc.StatusCode.RESOURCE_EXHAUSTED, f"KV wire: {exc}", bad=True)
        except Exception as exc:  # a bug: this connection ends, the node serves on
            limited_log.error("kv-wire-failed", "serving a KV wire connection failed", exc_info=True)
            self.end(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")

    def eof_received(self) -> bool:
        # The client is done sending: answer what it asked, then close (as a half-closed stream).
        if self.session is not None and not self._ended:
            self._draining = asyncio.ensure_future(self._drain_then_close(self.session))
            return True
        return False

    def pause_writing(self) -> None:  # the client reads slower than we answer: stop reading it
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._ended:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self._draining is not None:
            self._draining.cancel()
        self.transport = None
        self._ended = True
        self.live.discard(self)
        self._close_session()

    # -- frames ----------------------------------------------------------------------------

    def _no_hello(self) -> None:
        self._hello_timer = None
        if self.session is None:
            self.end(grpc.StatusCode.DEADLINE_EXCEEDED, f"KV wire: no hello within {HELLO_TIMEOUT_S:g} s", bad=True)

    def _hello(self, payload: bytes) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        try:
            hello = kv_pb2.WireHello.FromString(payload)
        except DecodeError as exc:
            self.end(grpc.StatusCode.INVALID_ARGUMENT, f"KV wire: the hello is not a valid WireHello: {exc}", bad=True)
            return
        if hello.version != kf.VERSION:
            self.end(grpc.StatusCode.FAILED_PRECONDITION,
                     f"KV wire: this node speaks version {kf.VERSION}, not {hello.version}")
            return
        if self.checker is not None:
            try:
                grant, digest = self.checker.check_credentials(_STREAM_METHOD, hello.token or None, self._identity)
            except Refusal as exc:
                self.checker.denied += 1
                self.end(exc.code, exc.message)
                return
            if grant is not None:  # a token (a member is not revocable)
                self.entry = self.checker.open_stream(digest, _STREAM_METHOD, self._revoked)
                self.read_only = grant.role < auth.Role.WRITE
        self.session = StreamSession(self.kv, self._answers_ready, self._backlog)
        self.kv.stats.streams_open += 1

    def _identity(self) -> PeerIdentity | None:
        t = self.transport
        if t is None or t.get_extra_info("ssl_object") is None:
            return None
        return identity_from_peercert(t.get_extra_info("peercert"))

    def _request(self, payload: bytes) -> None:
        assert self.session is not None
        try:
            req = kv_pb2.StreamRequest.FromString(payload)
        except DecodeError as exc:
            self.end(grpc.StatusCode.INVALID_ARGUMENT,
                     f"request is not a valid tessera.v1.StreamRequest ({len(payload)} bytes): {exc}", bad=True)
            return
        if self.read_only:
            for item in req.requests:
                kind = item.WhichOneof("request")
                if kind in auth.STREAM_WRITE_KINDS:
                    self.end(grpc.StatusCode.PERMISSION_DENIED,
                             f"a read token may not {kind}: a {kind} on the KV wire needs role write")
                    return
        self.session.take(req)

    # -- answers ---------------------------------------------------------------------------

    def _answers_ready(self) -> None:
        # Answers made in one loop turn leave together, in as few frames as their size allows
        # (or before a round blocks in its fsync: node.answer_flush).
        if not self._flushing:
            self._flushing = True
            self.kv.rs.answers.ask(self._flush)

    def _backlog(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def _flush(self) -> None:  # asked for (AnswerFlush)
        if self._flushing:  # (not written already by end() or a drain)
            self._write_answers()

    def _write_answers(self) -> None:
        self._flushing = False
        session = self.session
        if session is None or self.transport is None or self._ended:
            return
        write = self.transport.write
        mark("kv.answer")
        for resp in session.take_answers():
            write(kf.frame(kf.ANSWER, resp.SerializeToString()))

    def _revoked(self) -> None:
        entry = self.entry
        denied = entry.denied if entry is not None else None
        if denied is not None:
            self.end(denied.code, denied.message)

    def end(self, code: grpc.StatusCode, message: str, *, bad: bool = False) -> None:
        """Say why in one ``E`` frame, then close (answers already packed leave first)."""
        if self._ended:
            return
        self._write_answers()
        self._ended = True
        message = one_line(message, 1024)
        if bad:
            limited_log.warning("kv-wire-bad", "closing a KV wire connection from %s: %s", self._peer(), message)
        t = self.transport
        if t is not None:
            t.write(kf.frame(kf.END, kv_pb2.WireEnd(code=code.value[0], message=message).SerializeToString()))
            t.close()
        self._close_session()

    async def _drain_then_close(self, session: StreamSession) -> None:
        try:
            await session.drain()
        finally:
            self._write_answers()
            if self.transport is not None and not self._ended:
                self._ended = True
                self.transport.close()

    def _close_session(self) -> None:
        if self.entry is not None and self.checker is not None:
            self.checker.close_stream(self.entry)
            self.entry = None
        if self.session is not None:
            self.session.close()
            self.session = None
            self.kv.stats.streams_open -= 1

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class KvWireListener:
    """The listening socket and its connections; :meth:`close` ends them all."""

    def __init__(self, server: asyncio.Server, live: set[KvWireConn]) -> None:
        self.server = server
        self.live = live

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.server.close()
        for conn in list(self.live):
            conn.end(grpc.StatusCode.UNAVAILABLE, "the node is stopping")
        self.live.clear()


async def serve(
    host: str,
    port: int,
    kv: KVService,
    *,
    ssl_context: ssl.SSLContext | None = None,
    checker: AuthInterceptor | None = None,
) -> KvWireListener:
    """Listen for KV wire connections on ``host:port`` (port 0: any free port); with
    ``ssl_context`` (TlsConfig.server_ssl_context) every connection is mutual TLS; with
    ``checker`` (the node's AuthInterceptor, --auth) every hello is checked."""
    loop = asyncio.get_running_loop()
    live: set[KvWireConn] = set()
    server = await loop.create_server(
        lambda: KvWireConn(kv, checker, live), host, port, reuse_address=True,
        ssl=ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if ssl_context is not None else None,
    )
    return KvWireListener(server, live)
