"""Typed records of the placement state: partitions, stores, operations, heartbeat reports.

These mirror the wire types of meta.proto (Store, Operation, PartitionStats) but are plain
dataclasses, so the table can be a pure function of its command log: no protobuf mutability,
cheap equality, a JSON codec we control (codec.py). A partition's own descriptor (range,
epoch, members) is the shared domain model of common/descriptor.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from common.descriptor import Descriptor, Epoch, ReplicaDesc


class StoreState(IntEnum):
    """Values equal meta.proto's StoreState. DOWN is never stored: it is derived from the last
    heartbeat time at read time (``PlacementTable.effective_state``)."""

    UP = 1
    DOWN = 2
    DRAINING = 3
    REMOVED = 4


@dataclass(slots=True)
class ReplicaProgress:
    """Last reported progress of one replica: match from the leader's view, applied from the
    replica's own store."""

    match: int = 0
    applied: int = 0


@dataclass(slots=True)
class PartitionInfo:
    descriptor: Descriptor
    # Leader hint and the term it was observed in; 0 when unknown.
    leader_store_id: int = 0
    term: int = 0
    # replica_id -> progress
    progress: dict[int, ReplicaProgress] = field(default_factory=dict)
    size_bytes: int = 0
    load: float = 0.0
    # Unix ms of the last operation an operator submitted on it (0: never); leader balance
    # leaves the partition alone for a while after (docs/decisions.md D20).
    steered_ms: int = 0

    @property
    def id(self) -> int:
        return self.descriptor.id


@dataclass(slots=True)
class StoreInfo:
    id: int
    address: str
    # Administrative state: UP, DRAINING or REMOVED (DOWN is derived, never stored).
    state: StoreState = StoreState.UP
    # Unix ms of the last heartbeat (or registration), as stamped into the command.
    last_heartbeat_ms: int = 0
    replica_count: int = 0
    leader_count: int = 0
    capacity_bytes: int = 0
    used_bytes: int = 0
    # Partition ids the store reported hosting in its last heartbeat.
    hosted: frozenset[int] = frozenset()
    # The same, with the replica id each one reported (0 from nodes that do not say).
    hosted_replicas: dict[int, int] = field(default_factory=dict)
    # The conf_ver of each hosted replica's own descriptor (garbage collection compares it
    # with placement's), and the partitions it leads: kept here because a heartbeat that
    # carries only changes does not repeat them.
    hosted_conf_vers: dict[int, int] = field(default_factory=dict)
    leading: frozenset[int] = frozenset()
    # The failure domain the node says it is in (``tessera node --zone``); "" when it gave
    # none, and then the store is a domain of its own (see ``zone_key``).
    zone: str = ""

    @property
    def zone_key(self) -> str:
        """The failure domain placement spreads replicas over: the zone, or for a store with
        no zone label the store itself, so that "no two replicas in one zone" is also "no two
        replicas on one store" for clusters without zones."""
        return f"zone:{self.zone}" if self.zone else f"store:{self.id}"


# -- operations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferLeader:
    to_store_id: int


@dataclass(frozen=True, slots=True)
class AddReplica:
    replica: ReplicaDesc


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    replica: ReplicaDesc


@dataclass(frozen=True, slots=True)
class Split:
    # Empty: the leader picks the middle key by size.
    split_key: bytes
    new_partition_id: int
    new_replica_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CreateReplica:
    """Addressed to a store (not to the partition's leader): host this replica."""

    store_id: int
    replica_id: int
    bootstrap: bool
    descriptor: Descriptor


@dataclass(frozen=True, slots=True)
class DestroyReplica:
    """Addressed to a store: its replica ``replica_id`` is not in ``descriptor`` (newer than
    the replica's own), so the group removed it while it was cut off.  Computed from each
    heartbeat, never queued."""

    store_id: int
    replica_id: int
    descriptor: Descriptor


Action = TransferLeader | AddReplica | RemoveReplica | Split | CreateReplica | DestroyReplica


@dataclass(slots=True)
class PendingOperation:
    id: int
    partition_id: int
    # The epoch the operation was decided against; the leader drops it if its epoch moved on.
    epoch: Epoch
    action: Action
    created_ms: int
    # When it was last handed out in a heartbeat response (0: never). Leader-addressed
    # operations are re-sent only after a pause (or at once to a new leader's store),
    # CreateReplica on every heartbeat.
    last_sent_ms: int = 0
    last_sent_to: int = 0

    def target_store(self, leader_store_id: int) -> int:
        """The store whose heartbeat response carries this operation (0: nobody yet)."""
        if isinstance(self.action, (CreateReplica, DestroyReplica)):
            return self.action.store_id
        return leader_store_id


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One member's replication progress as seen by the partition leader."""

    replica_id: int
    store_id: int
    match: int = 0
    applied: int = 0


@dataclass(frozen=True, slots=True)
class PartitionReport:
    """One replica's view of its partition, from its store's heartbeat (PartitionStats)."""

    partition_id: int
    leader: bool = False
    term: int = 0
    applied: int = 0
    size_bytes: int = 0
    load: float = 0.0
    # Leader only: its descriptor and the progress of every member.
    descriptor: Descriptor | None = None
    progress: tuple[ReplicaReport, ...] = ()
    # Every replica: its own id and its own descriptor's epoch (0 / None: not reported).
    replica_id: int = 0
    epoch: Epoch | None = None
