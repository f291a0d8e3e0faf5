"""A node's RaftStore hosting one one-replica group, for tests of a whole node without peers:
the transport that never sends, the partition such a test bootstraps, and the node itself on
real files (:func:`lone_leader`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node.raftstore import RaftStore
from node.replica import Replica
from node.settings import RaftSettings
from node.state.store import StateStore
from node.wal import WriteAheadLog

DESC = Descriptor(1, b"", b"", Epoch(1, 1), (ReplicaDesc(store_id=1, replica_id=1),))


class NoPeers:
    """The transport of a one-replica group: nothing is ever sent."""

    def flush(self) -> None:
        pass  # nothing is ever queued

    def send(self, to_store: int, msgs: object) -> None:
        raise AssertionError(f"a one-replica group sent to store {to_store}")

    async def send_snapshot(self, *args: object, **kwargs: object) -> tuple[bool, str]:
        raise AssertionError("a one-replica group sent a snapshot")


@asynccontextmanager
async def lone_leader(
    wal_dir: Path, state_dir: Path, settings: RaftSettings | None = None, *, threaded: bool = False, **state_kw: int
) -> AsyncIterator[tuple[RaftStore, Replica, WriteAheadLog, StateStore]]:
    """A real node (WAL and LMDB on real files) whose one replica of :data:`DESC` leads; with
    ``threaded`` every disk trip runs in the disk thread. Stopped and closed on the way out."""
    wal = WriteAheadLog.open(str(wal_dir))
    state = StateStore(str(state_dir), **state_kw)
    rs = RaftStore(1, wal, state, NoPeers(), settings or RaftSettings(tick_s=0.005))
    if threaded:
        rs.executor._thread_until = float("inf")
    await rs.start()
    try:
        await rs.create_replica(DESC, 1, bootstrap=True)
        rep = rs.replicas[1]
        await eventually_async(rep.is_leader, 10, "the replica to lead")
        yield rs, rep, wal, state
    finally:
        await rs.stop()
        wal.close()
        state.close()
