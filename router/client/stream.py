"""The fast path: one long-lived KV.Stream (or KV wire connection) per node, multiplexing
every concurrent request.

A Python gRPC server spends ~0.25 ms of CPU per unary call but a fraction of that per stream
message, so the client packs every request queued at the moment the sender runs into one
StreamRequest (TiKV's BatchCommands): under load, batches grow on their own while the previous
write is in flight. Responses are matched to callers by a stream-local tag. If the stream
breaks, every in-flight request fails with a retryable UNAVAILABLE (source "stream") and the
next request opens a new stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeAlias

import grpc
from google.protobuf.message import Message

from common.wire import kv_frames as kf
from router.client.errors import ClientClosedError, RpcFailure, failure_from_rpc_error, failure_from_stream_item
from tesserapb import kv_pb2, kv_pb2_grpc

log = logging.getLogger("tessera.client.stream")

_KVStream: TypeAlias = "grpc.aio.StreamStreamCall[kv_pb2.StreamRequest, kv_pb2.StreamResponse]"


class Tagged:
    """Requests tagged and matched to their answers, whatever carries them: KV.Stream
    (:class:`NodeStream`) or the KV wire (:class:`router.client.wire.NodeWire`). A carrier
    opens itself in :meth:`_ensure_open`, and sends what :meth:`_batch` packs when told to by
    :meth:`_kick`; it hands answers to :meth:`_answered` and its end to :meth:`_fail_all`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._pending: list[tuple[int, str, Message]] = []
        self._inflight: dict[int, asyncio.Future[kv_pb2.StreamResponseItem]] = {}
        self._next_tag = 1
        self._closed = False
        # Counters for tests and benchmarks: how well requests are being packed.
        self.batches_sent = 0
        self.items_sent = 0

    async def send(self, kind: str, request: Message, timeout: float) -> Message:
        if self._closed:
            raise ClientClosedError("client closed")
        self._ensure_open()
        loop = asyncio.get_running_loop()
        tag = self._next_tag
        self._next_tag += 1
        fut: asyncio.Future[kv_pb2.StreamResponseItem] = loop.create_future()
        self._inflight[tag] = fut
        self._pending.append((tag, kind, request))
        self._kick()
        expiry = loop.call_later(max(timeout, 0.0), self._expire, tag, timeout)
        try:
            item = await fut
        finally:
            expiry.cancel()
            self._inflight.pop(tag, None)
        if item.code:
            raise failure_from_stream_item(item, self.address)
        which = item.WhichOneof("response")
        if which != kind:
            raise RpcFailure(
                grpc.StatusCode.INTERNAL, f"stream answered {which} to a {kind}", address=self.address
            )
        return getattr(item, kind)

    def _ensure_open(self) -> None:
        raise NotImplementedError

    def _kick(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _batches(self) -> list[kv_pb2.StreamRequest]:
        """Every request queued since the last batch whose caller still waits, as one message,
        or, past PACK_BYTES, as several (no message nears the 64 MiB limit, whatever is
        queued)."""
        pending, self._pending = self._pending, []
        batch = kv_pb2.StreamRequest()
        for tag, kind, request in pending:
            if tag not in self._inflight:
                continue  # its caller gave up before it was sent
            item = batch.requests.add()
            item.request_id = tag
            getattr(item, kind).CopyFrom(request)
        n = len(batch.requests)
        if not n:
            return []
        self.items_sent += n
        if n == 1 or batch.ByteSize() <= kf.PACK_BYTES:
            self.batches_sent += 1
            return [batch]
        out = [kv_pb2.StreamRequest(requests=run)
               for run, _ in kf.packed([(item, item.ByteSize()) for item in batch.requests])]
        self.batches_sent += len(out)
        return out

    def _answered(self, response: kv_pb2.StreamResponse) -> None:
        for item in response.responses:
            fut = self._inflight.get(item.request_id)
            if fut is not None and not fut.done():
                fut.set_result(item)

    def _expire(self, tag: int, timeout: float) -> None:
        fut = self._inflight.pop(tag, None)
        if fut is not None and not fut.done():
            fut.set_exception(
                RpcFailure(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no answer within {timeout:.3f}s",
                    address=self.address,
                )
            )

    def _fail_all(self, failure: BaseException) -> None:
        """The carrier is gone: fail what was riding on it (the next send opens a new one)."""
        self._pending.clear()
        inflight, self._inflight = self._inflight, {}
        for fut in inflight.values():
            if not fut.done():
                fut.set_exception(failure)
        if inflight and isinstance(failure, RpcFailure):
            log.debug("stream to %s broke with %d in flight: %s", self.address, len(inflight), failure.describe())


class NodeStream(Tagged):
    """The node's KV.Stream (gRPC)."""

    def __init__(
        self, address: str, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] | None = None
    ) -> None:
        super().__init__(address)
        self._metadata = metadata  # the bearer token, when the client has one (docs/auth.md)
        self._stub = kv_pb2_grpc.KVStub(channel)
        self._call: _KVStream | None = None
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self._wake = asyncio.Event()

    def _ensure_open(self) -> None:
        if self._call is None:
            self._open()

    def _kick(self) -> None:
        self._wake.set()

    def _open(self) -> None:
        call = self._stub.Stream(metadata=self._metadata)
        self._call = call
        self._tasks = (
            asyncio.ensure_future(self._send_loop(call)),
            asyncio.ensure_future(self._recv_loop(call)),
        )

    async def _send_loop(self, call: _KVStream) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._call is not call:
                    return
                for batch in self._batches():
                    await call.write(batch)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            self._reset(call, failure_from_rpc_error(exc, self.address, source="stream"))
        except Exception as exc:  # InvalidStateError once the call is over, etc.
            self._reset(call, RpcFailure(grpc.StatusCode.UNAVAILABLE, f"stream write failed: {exc!r}",
                                         address=self.address, source="stream"))

    async def _recv_loop(self, call: _KVStream) -> None:
        try:
            while True:
                response = await call.read()
                # A response, or grpc.aio.EOF once the stream ended; grpc's stubs type EOF as
                # object, which swallows the union, so the check is by the response's type.
                if not isinstance(response, kv_pb2.StreamResponse):
                    code = await call.code()
                    details = await call.details()
                    if code == grpc.StatusCode.OK:
                        code, details = grpc.StatusCode.UNAVAILABLE, "node ended the stream"
                    failure = RpcFailure(code, details or "stream ended", address=self.address, source="stream")
                    break
                self._answered(response)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as exc:
            failure = failure_from_rpc_error(exc, self.address, source="stream")
        except Exception as exc:
            failure = RpcFailure(grpc.StatusCode.UNAVAILABLE, f"stream read failed: {exc!r}",
                                 address=self.address, source="stream")
        self._reset(call, failure)

    def _reset(self, call: _KVStream, failure: BaseException) -> None:
        """The stream is over: fail what was riding on it; the next send reconnects."""
        if self._call is not call:
            return
        self._call = None
        call.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = ()
        self._fail_all(failure)

    async def close(self) -> None:
        self._closed = True
        call, tasks = self._call, self._tasks
        if call is not None:
            self._reset(call, ClientClosedError("client closed"))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
