"""Where the client learns the partition map: the router's Meta service, or anything else
with the same two calls (the router's own proxy reads its table in-process; tests inject
canned maps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from common.routers import RouterSet
from common.wire.errors import leader_hint
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure, failure_from_rpc_error
from tesserapb import meta_pb2, meta_pb2_grpc


class MetaSource(Protocol):
    async def scan_partitions(self, timeout: float) -> Sequence[meta_pb2.PartitionDescriptor]: ...

    async def get_stores(self, timeout: float) -> Sequence[meta_pb2.Store]: ...

    async def close(self) -> None: ...


class GrpcMeta:
    """The Meta service of one or more routers. Follows a NotLeader hint from a follower
    router, and moves on to the next address when one is unreachable."""

    def __init__(self, addresses: Sequence[str], pool: ChannelPool) -> None:
        self._routers = RouterSet(addresses)
        self._pool = pool

    @property
    def address(self) -> str:
        return self._routers.current

    async def scan_partitions(self, timeout: float) -> Sequence[meta_pb2.PartitionDescriptor]:
        resp = await self._call("ScanPartitions", meta_pb2.ScanPartitionsRequest(), timeout)
        return resp.partitions

    async def get_stores(self, timeout: float) -> Sequence[meta_pb2.Store]:
        resp = await self._call("GetStores", meta_pb2.GetStoresRequest(), timeout)
        return resp.stores

    async def get_partition(self, key: bytes, timeout: float) -> meta_pb2.GetPartitionResponse:
        return await self._call("GetPartition", meta_pb2.GetPartitionRequest(key=key), timeout)

    async def call(self, method: str, request: Message, timeout: float) -> Any:
        """Any Meta method by name (``tessera admin`` uses the ones the client does not)."""
        return await self._call(method, request, timeout)

    async def _call(self, method: str, request, timeout: float):
        last: RpcFailure | None = None
        for _ in range(self._routers.tries):
            address = self._routers.current
            stub = meta_pb2_grpc.MetaStub(self._pool.get(address))
            try:
                return await getattr(stub, method)(request, timeout=timeout, metadata=self._pool.metadata)
            except grpc.RpcError as exc:
                last = failure_from_rpc_error(exc, address, source="router")
            if not self._routers.failed(last.code, leader_hint(last.error)):
                break
        assert last is not None
        raise last

    async def close(self) -> None:
        """Channels belong to the pool."""
