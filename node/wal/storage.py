"""The consensus core's :class:`~node.raft.storage.LogStorage` for one partition, backed by the WAL.

Reads come from the WAL's in-memory copy of the partition (nothing touches
the disk) and answer exactly as :class:`~node.raft.storage.MemoryStorage`
would for the same history of writes, with the same errors.  Writes do not
go through this class: the node puts every partition's Ready output into one
:class:`~node.wal.batch.WalBatch` and writes it once.

Each call takes the WAL's short state lock: the WAL applies a write to its
in-memory state from the worker thread that ran the fsync, while the event
loop reads through this class.
"""

from __future__ import annotations

from collections.abc import Callable

from node.raft import ConfState, Entry, HardState, Snapshot

from .state import PartitionState
from .wal import WriteAheadLog

_EMPTY = PartitionState()  # stands in for a partition the WAL holds nothing for; never mutated


class WalLogStorage:
    """``LogStorage`` of partition ``pid``.

    ``snapshot_provider`` builds the snapshot to send to a lagging follower
    from the node's state machine (LMDB), where the snapshot data lives; the
    WAL only knows the meta.  Without a provider :meth:`snapshot` returns the
    last snapshot meta the WAL recorded, with empty data.
    """

    __slots__ = ("_lock", "_parts", "_provider", "_wal", "pid")

    def __init__(
        self, wal: WriteAheadLog, pid: int, snapshot_provider: Callable[[], Snapshot] | None = None
    ) -> None:
        self._wal = wal
        # Package-internal contract with WriteAheadLog: _parts changes only under _state_lock.
        self._lock = wal._state_lock
        self._parts = wal._parts
        self.pid = pid
        self._provider = snapshot_provider

    def _state(self) -> PartitionState:
        return self._parts.get(self.pid, _EMPTY)

    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._lock:
            st = self._state()
            return st.hard_state, st.snapshot_meta.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        with self._lock:
            return self._state().slice(lo, hi, max_size)

    def term(self, index: int) -> int:
        with self._lock:
            return self._state().term(index)

    def first_index(self) -> int:
        with self._lock:
            return self._state().offset + 1

    def last_index(self) -> int:
        with self._lock:
            return self._state().last_index()

    def snapshot(self) -> Snapshot:
        if self._provider is not None:
            return self._provider()
        with self._lock:
            return Snapshot(self._state().snapshot_meta)
