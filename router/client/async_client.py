"""AsyncClient: the asyncio client library.

Each call routes its key through the cached partition map straight to the partition leader's
node (or any replica for a STALE read), with RequestContext(partition_id, epoch, request_id),
and retries by itself until its deadline: routing errors update the cache from the error's
payload, busy and unreachable nodes back off (exponential, jittered), an unreachable node is
skipped in favour of another replica. A write's request_id is drawn once per call and reused by
every attempt, so the node applies the write at most once however often it is retried.

Only INVALID_ARGUMENT (``InvalidArgumentError``) and errors the client does not understand
(``ServerError``) end a call early; otherwise it ends with a result or ``DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, overload

import grpc
from google.protobuf.message import Message

from common.backoff import BackoffPolicy
from common.routers import parse_router_addresses
from common.tls import TlsConfig
from router.client.channels import ChannelPool
from router.client.errors import (
    ClientClosedError,
    CrossPartitionBatchError,
    DeadlineExceeded,
    InvalidArgumentError,
    RouterUnavailableError,
    RpcFailure,
    TesseraError,
)
from router.client.meta import GrpcMeta, MetaSource
from router.client.multiplexed import StreamTransport
from router.client.request_ids import new_request_id
from router.client.retry import Decision, classify
from router.client.routes import Route, RouteCache, pick_store
from router.client.transport import FunctionTransport, SendFn, Transport, UnaryTransport
from router.client.types import (
    CasResult,
    KeyValue,
    ScanPage,
    Versioned,
    WriteResult,
    as_bytes,
    op_key,
    read_options,
    write_op,
)
from tesserapb import kv_pb2, meta_pb2

_Req = TypeVar("_Req", bound=Message)
_Build = Callable[[kv_pb2.RequestContext], _Req]
"""Makes an attempt's request around its RequestContext."""

WRITE_KINDS = frozenset({"put", "delete", "compare_and_set", "batch"})
# Consecutive NotLeader hints followed without pausing; beyond this the hints are going in
# circles (e.g. mid-transfer) and the client backs off between hops.
MAX_FREE_HINT_HOPS = 2


@dataclass(slots=True)
class _CallState:
    """Book-keeping of one logical call across its attempts."""

    backoffs: int = 0
    hint_hops: int = 0
    conn_failures: int = 0
    failed: set[int] = field(default_factory=set)
    needs_refresh: bool = False
    rechecked: bool = False
    sent: bool = False
    last: RpcFailure | None = None


class _RouteRejected(Exception):
    """A call's route check refused the route it was given (a batch spanning partitions)."""

    def __init__(self, error: TesseraError) -> None:
        super().__init__(str(error))
        self.error = error


class _OutOfTime(Exception):
    """The call's deadline passed while waiting on something shared (a routing refresh)."""


class AsyncClient:
    """Tessera client for asyncio code. Keys and values are bytes.

    router_addr: "host:port" of the router (or several, comma-separated or as a list).
    deadline_s: the default overall deadline of one call, retries included.
    attempt_timeout_s: the most one attempt may take before the client tries elsewhere.
    use_stream: multiplex requests over one connection per node (else one unary call each).
    use_wire: that connection is the node's KV wire where it has one (D28), else KV.Stream.
    transport / meta: injectable replacements for the network (tests, the router's proxy).
    tls: mutual TLS to routers and nodes (``common.tls.TlsConfig.load(ca, cert, key)``, or
        ``common.tls.from_environment()`` for $TESSERA_CA/$TESSERA_CERT/$TESSERA_KEY); None:
        plaintext.
    token: a bearer token sent on every call (a cluster run with --auth; docs/auth.md); needs tls.
    """

    def __init__(
        self,
        router_addr: str | Sequence[str] | None,
        *,
        deadline_s: float = 10.0,
        attempt_timeout_s: float = 2.0,
        use_stream: bool = True,
        use_wire: bool = True,
        backoff: BackoffPolicy = BackoffPolicy(),
        transport: Transport | SendFn | None = None,
        meta: MetaSource | None = None,
        rng: random.Random | None = None,
        scan_page_size: int = 1000,
        suspect_s: float = 1.0,
        tls: TlsConfig | None = None,
        token: str | None = None,
    ) -> None:
        if deadline_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError("deadline_s and attempt_timeout_s must be > 0")
        if scan_page_size < 1:
            raise ValueError("scan_page_size must be >= 1")
        self._pool = ChannelPool(tls, token)
        if meta is None:
            if router_addr is None:
                raise ValueError("give router_addr or meta")
            addresses = parse_router_addresses(router_addr)
            meta = GrpcMeta(addresses, self._pool)
            self.router_description = "router " + ",".join(addresses)
        else:
            self.router_description = "router"
        self._meta = meta
        if transport is None:
            transport = StreamTransport(self._pool, wire=use_wire) if use_stream else UnaryTransport(self._pool)
        elif not isinstance(transport, Transport):  # a bare send function
            transport = FunctionTransport(transport)
        self._transport: Transport = transport
        self._deadline_s = deadline_s
        self._attempt_timeout_s = attempt_timeout_s
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._scan_page_size = scan_page_size
        self._suspect_s = suspect_s
        self._suspect: dict[int, float] = {}
        self._cache = RouteCache()
        self._refresh_task: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def cache(self) -> RouteCache:
        return self._cache

    @property
    def transport(self) -> Transport:
        return self._transport

    # -- the API ----------------------------------------------------------------------------

    async def get(
        self, key: bytes, consistency: str = "lease", max_staleness_ms: int = 0, *, timeout: float | None = None
    ) -> Versioned | None:
        """(value, version), or None when the key is absent."""
        key = as_bytes(key, "key")
        ro = read_options(consistency, max_staleness_ms)
        resp = await self._call(
            "get",
            key,
            lambda ctx: kv_pb2.GetRequest(context=ctx, key=key, read_options=ro),
            stale=ro.consistency == kv_pb2.STALE,
            timeout=timeout,
        )
        return Versioned(resp.value, resp.version) if resp.found else None

    async def put(self, key: bytes, value: bytes, *, timeout: float | None = None) -> int:
        """Write; returns the key's new version."""
        key, value = as_bytes(key, "key"), as_bytes(value, "value")
        resp = await self._call("put", key, lambda ctx: kv_pb2.PutRequest(context=ctx, key=key, value=value),
                                timeout=timeout)
        return resp.version

    async def delete(self, key: bytes, *, timeout: float | None = None) -> bool:
        """Delete; False when the key was already absent."""
        key = as_bytes(key, "key")
        resp = await self._call("delete", key, lambda ctx: kv_pb2.DeleteRequest(context=ctx, key=key),
                                timeout=timeout)
        return resp.deleted

    async def cas(
        self,
        key: bytes,
        expected_version: int,
        value: bytes = b"",
        delete: bool = False,
        *,
        timeout: float | None = None,
    ) -> CasResult:
        """If the key's version is ``expected_version`` (0: absent), write ``value`` (or delete).
        Returns (succeeded, current_version, current_value)."""
        key, value = as_bytes(key, "key"), as_bytes(value, "value")
        if expected_version < 0:
            raise InvalidArgumentError("expected_version", 0, f"must be >= 0, got {expected_version}")
        resp = await self._call(
            "compare_and_set",
            key,
            lambda ctx: kv_pb2.CompareAndSetRequest(
                context=ctx, key=key, expected_version=expected_version, value=value, delete=delete
            ),
            timeout=timeout,
        )
        return CasResult(resp.succeeded, resp.current_version, resp.current_value)

    async def scan(
        self,
        start: bytes = b"",
        end: bytes = b"",
        limit: int | None = 1000,
        *,
        consistency: str = "lease",
        max_staleness_ms: int = 0,
        timeout: float | None = None,
    ) -> list[KeyValue]:
        """The pairs in [start, end) in key order, across partitions; at most ``limit`` (None
        or 0: all). The deadline applies to each page, not to the whole walk."""
        if limit is not None and limit < 0:
            raise InvalidArgumentError("limit", 0, f"must be >= 0, got {limit}")
        out: list[KeyValue] = []
        cursor = as_bytes(start, "start")
        while True:
            want = self._scan_page_size if not limit else min(self._scan_page_size, limit - len(out))
            page = await self.scan_page(cursor, end, want, consistency=consistency,
                                        max_staleness_ms=max_staleness_ms, timeout=timeout)
            out.extend(page.kvs)
            if not page.more or (limit and len(out) >= limit):
                return out
            cursor = page.resume_key

    async def scan_page(
        self,
        start: bytes,
        end: bytes,
        limit: int,
        *,
        consistency: str = "lease",
        max_staleness_ms: int = 0,
        timeout: float | None = None,
    ) -> ScanPage:
        """Up to ``limit`` pairs from [start, end), crossing partition boundaries as needed;
        ``more``/``resume_key`` say where to continue (ScanResponse semantics, cluster-wide)."""
        start, end = as_bytes(start, "start"), as_bytes(end, "end")
        if limit < 1:
            raise InvalidArgumentError("limit", 0, f"must be >= 1, got {limit}")
        if end and end < start:
            raise InvalidArgumentError("end", 0, f"end {end!r} is before start {start!r}")
        ro = read_options(consistency, max_staleness_ms)
        out: list[KeyValue] = []
        cursor = start
        while not end or cursor < end:
            # Per request at most a page: the node caps scan limits (max_scan_limit).
            want = min(limit - len(out), self._scan_page_size)
            resp = await self._call(
                "scan",
                cursor,
                lambda ctx, c=cursor, w=want: kv_pb2.ScanRequest(
                    context=ctx, start=c, end=end, limit=w, read_options=ro
                ),
                stale=ro.consistency == kv_pb2.STALE,
                timeout=timeout,
            )
            out.extend(KeyValue(kv.key, kv.value, kv.version) for kv in resp.kvs)
            if not resp.more:
                return ScanPage(out, False, b"")
            nxt = resp.resume_key
            if nxt <= cursor:
                # Never loop on a server that does not advance: step past what it returned.
                if not resp.kvs:
                    raise TesseraError(f"scan made no progress at {cursor!r} (resume_key {nxt!r})")
                nxt = resp.kvs[-1].key + b"\x00"
            cursor = nxt
            if len(out) >= limit:
                return ScanPage(out, not end or cursor < end, cursor)
        return ScanPage(out, False, b"")

    async def batch(self, ops: Iterable[object], *, timeout: float | None = None) -> list[WriteResult]:
        """Apply puts, deletes and conditional Cas ops atomically (all or nothing). Every key must
        belong to one partition, else CrossPartitionBatchError (an InvalidArgumentError) and
        nothing is written.
        ``ops``: Put(key, value) / Delete(key) or ("put", k, v) / ("delete", k)."""
        write_ops = [write_op(op) for op in ops]
        if not write_ops:
            return []
        keys = [op_key(op) for op in write_ops]

        def check(route: Route) -> None:
            for k in keys:
                if not route.contains(k):
                    raise _RouteRejected(
                        CrossPartitionBatchError(
                            "ops",
                            0,
                            f"keys {keys[0]!r} and {k!r} are in different partitions; "
                            "a batch is atomic only within one partition",
                        )
                    )

        resp = await self._call(
            "batch", keys[0], lambda ctx: kv_pb2.BatchRequest(context=ctx, ops=write_ops),
            timeout=timeout, check_route=check,
        )
        return [WriteResult(r.version, r.deleted, r.succeeded) for r in resp.results]

    async def locate(self, key: bytes, *, timeout: float | None = None) -> Route:
        """The cached route for ``key`` (refreshed from the router if missing)."""
        key = as_bytes(key, "key")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._deadline_s if timeout is None else timeout)
        st = _CallState()
        while True:
            try:
                return await self._route(key, deadline, st)
            except _OutOfTime:
                raise self._deadline_error("locate", key, st) from None
            except RpcFailure as failure:
                st.last = failure
                decision = classify(failure)
                if decision.final is not None:
                    raise decision.final from None
                await self._pause(decision, st, deadline, "locate")

    async def refresh(self, *, timeout: float | None = None) -> None:
        """Reload the partition map and store addresses from the router now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._deadline_s if timeout is None else timeout)
        try:
            await self._refresh(deadline)
        except _OutOfTime:
            raise RouterUnavailableError(f"{self.router_description} did not answer in time") from None
        except RpcFailure as failure:
            raise RouterUnavailableError(
                f"cannot load routing from {self.router_description}: {failure.describe()}",
                last_error=failure.describe(),
            ) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        await self._transport.close()
        await self._meta.close()
        await self._pool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the retry loop ---------------------------------------------------------------------

    # ``kind`` names the request's field in StreamRequestItem, and so the request ``build``
    # makes and the response the transport answers with: one overload per kind pairs them.
    @overload
    async def _call(
        self, kind: Literal["get"], key: bytes, build: _Build[kv_pb2.GetRequest],
        *, stale: bool, timeout: float | None,
    ) -> kv_pb2.GetResponse: ...

    @overload
    async def _call(
        self, kind: Literal["put"], key: bytes, build: _Build[kv_pb2.PutRequest],
        *, timeout: float | None,
    ) -> kv_pb2.PutResponse: ...

    @overload
    async def _call(
        self, kind: Literal["delete"], key: bytes, build: _Build[kv_pb2.DeleteRequest],
        *, timeout: float | None,
    ) -> kv_pb2.DeleteResponse: ...

    @overload
    async def _call(
        self, kind: Literal["compare_and_set"], key: bytes, build: _Build[kv_pb2.CompareAndSetRequest],
        *, timeout: float | None,
    ) -> kv_pb2.CompareAndSetResponse: ...

    @overload
    async def _call(
        self, kind: Literal["scan"], key: bytes, build: _Build[kv_pb2.ScanRequest],
        *, stale: bool, timeout: float | None,
    ) -> kv_pb2.ScanResponse: ...

    @overload
    async def _call(
        self, kind: Literal["batch"], key: bytes, build: _Build[kv_pb2.BatchRequest],
        *, timeout: float | None, check_route: Callable[[Route], None],
    ) -> kv_pb2.BatchResponse: ...

    async def _call(
        self,
        kind: str,
        key: bytes,
        build: _Build[Message],
        *,
        stale: bool = False,
        timeout: float | None = None,
        check_route: Callable[[Route], None] | None = None,
    ) -> Message:
        if self._closed:
            raise ClientClosedError("client closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._deadline_s if timeout is None else timeout)
        request_id = new_request_id() if kind in WRITE_KINDS else b""
        st = _CallState()
        while True:
            if self._closed:
                raise ClientClosedError("client closed")
            route: Route | None = None
            store_id = 0
            try:
                route = await self._route(key, deadline, st)
                if check_route is not None:
                    check_route(route)
                store_id, address = await self._target(route, stale, st, deadline)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._deadline_error(kind, key, st)
                epoch = route.descriptor.epoch
                ctx = kv_pb2.RequestContext(
                    partition_id=route.id,
                    epoch=meta_pb2.Epoch(conf_ver=epoch.conf_ver, version=epoch.version),
                    request_id=request_id,
                )
                st.sent = True
                return await self._transport.send(address, kind, build(ctx), min(remaining, self._attempt_timeout_s))
            except _OutOfTime:
                if st.last is None:
                    st.last = RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "routing refresh did not finish in time",
                                         source="router", address=self.router_description)
                raise self._deadline_error(kind, key, st) from None
            except _RouteRejected as rejected:
                if st.rechecked:
                    raise rejected.error from None
                st.rechecked = True
                st.needs_refresh = True
                continue
            except RpcFailure as failure:
                st.last = failure
                decision = classify(failure)
                if decision.final is not None:
                    raise decision.final from None
                self._learn(decision, failure, route, store_id, st)
                await self._pause(decision, st, deadline, kind, key)

    def _learn(self, d: Decision, failure: RpcFailure, route: Route | None, store_id: int, st: _CallState) -> None:
        """Apply what a failure taught us to the cache and to this call's state."""
        pid = route.id if route is not None else 0
        if d.descriptors:
            self._cache.merge_all(d.descriptors)
        if d.leader_store_id:
            assert failure.error is not None, "a leader hint comes from a NotLeader error"
            hinted = failure.error.not_leader.partition_id or pid
            self._cache.set_leader(hinted, d.leader_store_id)
            self._cache.set_address(d.leader_store_id, d.leader_address)
            st.failed.discard(d.leader_store_id)
            st.hint_hops += 1
        else:
            st.hint_hops = 0
        if d.clear_leader and pid:
            self._cache.clear_leader(pid, store_id if d.store_failed else None)
        if d.drop_partition and pid:
            self._cache.drop(pid)
        if d.refresh:
            st.needs_refresh = True
        if d.store_failed and store_id:
            st.failed.add(store_id)
            st.conn_failures += 1
            self._suspect[store_id] = asyncio.get_running_loop().time() + self._suspect_s
            if st.conn_failures >= 2:
                st.needs_refresh = True

    async def _pause(self, d: Decision, st: _CallState, deadline: float, kind: str, key: bytes = b"") -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0
        if d.backoff or st.hint_hops > MAX_FREE_HINT_HOPS:
            delay = max(self._backoff.delay(st.backoffs, self._rng.random()), d.min_backoff_s)
            st.backoffs += 1
        remaining = deadline - loop.time()
        if remaining <= 0 or delay >= remaining:
            if delay:
                await asyncio.sleep(max(remaining, 0))
            raise self._deadline_error(kind, key, st)
        if delay:
            await asyncio.sleep(delay)

    def _deadline_error(self, kind: str, key: bytes, st: _CallState) -> DeadlineExceeded:
        last = st.last.describe() if st.last is not None else "none"
        if not st.sent and st.last is not None and st.last.source == "router":
            # Failures of Meta calls carry the router's address; "no route" ones are ours.
            unreachable = bool(st.last.address)
            why = "unreachable" if unreachable else "has no partition for the key"
            return RouterUnavailableError(
                f"{kind} {key!r}: could not route within the deadline: {self.router_description} {why} ({last})",
                last_error=last,
                unreachable=unreachable,
            )
        unknown = " (the write may or may not have been applied)" if kind in WRITE_KINDS and st.sent else ""
        return DeadlineExceeded(
            f"{kind} {key!r}: deadline exceeded{unknown}; last error: {last}", last_error=last, sent=st.sent
        )

    # -- routing ----------------------------------------------------------------------------

    async def _route(self, key: bytes, deadline: float, st: _CallState) -> Route:
        route = None if st.needs_refresh else self._cache.lookup(key)
        if route is None:
            await self._refresh(deadline)
            st.needs_refresh = False
            route = self._cache.lookup(key)
            if route is None:
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no partition covers key {key!r} (cluster not bootstrapped yet, or a split settling)",
                    source="router",
                )
        return route

    async def _target(self, route: Route, stale: bool, st: _CallState, deadline: float) -> tuple[int, str]:
        store_id = pick_store(route, stale=stale, failed=st.failed, suspect=self._suspects(), rng=self._rng)
        if not store_id:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, f"partition {route.id} has no replicas", source="router")
        address = self._cache.address(store_id)
        if address is None:
            await self._refresh(deadline)
            address = self._cache.address(store_id)
            if address is None:
                st.failed.add(store_id)
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE, f"store {store_id} has no known address", source="router"
                )
        return store_id, address

    def _suspects(self) -> set[int]:
        if not self._suspect:
            return set()
        now = asyncio.get_running_loop().time()
        for sid in [s for s, until in self._suspect.items() if until <= now]:
            del self._suspect[sid]
        return set(self._suspect)

    async def _refresh(self, deadline: float) -> None:
        """Reload routing from the router; concurrent callers share one refresh."""
        task = self._refresh_task
        if task is None or task.done():
            task = self._refresh_task = asyncio.ensure_future(self._load_routes())
            task.add_done_callback(_retrieve)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise _OutOfTime()
        try:
            await asyncio.wait_for(asyncio.shield(task), remaining)
        except TimeoutError:
            raise _OutOfTime() from None

    async def _load_routes(self) -> None:
        partitions = await self._meta.scan_partitions(self._attempt_timeout_s)
        stores = await self._meta.get_stores(self._attempt_timeout_s)
        self._cache.set_stores(stores)
        self._cache.merge_all(partitions)


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a shared refresh's failure as seen (its waiters may all have given up)."""
    if not task.cancelled():
        task.exception()
