"""The partition descriptor: a partition's key range, epoch and members.

One domain model for router, client and node. The values mirror meta.proto's
PartitionDescriptor, Epoch, Replica and Role, but these are plain frozen dataclasses (value
equality, no protobuf mutability); common/wire/descriptors.py converts them at the gRPC edge.
The placement file encodes them by class name (router/placement/codec.py), so renaming one is
an on-disk format change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from common import keyspace


class Role(IntEnum):
    """A replica's part in its Raft group. Values equal meta.proto's Role."""

    VOTER = 0
    LEARNER = 1
    INCOMING_VOTER = 2
    DEMOTING_VOTER = 3


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    """A partition's shape version: conf_ver (membership) and version (range)."""

    conf_ver: int = 0
    version: int = 0

    def is_newer_than(self, other: Epoch) -> bool:
        """Newer = no component older and at least one newer (PD's rule). Two epochs where each
        is ahead in one component are incomparable: neither replaces the other."""
        return (
            self.conf_ver >= other.conf_ver
            and self.version >= other.version
            and (self.conf_ver, self.version) != (other.conf_ver, other.version)
        )

    def is_stale_against(self, other: Epoch) -> bool:
        return self.conf_ver < other.conf_ver or self.version < other.version

    @property
    def is_zero(self) -> bool:
        return self.conf_ver == 0 and self.version == 0


@dataclass(frozen=True, slots=True)
class ReplicaDesc:
    """One member of a partition: the store hosting it, its Raft id, its role."""

    store_id: int
    replica_id: int
    role: Role = Role.VOTER


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A partition's range, epoch and members: the part that only changes through the
    partition's own Raft log (splits, membership changes). ``end`` empty means unbounded."""

    id: int
    start: bytes
    end: bytes
    epoch: Epoch
    replicas: tuple[ReplicaDesc, ...]

    def contains(self, key: bytes) -> bool:
        return keyspace.contains(self.start, self.end, key)

    def replica_on(self, store_id: int) -> ReplicaDesc | None:
        for r in self.replicas:
            if r.store_id == store_id:
                return r
        return None

    def replica_by_id(self, replica_id: int) -> ReplicaDesc | None:
        for r in self.replicas:
            if r.replica_id == replica_id:
                return r
        return None
