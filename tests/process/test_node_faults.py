"""A node whose disk fails stops acknowledging writes; the group carries on without it.

Three real nodes in this process (real gRPC on loopback, real WAL and LMDB)
against a real router process, so the test can flip the WAL's fault hook.
"""

from __future__ import annotations

import grpc
import pytest

from conftest import eventually_async
from router.client import AsyncClient
from support.inprocess import run_cluster
from tesserapb import kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def test_failed_fsync_stops_acknowledgements(tmp_path) -> None:
    def fail_fsync(leader) -> None:
        leader.wal.faults.fail_fsync = True

    run_cluster(tmp_path, 1, lambda nodes, router: _sick_leader(
        nodes, router, fail_fsync, failed_says="write-ahead log failed", refusal_says="write-ahead log failed"))


def test_an_internal_error_in_a_round_fails_the_node_and_the_group_moves_on(tmp_path) -> None:
    def break_advance(leader) -> None:  # a bug between persisting a Ready and advancing it
        def broken_advance(rd) -> None:
            raise RuntimeError("injected bug in advance")

        leader.raftstore.replicas[1].raw.advance = broken_advance

    run_cluster(tmp_path, 1, lambda nodes, router: _sick_leader(
        nodes, router, break_advance,
        failed_says="internal error advancing the Raft state", refusal_says="internal error"))


async def _sick_leader(nodes, router: str, break_it, *, failed_says: str, refusal_says: str) -> None:
    async with AsyncClient(router) as client:
        await client.put(b"before", b"1", timeout=30)
        leader = next(n for n in nodes if n.raftstore.replicas[1].is_leader())
        break_it(leader)
        # The next write reaches the sick leader: it must not be acknowledged by it, nor may
        # the leader keep its followers quiet; the node fails stop, the others elect a new
        # leader, and the client's retry (same request id) lands there.
        version = await client.put(b"during", b"2", timeout=30)
        assert leader.raftstore.failed is not None
        assert failed_says in str(leader.raftstore.failed)
        assert not leader.raftstore.replicas or all(r.closed for r in leader.raftstore.replicas.values())
        others = [n for n in nodes if n is not leader]
        await eventually_async(lambda: any(n.raftstore.replicas[1].is_leader() for n in others), 30, "a new leader")
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
            assert refusal_says in (err.value.details() or "")
