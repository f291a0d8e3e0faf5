"""A split on a real node (RaftStore, WAL and LMDB on real files, a one-replica group, no
sockets): the new partition opens and serves, a write the split moved out of the range is
applied as nothing, and a restart, from LMDB as it ended or as it was before the split's
transaction (a power cut may undo LMDB's last commits; the WAL replays them), recovers both
partitions with exactly the same data (docs/decisions.md D21)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node.raftstore import RaftStore
from node.settings import RaftSettings
from node.state.commands import SplitCommand, put
from node.state.store import REJECTED, StateStore
from node.wal import WriteAheadLog
from support.lone_replica import NoPeers

SETTINGS = RaftSettings(tick_s=0.005)
DESC = Descriptor(1, b"", b"", Epoch(1, 1), (ReplicaDesc(store_id=1, replica_id=1),))



Seen = tuple[list[tuple[bytes, bytes, int]], dict[int, tuple[int, Descriptor]]]


def seen(state: StateStore) -> Seen:
    return state.scan(b"", b"", 1 << 20), state.descriptors()


async def run(root: Path) -> tuple[Seen, str]:
    """Writes, a split at b"m" (with a right-half write queued behind it), writes to both
    halves; returns what the node ends with and a copy of LMDB from before the split."""
    wal = WriteAheadLog.open(str(root / "wal"))
    state = StateStore(str(root / "state"))
    rs = RaftStore(1, wal, state, NoPeers(), SETTINGS)
    await rs.start()
    try:
        await rs.create_replica(DESC, 1, bootstrap=True)
        parent = rs.replicas[1]
        await eventually_async(parent.is_leader, 10, "the replica to lead")
        await asyncio.gather(*(parent.propose(put(bytes([c]), b"1")) for c in b"aeiquy"))
        before = root / "lmdb-before-split"
        before.mkdir()
        state.copy(str(before))
        split = SplitCommand(1, 1, b"m", 2, ((1, 2),), state.size_below(b"", b"m"))
        done, moved = parent.propose(split), parent.propose(put(b"q", b"proposed before the split applied"))
        assert await done is None and await moved is REJECTED
        assert parent.descriptor.end == b"m" and parent.descriptor.epoch == Epoch(1, 2)
        await eventually_async(lambda: 2 in rs.replicas, 10, "the new partition to open")
        child = rs.replicas[2]
        await eventually_async(child.is_leader, 10, "the new partition to elect its leader")
        assert (child.descriptor.start, child.descriptor.end, child.descriptor.epoch) == (b"m", b"", Epoch(1, 2))
        assert child.applied >= 10  # its log continues the parent's index space
        (r,) = await child.propose(put(b"q", b"2")) or []
        assert r.version > 10
        await parent.propose(put(b"e", b"2"))
        assert rs.failed is None
    finally:
        await rs.stop()
        wal.close()
    final = seen(state)
    state.close()
    return final, str(before)


async def restart(root: Path, wal_dir: Path, lmdb: str | Path) -> Seen:
    shutil.copytree(wal_dir, root / "wal")
    shutil.copytree(lmdb, root / "state")
    wal = WriteAheadLog.open(str(root / "wal"))
    state = StateStore(str(root / "state"))
    rs = RaftStore(1, wal, state, NoPeers(), SETTINGS)
    await rs.start()
    try:
        def replayed(pid: int, last: int) -> bool:
            rep = rs.replicas.get(pid)
            return rep is not None and rep.is_leader() and rep.applied > last

        # Leading again, each commits a no-op of its new term after everything its log held.
        last = {pid: wal.state(pid).last_index() for pid in (1, 2)}
        await eventually_async(lambda: replayed(1, last[1]) and replayed(2, last[2]), 10, "both partitions to replay")
        assert rs.failed is None
        return seen(state)
    finally:
        await rs.stop()
        wal.close()
        state.close()


def test_a_split_node_restarts_with_both_partitions_from_any_lmdb_the_wal_covers(tmp_path: Path) -> None:
    async def main() -> None:
        final, before = await run(tmp_path / "run")
        data, descs = final
        assert {k: v for k, v, _ in data} == {
            b"a": b"1", b"e": b"2", b"i": b"1", b"q": b"2", b"u": b"1", b"y": b"1",
        }
        assert sorted(descs) == [1, 2] and descs[2][0] == 2
        assert await restart(tmp_path / "again", tmp_path / "run" / "wal", tmp_path / "run" / "state") == final
        # LMDB from before the split: the parent replays the split from the WAL and the new
        # partition, whose own log the WAL kept, replays after it.
        assert await restart(tmp_path / "rolled-back", tmp_path / "run" / "wal", before) == final

    asyncio.run(main())
