"""A MetaSource that reads the router's own placement table in-process, so the KV proxy's
client routes without calling its own Meta service over the network."""

from __future__ import annotations

from collections.abc import Sequence

from router.placement import convert
from router.placement.runtime import Placement
from tesserapb import meta_pb2


class LocalMeta:
    def __init__(self, placement: Placement) -> None:
        self._placement = placement

    async def scan_partitions(self, timeout: float) -> Sequence[meta_pb2.PartitionDescriptor]:
        return [convert.partition_to_pb(info) for info in self._placement.table.scan()]

    async def get_stores(self, timeout: float) -> Sequence[meta_pb2.Store]:
        now = self._placement.now_ms()
        return [
            convert.store_to_pb(s, self._placement.store_state(s, now))
            for s in self._placement.table.stores.values()
        ]

    async def close(self) -> None:
        pass
