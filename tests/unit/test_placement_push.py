"""Who is told "heartbeat now", and which router a node or client calls next."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from common.descriptor import ReplicaDesc, Role
from common.routers import RouterSet, parse_router_addresses
from router.placement.commands import Bootstrap, RegisterStore, StoreHeartbeat, SubmitOperation
from router.placement.model import AddReplica, PartitionReport, TransferLeader
from router.placement.table import PlacementTable
from router.placement.watchers import OperationWatchers


def _table_with_leaders() -> PlacementTable:
    t = PlacementTable()
    for i in (1, 2, 3, 4):
        t.apply(RegisterStore(f"h:{i}", i, now_ms=1))
    t.apply(Bootstrap(1, 3, (1, 2, 3), now_ms=1))
    (info,) = t.partitions.values()
    for r in info.descriptor.replicas:  # each store reports hosting its replica: CreateReplica done
        report = PartitionReport(info.id, replica_id=r.replica_id, epoch=info.descriptor.epoch)
        t.apply(StoreHeartbeat(r.store_id, f"h:{r.store_id}", now_ms=2, reports=(report,)))
    assert not t.operations
    return t


def test_the_stores_due_operations_are_the_ones_to_wake() -> None:
    t = PlacementTable()
    for i in (1, 2, 3):
        t.apply(RegisterStore(f"h:{i}", i, now_ms=1))
    t.apply(Bootstrap(1, 3, (1, 2, 3), now_ms=1))
    assert t.stores_with_operations_due(now_ms=2) == {1, 2, 3}  # CreateReplica for each


def test_a_leader_addressed_operation_wakes_the_leaders_store_once_it_is_known() -> None:
    t = _table_with_leaders()
    (pid,) = t.partitions
    t.partitions[pid].leader_store_id = 0
    t.apply(SubmitOperation(pid, TransferLeader(2), now_ms=3))
    assert 2 not in t.stores_with_operations_due(now_ms=3)  # no leader known: nobody to wake
    t.partitions[pid].leader_store_id = 1
    assert 1 in t.stores_with_operations_due(now_ms=3)
    t.apply(SubmitOperation(pid, AddReplica(ReplicaDesc(4, 0, Role.VOTER)), now_ms=3))
    assert {1, 4} <= t.stores_with_operations_due(now_ms=3)  # the leader, and the new replica's store


def test_watchers_wake_only_their_store_and_go_away_with_the_block() -> None:
    async def scenario() -> None:
        w = OperationWatchers()
        with w.watch(1) as one, w.watch(2) as two:
            assert w.wake([1, 9]) == 1
            assert one.is_set() and not two.is_set()
        assert not w.watching(1) and w.wake([1, 2]) == 0

    asyncio.run(scenario())


def test_routers_follow_the_leaders_hint_and_skip_the_unreachable() -> None:
    rs = RouterSet("a:1, b:2,c:3")
    assert rs.addresses == ["a:1", "b:2", "c:3"] and rs.current == "a:1" and rs.tries == 4
    assert rs.failed(grpc.StatusCode.FAILED_PRECONDITION, leader_hint="c:3") and rs.current == "c:3"
    assert rs.failed(grpc.StatusCode.UNAVAILABLE) and rs.current == "a:1"  # next, wrapping around
    assert not rs.failed(grpc.StatusCode.INVALID_ARGUMENT) and rs.current == "a:1"  # an answer: stay
    assert rs.failed(None, leader_hint="d:4") and rs.addresses[-1] == "d:4" and rs.current == "d:4"
    assert not rs.failed(None, leader_hint="d:4")  # already there: nowhere new to go
    alone = RouterSet(["a:1"])
    assert not alone.failed(grpc.StatusCode.UNAVAILABLE)  # no other router to try
    with pytest.raises(ValueError):
        parse_router_addresses(" , ")
