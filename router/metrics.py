"""A router's Prometheus metrics: its RPCs, the placement group, the table, the operations.

RPCs are counted by a server interceptor (every service on the router's port: Meta, the KV
proxy, the placement group's Raft transport, health) into common.metrics' cheap histograms;
the placement state is read from the router's own copy of the table when Prometheus scrapes,
on the event loop (common.metrics says why). Names: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import RpcStats, counter
from router.placement.runtime import Placement, operation_kind

_OK = grpc.StatusCode.OK.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def _code_of(context: grpc.aio.ServicerContext, fallback: int) -> int:
    """The status the handler ended the call with (abort or set_code), else ``fallback``."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code) if code else fallback


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Times every call and notes its outcome in :attr:`stats` (rpc = "Service/Method", the
    service without its package: "Meta/StoreHeartbeat", "KV/Stream"). A streaming call's time
    is its whole life."""

    def __init__(self) -> None:
        self.stats = RpcStats()
        self.streams_open = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        rpc = f"{service.rsplit('.', 1)[-1]}/{name}"
        h: Any = handler
        if h.unary_unary is not None:
            return h._replace(unary_unary=self._unary(rpc, h.unary_unary))
        if h.stream_unary is not None:
            return h._replace(stream_unary=self._unary(rpc, h.stream_unary))
        if h.unary_stream is not None and inspect.isasyncgenfunction(h.unary_stream):
            return h._replace(unary_stream=self._streaming(rpc, h.unary_stream))
        if h.stream_stream is not None and inspect.isasyncgenfunction(h.stream_stream):
            return h._replace(stream_stream=self._streaming(rpc, h.stream_stream))
        return handler

    def _unary(self, rpc: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        note = self.stats.note

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            code = _OK
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:  # the caller went away
                code = _CANCELLED
                raise
            except BaseException:
                code = _UNKNOWN
                raise
            finally:
                note(rpc, _code_of(context, code), time.perf_counter() - t0)

        return timed

    def _streaming(self, rpc: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        note = self.stats.note

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            t0 = time.perf_counter()
            code = _OK
            self.streams_open += 1
            try:
                async for item in behavior(request, context):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):  # the caller went away, or the call ended
                code = _CANCELLED
                raise
            except BaseException:
                code = _UNKNOWN
                raise
            finally:
                self.streams_open -= 1
                note(rpc, _code_of(context, code), time.perf_counter() - t0)

        return timed


class RouterCollector(Collector):
    def __init__(self, placement: Placement, rpcs: RpcMetrics) -> None:
        self.placement = placement
        self.rpcs = rpcs

    def collect(self) -> Iterator[Metric]:
        p = self.placement
        group = p.group
        yield from self.rpcs.stats.families("tessera_router", "gRPC calls to the router")
        yield GaugeMetricFamily("tessera_router_streams_open", "streaming calls in progress (KV proxy streams, "
                                "nodes' WatchOperations)", value=self.rpcs.streams_open)
        # The placement group (router/placement/group.py).
        yield GaugeMetricFamily("tessera_placement_is_leader", "1 on the placement group's leader, else 0",
                                value=int(group.is_leader))
        yield GaugeMetricFamily("tessera_placement_leader_id", "the router id of the placement leader this "
                                "router knows (0: none)", value=group.leader_id)
        yield GaugeMetricFamily("tessera_placement_term", "the placement group's Raft term here", value=group.term)
        yield GaugeMetricFamily("tessera_placement_applied_index", "placement log entries applied here",
                                value=group.applied)
        yield GaugeMetricFamily("tessera_placement_group_members", "routers in the placement group",
                                value=len(group.voters))
        # The table as this router has it (a follower's may lag its leader's a little).
        table = p.table
        yield GaugeMetricFamily("tessera_placement_partitions", "partitions in the table",
                                value=len(table.partitions))
        yield GaugeMetricFamily("tessera_placement_partitions_without_leader", "partitions with no known leader",
                                value=sum(1 for info in table.partitions.values() if not info.leader_store_id))
        now = p.now_ms()
        by_state = {"up": 0, "down": 0, "draining": 0, "removed": 0}
        for store in table.stores.values():
            state = p.store_state(store, now).name.lower()
            by_state[state] = by_state.get(state, 0) + 1
        stores = GaugeMetricFamily("tessera_placement_stores", "stores by state", labels=("state",))
        for state, n in sorted(by_state.items()):
            stores.add_metric([state], n)
        yield stores
        pending: dict[str, int] = {}
        for op in table.operations.values():
            kind = operation_kind(op.action)
            pending[kind] = pending.get(kind, 0) + 1
        ops = GaugeMetricFamily("tessera_placement_operations_pending", "operations queued and not yet done, "
                                "by kind", labels=("kind",))
        for kind, n in sorted(pending.items()):
            ops.add_metric([kind], n)
        yield ops
        submitted = CounterMetricFamily("tessera_placement_operations", "operations submitted on this router "
                                        "(scheduler, splits, admin), by kind and result", labels=("kind", "result"))
        for (kind, result), n in sorted(p.submitted.items()):
            submitted.add_metric([kind, result], n)
        yield submitted
        yield counter("tessera_placement_scheduled_operations", "operations the scheduler submitted here",
                      p.scheduled)
