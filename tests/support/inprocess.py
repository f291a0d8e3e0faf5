"""Real nodes inside the test process, against a real router process.

For tests that must reach into a node (its counters, its WAL's fault hook):
real gRPC on loopback, real WAL and LMDB under ``tmp_path``, ports chosen by
the kernel.  :func:`run_cluster` starts everything, runs the scenario and
stops everything, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conftest import eventually_async
from node.server import Node
from router.client import AsyncClient
from router.testing import RouterProcess


def run_cluster(tmp_path, partitions: int, scenario: Callable[[list[Node], str], Awaitable[None]]) -> None:
    """Start a router process and three in-process nodes, run ``scenario(nodes, router)``.
    The router does not schedule: these scenarios watch the nodes' own behaviour (idle groups
    going quiet, a sick leader stepping down), which leader balancing would disturb."""
    router = RouterProcess(tmp_path / "router",
                           extra_args=("--partitions", str(partitions), "--schedule-interval", "0")).start()

    async def main() -> None:
        nodes = [Node(i, "127.0.0.1:0", str(tmp_path / f"node{i}"), router.address, advertise="127.0.0.1:0")
                 for i in (1, 2, 3)]
        started: list[Node] = []
        try:
            for n in nodes:
                await n.start()
                started.append(n)
            await eventually_async(lambda: all(len(n.raftstore.replicas) == partitions for n in nodes), 30, "replicas")
            await scenario(nodes, router.address)
        finally:
            for n in started:
                await n.stop()

    try:
        asyncio.run(main())
    finally:
        router.terminate()


async def write_then_wait_quiet(client: AsyncClient, nodes: list[Node], partitions: int = 4) -> None:
    """One write into each of ``partitions`` pre-split partitions (keys spread over the byte
    space), then until every replica on every node has quiesced."""
    for i in range(partitions):
        await client.put(bytes([i * (256 // partitions)]) + b"k", b"v", timeout=30)
    await eventually_async(lambda: all_quiet(nodes), 30, "every replica to go quiet")


def all_quiet(nodes: list[Node]) -> bool:
    """Every replica on every node has quiesced."""
    return all(r.raw.quiesced for n in nodes for r in n.raftstore.replicas.values())

