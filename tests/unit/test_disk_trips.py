"""Where a round's disk trip runs (node.round_executor): on the event loop while the disk is
fast, busy rounds too; in the disk thread as soon as two of three trips were slow, and
there for as long as the disk stays slow; back on the loop once it has been fast for a while.
A real node (RaftStore, WAL and LMDB on real
files, a one-replica group); the slow disk is the WAL's fsync-delay fault hook, as the
nemesis's slowdisk fault sets it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import eventually_async
from node import round_executor
from node.raftstore import RaftStore
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import StateStore
from node.wal import WriteAheadLog
from support.lone_replica import DESC, NoPeers


class _Node:
    """A one-replica node on real files, its replica leading."""

    def __init__(self, tmp_path: Path) -> None:
        self.wal = WriteAheadLog.open(str(tmp_path / "wal"))
        self.state = StateStore(str(tmp_path / "state"))
        self.rs = RaftStore(1, self.wal, self.state, NoPeers(), RaftSettings(tick_s=0.005))
        self.n = 0

    async def __aenter__(self) -> _Node:
        await self.rs.start()
        await self.rs.create_replica(DESC, 1, bootstrap=True)
        await eventually_async(self.rs.replicas[1].is_leader, 10, "the replica to lead")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rs.stop()
        self.wal.close()
        self.state.close()

    async def write(self, n: int = 1) -> None:
        """``n`` puts proposed in one loop pass (one round appends them all), all applied."""
        rep = self.rs.replicas[1]
        futs = []
        for _ in range(n):
            self.n += 1
            futs.append(rep.propose(put(b"k%d" % self.n, b"v")))
        for got in await asyncio.gather(*futs):
            assert got is not None

    async def on_the_loop(self) -> None:
        """Wait until trips run on the loop (a busy machine may have sent them away a while)."""
        ex = self.rs.executor

        async def inline_now() -> bool:
            before = ex.trips_inline
            await self.write()
            return ex.trips_inline > before

        await eventually_async(inline_now, 5 * round_executor.THREAD_FOR_S, "trips on the loop", interval=0)


def test_a_slow_disk_moves_trips_off_the_loop_until_it_is_fast_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with _Node(tmp_path) as node:
            ex, wal = node.rs.executor, node.wal
            # A healthy disk: trips run on the loop (a slow fsync now and then under a busy
            # machine may send them to the thread for a while).
            await node.on_the_loop()
            wal.faults.fsync_delay_s = 3 * round_executor.SLOW_TRIP_S
            await node.write()  # at most two slow trips on the loop, then the thread
            await node.write()
            await node.write()
            inline, threaded = ex.trips_inline, ex.trips_threaded
            loop = asyncio.get_running_loop()
            slow_until = loop.time() + 2 * round_executor.THREAD_FOR_S
            while loop.time() < slow_until:  # longer than THREAD_FOR_S: still slow, still threaded
                await node.write()
            assert ex.trips_inline == inline and ex.trips_threaded >= threaded + 10
            wal.faults.fsync_delay_s = 0.0  # fast again: back on the loop after THREAD_FOR_S
            await node.on_the_loop()
            assert node.rs.failed is None

    asyncio.run(main())


def test_one_slow_trip_leaves_trips_on_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Slow is over 50 ms here, so that the machine's own hiccups (a busy CI machine may take
    # milliseconds for an fsync now and then) do not make a second slow trip.
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 0.05)

    async def main() -> None:
        async with _Node(tmp_path) as node:
            ex = node.rs.executor
            await node.on_the_loop()
            node.wal.faults.fsync_delay_s = 0.15
            await node.write()  # one slow trip (its put's only synced one: a lone replica commits on its write)
            node.wal.faults.fsync_delay_s = 0.0
            threaded, inline = ex.trips_threaded, ex.trips_inline
            for _ in range(20):
                await node.write()
            assert ex.trips_threaded == threaded, "one slow fsync sent the trips to the thread"
            assert ex.trips_inline >= inline + 20

    asyncio.run(main())


def test_a_busy_round_stays_on_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # D24 amended a second time: a round with many entries no longer sends trips to the
    # thread (the hand-off cost more CPU than the overlap gave back). Slow is over 50 ms
    # here, so that a busy CI machine's hiccups do not send them there either.
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 0.05)

    async def main() -> None:
        async with _Node(tmp_path) as node:
            ex = node.rs.executor
            await node.on_the_loop()
            threaded, inline = ex.trips_threaded, ex.trips_inline
            await node.write(64)
            await node.write()
            assert ex.trips_threaded == threaded, "a busy round sent the trips to the thread"
            assert ex.trips_inline >= inline + 2
            assert node.rs.failed is None

    asyncio.run(main())
