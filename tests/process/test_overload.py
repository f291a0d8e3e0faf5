"""An open-loop overload of a real node (tools/overload.py): puts offered at a fixed rate above
what the partition's leader can serve, whatever it answers, for a dozen seconds
(``TESSERA_OVERLOAD_S=60`` for the issue's minute; the same generator runs from the command
line as ``python -m tools.overload``).

The node must refuse what it cannot take (RESOURCE_EXHAUSTED, node/admission.py) rather than
queue it: its resident memory stays within a bound while the load lasts, and once the load
stops an ordinary client's writes succeed at once.
"""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import pytest

from router.client import Client
from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster
from tools.overload import overload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SECONDS = float(os.environ.get("TESSERA_OVERLOAD_S", "12"))
RATE = 15_000.0  # puts/s of 1 KiB, in messages of BATCH puts
BATCH = 200
# What the rate is to the node's speed depends on the machine (a quiet one kept up with 15,000/s
# of these batched puts), so the partition's bound is set below one message's puts: whatever
# the speed, a message read while earlier ones wait is partly refused.
PARTITION_BOUND = BATCH // 2
RSS_GROWTH_BOUND = 150 << 20


async def _leader(router: str) -> meta_pb2.PartitionDescriptor:
    async with grpc.aio.insecure_channel(router) as ch:
        resp = await meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=2)
    (p,) = resp.partitions
    return p


def test_an_open_loop_overload_is_refused_with_bounded_memory_and_served_after(tmp_path) -> None:
    cluster = Cluster(str(tmp_path / "c"), nodes=3, partitions=1, schedule_interval=0,
                      extra_node_args=["--max-partition-proposals", str(PARTITION_BOUND)])
    cluster.start()
    try:
        cluster.wait_ready(60)
        assert cluster.router is not None
        part = asyncio.run(_leader(cluster.router.address))
        store = part.leader_store_id
        popen = cluster.node_procs[store].popen
        assert popen is not None
        res = asyncio.run(overload(cluster.node_address(store), part.id, seconds=SECONDS, rate=RATE, batch=BATCH,
                                   streams=2, pid=popen.pid))
        summary = (f"{res.sent} offered in {res.seconds:.1f} s: {res.ok} ok, {res.busy} refused, {res.other} other "
                   f"{res.other_messages[:2]}; RSS {res.rss_start >> 20} -> max {res.rss_max >> 20} MiB")
        print(summary)
        assert res.busy > 0, f"nothing was refused: {summary}"
        assert res.ok > 0, f"nothing was served: {summary}"
        assert res.rss_max - res.rss_start < RSS_GROWTH_BOUND, f"memory grew without bound: {summary}"
        assert res.unanswered == 0, f"requests left unanswered: {summary}"
        with Client(cluster.router_addresses, deadline_s=10) as client:
            t0 = time.monotonic()
            for i in range(20):
                client.put(b"after/%d" % i, b"v")
            took = time.monotonic() - t0
        assert took < 5, f"20 writes after the overload took {took:.1f} s"
    finally:
        cluster.stop()
