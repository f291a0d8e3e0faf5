"""Raft batches between stores over plain TCP: the framing, the receiving protocol, the dialer.

Why not gRPC for this one path (docs/decisions.md D23): a Python grpc.aio stream costs about
40 µs of CPU per message on each side and a round trip of about 80 µs on the 2-core machine;
a length-prefixed frame on a uvloop socket costs a few µs and round-trips in about 10 µs.
Raft traffic between nodes is the one path where every client write pays that price twice
(append out, acknowledgement back), so it moves off gRPC; clients, placement, snapshots and
the routers' own group keep gRPC.

The bytes are the same as on the gRPC ``Stream``: each frame is a 4-byte big-endian length
then a serialized ``RaftBatch`` (sender to receiver) or ``RaftBatchAck`` (back). The sender
finds the listener by asking the store's gRPC server (``RaftTransport.PeerEndpoint``) unless
it was told where to dial (a fault-injecting proxy in the nemesis); every batch names the
store it is for, and a receiver with another id closes the connection, as the gRPC stream
refuses it.

Delivery is as on gRPC: in order while a connection lives, best effort across reconnects
(see :mod:`node.transport`).

With TLS (docs/security.md) both ends wrap the socket in asyncio's TLS with the cluster's
contexts (:class:`common.tls.TlsConfig`): the listener demands a certificate the cluster CA
signed, and takes batches only from a *member* (a node or router, not a client certificate);
the dialer verifies the listener's certificate and host name. Without TLS nothing here
changes: the choice is made once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from typing import Protocol, cast

from google.protobuf.message import DecodeError

from common import trace
from common.log_limit import LogLimiter
from common.sockets import no_delay
from common.tls import HANDSHAKE_TIMEOUT_S, identity_from_peercert
from node.raft import MessageType
from tesserapb import raft_pb2

log = logging.getLogger("tessera.transport")
# Anyone who can reach the batch port can make this side close a connection, as often as they
# like: what that logs is rate-limited (docs/hostile-input.md).
limited_log = LogLimiter(log)

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 << 20
CONGESTED_BYTES = 1 << 20  # unsent bytes past which a sender waits for the socket to drain
ACK_EVERY = 16  # the receiver acks batch 1 and every 16th: see node.transport.ACK_EVERY


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class FrameError(ConnectionError):
    """The peer sent a frame this side cannot take (too large): the connection is closed."""


class Receiving(Protocol):
    """What the receiving protocol needs of the transport service (its counters and handler)."""

    store_id: int
    batches_received: int
    msgs_received: int
    streams_refused: int

    def on_messages(self, from_store: int, msgs: list[raft_pb2.RaftMessage]) -> None: ...


class BatchReceiver(asyncio.Protocol):
    """One accepted connection: frames in, each batch handed to the store in order, acks out.

    Everything happens in ``data_received`` on the event loop, with no task per batch: a
    batch is parsed, stepped and (every ACK_EVERY-th) acknowledged before the next is read.
    """

    def __init__(self, service: Receiving, live: set[BatchReceiver]) -> None:
        self.service = service
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if transport.get_extra_info("ssl_object") is not None:
            # The handshake verified the certificate against the CA; a client's certificate
            # (also signed by it) must not speak Raft.
            who = identity_from_peercert(transport.get_extra_info("peercert"))
            if who is None or not who.is_member:
                self.service.streams_refused += 1
                log.warning("refused a Raft peer connection from %s: its certificate is %s, not a member's",
                            transport.get_extra_info("peername"), who or "without a tessera identity")
                cast(asyncio.Transport, transport).abort()
                return
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._live.add(self)
        no_delay(transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        svc = self.service
        try:
            while end - pos >= 4:
                (n,) = HEADER.unpack_from(buf, pos)
                if n > MAX_FRAME_BYTES:
                    raise FrameError(f"frame of {n} bytes is over the {MAX_FRAME_BYTES} limit")
                if end - pos - 4 < n:
                    break
                try:
                    batch = raft_pb2.RaftBatch.FromString(bytes(buf[pos + 4 : pos + 4 + n]))
                except DecodeError:
                    raise FrameError(f"a frame of {n} bytes is not a RaftBatch") from None
                pos += 4 + n
                if batch.to_store != svc.store_id:
                    svc.streams_refused += 1
                    raise FrameError(
                        f"this is store {svc.store_id}, not store {batch.to_store} (address reused?)"
                    )
                msgs = list(batch.msgs)
                if trace.ON:
                    trace.mark("raft.ack" if any(m.type == MessageType.APP_RESP for m in msgs) else "raft.in")
                svc.on_messages(batch.from_store, msgs)
                svc.batches_received += 1
                svc.msgs_received += len(msgs)
                seq = batch.seq
                if (seq % ACK_EVERY == 0 or seq == 1) and self.transport is not None:
                    self.transport.write(frame(raft_pb2.RaftBatchAck(seq=seq).SerializeToString()))
        except Exception as exc:
            if not isinstance(exc, FrameError):
                limited_log.error("batch-failed", "handling a Raft batch failed", exc_info=True)
            else:
                limited_log.warning("bad-frame", "closing a Raft peer connection from %s: %s", self._peer(), exc)
            del buf[:]
            if self.transport is not None:
                self.transport.abort()
            return
        del buf[:pos]

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._live.discard(self)


class BatchListener:
    """The listening socket and the connections it accepted; :meth:`close` ends them all (a
    stopped store must stop stepping batches, not only stop accepting)."""

    def __init__(self, server: asyncio.Server, live: set[BatchReceiver]) -> None:
        self.server = server
        self._live = live

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.server.close()
        for r in list(self._live):
            if r.transport is not None:
                r.transport.abort()
        self._live.clear()


async def serve(host: str, port: int, service: Receiving, ssl_context: ssl.SSLContext | None = None) -> BatchListener:
    """Listen for peers' batch connections on ``host:port`` (port 0: any free port); with
    ``ssl_context`` (TlsConfig.server_ssl_context), mutual TLS on every connection."""
    loop = asyncio.get_running_loop()
    live: set[BatchReceiver] = set()
    if ssl_context is None:
        server = await loop.create_server(lambda: BatchReceiver(service, live), host, port, reuse_address=True)
    else:
        server = await loop.create_server(
            lambda: BatchReceiver(service, live), host, port, reuse_address=True,
            ssl=ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
    return BatchListener(server, live)


class TcpConn:
    """The sending side of one connection: write framed batches, read acks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, address: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> TcpConn:
        """Dial ``address``; with ``ssl_context`` (TlsConfig.client_ssl_context) over mutual TLS,
        the listener's certificate checked against the CA and the host dialled."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            if ssl_context is None:
                opening = asyncio.open_connection(host, int(port), limit=1 << 20)
            else:
                opening = asyncio.open_connection(
                    host, int(port), limit=1 << 20, ssl=ssl_context, server_hostname=host,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
            reader, writer = await asyncio.wait_for(opening, timeout)
        except TimeoutError:
            raise ConnectionError(f"connect to {address} timed out after {timeout:.1f} s") from None
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
        no_delay(writer.transport)
        return cls(reader, writer)

    def write_nowait(self, payload: bytes) -> None:
        # One write, one send(2): the copy of a batch costs less than a second system call.
        self._writer.write(HEADER.pack(len(payload)) + payload)

    def closed(self) -> bool:
        """The connection is closing or gone (its session has not necessarily noticed yet)."""
        return bool(self._writer.transport.is_closing())

    def congested(self) -> bool:
        """The kernel stopped taking bytes (the peer reads slowly): wait before writing more."""
        return bool(self._writer.transport.get_write_buffer_size() > CONGESTED_BYTES)

    async def write(self, payload: bytes) -> None:
        self.write_nowait(payload)
        # Wait only when the peer is slow: the common case costs no await at all.
        if self.congested():
            await self._writer.drain()

    async def read_ack(self) -> raft_pb2.RaftBatchAck | None:
        """The next ack, or None when the peer closed the connection."""
        try:
            head = await self._reader.readexactly(4)
            (n,) = HEADER.unpack(head)
            if n > MAX_FRAME_BYTES:
                raise FrameError(f"ack frame of {n} bytes")
            return raft_pb2.RaftBatchAck.FromString(await self._reader.readexactly(n))
        except asyncio.IncompleteReadError:
            return None

    async def close(self) -> None:
        self._writer.transport.abort()
