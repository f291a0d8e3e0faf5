"""Partition descriptors to and from meta.proto: Epoch, Replica, PartitionDescriptor.

The only place where the domain model of common/descriptor.py meets protobuf. The
descriptor's leader hint (``leader_store_id``, ``term``) is not part of the domain
Descriptor, so it travels beside it: in as the caller reads it off the message, out as
arguments.
"""

from __future__ import annotations

from typing import cast

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from tesserapb import meta_pb2


def epoch_to_pb(epoch: Epoch) -> meta_pb2.Epoch:
    return meta_pb2.Epoch(conf_ver=epoch.conf_ver, version=epoch.version)


def epoch_from_pb(pb: meta_pb2.Epoch) -> Epoch:
    return Epoch(conf_ver=pb.conf_ver, version=pb.version)


def role_to_pb(role: Role) -> meta_pb2.Role:
    # Role's values are meta.proto's (common/descriptor.py): the number is the wire value. The
    # stubs give the proto enum a class of its own, which no int is, hence the cast.
    return cast(meta_pb2.Role, int(role))


def replica_to_pb(r: ReplicaDesc) -> meta_pb2.Replica:
    return meta_pb2.Replica(store_id=r.store_id, replica_id=r.replica_id, role=role_to_pb(r.role))


def replica_from_pb(pb: meta_pb2.Replica) -> ReplicaDesc:
    return ReplicaDesc(store_id=pb.store_id, replica_id=pb.replica_id, role=Role(pb.role))


def descriptor_to_pb(d: Descriptor, leader_store_id: int = 0, term: int = 0) -> meta_pb2.PartitionDescriptor:
    return meta_pb2.PartitionDescriptor(
        id=d.id,
        start=d.start,
        end=d.end,
        epoch=epoch_to_pb(d.epoch),
        replicas=[replica_to_pb(r) for r in d.replicas],
        leader_store_id=leader_store_id,
        term=term,
    )


def descriptor_from_pb(pb: meta_pb2.PartitionDescriptor) -> Descriptor:
    return Descriptor(
        id=pb.id,
        start=bytes(pb.start),
        end=bytes(pb.end),
        epoch=epoch_from_pb(pb.epoch),
        replicas=tuple(replica_from_pb(r) for r in pb.replicas),
    )


def encode_descriptor(d: Descriptor) -> bytes:
    """The descriptor as bytes, the serialized PartitionDescriptor (no leader hint): what a
    node stores beside the applied state and sends with a snapshot."""
    return descriptor_to_pb(d).SerializeToString()


def decode_descriptor(data: bytes) -> Descriptor:
    return descriptor_from_pb(meta_pb2.PartitionDescriptor.FromString(data))
