"""The simulated disk of one replica: a ``MemoryStorage`` whose snapshot is sometimes not ready.

A real store writes a snapshot file in the background after it decides to compact; until the
file is complete, :meth:`snapshot` answers ``SnapshotTemporarilyUnavailableError`` (the
``LogStorage`` contract allows it, as etcd's does) and the leader must try again later.
:meth:`SimStorage.make_busy` starts such a spell, :meth:`SimStorage.ready` ends it; the
simulator's own bookkeeping reads the durable snapshot through :meth:`latest_snapshot`,
which never refuses.
"""

from __future__ import annotations

from node.raft import MemoryStorage, Snapshot, SnapshotTemporarilyUnavailableError


class SimStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.busy_gen = 0  # bumps on every spell, so a stale "ready" event ends nothing
        self.busy = False

    def snapshot(self) -> Snapshot:
        if self.busy:
            raise SnapshotTemporarilyUnavailableError("the snapshot is still being written")
        return super().snapshot()

    def latest_snapshot(self) -> Snapshot:
        """The durable snapshot, whether or not the core may have it yet."""
        return super().snapshot()

    def make_busy(self) -> int:
        """Start a spell in which the core cannot get the snapshot; returns its generation."""
        self.busy_gen += 1
        self.busy = True
        return self.busy_gen

    def ready(self, gen: int) -> None:
        if gen == self.busy_gen:
            self.busy = False
