"""Idle partitions go quiet and wake on a request or a missed leader.

Three real nodes run in this process (real gRPC on loopback, real WAL and
LMDB in a temp dir) against a real router process, so the test can read the
nodes' counters directly.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import eventually_async
from router.client import AsyncClient
from support.inprocess import all_quiet, run_cluster, write_then_wait_quiet

pytestmark = pytest.mark.timeout(120)


def test_idle_partitions_go_quiet_and_wake(tmp_path) -> None:
    run_cluster(tmp_path, 4, _scenario)


async def _scenario(nodes, router: str) -> None:
    async with AsyncClient(router) as client:
        await write_then_wait_quiet(client, nodes)
        sent = [n.raftstore.outbox.msgs_sent for n in nodes]
        await asyncio.sleep(1.0)  # twenty ticks: a busy group would heartbeat ten times
        assert [n.raftstore.outbox.msgs_sent for n in nodes] == sent, "quiet groups sent Raft traffic"
        assert all_quiet(nodes)

        # A request wakes its group; the others stay quiet.
        got = await client.get(b"\x40k", consistency="linearizable", timeout=10)
        assert got is not None and got.value == b"v"
        woken = [r for n in nodes for r in n.raftstore.replicas.values() if not r.raw.quiesced]
        assert woken and all(r.pid == woken[0].pid for r in woken)

        # Stale reads are served by quiet followers: their leader's store vouches for them.
        got = await client.get(b"\x80k", consistency="stale", timeout=10)
        assert got is not None and got.value == b"v"

        # A missed leader: stop the store leading a quiet group; its followers wake and elect.
        await eventually_async(lambda: all_quiet(nodes), 30, "every replica to go quiet again")
        victim = next(n for n in nodes if any(r.is_leader() for r in n.raftstore.replicas.values()))
        pid = next(r.pid for r in victim.raftstore.replicas.values() if r.is_leader())
        await victim.stop()
        nodes = [n for n in nodes if n is not victim]

        def new_leader() -> bool:
            return any(n.raftstore.replicas[pid].is_leader() for n in nodes)

        await eventually_async(new_leader, 30, "a new leader after the old leader's store went silent")
        key = nodes[0].raftstore.replicas[pid].start + b"\x00after"
        assert await client.put(key, b"x", timeout=30) > 0
