"""Found by the nemesis (seed 24, fsync episode #9): a node whose disk failed kept sending
store-level heartbeats, so the followers of an *idle* (quiesced) partition it led trusted
it forever and that partition never elected a new leader until the node was restarted.

Reproduction with real processes: both partitions led by node 1 and idle, node 1's fsync
fails; every partition must take writes again within a few election timeouts.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from conftest import eventually_async
from router.client import AsyncClient
from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster
from tools.nemesis.faults import write_fault_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

FAILED = 1


async def _partitions(router: str) -> list[meta_pb2.PartitionDescriptor]:
    async with grpc.aio.insecure_channel(router) as ch:
        resp = await meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=2)
    return list(resp.partitions)


async def _lead_everything_from(router: str, store: int, timeout: float) -> None:
    async with grpc.aio.insecure_channel(router) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)

        async def all_led_by_store() -> bool:
            parts = await _partitions(router)
            for p in parts:
                if p.leader_store_id != store:
                    await meta.SubmitOperation(
                        meta_pb2.SubmitOperationRequest(
                            operation=meta_pb2.Operation(
                                partition_id=p.id, transfer_leader=meta_pb2.TransferLeader(to_store_id=store)
                            )
                        ),
                        timeout=2,
                    )
            return all(p.leader_store_id == store for p in parts)

        await eventually_async(all_led_by_store, timeout, f"store {store} to lead every partition", interval=1.0)


async def _first_write(client: AsyncClient, key: bytes, bound: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        try:
            await client.put(key, b"after")
            return time.monotonic() - t0
        except Exception:
            await asyncio.sleep(0.05)
    return None


def test_idle_partitions_of_a_failed_disk_node_fail_over(tmp_path) -> None:
    faults = {i: str(tmp_path / f"faults{i}.json") for i in (1, 2, 3)}
    for f in faults.values():
        write_fault_file(f, {})
    cluster = Cluster(str(tmp_path / "c"), nodes=3, partitions=2, schedule_interval=0,
                      node_args=lambda i: ["--fault-file", faults[i]])
    cluster.start()
    try:
        cluster.wait_ready(60)
        assert cluster.router is not None
        router = cluster.router.address

        async def scenario() -> None:
            parts = await _partitions(router)
            keys = [(p.start or b"\x00") + b"failover" for p in parts]
            async with AsyncClient(router, deadline_s=10) as client:
                for k in keys:
                    await client.put(k, b"before")
                await _lead_everything_from(router, FAILED, 30)
                await asyncio.sleep(3)  # idle for several election timeouts: quiesced
                write_fault_file(faults[FAILED], {"fail_fsync": True})
                await asyncio.sleep(0.3)  # the node polls its fault file every 100 ms
            async with AsyncClient(router, deadline_s=1.0, attempt_timeout_s=0.25) as client:
                # The first partition's write is what hits the failed disk (its followers
                # hear of it, as the leader's appends go out before its fsync); only then
                # does anything ask for the second partition, which nobody woke.
                took = [await _first_write(client, keys[0], 15)]
                took.append(await _first_write(client, keys[1], 15))
            assert all(t is not None for t in took), f"partitions stuck behind the failed node: {took}"
            async def failed_node_leads_nothing() -> bool:
                return all(p.leader_store_id != FAILED for p in await _partitions(router))

            await eventually_async(failed_node_leads_nothing, 5, "the router to stop naming the failed node a leader")

        asyncio.run(scenario())
    finally:
        cluster.stop()
