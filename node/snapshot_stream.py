"""Snapshot images over ``RaftTransport.SendSnapshot``: the sending and the receiving half.

A snapshot image can be far larger than any sane gRPC message, so it travels as a
client stream of ``SnapshotChunk``s on its own short-lived channel (its own TCP connection:
a multi-megabyte image must not queue behind, or in front of, the heartbeats on the
long-lived Raft stream).

Framing (raft.proto's SnapshotChunk):

* the first chunk carries the SNAP ``RaftMessage`` (and may carry data);
* data chunks follow in order;
* the **last** chunk has ``last = true`` and carries ``total_size`` and ``crc32c`` of all the
  data (it may be the first chunk too, for an empty image).

The sender computes the CRC32C incrementally while it streams, so an image produced on the fly
(an LMDB cursor) never has to be read twice or spooled to know its checksum up front.  The
``last`` marker is not redundant: a grpc.aio server sees a client stream that was *cancelled*
mid-transfer as a clean end of stream (verified with grpcio 1.85), so without it a transfer cut
off right after the first chunk would look like a valid empty image.  Anything after the last
chunk, or a stream without one, is refused.

The store the sender means to reach travels in the call metadata (``x-tessera-to-store``),
since ``SnapshotChunk`` has no such field: a receiver with another id refuses, like ``Stream``
does for batches.

The receiver spools the image to a temporary file under ``snapshot_dir`` (never into memory),
verifies size and checksum, then hands ``(first message, path)`` to the installer and deletes
the file once the installer returns: the installer must have consumed (or hard-linked) the file
by then.  A bad image is refused without calling the installer.  The file is not fsynced: it is
scratch, and the install itself is what must be durable (a crash loses the spool and the
sender sends again).  It is written and deleted through the node's
:class:`~node.fs.api.Files`, so a test's disk model sees it like the WAL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable

import crc32c
import grpc

from common.descriptor import Descriptor
from common.log_limit import LogLimiter
from common.wire.descriptors import descriptor_from_pb, descriptor_to_pb
from node.fs import Files
from tesserapb import raft_pb2

log = logging.getLogger(__name__)
limited_log = LogLimiter(log)  # anyone who reaches the port can send images (docs/hostile-input.md)

TO_STORE_METADATA = "x-tessera-to-store"
FROM_STORE_METADATA = "x-tessera-from-store"
SNAPSHOT_METHOD = "/tessera.v1.RaftTransport/SendSnapshot"
MAX_CHUNK_BYTES = 1 << 20
"""Pieces larger than this are cut: gRPC messages stay moderate whatever the producer yields."""

# (first message, spooled image path, the partition's descriptor as of the image or None).
SnapshotInstaller = Callable[[raft_pb2.RaftMessage, str, "Descriptor | None"], Awaitable[tuple[bool, str]]]
# Why an image starting with this message would be refused whatever its data (None: it may
# be taken): asked at the first chunk, before anything is spooled (docs/hostile-input.md).
SnapshotRefusal = Callable[[raft_pb2.RaftMessage], "str | None"]


async def _pieces(chunks: AsyncIterable[bytes] | Iterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """Both kinds of iterable as one async stream of pieces of at most ``limit`` bytes."""
    if isinstance(chunks, AsyncIterable):
        async for piece in chunks:
            for part in _cut(piece, limit):
                yield part
    else:
        for piece in chunks:
            for part in _cut(piece, limit):
                yield part


def _cut(piece: bytes, limit: int) -> Iterable[bytes]:
    n = len(piece)
    if n <= limit:
        return (piece,) if n else ()
    mv = memoryview(piece)
    return [bytes(mv[i : i + limit]) for i in range(0, n, limit)]


async def send_snapshot(
    channel: grpc.aio.Channel,
    from_store: int,
    to_store: int,
    first: raft_pb2.RaftMessage,
    chunks: AsyncIterable[bytes] | Iterable[bytes],
    *,
    timeout: float,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    descriptor: Descriptor | None = None,
) -> tuple[bool, str]:
    """Stream one image on ``channel``; returns the receiver's (accepted, reason).

    RPC failures (peer down, timeout, channel closed) come back as ``(False, reason)``; an
    exception raised by ``chunks`` itself cancels the call and propagates (a local bug, not a
    network condition).
    """
    method = channel.stream_unary(
        SNAPSHOT_METHOD,
        request_serializer=raft_pb2.SnapshotChunk.SerializeToString,
        response_deserializer=raft_pb2.SnapshotAck.FromString,
    )
    call = method(
        timeout=timeout,
        metadata=((TO_STORE_METADATA, str(to_store)), (FROM_STORE_METADATA, str(from_store))),
    )
    crc = 0
    total = 0
    try:
        try:
            desc = descriptor_to_pb(descriptor) if descriptor is not None else None
            await call.write(raft_pb2.SnapshotChunk(message=first, descriptor=desc))
            async for piece in _pieces(chunks, max_chunk_bytes):
                crc = crc32c.crc32c(piece, crc)
                total += len(piece)
                await call.write(raft_pb2.SnapshotChunk(data=piece))
            await call.write(raft_pb2.SnapshotChunk(total_size=total, crc32c=crc, last=True))
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The receiver answered early (a refusal) or the call failed: the verdict or the
            # error is in the call's outcome, read below.
            pass
        ack: raft_pb2.SnapshotAck = await call
        return ack.accepted, ack.reason
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        name = code.name if code is not None else "ERROR"
        details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        return False, f"{name}: {details}"
    except BaseException:
        call.cancel()
        raise


def _refuse(reason: str) -> raft_pb2.SnapshotAck:
    return raft_pb2.SnapshotAck(accepted=False, reason=reason)


async def receive_snapshot(
    store_id: int,
    request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
    context: grpc.aio.ServicerContext,
    snapshot_dir: str,
    on_snapshot: SnapshotInstaller,
    files: Files,
    refusal: SnapshotRefusal | None = None,
) -> raft_pb2.SnapshotAck:
    """The server half: spool, verify, install, clean up. Never raises for a bad image."""
    md = dict(context.invocation_metadata() or ())
    claimed = md.get(TO_STORE_METADATA)
    if claimed is not None and claimed != str(store_id):
        return _refuse(f"store id mismatch: this is store {store_id}, sender meant {claimed!s}")

    first: raft_pb2.RaftMessage | None = None
    descriptor: Descriptor | None = None
    trailer: raft_pb2.SnapshotChunk | None = None
    crc = 0
    total = 0
    spool = files.create_temp(snapshot_dir, "snap-", ".part")
    path = spool.path
    try:
        try:
            async for chunk in request_iterator:
                if trailer is not None:
                    return _refuse("chunk after the last chunk")
                if first is None:
                    if not chunk.HasField("message"):
                        return _refuse("first chunk carries no raft message")
                    first = chunk.message
                    why = refusal(first) if refusal is not None else None
                    if why is not None:
                        return _refuse(why)
                    if chunk.HasField("descriptor"):
                        try:
                            descriptor = descriptor_from_pb(chunk.descriptor)
                        except ValueError as exc:  # an unknown role, a nonsense range...
                            return _refuse(f"bad descriptor in the first chunk: {exc}")
                data = chunk.data
                if data:
                    crc = crc32c.crc32c(data, crc)
                    total += len(data)
                    spool.append(data)  # chunks are up to 1 MiB: one write each, no buffer
                if chunk.last:
                    trailer = chunk
        finally:
            spool.close()
        if first is None:
            return _refuse("empty snapshot stream")
        if trailer is None:
            return _refuse(f"truncated: stream ended after {total} bytes without its last chunk")
        if total != trailer.total_size:
            return _refuse(f"size mismatch: got {total} bytes, sender says {trailer.total_size}")
        if crc != trailer.crc32c:
            return _refuse(f"crc32c mismatch: got {crc:#010x}, sender says {trailer.crc32c:#010x}")
        try:
            accepted, reason = await on_snapshot(first, path, descriptor)
        except Exception as exc:
            limited_log.error("install-failed", "installing snapshot of partition %d failed", first.partition_id,
                              exc_info=True)
            return _refuse(f"install failed: {exc!r}")
        return raft_pb2.SnapshotAck(accepted=bool(accepted), reason=reason)
    finally:
        try:
            files.unlink(path)
        except FileNotFoundError:
            pass
