"""The Meta gRPC service (meta.proto): the placement table's network edge.

Each handler validates its request, turns it into a placement command or query, and maps the
result back to wire types. Bad input ends the call with INVALID_ARGUMENT carrying a
tessera.v1.InvalidArgument detail that names the field (common.wire.errors). No placement logic
lives here: it is all in router.placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc

from common import auth
from common.wire import errors as wire_errors
from common.wire.descriptors import epoch_from_pb
from router.placement import convert
from router.placement.commands import (
    CreateToken,
    PlacementError,
    RecordLeader,
    RegisterStore,
    RevokeToken,
    SetStoreState,
    StoreHeartbeat,
    SubmitOperation,
)
from router.placement.group import NotLeaderError
from router.placement.model import StoreState
from router.placement.runtime import Placement
from router.placement.table import PlacementTable
from router.placement.tokens import TokenInfo
from tesserapb import meta_pb2, meta_pb2_grpc

log = logging.getLogger("tessera.router.meta")

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])
# How long CreateToken/RevokeToken wait for every up node to confirm the new token table.
TOKENS_SPREAD_WAIT_S = 5.0


async def _invalid(context: grpc.aio.ServicerContext, field: str, message: str) -> NoReturn:
    failure = wire_errors.WireError.of(wire_errors.invalid_argument(field, message), f"{field}: {message}")
    await wire_errors.abort(context, failure)


async def _not_leader(context: grpc.aio.ServicerContext, exc: NotLeaderError) -> NoReturn:
    error = wire_errors.not_leader(0, exc.leader_id, exc.leader_address)
    await wire_errors.abort(context, wire_errors.WireError.of(error, str(exc)))


def _leader_only(handler: H) -> H:
    """Answer NotLeader (naming the leader router) when the body finds this router follows."""

    @functools.wraps(handler)
    async def wrapped(self: MetaService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except NotLeaderError as exc:
            await _not_leader(context, exc)

    return cast(H, wrapped)  # functools.wraps keeps the handler's signature


def addresses_digest(book: dict[int, str]) -> int:
    """A digest of the store address book (never 0, which asks for the book)."""
    return zlib.crc32(",".join(f"{i}={a}" for i, a in sorted(book.items())).encode()) or 1


class MetaService(meta_pb2_grpc.MetaServicer):
    """Served by the placement leader: on a follower every call answers NotLeader (its detail
    names the leader), which clients, nodes and ``tessera admin`` follow by themselves."""

    def __init__(self, placement: Placement) -> None:
        self._placement = placement
        # The token-table version each store last said it holds (leader-local, like heartbeat
        # times), and an event set on every heartbeat, so token changes can wait for the nodes.
        self._tokens_seen: dict[int, int] = {}
        self._heard = asyncio.Event()

    @property
    def _table(self) -> PlacementTable:
        return self._placement.table

    @_leader_only
    async def GetPartition(
        self, request: meta_pb2.GetPartitionRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.GetPartitionResponse:
        await self._placement.read_barrier()
        if request.partition_id:
            info = self._table.partitions.get(request.partition_id)
            if info is None:
                await _invalid(context, "partition_id", f"no partition with id {request.partition_id}")
        else:
            info = self._table.locate(request.key)
            if info is None:
                status = self._placement.bootstrap_status()
                why = status if status != "bootstrapped" else "no partition covers the key yet (a split is settling)"
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{why}; retry")
        response = meta_pb2.GetPartitionResponse(partition=convert.partition_to_pb(info))
        leader = self._table.stores.get(info.leader_store_id)
        if leader is not None:
            response.leader.CopyFrom(convert.store_to_pb(leader, self._placement.store_state(leader)))
        return response

    @_leader_only
    async def ScanPartitions(
        self, request: meta_pb2.ScanPartitionsRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.ScanPartitionsResponse:
        await self._placement.read_barrier()
        if request.end and request.start >= request.end:
            await _invalid(
                context, "end", f"end {request.end!r} must be empty (unbounded) or after start {request.start!r}"
            )
        infos = self._table.scan(request.start, request.end, request.limit)
        response = meta_pb2.ScanPartitionsResponse(partitions=[convert.partition_to_pb(i) for i in infos])
        if request.with_status:
            response.status.extend(convert.partition_status_to_pb(i) for i in infos)
        return response

    @_leader_only
    async def GetStores(
        self, request: meta_pb2.GetStoresRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.GetStoresResponse:
        await self._placement.read_barrier()
        now = self._placement.now_ms()
        stores = sorted(self._table.stores.values(), key=lambda s: s.id)
        return meta_pb2.GetStoresResponse(
            stores=[convert.store_to_pb(s, self._placement.store_state(s, now)) for s in stores]
        )

    @_leader_only
    async def StoreHeartbeat(
        self, request: meta_pb2.StoreHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.StoreHeartbeatResponse:
        if not request.address:
            await _invalid(context, "address", "a store must say where it listens (host:port)")
        if request.gone and not request.delta:
            await _invalid(context, "gone", "only a delta report (delta=true) names partitions gone")
        try:
            reports = tuple(convert.report_from_pb(p) for p in request.partitions)
        except ValueError as exc:  # e.g. an unknown Role value
            await _invalid(context, "partitions", str(exc))
        now = self._placement.now_ms()
        try:
            store_id = request.store_id
            registered_now = False
            if store_id == 0 or store_id not in self._table.stores:
                registered = await self._placement.apply(RegisterStore(request.address, store_id, now, request.zone))
                store_id = registered.store_id
                registered_now = True
                log.info("store %d registered at %s", store_id, request.address)
            await self._placement.maybe_bootstrap_token()
            await self._placement.maybe_bootstrap()
            result = await self._placement.apply(
                StoreHeartbeat(
                    store_id=store_id,
                    address=request.address,
                    now_ms=now,
                    reports=reports,
                    capacity_bytes=request.capacity_bytes,
                    used_bytes=request.used_bytes,
                    full=not request.delta,
                    gone=tuple(request.gone),
                    zone=request.zone,
                )
            )
            await self._placement.maybe_split()
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        book = {s.id: s.address for s in self._table.stores.values() if s.address}
        digest = addresses_digest(book)
        response = meta_pb2.StoreHeartbeatResponse(
            store_id=store_id,
            operations=[convert.operation_to_pb(op) for op in result.operations],
            want_full=registered_now and request.delta,
            store_addresses=book if digest != request.addresses_digest else {},
            addresses_digest=digest,
        )
        self._tokens_seen[store_id] = request.tokens_version
        self._heard.set()
        tokens = self._table.tokens.table
        response.tokens_version = tokens.version
        if request.tokens_version != tokens.version:  # the node's copy is stale: the whole table
            response.tokens_changed = True
            response.tokens.extend(
                meta_pb2.TokenGrant(hash=h, id=g.token_id, role=g.role.label) for h, g in tokens.grants.items()
            )
        return response

    @_leader_only
    async def ReportLeader(
        self, request: meta_pb2.ReportLeaderRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.ReportLeaderResponse:
        epoch = epoch_from_pb(request.epoch) if request.HasField("epoch") else None
        try:
            await self._placement.apply(
                RecordLeader(request.partition_id, request.leader_store_id, request.term, epoch)
            )
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        return meta_pb2.ReportLeaderResponse()

    @_leader_only
    async def SubmitOperation(
        self, request: meta_pb2.SubmitOperationRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.SubmitOperationResponse:
        if not request.HasField("operation"):
            await _invalid(context, "operation", "required")
        op = request.operation
        try:
            action = convert.action_from_pb(op)
            epoch = epoch_from_pb(op.epoch) if op.HasField("epoch") else None
            result = await self._placement.apply(
                SubmitOperation(op.partition_id, action, epoch, self._placement.now_ms(), by_admin=True)
            )
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        log.info(
            "operation %d queued for partition %d: %s", result.operation_id, op.partition_id, op.WhichOneof("kind")
        )
        return meta_pb2.SubmitOperationResponse(operation_id=result.operation_id)

    @_leader_only
    async def SetStoreState(
        self, request: meta_pb2.SetStoreStateRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.SetStoreStateResponse:
        try:
            state = StoreState(request.state) if request.state else None
        except ValueError:
            state = None
        if state is None:
            await _invalid(context, "state", "set one of STORE_UP, STORE_DRAINING, STORE_REMOVED")
        if state == StoreState.DRAINING:
            await self._placement.read_barrier()
            why = self._placement.drain_refusal(request.store_id)
            if why is not None:
                await _invalid(context, "store_id", why)
        try:
            await self._placement.apply(SetStoreState(request.store_id, state))
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        store = self._table.stores[request.store_id]
        return meta_pb2.SetStoreStateResponse(store=convert.store_to_pb(store, self._placement.store_state(store)))

    @_leader_only
    async def ListOperations(
        self, request: meta_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.ListOperationsResponse:
        await self._placement.read_barrier()
        if request.partition_id and request.partition_id not in self._table.partitions:
            await _invalid(context, "partition_id", f"no partition with id {request.partition_id}")
        pending = self._table.pending_operations(request.partition_id or None)
        return meta_pb2.ListOperationsResponse(
            operations=[convert.pending_operation_to_pb(op) for op in sorted(pending, key=lambda op: op.id)],
            now_ms=self._placement.now_ms(),
        )

    async def WatchOperations(
        self, request: meta_pb2.WatchOperationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[meta_pb2.OperationsReady]:
        """Tell the store "heartbeat now" whenever work is queued for it (see watchers.py)."""
        if not request.store_id:
            await _invalid(context, "store_id", "required")
        group = self._placement.group
        if not group.is_leader:
            await _not_leader(context, group.not_leader())
        with self._placement.watchers.watch(request.store_id) as ready:
            # Work may already be waiting for a store that just (re)connected.
            if request.store_id in self._table.stores_with_operations_due(self._placement.now_ms()):
                ready.set()
            while True:
                await ready.wait()
                ready.clear()
                if not group.is_leader:
                    return  # the node reconnects, and finds the new leader
                yield meta_pb2.OperationsReady()

    async def GetRouters(
        self, request: meta_pb2.GetRoutersRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.GetRoutersResponse:
        group = self._placement.group
        return meta_pb2.GetRoutersResponse(
            leader=group.leader_id,
            term=group.term,
            served_by=group.id,
            members=[
                meta_pb2.RouterMember(id=m.id, address=m.address, role=m.role, applied=m.applied)
                if m.applied is not None
                else meta_pb2.RouterMember(id=m.id, address=m.address, role=m.role)
                for m in group.members()
            ],
        )

    # -- tokens (docs/auth.md; the interceptor lets only admin tokens and members here) -----

    @_leader_only
    async def CreateToken(
        self, request: meta_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.CreateTokenResponse:
        try:
            auth.Role.parse(request.role)
        except ValueError as exc:
            await _invalid(context, "role", str(exc))
        token = auth.new_token()  # made here, kept nowhere: only its hash is proposed
        try:
            result = await self._placement.apply(
                CreateToken(auth.token_hash(token), request.role.lower(), self._placement.now_ms(), request.name)
            )
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        info = self._table.tokens.tokens[result.token_id]
        log.info("token %d created (role %s%s)", info.id, info.role, f", {info.name!r}" if info.name else "")
        behind = await self._spread_tokens()
        return meta_pb2.CreateTokenResponse(info=_token_to_pb(info), token=token, stores_behind=behind)

    @_leader_only
    async def RevokeToken(
        self, request: meta_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.RevokeTokenResponse:
        try:
            await self._placement.apply(RevokeToken(request.id, self._placement.now_ms()))
        except PlacementError as exc:
            await _invalid(context, exc.field, exc.message)
        log.info("token %d revoked", request.id)
        behind = await self._spread_tokens()
        return meta_pb2.RevokeTokenResponse(info=_token_to_pb(self._table.tokens.tokens[request.id]),
                                            stores_behind=behind)

    async def _spread_tokens(self, timeout: float = TOKENS_SPREAD_WAIT_S) -> list[int]:
        """Make every node heartbeat now (the answer carries the new token table; the node
        heartbeats again at once to confirm it) and wait until every up store has confirmed the
        current version, for at most ``timeout``; the up stores that have not."""
        version = self._table.tokens.version
        self._placement.watchers.wake(list(self._table.stores))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = self._placement.now_ms()
            up = self._table.up_stores(now, self._placement.down_after_ms)
            behind = [s for s in up if self._tokens_seen.get(s, 0) < version]
            left = deadline - loop.time()
            if not behind or left <= 0:
                if behind:
                    log.warning("token table version %d not confirmed by stores %s after %.0f s", version, behind,
                                timeout)
                return behind
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), min(left, 0.5))

    @_leader_only
    async def ListTokens(
        self, request: meta_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> meta_pb2.ListTokensResponse:
        await self._placement.read_barrier()
        book = self._table.tokens.tokens
        return meta_pb2.ListTokensResponse(tokens=[_token_to_pb(book[i]) for i in sorted(book)])


def _token_to_pb(info: TokenInfo) -> meta_pb2.TokenInfo:
    return meta_pb2.TokenInfo(id=info.id, role=info.role, created_ms=info.created_ms, revoked=info.revoked,
                              revoked_ms=info.revoked_ms, name=info.name)
