"""Splits in the placement table (docs/decisions.md D21): queued once, recorded when the
parent's leader reports its shrunk descriptor (the new half appears at once, no gap), the
same on every router that applies the same commands, and never done twice."""

from __future__ import annotations

import dataclasses

import pytest

from common.descriptor import Descriptor, Epoch
from common.keyspace import MAX_SPLIT_KEY_BYTES
from router.placement import codec
from router.placement.commands import Command, PlacementError, StoreHeartbeat, SubmitOperation
from router.placement.model import CreateReplica, PartitionReport, Split, TransferLeader
from router.placement.table import PlacementTable


def table() -> PlacementTable:
    t = PlacementTable()
    ids = [t.register_store(f"127.0.0.1:{7200 + i}", now_ms=1_000) for i in range(3)]
    t.bootstrap(4, 3, ids, now_ms=1_000)
    for s in ids:  # every store hosts its replicas: the bootstrap operations are done
        t.heartbeat(s, f"127.0.0.1:{7199 + s}", [PartitionReport(p) for p in t.partitions], now_ms=1_100)
    return t


def leader_report(t: PlacementTable, desc: Descriptor, size: int = 0, term: int = 3) -> StoreHeartbeat:
    store = desc.replicas[0].store_id
    report = PartitionReport(desc.id, leader=True, term=term, size_bytes=size, descriptor=desc)
    return StoreHeartbeat(store, t.stores[store].address, 2_000, (report,))


def shrunk(desc: Descriptor, key: bytes) -> Descriptor:
    return dataclasses.replace(desc, end=key, epoch=Epoch(desc.epoch.conf_ver, desc.epoch.version + 1))


def test_the_reported_split_adds_the_new_half_at_once() -> None:
    t = table()
    parent = t.partitions[2].descriptor  # [0x40, 0x80)
    t.record_leader(2, parent.replicas[0].store_id, 2)
    op_id = t.submit(2, Split(b"\x60", 0, ()))
    split = t.operations[op_id].action
    assert isinstance(split, Split) and split.new_partition_id == 5 and len(split.new_replica_ids) == 3
    t.apply(leader_report(t, shrunk(parent, b"\x60"), size=999))
    left, right = t.partitions[2].descriptor, t.partitions[5].descriptor
    assert (left.start, left.end, left.epoch) == (b"\x40", b"\x60", Epoch(1, 2))
    assert (right.start, right.end, right.epoch) == (b"\x60", b"\x80", Epoch(1, 2))
    assert [(r.store_id, r.replica_id) for r in right.replicas] == [
        (r.store_id, rid) for r, rid in zip(parent.replicas, split.new_replica_ids)
    ]
    assert t.locate(b"\x5f").id == 2 and t.locate(b"\x60").id == 5  # type: ignore[union-attr]
    assert t.partitions[5].leader_store_id == parent.replicas[0].store_id  # a hint: it campaigns first
    assert t.partitions[2].size_bytes == 0  # measured before the split, maybe: unknown for now
    assert op_id not in t.operations  # done: the epoch moved
    # The new partition's own leader then reports the same descriptor: nothing changes.
    assert not t.update_descriptor(right)


def test_a_split_asked_again_is_the_same_operation_and_others_wait() -> None:
    t = table()
    first = t.submit(2, Split(b"\x60", 0, ()))
    assert t.submit(2, Split(b"\x60", 0, ())) == first  # a retry after a placement failover
    assert t.submit(2, Split(b"", 0, ())) == first  # "split it" is already being done
    with pytest.raises(PlacementError, match="in flight"):
        t.submit(2, Split(b"\x70", 0, ()))
    with pytest.raises(PlacementError, match="in flight"):
        t.submit(2, TransferLeader(2))
    other = t.submit(3, TransferLeader(2))
    with pytest.raises(PlacementError, match="in flight"):
        t.submit(3, Split(b"\xa0", 0, ()))
    assert len(t.operations) == 2 and other in t.operations


@pytest.mark.parametrize(
    ("key", "field_text"),
    [(b"\x40", "strictly inside"), (b"\x90", "strictly inside"), (b"\x50" * (MAX_SPLIT_KEY_BYTES + 1), "at most")],
)
def test_a_bad_split_key_is_refused(key: bytes, field_text: str) -> None:
    t = table()
    with pytest.raises(PlacementError, match=field_text) as e:
        t.submit(2, Split(key, 0, ()))
    assert e.value.field == "operation.split.split_key"
    with pytest.raises(PlacementError, match="unknown partition"):
        t.submit(99, Split(b"", 0, ()))


def test_every_router_applying_the_same_commands_records_the_same_split() -> None:
    """The commands as the placement log carries them (codec), applied on a follower that then
    takes over: its table is the leader's, and redoing the split there splits nothing twice."""
    leader, follower = table(), table()
    parent = leader.partitions[2].descriptor
    cmds: list[Command] = [
        SubmitOperation(2, Split(b"\x60", 0, ()), parent.epoch, 1_500),
        leader_report(leader, shrunk(parent, b"\x60")),
    ]
    for cmd in cmds:
        leader.apply(cmd)
        follower.apply(codec.decode_command(codec.encode_command(cmd)))
    assert codec.table_to_json(follower) == codec.table_to_json(leader)
    # Redoing the same command after the failover: its epoch is gone, so it is refused...
    with pytest.raises(PlacementError, match="epoch"):
        follower.apply(cmds[0])
    # ...and the old parent's report cannot bring the old range back.
    assert not follower.update_descriptor(parent)
    assert sorted(follower.partitions) == [1, 2, 3, 4, 5]


def test_partitions_past_the_split_size_are_candidates_until_queued() -> None:
    t = table()
    for pid, size in ((1, 10), (2, 5_000), (3, 7_000)):
        t.apply(leader_report(t, t.partitions[pid].descriptor, size=size))
    assert t.split_candidates(4_096) == [2, 3]
    assert t.split_candidates(0) == []
    t.submit(3, Split(b"", 0, ()))
    assert t.split_candidates(4_096) == [2]


def test_a_store_that_skipped_the_split_gets_the_new_half_created() -> None:
    """A replica that caught up from a snapshot taken after the split has the left half only:
    once its store reports the left half past the split (and again without the right half),
    placement asks it to create the right half, which its leader then fills."""
    t = table()
    parent = t.partitions[2].descriptor
    t.submit(2, Split(b"\x60", 0, ()))
    left = shrunk(parent, b"\x60")
    t.apply(leader_report(t, left))
    right = t.partitions[5].descriptor
    laggard = parent.replicas[2].store_id
    others = [PartitionReport(p, epoch=t.partitions[p].descriptor.epoch) for p in (1, 3, 4)]

    def beat(left_epoch: Epoch, with_right: bool = False) -> None:
        reports = [*others, PartitionReport(2, epoch=left_epoch)]
        if with_right:
            reports.append(PartitionReport(5, epoch=right.epoch))
        t.heartbeat(laggard, t.stores[laggard].address, reports, now_ms=3_000)

    def creates() -> list[object]:
        return [op.action for op in t.operations.values() if op.partition_id == 5]

    beat(parent.epoch)  # still before the split: it will create the right half itself
    beat(parent.epoch)
    assert creates() == []
    beat(left.epoch)  # past the split, without the right half (from a snapshot)
    (create,) = creates()
    assert create == CreateReplica(laggard, right.replica_on(laggard).replica_id, False, right)  # type: ignore[union-attr]
    beat(left.epoch)
    assert len(creates()) == 1  # queued once
    beat(left.epoch, with_right=True)
    assert creates() == []  # done
