"""Idle partitions go quiet and wake on a request or a missed leader.

Three real nodes run in this process (real gRPC on loopback, real WAL and
LMDB in a temp dir) against a real router process, so the test can read the
nodes' counters directly.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from node.server import Node
from router.client import AsyncClient
from router.testing import RouterProcess

pytestmark = pytest.mark.timeout(120)


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_idle_partitions_go_quiet_and_wake(tmp_path) -> None:
    router = RouterProcess(tmp_path / "router", extra_args=("--partitions", "4")).start()
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
            await _until(lambda: all(len(n.raftstore.replicas) == 4 for n in nodes), 30, "replicas")
            for i in range(4):
                await client.put(bytes([i * 64]) + b"k", b"v", timeout=30)

            def all_quiet() -> bool:
                return all(r.raw.quiesced for n in nodes for r in n.raftstore.replicas.values())

            await _until(all_quiet, 30, "every replica to go quiet")
            sent = [n.raftstore.raft_msgs_sent for n in nodes]
            await asyncio.sleep(1.0)  # twenty ticks: a busy group would heartbeat ten times
            assert [n.raftstore.raft_msgs_sent for n in nodes] == sent, "quiet groups sent Raft traffic"
            assert all_quiet()

            # A request wakes its group; the others stay quiet.
            assert (await client.get(b"\x40k", consistency="linearizable", timeout=10)).value == b"v"
            woken = [r for n in nodes for r in n.raftstore.replicas.values() if not r.raw.quiesced]
            assert woken and all(r.pid == woken[0].pid for r in woken)

            # Stale reads are served by quiet followers: their leader's store vouches for them.
            assert (await client.get(b"\x80k", consistency="stale", timeout=10)).value == b"v"

            # A missed leader: stop the store leading a quiet group; its followers wake and elect.
            await _until(all_quiet, 30, "every replica to go quiet again")
            victim = next(n for n in nodes if any(r.is_leader() for r in n.raftstore.replicas.values()))
            pid = next(r.pid for r in victim.raftstore.replicas.values() if r.is_leader())
            await victim.stop()
            nodes.remove(victim)

            def new_leader() -> bool:
                return any(n.raftstore.replicas[pid].is_leader() for n in nodes)

            await _until(new_leader, 30, "a new leader after the old leader's store went silent")
            key = nodes[0].raftstore.replicas[pid].start + b"\x00after"
            assert await client.put(key, b"x", timeout=30) > 0
    finally:
        for n in nodes:
            await n.stop()
