"""A batch of WAL operations for any number of partitions, written with one fsync.

The intended use is one batch per round of the node's event loop: every
partition's Ready output (snapshot, entries, hard state) goes into the same
batch, plus whatever compactions are due, and one
:meth:`~node.wal.wal.WriteAheadLog.write` makes all of it durable at once.

Operations take effect in the order they were added, per partition exactly
as the same calls on a :class:`~node.raft.storage.MemoryStorage` would.
Add a Ready's snapshot, then its entries, then its hard state: a batch is
all-or-nothing while the node runs, but a crash during its write can keep a
prefix of its records (never a partial record), and in that order no prefix
has a commit index beyond the entries it keeps.

Entries, hard states, snapshots and removals are encoded when added (the
caller's thread does the work, and malformed input fails right there).
Compactions and local snapshots need the term of an index, which only the
WAL knows once it has checked everything before them; they are encoded in
:meth:`~node.wal.wal.WriteAheadLog.write`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Literal

from node.raft import ConfState, Entry, HardState, SnapshotMeta

from .record import (
    RecordType,
    entries_payload,
    hard_state_payload,
    header,
    remove_partition_payload,
    snapshot_payload,
)


class Op(IntEnum):
    ENTRIES = 0
    HARD_STATE = 1
    INSTALL_SNAPSHOT = 2
    NOTE_SNAPSHOT = 3
    COMPACT = 4
    REMOVE = 5


# One operation of a batch: (op, pid, arg, header, payload). The op decides the type of arg;
# header and payload are None for the two ops encoded at write time.
EntriesOp = tuple[Literal[Op.ENTRIES], int, Sequence[Entry], bytes, bytes]
HardStateOp = tuple[Literal[Op.HARD_STATE], int, HardState, bytes, bytes]
InstallSnapshotOp = tuple[Literal[Op.INSTALL_SNAPSHOT], int, SnapshotMeta, bytes, bytes]
NoteSnapshotOp = tuple[Literal[Op.NOTE_SNAPSHOT], int, tuple[int, ConfState], None, None]
CompactOp = tuple[Literal[Op.COMPACT], int, int, None, None]
RemoveOp = tuple[Literal[Op.REMOVE], int, None, bytes, bytes]
BatchOp = EntriesOp | HardStateOp | InstallSnapshotOp | NoteSnapshotOp | CompactOp | RemoveOp


class WalBatch:
    """Operations to persist together; build one, hand it to ``WriteAheadLog.write``.

    ``ops`` holds :data:`BatchOp` tuples.  The batch keeps references to the
    Entry lists it is given: do not modify them until the write returned.
    """

    __slots__ = ("drops_entries", "nbytes", "ops")

    def __init__(self) -> None:
        self.ops: list[BatchOp] = []
        self.nbytes = 0
        """Encoded size so far (excluding records encoded at write time)."""
        self.drops_entries = False
        """True once the batch holds a compaction or an installed snapshot: records that let
        the log drop entries, so what those entries held must be durable elsewhere first (the
        node syncs LMDB before writing such a batch, see node.round_executor)."""

    def _header(self, rtype: RecordType, payload: bytes) -> bytes:
        """The header of a record encoded now; counts the record in :attr:`nbytes`."""
        hdr = header(rtype, payload)
        self.nbytes += len(hdr) + len(payload)
        return hdr

    def entries(self, pid: int, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (consecutive indexes) to ``pid``'s log, overwriting a conflicting suffix."""
        if entries:
            payload = entries_payload(pid, entries)
            self.ops.append((Op.ENTRIES, pid, entries, self._header(RecordType.ENTRIES, payload), payload))

    def hard_state(self, pid: int, hs: HardState) -> None:
        payload = hard_state_payload(pid, hs)
        self.ops.append((Op.HARD_STATE, pid, hs, self._header(RecordType.HARD_STATE, payload), payload))

    def snapshot(self, pid: int, meta: SnapshotMeta) -> None:
        """Install a snapshot received from the leader: ``pid``'s log restarts after ``meta.index``.

        Like MemoryStorage.apply_snapshot, every entry goes (the core only
        hands out a snapshot whose last entry it does not hold); the snapshot
        data itself lives in the state machine, not in the WAL.
        """
        payload = snapshot_payload(pid, meta, restart=True)
        self.ops.append((Op.INSTALL_SNAPSHOT, pid, meta, self._header(RecordType.SNAPSHOT, payload), payload))
        self.drops_entries = True

    def create_snapshot(self, pid: int, index: int, conf_state: ConfState) -> None:
        """Note a snapshot the state machine took at applied ``index``; entries stay.

        MemoryStorage.create_snapshot: afterwards :meth:`initial_state` reports
        ``conf_state`` and ``snapshot()`` this meta.  Combine with
        :meth:`compact` to drop the entries it covers.
        """
        self.ops.append((Op.NOTE_SNAPSHOT, pid, (index, conf_state), None, None))

    def compact(self, pid: int, index: int) -> None:
        """Drop ``pid``'s entries up to and including ``index`` (they are applied and no longer needed)."""
        self.ops.append((Op.COMPACT, pid, index, None, None))
        self.drops_entries = True

    def remove_partition(self, pid: int) -> None:
        """Forget everything about ``pid`` (its replica moved away)."""
        payload = remove_partition_payload(pid)
        self.ops.append((Op.REMOVE, pid, None, self._header(RecordType.REMOVE_PARTITION, payload), payload))

    @property
    def empty(self) -> bool:
        return not self.ops

    def __len__(self) -> int:
        return len(self.ops)
