"""The router's KV service: the node's KV API for thin clients (grpcurl, other languages).

Each request is forwarded through an AsyncClient to the right partition leader, so thin
clients get the client library's routing and retries without a library. The request's
RequestContext is ignored (the proxy routes by key itself). Scan crosses partition
boundaries up to the limit; its resume_key continues the scan cluster-wide.

Errors: bad input keeps its INVALID_ARGUMENT detail; a call that runs out of time is
DEADLINE_EXCEEDED; anything else the client gave up on is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import ClassVar

import grpc
from google.protobuf.message import Message

from common.log_limit import LogLimiter
from common.wire import errors as wire_errors
from common.wire.errors import WireError
from router.client import AsyncClient, DeadlineExceeded, InvalidArgumentError, ServerError, TesseraError
from router.client.errors import ClientClosedError
from router.client.types import CONSISTENCY
from tesserapb import kv_pb2, kv_pb2_grpc

log = logging.getLogger("tessera.router.proxy")
limited_log = LogLimiter(log)  # a client can make an item fail at will (docs/hostile-input.md)

DEFAULT_SCAN_LIMIT = 1000
_CONSISTENCY_NAME = {v: k for k, v in CONSISTENCY.items()}


def _consistency(ro: kv_pb2.ReadOptions) -> tuple[str, int]:
    """The client library's name for the requested consistency (unset: lease, as on a node);
    an enum number no version defines is INVALID_ARGUMENT, as the node answers it."""
    if ro.consistency == kv_pb2.CONSISTENCY_UNSPECIFIED:
        return "lease", ro.max_staleness_ms
    name = _CONSISTENCY_NAME.get(ro.consistency)
    if name is None:
        message = f"unknown consistency {ro.consistency}"
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, message,
                        wire_errors.invalid_argument("read_options.consistency", message))
    return name, ro.max_staleness_ms


def _failure(exc: TesseraError) -> WireError:
    """The status the proxy answers with when the client library gave up on a request."""
    if isinstance(exc, InvalidArgumentError):
        return WireError(grpc.StatusCode.INVALID_ARGUMENT, str(exc),
                         wire_errors.invalid_argument(exc.field, exc.detail, exc.limit))
    if isinstance(exc, DeadlineExceeded):
        return WireError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    if isinstance(exc, ServerError) and exc.code is not None:
        return WireError(exc.code, str(exc))
    return WireError(grpc.StatusCode.UNAVAILABLE, str(exc))


class KVProxy(kv_pb2_grpc.KVServicer):
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    # Each handler returns the response message or raises WireError.

    def _timeout(self, context: grpc.aio.ServicerContext | None) -> float | None:
        remaining = context.time_remaining() if context is not None else None
        return None if remaining is None else max(remaining - 0.05, 0.01)

    async def _get(self, req: kv_pb2.GetRequest, timeout: float | None) -> kv_pb2.GetResponse:
        consistency, staleness = _consistency(req.read_options)
        found = await self._client.get(req.key, consistency, staleness, timeout=timeout)
        if found is None:
            return kv_pb2.GetResponse(found=False)
        return kv_pb2.GetResponse(found=True, value=found.value, version=found.version)

    async def _put(self, req: kv_pb2.PutRequest, timeout: float | None) -> kv_pb2.PutResponse:
        return kv_pb2.PutResponse(version=await self._client.put(req.key, req.value, timeout=timeout))

    async def _delete(self, req: kv_pb2.DeleteRequest, timeout: float | None) -> kv_pb2.DeleteResponse:
        return kv_pb2.DeleteResponse(deleted=await self._client.delete(req.key, timeout=timeout))

    async def _cas(self, req: kv_pb2.CompareAndSetRequest, timeout: float | None) -> kv_pb2.CompareAndSetResponse:
        r = await self._client.cas(req.key, req.expected_version, req.value, req.delete, timeout=timeout)
        return kv_pb2.CompareAndSetResponse(
            succeeded=r.succeeded, current_version=r.current_version, current_value=r.current_value
        )

    async def _scan(self, req: kv_pb2.ScanRequest, timeout: float | None) -> kv_pb2.ScanResponse:
        consistency, staleness = _consistency(req.read_options)
        page = await self._client.scan_page(
            req.start, req.end, req.limit or DEFAULT_SCAN_LIMIT,
            consistency=consistency, max_staleness_ms=staleness, timeout=timeout,
        )
        return kv_pb2.ScanResponse(
            kvs=[kv_pb2.KeyValue(key=k, value=v, version=ver) for k, v, ver in page.kvs],
            more=page.more,
            resume_key=page.resume_key,
        )

    async def _batch(self, req: kv_pb2.BatchRequest, timeout: float | None) -> kv_pb2.BatchResponse:
        results = await self._client.batch(list(req.ops), timeout=timeout)
        return kv_pb2.BatchResponse(
            results=[kv_pb2.WriteResult(version=r.version, deleted=r.deleted, succeeded=r.succeeded) for r in results]
        )

    # By the request's field name in StreamRequestItem; each takes the request of that kind.
    _HANDLERS: ClassVar[Mapping[str, Callable[..., Awaitable[Message]]]] = {
        "get": _get,
        "put": _put,
        "delete": _delete,
        "compare_and_set": _cas,
        "scan": _scan,
        "batch": _batch,
    }

    async def _handle(self, kind: str, request: Message, timeout: float | None) -> Message:
        try:
            return await self._HANDLERS[kind](self, request, timeout)
        except ClientClosedError:
            raise WireError(grpc.StatusCode.UNAVAILABLE, "router is shutting down") from None
        except TesseraError as exc:
            raise _failure(exc) from None

    async def _unary(self, kind: str, request: Message, context: grpc.aio.ServicerContext) -> Message:
        try:
            return await self._handle(kind, request, self._timeout(context))
        except WireError as failure:
            await wire_errors.abort(context, failure)

    async def Get(self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("get", request, context)

    async def Put(self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("put", request, context)

    async def Delete(self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("delete", request, context)

    async def CompareAndSet(self, request: kv_pb2.CompareAndSetRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("compare_and_set", request, context)

    async def Scan(self, request: kv_pb2.ScanRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("scan", request, context)

    async def Batch(self, request: kv_pb2.BatchRequest, context: grpc.aio.ServicerContext) -> Message:
        return await self._unary("batch", request, context)

    async def WireEndpoint(
        self, request: kv_pb2.WireEndpointRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.WireEndpointResponse:
        """The router has no KV wire (D28): its clients use KV.Stream."""
        return kv_pb2.WireEndpointResponse()

    async def Stream(
        self, request_iterator: AsyncIterator[kv_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.StreamResponse]:
        """Answers each item as soon as its forwarded request completes, packing whatever is
        ready into one StreamResponse."""
        done: asyncio.Queue[kv_pb2.StreamResponseItem | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def serve_item(item: kv_pb2.StreamRequestItem) -> None:
            out = kv_pb2.StreamResponseItem(request_id=item.request_id)
            kind = item.WhichOneof("request")
            try:
                if kind is None:
                    raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "request: no request set",
                                    wire_errors.invalid_argument("request", "no request set"))
                result = await self._handle(kind, getattr(item, kind), None)
                getattr(out, kind).CopyFrom(result)
            except WireError as failure:
                failure.fill(out)
            except Exception as exc:  # one failed item never fails the stream
                limited_log.error("item-failed", "proxy stream item failed", exc_info=True)
                out.code = grpc.StatusCode.INTERNAL.value[0]
                out.message = f"internal error: {type(exc).__name__}"
            done.put_nowait(out)

        async def read_requests() -> None:
            try:
                async for batch in request_iterator:
                    for item in batch.requests:
                        task = asyncio.ensure_future(serve_item(item))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            finally:
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
                done.put_nowait(None)

        reader = asyncio.ensure_future(read_requests())
        try:
            while True:
                first = await done.get()
                if first is None:
                    return
                response = kv_pb2.StreamResponse(responses=[first])
                finished = False
                while not done.empty():
                    more = done.get_nowait()
                    if more is None:
                        finished = True
                        break
                    response.responses.append(more)
                yield response
                if finished:
                    return
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
