"""A node whose disk fails stops acknowledging writes; the group carries on without it.

Three real nodes in this process (real gRPC on loopback, real WAL and LMDB)
against a real router process, so the test can flip the WAL's fault hook.
"""

from __future__ import annotations

import grpc
import pytest

from inprocess import run_cluster, until
from router.client import AsyncClient
from tesserapb import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def test_failed_fsync_stops_acknowledgements(tmp_path) -> None:
    run_cluster(tmp_path, 1, _scenario)


async def _scenario(nodes, router: str) -> None:
    async with AsyncClient(router) as client:
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
        await until(lambda: any(n.raftstore.replicas[1].is_leader() for n in others), 30, "a new leader")
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


def test_an_internal_error_in_a_round_fails_the_node_and_the_group_moves_on(tmp_path) -> None:
    run_cluster(tmp_path, 1, _internal_error_scenario)


async def _internal_error_scenario(nodes, router: str) -> None:
    async with AsyncClient(router) as client:
        await client.put(b"before", b"1", timeout=30)
        leader = next(n for n in nodes if n.raftstore.replicas[1].is_leader())
        raw = leader.raftstore.replicas[1].raw

        def broken_advance(rd) -> None:  # a bug between persisting a Ready and advancing it
            raise RuntimeError("injected bug in advance")

        raw.advance = broken_advance
        # The sick leader must neither acknowledge nor keep its followers quiet: it fails
        # stop, they elect a new leader, and the client's retry lands there.
        version = await client.put(b"during", b"2", timeout=30)
        assert leader.raftstore.failed is not None
        assert "internal error advancing the Raft state" in str(leader.raftstore.failed)
        others = [n for n in nodes if n is not leader]
        await until(lambda: any(n.raftstore.replicas[1].is_leader() for n in others), 30, "a new leader")
        got = await client.get(b"during", consistency="linearizable", timeout=30)
        assert got is not None and got.value == b"2" and got.version == version
        async with grpc.aio.insecure_channel(leader.advertise) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await kv_pb2_grpc.KVStub(ch).Put(
                    kv_pb2.PutRequest(context=kv_pb2.RequestContext(partition_id=1), key=b"x", value=b"y"),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "internal error" in err.value.details()
