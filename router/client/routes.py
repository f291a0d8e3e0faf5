"""The client's routing cache: which partition owns a key, who leads it, where stores listen.

Filled from the router (ScanPartitions + GetStores) and corrected by the routing errors nodes
return, so a stale entry costs one extra round trip rather than a router call per request.
The merge rule is the placement table's: a descriptor replaces what it overlaps only if its
epoch is not older; leader hints keep the higher term.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from common import keyspace
from common.descriptor import Descriptor, Role
from common.wire.descriptors import descriptor_from_pb
from tesserapb import meta_pb2

_VOTING = (Role.VOTER, Role.INCOMING_VOTER, Role.DEMOTING_VOTER)


@dataclass(frozen=True, slots=True)
class Route:
    descriptor: Descriptor
    leader_store_id: int = 0
    term: int = 0

    @property
    def id(self) -> int:
        return self.descriptor.id

    def contains(self, key: bytes) -> bool:
        return self.descriptor.contains(key)

    def voter_stores(self) -> list[int]:
        voters = [r.store_id for r in self.descriptor.replicas if r.role in _VOTING]
        return voters or [r.store_id for r in self.descriptor.replicas]

    @classmethod
    def from_pb(cls, pb: meta_pb2.PartitionDescriptor) -> Route:
        return cls(descriptor_from_pb(pb), pb.leader_store_id, pb.term)


class RouteCache:
    def __init__(self) -> None:
        self._routes: dict[int, Route] = {}
        self._starts: list[bytes] = []
        self._ids: list[int] = []
        self._addresses: dict[int, str] = {}

    # -- lookups ----------------------------------------------------------------------------

    def lookup(self, key: bytes) -> Route | None:
        i = bisect.bisect_right(self._starts, key) - 1
        if i < 0:
            return None
        route = self._routes[self._ids[i]]
        return route if route.contains(key) else None

    def get(self, partition_id: int) -> Route | None:
        return self._routes.get(partition_id)

    def routes(self) -> list[Route]:
        return [self._routes[i] for i in self._ids]

    def address(self, store_id: int) -> str | None:
        return self._addresses.get(store_id)

    # -- updates ----------------------------------------------------------------------------

    def merge(self, incoming: Route | meta_pb2.PartitionDescriptor) -> bool:
        """Insert or replace a route; False if it is older than what the cache knows."""
        route = incoming if isinstance(incoming, Route) else Route.from_pb(incoming)
        desc = route.descriptor
        current = self._routes.get(desc.id)
        if current is not None:
            if desc.epoch.is_stale_against(current.descriptor.epoch):
                return False
            if desc.epoch == current.descriptor.epoch:
                self._merge_leader(current, route)
                return False
        others = [
            r
            for r in self._routes.values()
            if r.id != desc.id and keyspace.overlaps(r.descriptor.start, r.descriptor.end, desc.start, desc.end)
        ]
        if any(r.descriptor.epoch.version > desc.epoch.version for r in others):
            return False
        for r in others:
            del self._routes[r.id]
        if current is not None and route.term < current.term and desc.replica_on(current.leader_store_id):
            route = Route(desc, current.leader_store_id, current.term)
        self._routes[desc.id] = route
        self._reindex()
        return True

    def merge_all(self, descriptors: Iterable[Route | meta_pb2.PartitionDescriptor]) -> None:
        for d in descriptors:
            self.merge(d)

    def set_leader(self, partition_id: int, store_id: int) -> None:
        """A replica's NotLeader hint: the freshest word on the leader, term unknown."""
        route = self._routes.get(partition_id)
        if route is not None and route.leader_store_id != store_id:
            self._routes[partition_id] = Route(route.descriptor, store_id, route.term)

    def clear_leader(self, partition_id: int, store_id: int | None = None) -> None:
        """Forget the leader (only if it is ``store_id``, when given)."""
        route = self._routes.get(partition_id)
        if route is not None and route.leader_store_id and store_id in (None, route.leader_store_id):
            self._routes[partition_id] = Route(route.descriptor, 0, route.term)

    def drop(self, partition_id: int) -> None:
        if self._routes.pop(partition_id, None) is not None:
            self._reindex()

    def set_address(self, store_id: int, address: str) -> None:
        if store_id and address:
            self._addresses[store_id] = address

    def set_stores(self, stores: Iterable[meta_pb2.Store]) -> None:
        for s in stores:
            self.set_address(s.id, s.address)

    # -- internals --------------------------------------------------------------------------

    def _merge_leader(self, current: Route, incoming: Route) -> None:
        newer = incoming.term > current.term or (incoming.term == current.term and not current.leader_store_id)
        if newer and incoming.leader_store_id:
            self._routes[current.id] = Route(current.descriptor, incoming.leader_store_id, incoming.term)

    def _reindex(self) -> None:
        ordered = sorted(self._routes.values(), key=lambda r: r.descriptor.start)
        self._starts = [r.descriptor.start for r in ordered]
        self._ids = [r.id for r in ordered]


def pick_store(
    route: Route,
    *,
    stale: bool,
    failed: Collection[int],
    suspect: Collection[int] = (),
    rng: random.Random | None = None,
) -> int:
    """The store to send the next attempt to.

    Leader-bound requests go to the cached leader unless it already failed during this call;
    otherwise (and for stale reads, which any replica serves) to a voter that has not failed,
    preferring ones not recently unreachable (``suspect``). When every voter has failed the
    caller starts over from the first; returns 0 for a partition with no replicas.
    """
    voters = route.voter_stores()
    if not voters:
        return 0
    if not stale and route.leader_store_id and route.leader_store_id not in failed:
        return route.leader_store_id
    if stale and rng is not None:
        voters = voters[:]
        rng.shuffle(voters)
    fresh = [s for s in voters if s not in failed]
    for s in fresh:
        if s not in suspect:
            return s
    if fresh:
        return fresh[0]
    return route.leader_store_id if route.leader_store_id and not stale else voters[0]
