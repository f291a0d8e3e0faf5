"""Crash recovery: rebuild every partition's state from the segment files.

Recovery rules
==============

Segments are replayed oldest first; records apply in file order with the
same rules the writer checked (:class:`~node.wal.state.PartitionState`).

1. *Torn tail.*  Only the last segment can end in a partial append.  If its
   scan stops at a record that is incomplete (short header, length past the
   end of the file) or fails its CRC, and no intact record (complete, CRC
   matching) starts anywhere after that offset, the bytes from that record
   on are an interrupted write: they are cut off (``ftruncate`` + ``fsync``)
   with a warning and the WAL opens with everything before them.  An
   interrupted write was never acknowledged (acknowledgement waits for its
   fsync), so nothing promised is lost.  The one thing this cannot tell
   apart: the final record of an *acknowledged* write damaged later (bit
   rot) looks the same and is cut off too.
2. *Corruption.*  Anything else is damage the node must not paper over, and
   :class:`~node.wal.errors.WalCorruptionError` names the file and byte
   offset: a bad record in any segment but the last; a bad record in the last
   segment with an intact record after it; a record whose CRC matches but
   whose payload does not decode; a segment whose first record is not a
   CHECKPOINT or that is empty without being the last; a record that breaks
   the log's rules (appending past the end, compacting beyond it, an older
   snapshot); and, after the last segment, any live entry whose record is
   missing.
3. *Deleted segments.*  Every segment starts with a CHECKPOINT: the hard
   state, snapshot meta, compacted index (+ term) and last index of every
   partition at that point, and the exact set of partitions.  A segment is
   deleted only once every entry it holds is compacted (or its partition
   removed or restarted by a snapshot), so what an older, deleted segment
   contributed is either captured by the next checkpoint or compacted away.
   A checkpoint replaces what replay knows about each partition; entries it
   says exist but replay has not seen become placeholders that a later
   COMPACT or SNAPSHOT must remove, else live entries were lost (rule 2).

Alongside the states, replay rebuilds for every segment the highest index
it holds per partition: the writer's input for deleting dead segments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node.fs import Files
from node.raft import RaftError

from .errors import WalCorruptionError
from .record import (
    CheckpointRecord,
    CompactRecord,
    EntriesRecord,
    HardStateRecord,
    Record,
    RemovePartitionRecord,
    SnapshotRecord,
)
from .segment import SegmentScan, list_segments
from .state import PartitionState

log = logging.getLogger(__name__)

LiveMap = dict[int, dict[int, int]]
"""seq -> {pid: highest entry index that segment holds for pid}."""


@dataclass(frozen=True, slots=True)
class TornTail:
    path: str
    offset: int
    dropped: int
    reason: str


@dataclass(slots=True)
class Recovered:
    parts: dict[int, PartitionState]
    live: LiveMap
    segments: dict[int, str]
    """seq -> path of every segment, oldest first."""
    tail_size: int
    """Size of the last segment after any truncation (0 if there is none)."""
    torn: TornTail | None


def recover(directory: str, files: Files, *, sync: bool = True) -> Recovered:
    """Replay every segment in ``directory``; truncate a torn tail; raise on corruption."""
    segs = list_segments(directory, files)
    parts: dict[int, PartitionState] = {}
    live: LiveMap = {}
    torn: TornTail | None = None
    tail_size = 0
    for i, (seq, path) in enumerate(segs):
        is_last = i == len(segs) - 1
        scan = SegmentScan(path, files)
        seg_live: dict[int, int] = {}
        live[seq] = seg_live
        for off, rec in scan:
            if off == 0 and not isinstance(rec, CheckpointRecord):
                raise WalCorruptionError(path, 0, "segment does not start with a checkpoint")
            if off != 0 and isinstance(rec, CheckpointRecord):
                raise WalCorruptionError(path, off, "checkpoint record after the start of a segment")
            try:
                _apply(rec, parts, live, seg_live)
            except RaftError as exc:
                raise WalCorruptionError(path, off, f"{type(rec).__name__} breaks the log: {exc}") from exc
        damage = scan.damage
        if damage is not None:
            if not is_last:
                raise WalCorruptionError(path, damage.offset, f"{damage.reason} (in a segment that is not the last)")
            if not damage.tearable:
                raise WalCorruptionError(path, damage.offset, damage.reason)
            nxt = scan.find_valid_after(damage.offset)
            if nxt is not None:
                raise WalCorruptionError(
                    path, damage.offset, f"{damage.reason}, yet an intact record follows at offset {nxt}"
                )
            torn = TornTail(path, damage.offset, scan.size - damage.offset, damage.reason)
            _truncate(files, path, damage.offset, sync=sync)
            log.warning(
                "WAL: torn tail in %s at byte offset %d (%s): dropped %d bytes never acknowledged",
                path, damage.offset, damage.reason, torn.dropped,
            )
        elif scan.size == 0 and not is_last:
            raise WalCorruptionError(path, 0, "empty segment that is not the last")
        if is_last:
            tail_size = scan.valid_end
    for pid, st in parts.items():
        gap = st.missing()
        if gap is not None:
            raise WalCorruptionError(
                directory, None,
                f"partition {pid}: live entries {gap[0]}..{gap[1]} are missing (a segment holding them is gone)",
            )
    return Recovered(parts, live, dict(segs), tail_size, torn)


def _apply(rec: Record, parts: dict[int, PartitionState], live: LiveMap, seg_live: dict[int, int]) -> None:
    if isinstance(rec, EntriesRecord):
        st = parts.get(rec.pid)
        if st is None:
            st = parts[rec.pid] = PartitionState()
        prev_last = st.last_index()
        start = st.append(rec.entries)
        if start:
            note_entries(live, seg_live, rec.pid, start, rec.entries[-1].index, prev_last)
    elif isinstance(rec, HardStateRecord):
        _part(parts, rec.pid).hard_state = rec.hard_state
    elif isinstance(rec, SnapshotRecord):
        st = _part(parts, rec.pid)
        if rec.restart:
            st.install_snapshot(rec.meta)
            forget_entries(live, rec.pid)
        else:
            st.note_snapshot(rec.meta)
    elif isinstance(rec, CompactRecord):
        _part(parts, rec.pid).compact(rec.index, rec.term)
    elif isinstance(rec, RemovePartitionRecord):
        parts.pop(rec.pid, None)
        forget_entries(live, rec.pid)
    elif isinstance(rec, CheckpointRecord):
        keep = {cp.pid for cp in rec.partitions}
        for pid in [p for p in parts if p not in keep]:
            # Removed in a segment that has since been deleted.
            del parts[pid]
            forget_entries(live, pid)
        for cp in rec.partitions:
            _part(parts, cp.pid).restore_checkpoint(cp)
            # Whatever lay above the last index then was dead; the record that cut
            # it off may be in a deleted segment, so clamp here as the writer did.
            clamp_marks(live, cp.pid, cp.last_index)
    else:  # pragma: no cover - decode() returns only the types above
        raise TypeError(f"unexpected record {rec!r}")


def _part(parts: dict[int, PartitionState], pid: int) -> PartitionState:
    st = parts.get(pid)
    if st is None:
        st = parts[pid] = PartitionState()
    return st


def note_entries(live: LiveMap, seg_live: dict[int, int], pid: int, start: int, last: int, prev_last: int) -> None:
    """Track that the current segment now holds ``pid``'s entries ``start..last``.

    An append at or below the previous last index overwrote the suffix from
    ``start`` on: every older copy of those indexes is dead, so no segment's
    high-water mark for ``pid`` stays above ``start - 1``.  This keeps every
    mark at or below the partition's last index, so compacting a log to its
    end frees every segment it pinned.
    """
    if start <= prev_last:
        clamp_marks(live, pid, start - 1)
    if seg_live.get(pid, 0) < last:
        seg_live[pid] = last


def clamp_marks(live: LiveMap, pid: int, limit: int) -> None:
    """No copy of ``pid``'s entries above ``limit`` is live any more."""
    for seg_live in live.values():
        mark = seg_live.get(pid)
        if mark is not None and mark > limit:
            seg_live[pid] = limit


def forget_entries(live: LiveMap, pid: int) -> None:
    """``pid``'s entries written so far are dead (partition removed, or its log restarted)."""
    for seg_live in live.values():
        seg_live.pop(pid, None)


def _truncate(files: Files, path: str, size: int, *, sync: bool) -> None:
    f = files.open_append(path)
    try:
        f.truncate(size)
        if sync:
            f.sync()
    finally:
        f.close()
