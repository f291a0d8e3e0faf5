"""The scheduler inside the router's Placement (a placement group of one, on a real WAL): it
plans from the replicated table, submits through the group, re-planning adds nothing on
partitions with work in flight, and a new leader counts silence from its own start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import eventually_async
from router.placement.commands import Bootstrap, RegisterStore, StoreHeartbeat
from router.placement.config import PlacementConfig
from router.placement.model import AddReplica, PartitionReport, RemoveReplica
from router.placement.runtime import Placement

T0 = 1_700_000_000.0


def test_schedule_once_submits_the_plan_through_the_group_and_never_twice(tmp_path: Path) -> None:
    now = [T0]

    async def scenario() -> None:
        config = PlacementConfig(partitions=4, schedule_interval_s=0, max_down_s=30)
        placement = await Placement.open(tmp_path, config, clock=lambda: now[0])
        await placement.start()
        try:
            await eventually_async(lambda: placement.group.is_leader, 10, "the group of one to lead")
            ms = placement.now_ms()
            for i in (1, 2, 3, 4):
                await placement.apply(RegisterStore(f"h:{i}", i, ms))
            await placement.apply(Bootstrap(4, 3, (1, 2, 3), ms))
            table = placement.table
            for sid in (1, 2, 3, 4):  # every store reports what it hosts; the first replica leads
                reports = tuple(
                    PartitionReport(p.id, leader=p.descriptor.replicas[0].store_id == sid, term=2,
                                    replica_id=r.replica_id, epoch=p.descriptor.epoch,
                                    descriptor=p.descriptor if p.descriptor.replicas[0].store_id == sid else None)
                    for p in table.partitions.values() if (r := p.descriptor.replica_on(sid)) is not None
                )
                await placement.apply(StoreHeartbeat(sid, f"h:{sid}", ms, reports))
            first = await placement.schedule_once()
            adds = [s for s in first if isinstance(s.command.action, AddReplica)]
            assert len(adds) == 3  # 12 replicas over 4 stores: three move to the empty one
            assert {s.command.action.replica.store_id for s in adds} == {4}  # type: ignore[union-attr]
            pending = {op.partition_id for op in table.operations.values() if isinstance(op.action, AddReplica)}
            assert pending == {s.command.partition_id for s in adds}
            again = await placement.schedule_once()  # the same table, the moves in flight
            assert not [s for s in again if isinstance(s.command.action, (AddReplica, RemoveReplica))]
            assert placement.scheduled == len(first) + len(again)

            # Long silence before this router led does not count: stores are not dead yet.
            now[0] += 3600
            placement._leadership_changed(True)  # as on winning an election now
            assert placement.scheduler_config().since_ms == placement.now_ms()
            assert not [s for s in await placement.schedule_once() if "repair" in s.reason]
        finally:
            await placement.close()

    asyncio.run(scenario())
