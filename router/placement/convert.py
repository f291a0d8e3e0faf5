"""Placement records to and from meta.proto wire types: partitions with their leader hints,
stores, heartbeat reports, operations.

The servicer edge is the only place that sees protobuf; the table sees dataclasses. The
descriptor itself converts in common/wire/descriptors.py, shared with the client.
Input conversions raise PlacementError naming the request field, for INVALID_ARGUMENT.
"""

from __future__ import annotations

from typing import cast

from common.descriptor import ReplicaDesc, Role
from common.wire.descriptors import (
    descriptor_from_pb,
    descriptor_to_pb,
    epoch_from_pb,
    epoch_to_pb,
    replica_to_pb,
    role_to_pb,
)
from router.placement.commands import PlacementError
from router.placement.model import (
    Action,
    AddReplica,
    CreateReplica,
    DestroyReplica,
    PartitionInfo,
    PartitionReport,
    PendingOperation,
    RemoveReplica,
    ReplicaReport,
    Split,
    StoreInfo,
    StoreState,
    TransferLeader,
)
from tesserapb import meta_pb2


def partition_to_pb(info: PartitionInfo) -> meta_pb2.PartitionDescriptor:
    return descriptor_to_pb(info.descriptor, info.leader_store_id, info.term)


def partition_status_to_pb(info: PartitionInfo) -> meta_pb2.PartitionStatus:
    replicas = []
    for r in info.descriptor.replicas:
        progress = info.progress.get(r.replica_id)
        replicas.append(
            meta_pb2.ReplicaStatus(
                replica_id=r.replica_id,
                store_id=r.store_id,
                role=role_to_pb(r.role),
                match=progress.match if progress else 0,
                applied=progress.applied if progress else 0,
            )
        )
    return meta_pb2.PartitionStatus(partition_id=info.id, replicas=replicas, size_bytes=info.size_bytes)


def store_to_pb(s: StoreInfo, state: StoreState) -> meta_pb2.Store:
    return meta_pb2.Store(
        id=s.id,
        address=s.address,
        # StoreState's values are meta.proto's (model.py), so the number is the wire value;
        # the cast says so, as in role_to_pb.
        state=cast(meta_pb2.StoreState, int(state)),
        replica_count=s.replica_count,
        leader_count=s.leader_count,
        last_heartbeat_ms=s.last_heartbeat_ms,
        zone=s.zone,
    )


def report_from_pb(pb: meta_pb2.PartitionStats) -> PartitionReport:
    return PartitionReport(
        partition_id=pb.partition_id,
        leader=pb.leader,
        term=pb.term,
        applied=pb.applied,
        size_bytes=pb.size_bytes,
        load=pb.load,
        descriptor=descriptor_from_pb(pb.descriptor) if pb.HasField("descriptor") else None,
        progress=tuple(
            ReplicaReport(replica_id=r.replica_id, store_id=r.store_id, match=r.match, applied=r.applied)
            for r in pb.progress
        ),
        replica_id=pb.replica_id,
        epoch=epoch_from_pb(pb.epoch) if pb.HasField("epoch") else None,
    )


def operation_to_pb(op: PendingOperation) -> meta_pb2.Operation:
    pb = meta_pb2.Operation(id=op.id, partition_id=op.partition_id, epoch=epoch_to_pb(op.epoch))
    a = op.action
    if isinstance(a, TransferLeader):
        pb.transfer_leader.to_store_id = a.to_store_id
    elif isinstance(a, AddReplica):
        pb.add_replica.replica.CopyFrom(replica_to_pb(a.replica))
    elif isinstance(a, RemoveReplica):
        pb.remove_replica.replica.CopyFrom(replica_to_pb(a.replica))
    elif isinstance(a, Split):
        pb.split.split_key = a.split_key
        pb.split.new_partition_id = a.new_partition_id
        pb.split.new_replica_ids.extend(a.new_replica_ids)
    elif isinstance(a, CreateReplica):
        pb.create_replica.partition.CopyFrom(descriptor_to_pb(a.descriptor))
        pb.create_replica.replica_id = a.replica_id
        pb.create_replica.bootstrap = a.bootstrap
    elif isinstance(a, DestroyReplica):
        pb.destroy_replica.partition.CopyFrom(descriptor_to_pb(a.descriptor))
        pb.destroy_replica.replica_id = a.replica_id
    return pb


def pending_operation_to_pb(op: PendingOperation) -> meta_pb2.PendingOperation:
    return meta_pb2.PendingOperation(
        operation=operation_to_pb(op),
        created_ms=op.created_ms,
        last_sent_ms=op.last_sent_ms,
        last_sent_to=op.last_sent_to,
    )


def action_from_pb(pb: meta_pb2.Operation) -> Action:
    """The admin-submittable part of an Operation; ids left zero are filled by the table."""
    kind = pb.WhichOneof("kind")
    if kind == "transfer_leader":
        if not pb.transfer_leader.to_store_id:
            raise PlacementError("operation.transfer_leader.to_store_id", "required")
        return TransferLeader(pb.transfer_leader.to_store_id)
    if kind in ("add_replica", "remove_replica"):
        replica = getattr(pb, kind).replica
        if not replica.store_id:
            raise PlacementError(f"operation.{kind}.replica.store_id", "required")
        r = ReplicaDesc(replica.store_id, replica.replica_id, Role.VOTER)
        return AddReplica(r) if kind == "add_replica" else RemoveReplica(r)
    if kind == "split":
        s = pb.split
        return Split(bytes(s.split_key), s.new_partition_id, tuple(s.new_replica_ids))
    if kind == "create_replica":
        raise PlacementError("operation.create_replica", "issued by placement itself, not submittable")
    raise PlacementError("operation.kind", "set one of transfer_leader, add_replica, remove_replica, split")
