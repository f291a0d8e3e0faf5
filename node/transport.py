"""Node-to-node Raft transport: every partition's Raft traffic between two stores on one stream.

Why it looks like this (docs/architecture.md, "Where the speed comes from"): a Python gRPC process pays
far more per call than per byte, so messages for *all* partitions bound for one peer store are
queued and sent as one ``RaftBatch`` per write on one long-lived bidirectional ``Stream``.
Batching is not timer-driven: :meth:`RaftTransport.send` only appends and wakes the peer's
sender task, and the sender drains whatever accumulated while the previous write was in
flight, so a burst of sends (one Raft round over many groups) becomes one gRPC message.

Delivery contract (the same as etcd/TiKV raft transports): *best effort, in order per peer
while a stream lives*.  Raft tolerates loss and reordering, so on any stream failure the
transport reports the peer through ``on_unreachable`` (the replica falls back to probing, see
``RawNode.report_unreachable``), drops everything queued for it, and while it backs off before
reconnecting (20 ms doubling to 1 s, jittered) drops new sends too rather than queue stale
appends.  (Across a reconnect, a late batch of the dead stream could in principle be handled
after the new stream's first one: order holds per stream, not forever.)  Raft's own
retransmission (heartbeats, probes, retried votes) recovers.  A peer that stops
acknowledging holds at most ``max_inflight`` batches; beyond that, sends queue (up to
``max_queue`` messages, oldest dropped first and counted).  Acks are cumulative and sparse
(see ACK_EVERY).

Batches are framed by hand: each ``RaftMessage`` is serialized once and the ``RaftBatch``
bytes are the header fields plus ``0x12 <len> <msg>`` per message (the proto encoding of the
repeated field), sent with an identity serializer.  That avoids the deep copy protobuf makes
when messages are added to a repeated field and gives exact sizes for ``max_batch_bytes``.

Snapshots go through ``SendSnapshot`` on a separate short-lived channel (node.snapshot_stream).

Micro-benchmark (two stores in one process, one event loop, 128 B entries)::

    .venv/bin/python -m node.transport [--seconds 3] [--burst 256] [--outstanding 4096] [--codec]
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import TypeAlias, TypedDict

import grpc

from common import tls as tls_mod
from common.backoff import BackoffPolicy
from common.descriptor import Descriptor
from common.log_limit import LogLimiter
from node import snapshot_stream, tcp_transport
from node.admission import Admission
from node.fs import OS_FILES, Files
from tesserapb import raft_pb2, raft_pb2_grpc

__all__ = [
    "ACK_EVERY",
    "CHANNEL_OPTIONS",
    "SERVER_OPTIONS",
    "RaftTransport",
    "RaftTransportService",
    "register",
]

log = logging.getLogger(__name__)
limited_log = LogLimiter(log)  # what any caller can trigger at will (docs/hostile-input.md)


class PeerStatus(TypedDict):
    """One peer's side of :meth:`RaftTransport.peer_status`."""

    address: str | None
    queued: int
    inflight: int
    backing_off: bool
    last_error: str | None

MAX_MESSAGE_BYTES = 64 << 20

RECONNECT_BACKOFF = BackoffPolicy(initial_s=0.02, max_s=1.0, multiplier=2.0, jitter=0.5)
"""The pause before reconnecting to a peer whose stream failed: 20 ms doubling to 1 s over the
failures since the peer last acknowledged a batch, each jittered down by up to half."""

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A dead peer (power loss, partition: no RST ever arrives) is noticed within ~15 s even on
    # an idle stream.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Every (re)connect makes a fresh channel; with the default *global* subchannel pool it
    # would inherit the old subchannel and its exponential reconnect backoff (up to 120 s),
    # defeating our own 1 s cap.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.enable_retries", 0),
]
"""Options for channels to peer stores (also right for any node-to-node channel)."""

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Accept the peers' 10 s keepalive pings (the default minimum is 5 minutes, and a client
    # pinging faster than that gets a GOAWAY "too_many_pings").
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # gRPC sets SO_REUSEPORT by default: a second store started on a busy port would then
    # *share* it and receive half the connections. Fail the bind instead.
    ("grpc.so_reuseport", 0),
]
"""Options for the node's gRPC server (pass to ``grpc.aio.server(options=...)``)."""

STREAM_METHOD = "/tessera.v1.RaftTransport/Stream"
ENDPOINT_METHOD = "/tessera.v1.RaftTransport/PeerEndpoint"

ACK_EVERY = tcp_transport.ACK_EVERY
"""The receiver acknowledges batch 1 and every ACK_EVERY-th batch (acks are cumulative).

An ack per batch costs a gRPC write on the receiver and a read on the sender, a quarter of
the per-batch gRPC work; acking every 16th raised in-process throughput at 64-message bursts
from ~150k to ~235k msgs/s.  Acks only bound memory, so coarser is fine as long as a sender's
window holds at least ACK_EVERY batches (any ACK_EVERY consecutive batches contain an acked
one, so a full window always drains).  Batch 1 is acked so a fresh stream proves itself.
"""

_TAG_MSGS = 0x12  # RaftBatch.msgs: field 2, wire type 2 (length-delimited)
# Prefixes for messages under 16 KiB, filled lazily (sizes repeat: heartbeats, equal appends);
# a list lookup is several times cheaper than building the varint each time.
_PREFIXES: list[bytes | None] = [bytes((_TAG_MSGS, n)) for n in range(0x80)] + [None] * (0x4000 - 0x80)


def _prefix(n: int) -> bytes:
    """The tag and varint length that precede one serialized message in a RaftBatch."""
    if n < 0x4000:
        p = _PREFIXES[n]
        if p is None:
            p = _PREFIXES[n] = bytes((_TAG_MSGS, (n & 0x7F) | 0x80, n >> 7))
        return p
    out = bytearray((_TAG_MSGS,))
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# A peer's Stream call: hand-framed RaftBatch bytes out, acks in.
_BatchCall: TypeAlias = "grpc.aio.StreamStreamCall[bytes, raft_pb2.RaftBatchAck]"


def _identity(b: bytes) -> bytes:
    return b


class _GrpcConn:
    """A peer's gRPC ``Stream`` call, seen as a connection (the TCP one is tcp_transport.TcpConn)."""

    def __init__(self, channel: grpc.aio.Channel, call: _BatchCall) -> None:
        self._channel = channel
        self._call = call

    async def write(self, payload: bytes) -> None:
        await self._call.write(payload)

    async def read_ack(self) -> raft_pb2.RaftBatchAck | None:
        ack = await self._call.read()
        # An ack, or grpc.aio.EOF once the peer ended the stream; grpc's stubs type EOF as
        # object, which swallows the union, so the check is by the ack's type.
        return ack if isinstance(ack, raft_pb2.RaftBatchAck) else None

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()


_Conn: TypeAlias = "_GrpcConn | tcp_transport.TcpConn"


def _dialable(endpoint: str, asked: str) -> str:
    """``endpoint`` as the asker can dial it: a wildcard host becomes the host it asked at."""
    host, _, port = endpoint.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = asked.rpartition(":")[0]
    return f"{host}:{port}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def wait_ready(channel: grpc.aio.Channel, timeout: float) -> None:
    """Connect ``channel`` or raise ``ConnectionError`` quickly.

    ``channel_ready()`` would keep retrying through refused connections until the timeout;
    a refused connection should be reported at once, and a black hole after ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError(f"connect failed ({state.name})")
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ConnectionError(f"connect timed out after {timeout:.1f} s")
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            raise ConnectionError(f"connect timed out after {timeout:.1f} s") from None
        state = channel.get_state(try_to_connect=True)


class _Peer:
    """Per-peer-store state; touched only on the event loop thread."""

    __slots__ = (
        "acked_seq",
        "address",
        "backing_off",
        "conn",
        "failures",
        "got_ack",
        "last_error",
        "queue",
        "sent_seq",
        "store_id",
        "task",
        "wake",
    )

    def __init__(self, store_id: int, max_queue: int) -> None:
        self.store_id = store_id
        self.queue: deque[raft_pb2.RaftMessage] = deque(maxlen=max_queue)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.backing_off = False
        self.sent_seq = 0
        self.acked_seq = 0
        self.got_ack = False
        self.address: str | None = None
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed streams (reset by an ack)
        # The live TCP connection, which RaftTransport.flush writes to without the sender task.
        self.conn: tcp_transport.TcpConn | None = None


class RaftTransport:
    """The sending side, one per node: a queue, a sender task and one stream per peer store.

    All methods must be called on the event loop thread.  ``send`` never blocks and never
    raises for network reasons; see the module docstring for the delivery contract.
    """

    def __init__(
        self,
        store_id: int,
        resolve: Callable[[int], str | None],
        *,
        on_unreachable: Callable[[int], None] | None = None,
        max_batch_bytes: int = 4 << 20,
        max_queue: int = 100_000,
        max_inflight: int = 128,
        connect_timeout: float = 3.0,
        backoff: BackoffPolicy = RECONNECT_BACKOFF,
        tcp_endpoint: Callable[[int], str | None] | None = None,
        tls: tls_mod.TlsConfig | None = None,
    ) -> None:
        """``tcp_endpoint``, when given, turns on plain-TCP batches (docs/decisions.md D23):
        it names where to dial a store's batch listener (a fault-injecting proxy), or returns
        None to ask the store at its gRPC address; without it every batch goes on gRPC.
        ``tls``: every connection (gRPC channels, the TCP wire) is mutual TLS with it
        (docs/security.md); None: plaintext."""
        if max_batch_bytes > MAX_MESSAGE_BYTES // 2:
            raise ValueError(f"max_batch_bytes must be at most {MAX_MESSAGE_BYTES // 2}")
        if max_inflight < ACK_EVERY:
            raise ValueError(f"max_inflight must be at least ACK_EVERY ({ACK_EVERY})")
        self.store_id = store_id
        self._resolve = resolve
        self._on_unreachable = on_unreachable
        self._max_batch_bytes = max_batch_bytes
        self._max_queue = max_queue
        self._window = max_inflight
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._tcp_endpoint = tcp_endpoint
        self._tls = tls
        self._tcp_ssl = tls.client_ssl_context if tls is not None else None
        self._flush_soon: asyncio.Handle | None = None  # the flush send scheduled for this loop turn
        self._peers: dict[int, _Peer] = {}
        self._snapshot_tasks: set[asyncio.Task[tuple[bool, str]]] = set()
        self._closed = False
        # Counters (monotonic; for tests and `tessera admin`).
        self.batches_sent = 0
        self.msgs_sent = 0
        self.msgs_dropped = 0  # never handed to gRPC (lost in-flight batches are not counted)
        self.reconnects = 0
        self.stream_failures = 0
        self.snapshots_sent = 0
        self.snapshots_failed = 0

    # -- sending --------------------------------------------------------------------

    def send(self, to_store: int, msgs: Sequence[raft_pb2.RaftMessage]) -> None:
        """Queue ``msgs`` for ``to_store`` (in order) and wake its sender. Non-blocking.

        The messages must not be mutated afterwards: they are serialized later, by the sender.
        """
        n = len(msgs)
        if not n:
            return
        if self._closed:
            self.msgs_dropped += n
            return
        peer = self._peers.get(to_store)
        if peer is None:
            peer = self._peers[to_store] = _Peer(to_store, self._max_queue)
            peer.task = asyncio.get_running_loop().create_task(
                self._run(peer), name=f"raft-transport {self.store_id}->{to_store}"
            )
        if peer.backing_off:
            self.msgs_dropped += n
            return
        q = peer.queue
        before = len(q)
        q.extend(msgs)  # a bounded deque drops from the left: the oldest go first
        over = before + n - len(q)
        if over:
            self.msgs_dropped += over
        if peer.conn is None:
            peer.wake.set()
        elif self._flush_soon is None:
            # Everything sent in this turn of the loop leaves as one frame per peer, written
            # from a callback rather than by waking the peer's sender task.
            self._flush_soon = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued for every peer with a live TCP connection now, one frame per
        peer (as the sender task would, without a task switch). A full window or a peer that
        stopped reading is left to the sender task, which waits for acks or the socket. The
        flush ``send`` scheduled is cancelled: what is sent after this leaves at the flush the
        next ``send`` schedules, after whatever was scheduled meanwhile (D29: a round that
        persists nothing flushes first, so its answers are written before its own traffic)."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        window = self._window
        for peer in self._peers.values():
            conn = peer.conn
            if conn is None or not peer.queue:
                continue
            if conn.closed() or peer.sent_seq - peer.acked_seq >= window or conn.congested():
                # A connection lost and not yet noticed by its session is the session's to end
                # (it drops the queue and reconnects): never raise into the caller, a Raft round.
                peer.wake.set()
                continue
            batches = self._drain(peer)
            for i, (payload, n) in enumerate(batches):
                try:
                    conn.write_nowait(payload)
                except (RuntimeError, OSError) as exc:  # closed under us: best effort, as a lost batch
                    self.msgs_dropped += sum(k for _, k in batches[i:])
                    log.debug("store %d -> %d: write on a closed connection: %s", self.store_id, peer.store_id, exc)
                    peer.wake.set()
                    break
                self.batches_sent += 1
                self.msgs_sent += n

    async def _run(self, peer: _Peer) -> None:
        """Connect when there is something to send; on failure report, drop, back off, retry."""
        opened = False
        while True:
            while not peer.queue:
                peer.wake.clear()
                await peer.wake.wait()
            if opened:
                self.reconnects += 1
            opened = True
            peer.got_ack = False
            try:
                await self._session(peer)
                err = "stream ended"  # not reached: a session only ends by raising
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = _describe(exc)
            self.stream_failures += 1
            if peer.got_ack:
                peer.failures = 0  # the peer was alive: retry soon
            peer.failures += 1
            peer.last_error = err
            dropped = len(peer.queue)
            peer.queue.clear()
            self.msgs_dropped += dropped
            level = logging.WARNING if peer.failures == 1 else logging.DEBUG
            log.log(level, "store %d -> %d (%s): stream failed: %s; dropped %d queued messages",
                    self.store_id, peer.store_id, peer.address, err, dropped)
            peer.backing_off = True
            try:
                self._report_unreachable(peer.store_id)
                await asyncio.sleep(self._backoff.delay(peer.failures - 1, random.random()))
            finally:
                peer.backing_off = False

    def _report_unreachable(self, store: int) -> None:
        if self._on_unreachable is None:
            return
        try:
            self._on_unreachable(store)
        except Exception:
            log.exception("on_unreachable(%d) failed", store)

    def _address(self, store: int) -> str:
        try:
            addr = self._resolve(store)
        except Exception as exc:
            raise ConnectionError(f"resolving store {store} failed: {exc!r}") from exc
        if not addr:
            raise ConnectionError(f"no address known for store {store}")
        return addr

    async def _session(self, peer: _Peer) -> None:
        """One connection's life: connect, then write batches until something fails (raises)."""
        peer.address = addr = self._address(peer.store_id)
        conn = await self._connect(peer.store_id, addr)
        reader: asyncio.Task[None] | None = None
        try:
            peer.sent_seq = peer.acked_seq = 0
            reader = asyncio.create_task(self._read_acks(peer, conn))
            if isinstance(conn, tcp_transport.TcpConn):
                peer.conn = conn
            q = peer.queue
            wake = peer.wake
            window = self._window
            while True:
                while not (q and peer.sent_seq - peer.acked_seq < window) and not reader.done():
                    wake.clear()
                    await wake.wait()
                if reader.done():
                    exc = reader.exception()
                    raise exc if exc is not None else ConnectionError("peer closed the stream")
                batches = self._drain(peer)
                for i, (payload, n) in enumerate(batches):
                    try:
                        await conn.write(payload)
                    except BaseException:
                        self.msgs_dropped += sum(k for _, k in batches[i:])
                        raise
                    self.batches_sent += 1
                    self.msgs_sent += n
        finally:
            peer.conn = None
            if reader is not None:
                reader.cancel()
                await asyncio.wait([reader])
            await conn.close()

    async def _connect(self, store: int, addr: str) -> _Conn:
        """A connection to ``store``: plain TCP where the store has a batch listener (asked at
        its gRPC address unless ``tcp_endpoint`` names one), else its gRPC ``Stream``."""
        if self._tcp_endpoint is not None:
            endpoint = self._tcp_endpoint(store)
            if endpoint:
                return await tcp_transport.TcpConn.open(endpoint, self._connect_timeout, self._tcp_ssl)
        channel = tls_mod.aio_channel(addr, self._tls, CHANNEL_OPTIONS)
        try:
            await wait_ready(channel, self._connect_timeout)
            if self._tcp_endpoint is not None:
                ask = channel.unary_unary(
                    ENDPOINT_METHOD,
                    request_serializer=raft_pb2.PeerEndpointRequest.SerializeToString,
                    response_deserializer=raft_pb2.PeerEndpointResponse.FromString,
                )
                try:
                    resp = await ask(raft_pb2.PeerEndpointRequest(to_store=store), timeout=self._connect_timeout)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    resp = raft_pb2.PeerEndpointResponse(store_id=store)  # an older peer: Stream only
                if resp.store_id != store:
                    raise ConnectionError(f"{addr} is store {resp.store_id}, not store {store} (address reused?)")
                if resp.address:
                    await channel.close()
                    return await tcp_transport.TcpConn.open(
                        _dialable(resp.address, addr), self._connect_timeout, self._tcp_ssl
                    )
            call = channel.stream_stream(
                STREAM_METHOD,
                request_serializer=_identity,
                response_deserializer=raft_pb2.RaftBatchAck.FromString,
            )()
        except BaseException:
            await channel.close()
            raise
        return _GrpcConn(channel, call)

    async def _read_acks(self, peer: _Peer, conn: _Conn) -> None:
        try:
            while True:
                ack = await conn.read_ack()
                if ack is None:
                    return
                peer.acked_seq = ack.seq
                peer.got_ack = True
                peer.wake.set()
        finally:
            peer.wake.set()  # let the sender see that the stream is over

    def _drain(self, peer: _Peer) -> list[tuple[bytes, int]]:
        """Everything queued, as encoded RaftBatch payloads of at most max_batch_bytes each.

        A single message larger than the limit travels alone. Splitting happens only here, so
        a huge queue may briefly overshoot the in-flight window by a few batches.
        """
        msgs = list(peer.queue)
        peer.queue.clear()
        limit = self._max_batch_bytes
        out: list[tuple[bytes, int]] = []
        parts: list[bytes] = [b""]  # [0] becomes the header
        size = 0
        for m in msgs:
            s = m.SerializeToString()
            n = len(s)
            if size + n > limit and len(parts) > 1:
                out.append(self._seal(peer, parts))
                parts = [b""]
                size = 0
            parts.append(_prefix(n))
            parts.append(s)
            size += n + 6
        out.append(self._seal(peer, parts))
        return out

    def _seal(self, peer: _Peer, parts: list[bytes]) -> tuple[bytes, int]:
        peer.sent_seq += 1
        parts[0] = raft_pb2.RaftBatch(
            from_store=self.store_id, to_store=peer.store_id, seq=peer.sent_seq
        ).SerializeToString()
        return b"".join(parts), (len(parts) - 1) // 2

    # -- snapshots ------------------------------------------------------------------

    async def send_snapshot(
        self,
        to_store: int,
        first: raft_pb2.RaftMessage,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        timeout: float = 60,
        descriptor: Descriptor | None = None,
    ) -> tuple[bool, str]:
        """Stream a snapshot image to ``to_store``; returns the receiver's (accepted, reason).

        ``first`` is the SNAP message (snapshot metadata included).  Network failures and
        timeouts return ``(False, reason)``; :meth:`close` aborts a transfer in progress.
        """
        if self._closed:
            return False, "transport closed"
        try:
            addr = self._address(to_store)
        except ConnectionError as exc:
            self.snapshots_failed += 1
            return False, str(exc)
        # The transfer runs in a task of our own so close() can abort it even while it waits
        # on the caller's producer (not on gRPC); cancelling the caller cancels it too.
        inner = asyncio.get_running_loop().create_task(
            self._transfer(addr, to_store, first, chunks, timeout, descriptor),
            name=f"raft-snapshot {self.store_id}->{to_store}",
        )
        self._snapshot_tasks.add(inner)
        try:
            ok, reason = await inner
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller itself was cancelled
            ok, reason = False, "aborted: transport closed"
        finally:
            self._snapshot_tasks.discard(inner)
        if ok:
            self.snapshots_sent += 1
        else:
            self.snapshots_failed += 1
        return ok, reason

    async def _transfer(
        self,
        addr: str,
        to_store: int,
        first: raft_pb2.RaftMessage,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        timeout: float,
        descriptor: Descriptor | None,
    ) -> tuple[bool, str]:
        channel = tls_mod.aio_channel(addr, self._tls, CHANNEL_OPTIONS)
        try:
            return await snapshot_stream.send_snapshot(
                channel, self.store_id, to_store, first, chunks, timeout=timeout, descriptor=descriptor
            )
        finally:
            await channel.close()

    # -- lifecycle and introspection ------------------------------------------------

    async def close(self) -> None:
        """Cancel every sender, abort snapshot transfers, close every channel; idempotent."""
        self._closed = True
        tasks: list[asyncio.Task[None] | asyncio.Task[tuple[bool, str]]] = [
            p.task for p in self._peers.values() if p.task is not None
        ]
        tasks.extend(self._snapshot_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for p in self._peers.values():
            self.msgs_dropped += len(p.queue)
            p.queue.clear()

    async def remove_peer(self, to_store: int) -> None:
        """Forget a store that left the cluster: stop its sender and close its stream."""
        peer = self._peers.pop(to_store, None)
        if peer is None or peer.task is None:
            return
        peer.task.cancel()
        await asyncio.gather(peer.task, return_exceptions=True)
        self.msgs_dropped += len(peer.queue)
        peer.queue.clear()

    def stats(self) -> dict[str, int]:
        return {
            "batches_sent": self.batches_sent,
            "msgs_sent": self.msgs_sent,
            "msgs_dropped": self.msgs_dropped,
            "reconnects": self.reconnects,
            "stream_failures": self.stream_failures,
            "snapshots_sent": self.snapshots_sent,
            "snapshots_failed": self.snapshots_failed,
        }

    def peer_status(self) -> dict[int, PeerStatus]:
        """Per peer: address, queued messages, unacked batches, backing off, last error."""
        return {
            s: {
                "address": p.address,
                "queued": len(p.queue),
                "inflight": p.sent_seq - p.acked_seq,
                "backing_off": p.backing_off,
                "last_error": p.last_error,
            }
            for s, p in self._peers.items()
        }


OnMessages = Callable[[int, list[raft_pb2.RaftMessage]], None]


class RaftTransportService(raft_pb2_grpc.RaftTransportServicer):
    """The receiving side: hands each batch to the store, in order, and acknowledges it.

    ``on_messages(from_store, msgs)`` runs synchronously on the event loop for each batch, so
    it must not block; it should drop (not raise on) messages it cannot use. If it raises,
    the stream is aborted with INTERNAL and the sender reconnects.

    ``on_snapshot(first_message, path, descriptor)`` is awaited with a verified image; the file is deleted
    when it returns (see node.snapshot_stream). ``snapshot_refusal(first_message)``, when given, is
    asked at the first chunk: a reason refuses the image before any of it is spooled. Images are
    spooled through ``files``, the node's file system (node.fs).
    """

    def __init__(
        self,
        store_id: int,
        on_messages: OnMessages,
        on_snapshot: snapshot_stream.SnapshotInstaller,
        snapshot_dir: str,
        files: Files = OS_FILES,
        snapshot_refusal: snapshot_stream.SnapshotRefusal | None = None,
    ) -> None:
        self.store_id = store_id
        self._snapshot_refusal = snapshot_refusal
        self.on_messages = on_messages
        self.tcp_address = ""  # where tcp_transport.serve listens for batches ("": Stream only)
        self._on_snapshot = on_snapshot
        self.snapshot_dir = snapshot_dir
        self.admission: Admission | None = None  # bounds the snapshots received at once (node.admission)
        self.files = files
        files.makedirs(snapshot_dir)
        for name in files.list_dir(snapshot_dir):  # scratch left by a crash mid-transfer
            if name.startswith("snap-") and name.endswith(".part"):
                try:
                    files.unlink(os.path.join(snapshot_dir, name))
                except OSError:
                    pass
        self.batches_received = 0
        self.msgs_received = 0
        self.streams_refused = 0
        self.snapshots_received = 0
        self.snapshots_refused = 0

    async def Stream(
        self,
        request_iterator: AsyncIterator[raft_pb2.RaftBatch],
        context: grpc.aio.ServicerContext[raft_pb2.RaftBatch, raft_pb2.RaftBatchAck],
    ) -> AsyncIterator[raft_pb2.RaftBatchAck]:
        store_id = self.store_id
        on_messages = self.on_messages
        new_ack = raft_pb2.RaftBatchAck
        async for batch in request_iterator:
            if batch.to_store != store_id:
                self.streams_refused += 1
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"this is store {store_id}, not store {batch.to_store} (address reused?)",
                )
            msgs = list(batch.msgs)
            try:
                on_messages(batch.from_store, msgs)
            except Exception:
                limited_log.error("on-messages-failed", "on_messages from store %d failed", batch.from_store,
                                  exc_info=True)
                await context.abort(grpc.StatusCode.INTERNAL, "receiver failed to handle a batch")
            self.batches_received += 1
            self.msgs_received += len(msgs)
            seq = batch.seq
            if seq % ACK_EVERY == 0 or seq == 1:
                yield new_ack(seq=seq)

    async def PeerEndpoint(
        self, request: raft_pb2.PeerEndpointRequest, context: grpc.aio.ServicerContext
    ) -> raft_pb2.PeerEndpointResponse:
        return raft_pb2.PeerEndpointResponse(store_id=self.store_id, address=self.tcp_address)

    async def SendSnapshot(
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext[raft_pb2.SnapshotChunk, raft_pb2.SnapshotAck],
    ) -> raft_pb2.SnapshotAck:
        adm = self.admission
        if adm is not None and not adm.admit_snapshot_in():
            self.snapshots_refused += 1
            return raft_pb2.SnapshotAck(accepted=False, reason="too many snapshots arriving at once; send it later")
        try:
            ack = await snapshot_stream.receive_snapshot(
                self.store_id, request_iterator, context, self.snapshot_dir, self._on_snapshot, self.files,
                self._snapshot_refusal,
            )
        finally:
            if adm is not None:
                adm.snapshot_in_done()
        if ack.accepted:
            self.snapshots_received += 1
        else:
            self.snapshots_refused += 1
            limited_log.warning("snapshot-refused", "snapshot refused: %s", ack.reason)
        return ack


def register(server: grpc.aio.Server, service: RaftTransportService) -> None:
    raft_pb2_grpc.add_RaftTransportServicer_to_server(service, server)


# -- micro-benchmark ---------------------------------------------------------------------


async def _bench(
    seconds: float,
    burst: int,
    partitions: int,
    entry_bytes: int,
    outstanding: int = 4096,
    codec: bool = False,
    tcp: bool = False,
    tls: tls_mod.TlsConfig | None = None,
) -> dict[str, float]:
    from node.raft import Entry, Message, MessageType
    from node.raft_codec import message_from_pb, message_to_pb

    received = 0

    def on_messages(_from: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        nonlocal received
        if codec:
            for pb in msgs:
                message_from_pb(pb)
        received += len(msgs)

    async def on_snapshot(_m: raft_pb2.RaftMessage, _p: str, _d: object) -> tuple[bool, str]:
        return False, "no"

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        service = RaftTransportService(2, on_messages, on_snapshot, tmp)
        register(server, service)
        port = tls_mod.add_port(server, "127.0.0.1:0", tls)
        listener = None
        if tcp:
            listener = await tcp_transport.serve(
                "127.0.0.1", 0, service, tls.server_ssl_context if tls is not None else None
            )
            service.tcp_address = f"127.0.0.1:{listener.port}"
        await server.start()
        tr = RaftTransport(1, lambda s: f"127.0.0.1:{port}", tcp_endpoint=(lambda s: None) if tcp else None, tls=tls)
        data = b"x" * entry_bytes
        core = [
            Message(MessageType.APP, 1, 2, term=3, log_term=3, index=i, commit=i, entries=(Entry(3, i + 1, data),))
            for i in range(burst)
        ]
        pbs = [message_to_pb(1 + i % partitions, (1, 1), m) for i, m in enumerate(core)]
        loop = asyncio.get_running_loop()
        sent = 0
        start = loop.time()
        end = start + seconds
        while loop.time() < end:
            # Bound what is outstanding so the number measures throughput, not queueing.
            if sent - received < outstanding:
                if codec:
                    pbs = [message_to_pb(1 + i % partitions, (1, 1), m) for i, m in enumerate(core)]
                tr.send(2, pbs)
                sent += burst
            await asyncio.sleep(0)
        deadline = loop.time() + 5
        while received < sent - tr.msgs_dropped and loop.time() < deadline:
            await asyncio.sleep(0.001)
        elapsed = loop.time() - start
        stats = tr.stats()
        await tr.close()
        if listener is not None:
            listener.close()
        await server.stop(None)
    return {
        "msgs_per_s": received / elapsed,
        "msgs": received,
        "batches": stats["batches_sent"],
        "msgs_per_batch": stats["msgs_sent"] / max(1, stats["batches_sent"]),
        "dropped": stats["msgs_dropped"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="RaftTransport throughput between two in-process stores")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--burst", type=int, default=256, help="messages per send() call")
    p.add_argument("--partitions", type=int, default=64)
    p.add_argument("--entry-bytes", type=int, default=128)
    p.add_argument("--outstanding", type=int, default=4096, help="max messages sent but not yet received")
    p.add_argument("--codec", action="store_true",
                   help="also encode (message_to_pb) and decode (message_from_pb) every message")
    p.add_argument("--tcp", action="store_true", help="batches over plain TCP (tcp_transport), not the gRPC stream")
    a = p.parse_args(argv)
    r = asyncio.run(_bench(a.seconds, a.burst, a.partitions, a.entry_bytes, a.outstanding, a.codec, a.tcp))
    print(
        f"{r['msgs_per_s']:,.0f} msgs/s  ({r['msgs']:,} msgs in {r['batches']:,} batches, "
        f"{r['msgs_per_batch']:.0f} msgs/batch, {r['dropped']} dropped; "
        f"{a.entry_bytes} B entries, burst {a.burst}{', with codec' if a.codec else ''}"
        f"{', tcp' if a.tcp else ', grpc'})"
    )


if __name__ == "__main__":
    main()
