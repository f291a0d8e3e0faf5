"""Where a round's disk trip runs (node.round_executor): on the event loop while the disk is
fast, in the disk thread as soon as one trip was slow, and there for as long as the disk stays
slow; back on the loop once it has been fast for a while. A real node (RaftStore, WAL and
LMDB on real files, a one-replica group); the slow disk is the WAL's fsync-delay fault hook,
as the nemesis's slowdisk fault sets it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node import round_executor
from node.raftstore import RaftStore
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import StateStore
from node.wal import WriteAheadLog
from support.lone_replica import NoPeers

DESC = Descriptor(1, b"", b"", Epoch(1, 1), (ReplicaDesc(store_id=1, replica_id=1),))



def test_a_slow_disk_moves_trips_off_the_loop_until_it_is_fast_again(tmp_path: Path) -> None:
    async def main() -> None:
        wal = WriteAheadLog.open(str(tmp_path / "wal"))
        state = StateStore(str(tmp_path / "state"))
        rs = RaftStore(1, wal, state, NoPeers(), RaftSettings(tick_s=0.005))
        await rs.start()
        ex = rs.executor
        n = 0

        async def write() -> None:
            nonlocal n
            n += 1
            assert await rep.propose(put(b"k%d" % n, b"v")) is not None

        try:
            await rs.create_replica(DESC, 1, bootstrap=True)
            rep = rs.replicas[1]
            await eventually_async(rep.is_leader, 10, "the replica to lead")
            inline = ex.trips_inline

            async def back_inline() -> bool:
                await write()
                return ex.trips_inline > inline

            # A healthy disk: trips run on the loop (a slow fsync now and then under a busy
            # machine may send them to the thread for a while).
            await eventually_async(back_inline, 5 * round_executor.THREAD_FOR_S, "trips on the loop", interval=0)
            wal.faults.fsync_delay_s = 3 * round_executor.SLOW_TRIP_S
            await write()  # at most one slow trip on the loop, then the thread
            await write()
            inline, threaded = ex.trips_inline, ex.trips_threaded
            loop = asyncio.get_running_loop()
            slow_until = loop.time() + 2 * round_executor.THREAD_FOR_S
            while loop.time() < slow_until:  # longer than THREAD_FOR_S: still slow, still threaded
                await write()
            assert ex.trips_inline == inline and ex.trips_threaded >= threaded + 10
            wal.faults.fsync_delay_s = 0.0  # fast again: back on the loop after THREAD_FOR_S
            await eventually_async(back_inline, 5 * round_executor.THREAD_FOR_S, "trips back on the loop",
                                   interval=0)
            assert rs.failed is None
        finally:
            await rs.stop()
            wal.close()
            state.close()

    asyncio.run(main())
