"""The client's side of the KV wire (docs/kv-wire.md, D28): KV.Stream's tagged requests on a
TCP (or TLS) connection of the node's, without gRPC's per-message cost.

A :class:`NodeWire` asks the node where its wire listens (``KV.WireEndpoint``, on the gRPC
channel the client already has), connects to that port on the host it dials the node at,
says hello (version, bearer token) and sends requests at once, without waiting for an
answer to the hello: a refusal comes as the ``E`` frame that ends the connection, and fails
whatever was sent. Requests queued in one loop turn leave in one frame (several past
PACK_BYTES). A node without a wire (an older node, one run with ``--kv-wire-listen none``,
the router's KV proxy) is served over KV.Stream instead (:class:`NodeStream`) for as long
as this client lives; one whose wire port cannot be reached, for WIRE_RETRY_S, then the
wire is tried again. A lost connection fails what was in flight with a retryable
UNAVAILABLE, as a broken stream does; the next request connects again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import grpc
from google.protobuf.message import DecodeError, Message

from common.sockets import keep_alive, no_delay
from common.tls import HANDSHAKE_TIMEOUT_S
from common.trace import mark
from common.wire import kv_frames as kf
from router.client.channels import ChannelPool
from router.client.errors import ClientClosedError, RpcFailure, failure_from_rpc_error, status_code
from router.client.stream import NodeStream, Tagged
from tesserapb import kv_pb2, kv_pb2_grpc

log = logging.getLogger("tessera.client.wire")

WIRE_RETRY_S = 30.0  # a wire port that could not be reached is tried again after this


class _Connection(asyncio.Protocol):
    def __init__(self, owner: NodeWire) -> None:
        self.owner = owner
        self.frames = kf.FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        no_delay(transport)
        keep_alive(transport)

    def data_received(self, data: bytes) -> None:
        mark("client.read")
        owner = self.owner
        try:
            for kind, payload in self.frames.feed(data):
                if kind == kf.ANSWER:
                    owner._answered(kv_pb2.StreamResponse.FromString(payload))
                elif kind == kf.END:
                    end = kv_pb2.WireEnd.FromString(payload)
                    code = status_code(end.code)
                    if code == grpc.StatusCode.OK:
                        code = grpc.StatusCode.UNAVAILABLE
                    self._lost(RpcFailure(code, end.message or "the node ended the connection",
                                          address=owner.address, source="stream"))
                    return
                else:
                    raise DecodeError(f"a frame of unknown kind {kind}")
        except (DecodeError, kf.FrameTooLarge) as exc:
            self._lost(RpcFailure(grpc.StatusCode.UNAVAILABLE, f"the node's KV wire sent garbage: {exc}",
                                  address=owner.address, source="stream"))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else ""
        self._lost(RpcFailure(grpc.StatusCode.UNAVAILABLE, f"KV wire connection closed{why}",
                              address=self.owner.address, source="stream"))

    def _lost(self, failure: BaseException) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            t.abort()
        self.owner._lost(self, failure)

    def write(self, batch: kv_pb2.StreamRequest) -> None:
        if self.transport is not None:
            mark("client.write")
            self.transport.write(kf.frame(kf.REQUEST, batch.SerializeToString()))


class NodeWire(Tagged):
    """One node's KV wire connection (or, if it has none, its KV.Stream)."""

    def __init__(self, address: str, pool: ChannelPool) -> None:
        super().__init__(address)
        self._pool = pool
        self._conn: _Connection | None = None
        self._opening: asyncio.Future[None] | None = None
        self._fallback: NodeStream | None = None
        self._wire_again_at: float | None = None  # with a fallback: when to try the wire again (None: never)
        self._flush_due = False

    async def send(self, kind: str, request: Message, timeout: float) -> Message:
        if self._conn is None:
            if self._closed:
                raise ClientClosedError("client closed")
            if self._fallback is None or self._wire_due():
                await self._connect(timeout)
        if self._conn is None and self._fallback is not None:
            return await self._fallback.send(kind, request, timeout)
        return await super().send(kind, request, timeout)

    def _wire_due(self) -> bool:
        again = self._wire_again_at
        if again is None or asyncio.get_running_loop().time() < again:
            return False
        self._wire_again_at = None
        return True

    @property
    def uses_wire(self) -> bool:
        """Whether requests go over the wire (False: over KV.Stream, or not known yet)."""
        return self._conn is not None

    def _ensure_open(self) -> None:
        if self._conn is None:  # lost between the connect and this request
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "KV wire connection closed", address=self.address,
                             source="stream")

    def _kick(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        conn = self._conn
        if conn is None:
            return
        for batch in self._batches():
            conn.write(batch)

    async def _connect(self, timeout: float) -> None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open(timeout))
        opening = self._opening
        try:
            await asyncio.wait_for(asyncio.shield(opening), timeout)
        except TimeoutError:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, f"connecting to the KV wire took over {timeout:.3f}s",
                             address=self.address, source="stream") from None
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self, timeout: float) -> None:
        stub = kv_pb2_grpc.KVStub(self._pool.get(self.address))
        try:
            where = await stub.WireEndpoint(kv_pb2.WireEndpointRequest(), timeout=max(timeout, 1.0),
                                            metadata=self._pool.metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._use_stream("it does not offer one")
                return
            raise failure_from_rpc_error(exc, self.address, source="stream") from None
        if not where.address:
            self._use_stream("it has none")
            return
        host = self.address.rpartition(":")[0]
        port = where.address.rpartition(":")[2]
        tls = self._pool.tls
        ctx: ssl.SSLContext | None = tls.client_ssl_context if tls is not None else None
        loop = asyncio.get_running_loop()
        try:
            if ctx is None:
                _, conn = await loop.create_connection(lambda: _Connection(self), host.strip("[]"), int(port))
            else:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), host.strip("[]"), int(port), ssl=ctx,
                    server_hostname=host.strip("[]"), ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
        except (OSError, ValueError) as exc:
            # The gRPC port answered and the wire's did not: a firewall between (the stream
            # still works), or the node died just now (the stream fails too, and is retried
            # elsewhere). Try the wire again a little later either way.
            self._use_stream(f"its wire at {host}:{port} cannot be reached ({exc})", WIRE_RETRY_S)
            return
        if self._closed:
            conn._lost(ClientClosedError("client closed"))
            return
        hello = kv_pb2.WireHello(version=kf.VERSION, token=self._pool.token or "")
        assert conn.transport is not None
        conn.transport.write(kf.frame(kf.HELLO, hello.SerializeToString()))
        self._conn = conn

    def _use_stream(self, why: str, for_s: float | None = None) -> None:
        """KV.Stream instead of the wire: for good (the node has none), or for ``for_s``."""
        log.info("%s: KV.Stream instead of the KV wire%s: %s", self.address,
                 f" for {for_s:g} s" if for_s is not None else "", why)
        if self._fallback is None:
            self._fallback = NodeStream(self.address, self._pool.get(self.address), self._pool.metadata)
        self._wire_again_at = asyncio.get_running_loop().time() + for_s if for_s is not None else None

    def _lost(self, conn: _Connection, failure: BaseException) -> None:
        if self._conn is conn:
            self._conn = None
            self._fail_all(failure)

    async def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None:
            conn._lost(ClientClosedError("client closed"))
        if self._opening is not None:
            self._opening.cancel()
        if self._fallback is not None:
            await self._fallback.close()
