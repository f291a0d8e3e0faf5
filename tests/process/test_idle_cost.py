"""A quiet partition costs nothing per tick, and its report to placement is built once.

Three real nodes in this process (real gRPC on loopback, real WAL and LMDB in a temp dir)
against a real router process, so the test can count what the nodes do (docs/decisions.md
D8 and D26): once every group is quiet, ticks reach no replica and start no round, the
report of each partition is reused until the partition changes, the stores still heartbeat
each other, and a dead leader's store is still noticed within an election timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from conftest import eventually_async
from node.replica import Replica
from node.server import Node
from router.client import AsyncClient
from support.inprocess import all_quiet, run_cluster, write_then_wait_quiet

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 8


def test_quiet_partitions_cost_no_per_tick_work_and_their_reports_are_reused(tmp_path) -> None:
    run_cluster(tmp_path, PARTITIONS, _scenario)


def _count_calls(rep: Replica, name: str, counts: dict[str, int]) -> None:
    """Count the calls of the real ``rep.raw.<name>`` (it still runs)."""
    real: Callable[..., object] = getattr(rep.raw, name)

    def counted(*args: object, **kwargs: object) -> object:
        counts[name] = counts.get(name, 0) + 1
        return real(*args, **kwargs)

    setattr(rep.raw, name, counted)


def _reports_current(n: Node) -> bool:
    """Every report the node's link would send equals one built afresh."""
    _, wire = n.link._reports()
    sizes = n.raftstore.state.sizes()
    return all(
        wire[rep.pid] == n.link._stats(rep, sizes).SerializeToString(deterministic=True)
        for rep in n.raftstore.replicas.values()
    )


async def _scenario(nodes: list[Node], router: str) -> None:
    async with AsyncClient(router) as client:
        await write_then_wait_quiet(client, nodes)
        # The last round of each group (the quiesce heartbeats and their answers) has run.
        await eventually_async(lambda: all(not n.raftstore.ticker.awake for n in nodes), 10, "no replica awake")

        # One heartbeat to placement since: it kept every quiet partition's report.
        beats = [n.link.heartbeats for n in nodes]
        await eventually_async(lambda: all(n.link.heartbeats >= b + 1 for n, b in zip(nodes, beats)), 30,
                               "a heartbeat to placement")

        # -- no per-tick work --------------------------------------------------------
        counts: dict[str, int] = {}
        for n in nodes:
            for rep in n.raftstore.replicas.values():
                _count_calls(rep, "tick", counts)
                _count_calls(rep, "has_ready", counts)
        rounds = [n.raftstore.rounds for n in nodes]
        ticks = [n.raftstore.ticker.ticks for n in nodes]
        built = [n.link.reports_built for n in nodes]
        beats = [n.link.heartbeats for n in nodes]
        # Forty ticks (two seconds) and two heartbeats to placement on every node.
        await eventually_async(
            lambda: all(n.raftstore.ticker.ticks >= t + 40 and n.link.heartbeats >= b + 2
                        for n, t, b in zip(nodes, ticks, beats)),
            30, "forty ticks and two heartbeats to placement",
        )
        assert all_quiet(nodes)
        assert counts.get("tick", 0) == 0, "a quiet replica was ticked"
        assert [n.raftstore.rounds for n in nodes] == rounds, "ticks or store heartbeats started rounds"
        # Only the once-a-second sweep looks at quiet replicas (at most 3 sweeps in ~2 s each).
        swept = sum(len(n.raftstore.replicas) for n in nodes)
        assert counts.get("has_ready", 0) <= 4 * swept
        assert [n.link.reports_built for n in nodes] == built, "a quiet partition's report was rebuilt"
        assert all(n.raftstore.ticker.missed == 0 for n in nodes)
        # The stores still heartbeat each other every tick.
        now = nodes[0].raftstore.loop.time()
        for n in nodes:
            peers = [m.store_id for m in nodes if m is not n]
            assert all(now - n.raftstore.ticker.last_seen[p] < 0.5 for p in peers)
        assert all(_reports_current(n) for n in nodes)

        # -- a write changes the partition's report, built afresh once ----------------
        await client.put(b"\x40kk", b"w", timeout=10)
        await eventually_async(lambda: all_quiet(nodes), 30, "every replica to go quiet again")
        beats = [n.link.heartbeats for n in nodes]
        await eventually_async(lambda: all(n.link.heartbeats >= b + 1 for n, b in zip(nodes, beats)), 30,
                               "a heartbeat to placement")
        assert all(_reports_current(n) for n in nodes)
        assert sum(n.link.reports_built for n in nodes) > sum(built), "the written partition's report was reused"
        assert all(n.raftstore.ticker.missed == 0 for n in nodes)

        # -- a dead leader's store is still noticed within an election timeout -----------
        await eventually_async(lambda: all(not n.raftstore.ticker.awake for n in nodes), 30, "all quiet again")
        victim = next(n for n in nodes if any(r.is_leader() for r in n.raftstore.replicas.values()))
        led = {r.pid for r in victim.raftstore.replicas.values() if r.is_leader()}
        others = [n for n in nodes if n is not victim]
        await victim.stop()
        stopped = time.monotonic()

        def followers_awake() -> bool:
            return all(not n.raftstore.replicas[pid].raw.quiesced for n in others for pid in led)

        # Silent for an election timeout (0.5 s) is noticed at the next tick; allow for a busy machine.
        await eventually_async(followers_awake, 10, "the dead leader's followers to wake")
        assert time.monotonic() - stopped < 3.0, "the dead leader's store was noticed late"

        def new_leaders() -> bool:
            return all(any(n.raftstore.replicas[pid].is_leader() for n in others) for pid in led)

        await eventually_async(new_leaders, 30, "new leaders for the dead store's groups")
        assert all(n.raftstore.ticker.missed == 0 for n in others)
