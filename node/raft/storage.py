"""The log-storage interface the core reads from, and an in-memory implementation.

The core only *reads* stable storage; the application writes to it while
handling a :class:`~node.raft.types.Ready` (persist entries and hard state,
install snapshots) and compacts it after it has applied entries.  The node's
write-ahead log implements :class:`LogStorage` for real partitions;
:class:`MemoryStorage` serves tests, the simulator and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from .types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class LogStorage(Protocol):
    """What the core needs from stable storage (etcd's ``Storage``)."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership at the last snapshot/conf change."""

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any, then up to ``max_size`` bytes of data.

        Raises :class:`CompactedError` if ``lo`` was compacted and
        :class:`UnavailableError` if ``hi`` is past the last index + 1.
        """

    def term(self, index: int) -> int:
        """The term of the entry at ``index``; valid from ``first_index() - 1``."""

    def first_index(self) -> int:
        """The first index that :meth:`entries` can return."""

    def last_index(self) -> int:
        """The index of the last stored entry (the snapshot index when empty)."""

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (may raise :class:`SnapshotTemporarilyUnavailableError`)."""


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Trim ``entries`` to ``max_size`` bytes of payload, but never below one entry."""
    if max_size is None or len(entries) <= 1:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + 16
        if total > max_size and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """A :class:`LogStorage` held in memory; what a test persists, it keeps.

    ``_ents[0]`` is a sentinel carrying the snapshot's index and term so that
    ``term(first_index() - 1)`` answers without special cases.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- LogStorage -------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} compacted (first index {offset + 1})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes done by the application -----------------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, overwriting any conflicting suffix (entries must be contiguous)."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return  # all compacted already
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(
                f"missing log entry: last {self.last_index()}, appending at {entries[0].index}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.meta.index} is not newer than {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine taken at applied ``index``."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last {self.last_index()}")
        term = self.term(index)
        self._snapshot = Snapshot(SnapshotMeta(index, term, conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` (keeps its term as the sentinel)."""
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(f"index {index} already compacted")
        if index > self.last_index():
            raise UnavailableError(f"compact {index} beyond last {self.last_index()}")
        i = index - offset
        sentinel = Entry(term=self._ents[i].term, index=self._ents[i].index)
        self._ents = [sentinel] + self._ents[i + 1 :]
