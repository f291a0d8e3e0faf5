"""A full disk under the WAL, on every node at once: the rounds that need the disk are held.

In-process nodes (real gRPC, WAL and LMDB; node.disk_full) whose WAL appends find no room
through the WAL's fault hook (``append_enospc``: half the batch written, then ENOSPC, as the
kernel does; tests/process/test_disk_full.py has the kernel's own ENOSPC). No node can
persist, so nothing new commits; yet lease and linearizable reads are served (the leader's
heartbeats go early and its followers' answers to them promise nothing about their disks), the
nodes say so in ``RaftStore.disk`` and in health, proposals are refused with "disk full", and
once the disk takes writes again the held entries are written, the write in flight is applied
once, and new writes succeed, without a restart.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import eventually_async
from node.disk_full import DISK_HEALTH_SERVICE
from node.server import Node
from router.client import AsyncClient, DeadlineExceeded
from support.inprocess import run_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def _disk_says(node: Node) -> int:
    """The node's health service, asked over gRPC, about DISK_HEALTH_SERVICE."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)  # its stubs declare no methods (types-grpcio-health-checking)
        req = health_pb2.HealthCheckRequest(service=DISK_HEALTH_SERVICE)
        resp = await stub.Check(req, timeout=2)  # type: ignore[attr-defined]
        return int(resp.status)


async def _all_say(nodes: list[Node], status: int) -> bool:
    return all([await _disk_says(n) == status for n in nodes])


def test_held_rounds_keep_reads_and_resume(tmp_path) -> None:
    async def scenario(nodes: list[Node], router: str) -> None:
        async with AsyncClient(router, deadline_s=10) as client:
            before = {b"k%d" % i: b"v%d" % i for i in range(20)}
            for k, v in before.items():
                await client.put(k, v)
            assert await _all_say(nodes, health_pb2.HealthCheckResponse.SERVING)
            for n in nodes:
                n.wal.faults.append_enospc = True
            with pytest.raises(DeadlineExceeded) as refused:
                await client.put(b"k-during", b"x", timeout=4)
            assert "disk full" in f"{refused.value} {refused.value.last_error}"
            await eventually_async(lambda: all(n.raftstore.disk.full for n in nodes), 10, "every disk to be full")
            await eventually_async(lambda: _all_say(nodes, health_pb2.HealthCheckResponse.NOT_SERVING), 5,
                                   "health to say the disks are full")
            assert not any(n.raftstore.failed for n in nodes), "a full disk is not fail-stop"
            # Reads of what was acknowledged keep working, for longer than a lease.
            for consistency in ("lease", "linearizable", "lease", "stale"):
                for k, v in before.items():
                    got = await client.get(k, consistency, timeout=5)
                    assert got is not None and got.value == v, (consistency, k)
            held_rounds = sum(n.raftstore.disk.retries for n in nodes)
            assert held_rounds > 0
            for n in nodes:
                n.wal.faults.append_enospc = False
            await eventually_async(lambda: not any(n.raftstore.disk.full for n in nodes), 10, "disks writable again")
            await eventually_async(lambda: _all_say(nodes, health_pb2.HealthCheckResponse.SERVING), 5,
                                   "health to say the disks take writes")
            await client.put(b"k-after", b"y", timeout=10)
            for k, v in {**before, b"k-after": b"y"}.items():
                got = await client.get(k, "linearizable")
                assert got is not None and got.value == v
            # The write refused in the middle either never applied or applied once, never half.
            got = await client.get(b"k-during", "linearizable")
            assert got is None or got.value == b"x"

    run_cluster(tmp_path, 1, scenario)


def test_a_follower_with_a_full_disk_does_not_pile_up_what_it_cannot_write(tmp_path) -> None:
    """One follower's WAL finds no room while the other two take writes: the follower keeps
    none of the appends it cannot persist in memory (they would pile up for as long as its disk
    stays full), and catches up once it can write again."""

    async def scenario(nodes: list[Node], router: str) -> None:
        async with AsyncClient(router, deadline_s=10) as client:
            await client.put(b"first", b"v")
            leader = next(n for n in nodes if any(r.is_leader() for r in n.raftstore.replicas.values()))
            full = next(n for n in nodes if n is not leader)
            (rep,) = full.raftstore.replicas.values()
            full.wal.faults.append_enospc = True
            value = b"x" * 4096
            for i in range(300):  # about 1.2 MiB the full follower must not keep
                await client.put(b"k%04d" % i, value)
            assert full.raftstore.disk.full
            held = rep.raw.log_view().last_index() - rep.storage.last_index()
            assert held < 50, f"{held} entries the full follower cannot write are kept in its memory"
            full.wal.faults.append_enospc = False
            (lead_rep,) = leader.raftstore.replicas.values()
            await eventually_async(lambda: rep.storage.last_index() >= lead_rep.storage.last_index(), 15,
                                   "the follower to catch up once it can write")
            await eventually_async(lambda: not full.raftstore.disk.full, 10, "the follower's disk writable again")

    run_cluster(tmp_path, 1, scenario)
