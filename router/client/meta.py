"""Where the client learns the partition map: the router's Meta service, or anything else
with the same two calls (the router's own proxy reads its table in-process; tests inject
canned maps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from router.client.channels import ChannelPool
from router.client.errors import RpcFailure, failure_from_rpc_error
from tesserapb import meta_pb2, meta_pb2_grpc


class MetaSource(Protocol):
    async def scan_partitions(self, timeout: float) -> Sequence[meta_pb2.PartitionDescriptor]: ...

    async def get_stores(self, timeout: float) -> Sequence[meta_pb2.Store]: ...

    async def close(self) -> None: ...


def parse_router_addresses(router_addr: str | Sequence[str]) -> list[str]:
    """"a:1,b:2" or ["a:1", "b:2"] -> ["a:1", "b:2"]."""
    items = router_addr.split(",") if isinstance(router_addr, str) else list(router_addr)
    out = [a.strip() for a in items if a and a.strip()]
    if not out:
        raise ValueError("no router address given")
    return out


class GrpcMeta:
    """The Meta service of one or more routers. Follows a NotLeader hint from a follower
    router, and moves on to the next address when one is unreachable."""

    def __init__(self, addresses: Sequence[str], pool: ChannelPool) -> None:
        self._addresses = list(addresses)
        self._current = 0
        self._pool = pool

    @property
    def address(self) -> str:
        return self._addresses[self._current]

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
        # At most one pass over the known routers plus one hop to a hinted leader.
        for _ in range(len(self._addresses) + 1):
            address = self.address
            stub = meta_pb2_grpc.MetaStub(self._pool.get(address))
            try:
                return await getattr(stub, method)(request, timeout=timeout)
            except grpc.RpcError as exc:
                last = failure_from_rpc_error(exc, address, source="router")
            error = last.error
            hint = ""
            if error is not None and error.WhichOneof("kind") == "not_leader":
                hint = error.not_leader.leader_address
            if hint:
                if hint not in self._addresses:
                    self._addresses.append(hint)
                self._current = self._addresses.index(hint)
            elif last.code == grpc.StatusCode.UNAVAILABLE and len(self._addresses) > 1:
                self._current = (self._current + 1) % len(self._addresses)
            else:
                break
        assert last is not None
        raise last

    async def close(self) -> None:
        """Channels belong to the pool."""
