"""A node whose disk fails stops acknowledging writes; the group carries on without it.

Three real nodes in this process (real gRPC on loopback, real WAL and LMDB)
against a real router process, so the test can flip the WAL's fault hook.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from node.server import Node
from router.client import AsyncClient
from tesserapb import kv_pb2, kv_pb2_grpc
from router.testing import RouterProcess

pytestmark = pytest.mark.timeout(120)


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_failed_fsync_stops_acknowledgements(tmp_path) -> None:
    router = RouterProcess(tmp_path / "router", extra_args=("--partitions", "1")).start()
    try:
        asyncio.run(_scenario(tmp_path, router.address))
    finally:
        router.terminate()


async def _scenario(tmp_path, router: str) -> None:
    nodes = [Node(i, "127.0.0.1:0", str(tmp_path / f"node{i}"), router, advertise="127.0.0.1:0") for i in (1, 2, 3)]
    for n in nodes:
        await n.start()
    try:
        async with AsyncClient(router) as client:
            await _until(lambda: all(n.raftstore.replicas for n in nodes), 30, "replicas")
            await client.put(b"before", b"1", timeout=30)
            leader = next(n for n in nodes if n.raftstore.replicas[1].is_leader())
            leader.wal.faults.fail_fsync = True
            # The next write reaches the sick leader: its fsync fails, so it must not be
            # acknowledged by it; the node fails and the others elect a new leader, and
            # the client's retry (same request id) lands there.
            version = await client.put(b"during", b"2", timeout=30)
            assert leader.raftstore.failed is not None
            assert not leader.raftstore.replicas or all(r.closed for r in leader.raftstore.replicas.values())
            others = [n for n in nodes if n is not leader]
            await _until(lambda: any(n.raftstore.replicas[1].is_leader() for n in others), 30, "a new leader")
            got = await client.get(b"during", consistency="linearizable", timeout=30)
            assert got is not None and got.value == b"2" and got.version == version
            # The failed node refuses every request instead of acknowledging anything.
            async with grpc.aio.insecure_channel(leader.advertise) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await kv_pb2_grpc.KVStub(ch).Put(
                        kv_pb2.PutRequest(context=kv_pb2.RequestContext(partition_id=1), key=b"x", value=b"y"),
                        timeout=5,
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "write-ahead log failed" in err.value.details()
    finally:
        for n in nodes:
            await n.stop()
