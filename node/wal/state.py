"""One partition's log as the WAL holds it in memory, and how records change it.

:class:`PartitionState` mirrors :class:`~node.raft.storage.MemoryStorage`:
``offset`` plays the role of MemoryStorage's sentinel (``first_index - 1``,
with ``offset_term`` its term) and ``entries`` holds ``offset + 1 ..
last_index`` in order.  Its mutators apply the same rules and raise the same
errors, checking before they change anything, so a rejected operation
leaves the state untouched.

:class:`Shadow` answers "would this batch be accepted, and what terms does it
need?" without touching the real state: the WAL must validate a batch before
writing it (a record the replay would reject makes the node unable to start)
and may change its in-memory state only after the fsync succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from node.raft import (
    CompactedError,
    Entry,
    HardState,
    SnapshotMeta,
    SnapshotOutOfDateError,
    UnavailableError,
    limit_size,
)

from .record import PartitionCheckpoint


@dataclass(slots=True, eq=False)
class PartitionState:
    """Hard state, last snapshot meta and live entries of one partition.

    During replay ``entries`` may hold ``None`` for entries whose records were
    in segments already deleted; a correct WAL compacts all of them away
    before replay ends (see :mod:`node.wal.replay`).  Outside replay it never
    holds ``None``.
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot_meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    offset: int = 0
    """Index of the last discarded entry: ``first_index() - 1``."""
    offset_term: int = 0
    """Term of the entry at ``offset`` (the snapshot's or the compaction point's)."""
    entries: list[Entry] = field(default_factory=list)

    # -- reads (LogStorage semantics) ---------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def term(self, index: int) -> int:
        off = self.offset
        if index < off:
            raise CompactedError(f"index {index} compacted (first index {off + 1})")
        if index == off:
            return self.offset_term
        i = index - off - 1
        if i >= len(self.entries):
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self.entries[i].term

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        off = self.offset
        if lo <= off:
            raise CompactedError(f"index {lo} compacted (first index {off + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self.entries[lo - off - 1 : hi - off - 1], max_size)

    def copy(self) -> PartitionState:
        """A snapshot of this state that later writes do not change (Entry objects are shared)."""
        return PartitionState(self.hard_state, self.snapshot_meta, self.offset, self.offset_term, list(self.entries))

    def checkpoint(self, pid: int) -> PartitionCheckpoint:
        return PartitionCheckpoint(
            pid, self.hard_state, self.snapshot_meta, self.offset, self.offset_term, self.last_index()
        )

    # -- mutations (MemoryStorage semantics) ----------------------------------------

    def append(self, entries: Sequence[Entry]) -> int:
        """Append consecutive entries, overwriting any conflicting suffix (MemoryStorage.append).

        Returns the index of the first entry actually stored, 0 if all of them
        were below the compaction point.
        """
        if not entries:
            return 0
        first = self.offset + 1
        start = entries[0].index
        if start + len(entries) - 1 < first:
            return 0  # all compacted already
        if first > start:
            entries = entries[first - start :]
            start = first
        k = start - first
        if k > len(self.entries):
            raise UnavailableError(f"missing log entry: last {self.last_index()}, appending at {start}")
        del self.entries[k:]
        self.entries.extend(entries)
        return start

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to and including ``index``, whose term is ``term``."""
        if index <= self.offset:
            raise CompactedError(f"index {index} already compacted")
        if index > self.last_index():
            raise UnavailableError(f"compact {index} beyond last {self.last_index()}")
        del self.entries[: index - self.offset]
        self.offset = index
        self.offset_term = term

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """A snapshot from the leader replaces the whole log (MemoryStorage.apply_snapshot)."""
        if meta.index <= self.snapshot_meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {meta.index} is not newer than {self.snapshot_meta.index}"
            )
        self.snapshot_meta = meta
        self.offset = meta.index
        self.offset_term = meta.term
        self.entries = []

    def note_snapshot(self, meta: SnapshotMeta) -> None:
        """Record a snapshot taken locally at ``meta.index``; entries stay (MemoryStorage.create_snapshot)."""
        if meta.index <= self.snapshot_meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {meta.index} is not newer than {self.snapshot_meta.index}"
            )
        if meta.index > self.last_index():
            raise UnavailableError(f"snapshot index {meta.index} beyond last {self.last_index()}")
        if meta.index < self.offset:
            raise CompactedError(f"index {meta.index} compacted (first index {self.offset + 1})")
        self.snapshot_meta = meta

    def restore_checkpoint(self, cp: PartitionCheckpoint) -> None:
        """Replay only: adopt a checkpoint, keeping the entries replayed so far that it still covers.

        Entries in ``(cp.offset, cp.last_index]`` that replay has not seen
        (their segment was deleted) become ``None`` placeholders: they must be
        compacted away by a later record, or the WAL has lost live entries.
        """
        self.hard_state = cp.hard_state
        self.snapshot_meta = cp.snapshot_meta
        if cp.offset >= self.offset:
            ents = self.entries[cp.offset - self.offset :]
        else:
            ents = _placeholders(self.offset - cp.offset) + self.entries
        want = cp.last_index - cp.offset
        if len(ents) >= want:
            del ents[want:]
        else:
            ents.extend(_placeholders(want - len(ents)))
        self.entries = ents
        self.offset = cp.offset
        self.offset_term = cp.offset_term

    def missing(self) -> tuple[int, int] | None:
        """Replay only: the first and last index still held as a placeholder, if any."""
        first = last = None
        for i, e in enumerate(self.entries):
            if e is None:
                if first is None:
                    first = i
                last = i
        if first is None or last is None:
            return None
        return self.offset + 1 + first, self.offset + 1 + last


def _placeholders(n: int) -> list[Entry]:
    """``n`` placeholders (None) for entries replay has not seen (see :meth:`PartitionState.restore_checkpoint`).

    Typed as entries because none outlives replay: :func:`~node.wal.replay.recover` fails
    unless later records compacted every one away (:meth:`PartitionState.missing`), so outside
    replay ``entries`` holds entries only, as its type says.
    """
    return cast("list[Entry]", [None] * n)


class Shadow:
    """A partition's log as it would be after the operations checked so far.

    Built over the real :class:`PartitionState` without copying its entries:
    ``tail`` holds what the batch appends from ``tail_start`` on, anything
    below comes from the base state.  Every method checks exactly what the
    matching :class:`PartitionState` mutator (and MemoryStorage) checks, in
    the same order, and raises the same errors.
    """

    __slots__ = ("base", "last", "offset", "offset_term", "snap_index", "tail", "tail_start")

    def __init__(self, base: PartitionState | None) -> None:
        if base is None:
            base = PartitionState()
        self.base = base
        self.offset = base.offset
        self.offset_term = base.offset_term
        self.last = base.last_index()
        self.snap_index = base.snapshot_meta.index
        self.tail_start = self.last + 1
        self.tail: list[Entry] = []

    def term(self, index: int) -> int:
        if index < self.offset:
            raise CompactedError(f"index {index} compacted (first index {self.offset + 1})")
        if index > self.last:
            raise UnavailableError(f"index {index} beyond last {self.last}")
        if index == self.offset:
            return self.offset_term
        if index >= self.tail_start:
            return self.tail[index - self.tail_start].term
        # Below tail_start the base is untouched, and index > offset >= base.offset.
        return self.base.entries[index - self.base.offset - 1].term

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = self.offset + 1
        start = entries[0].index
        last = start + len(entries) - 1
        if last < first:
            return
        if first > start:
            entries = entries[first - start :]
            start = first
        if start > self.last + 1:
            raise UnavailableError(f"missing log entry: last {self.last}, appending at {start}")
        if start >= self.tail_start:
            del self.tail[start - self.tail_start :]
            self.tail.extend(entries)
        else:
            self.tail_start = start
            self.tail = list(entries)
        self.last = last

    def compact(self, index: int) -> int:
        """Check a compaction; returns the term of ``index``."""
        if index <= self.offset:
            raise CompactedError(f"index {index} already compacted")
        if index > self.last:
            raise UnavailableError(f"compact {index} beyond last {self.last}")
        term = self.term(index)
        self.offset = index
        self.offset_term = term
        return term

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        if meta.index <= self.snap_index:
            raise SnapshotOutOfDateError(f"snapshot at {meta.index} is not newer than {self.snap_index}")
        self.snap_index = self.offset = self.last = meta.index
        self.offset_term = meta.term
        self.tail_start = meta.index + 1
        self.tail = []

    def note_snapshot(self, index: int) -> int:
        """Check a local snapshot at ``index``; returns its term."""
        if index <= self.snap_index:
            raise SnapshotOutOfDateError(f"snapshot at {index} is not newer than {self.snap_index}")
        if index > self.last:
            raise UnavailableError(f"snapshot index {index} beyond last {self.last}")
        term = self.term(index)
        self.snap_index = index
        return term
