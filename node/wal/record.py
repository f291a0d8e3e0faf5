"""The on-disk record: framing, encoding and decoding.

Every record is framed as (little-endian)::

    u32 payload length | u32 CRC32C(type byte + payload) | u8 type | payload

The CRC covers the type byte so that a flipped type cannot reinterpret a
payload as another kind of record.  Type 0 is never written: a zero-filled
region (what some file systems show after a crash past the last fsync) can
therefore never parse as a record, because CRC32C of a single zero byte is
not zero.

Payloads (all integers unsigned little-endian; ``pid`` is the partition id):

=================  ===========================================================
ENTRIES (1)        pid u64, then per entry: term u64, index u64, type u8,
                   data length u32, data.  Indexes are consecutive.
HARD_STATE (2)     pid u64, term u64, vote u64, commit u64
SNAPSHOT (3)       pid u64, index u64, term u64, flags u8, ConfState.
                   flags bit 0 (RESTART): a snapshot *installed* from the
                   leader; the partition's log restarts after ``index``.
                   Without it the record only notes a snapshot taken
                   locally (MemoryStorage.create_snapshot): entries stay.
COMPACT (4)        pid u64, index u64, term u64: entries <= index are gone;
                   ``term`` is the term of ``index`` (the new log's sentinel).
CHECKPOINT (5)     u32 count, then per partition: pid, hard state term, vote,
                   commit, snapshot index, snapshot term, compacted index,
                   its term, last index (9 x u64), ConfState of the snapshot.
                   The first record of every segment: the complete
                   non-entry state of every partition at that point.
REMOVE_PARTITION   pid u64: the replica moved away; forget everything.
(6)
=================  ===========================================================

ConfState: u8 auto_leave, then voters, voters_outgoing, learners,
learners_next, each as u32 count + count x u64 (sorted).

Encoding builds each payload with :mod:`struct` and one ``b"".join``; the
header is returned separately so that a batch joins everything exactly once.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from crc32c import crc32c

from node.raft import ConfState, Entry, EntryType, HardState, SnapshotMeta


class RecordType(IntEnum):
    ENTRIES = 1
    HARD_STATE = 2
    SNAPSHOT = 3
    COMPACT = 4
    CHECKPOINT = 5
    REMOVE_PARTITION = 6


HEADER = struct.Struct("<IIB")
"""length, crc, type: the 9 bytes in front of every payload."""

MAX_PAYLOAD = 0xFFFF_FFFF
SNAPSHOT_RESTART = 0x01

# Keyed by the type byte, as read from disk: record_crc looks up types it does not know too.
_TYPE_CRC: dict[int, int] = {t: crc32c(bytes([t])) for t in RecordType}
_PID = struct.Struct("<Q")
_ENTRY = struct.Struct("<QQBI")
_HARD_STATE = struct.Struct("<QQQQ")
_SNAPSHOT = struct.Struct("<QQQB")
_COMPACT = struct.Struct("<QQQ")
_COUNT = struct.Struct("<I")
_CHECKPOINT_ITEM = struct.Struct("<9Q")
_U8 = struct.Struct("<B")
# Indexed by the on-disk type byte; avoids constructing an enum per entry on replay.
_ENTRY_TYPES = tuple(EntryType)


# -- decoded records ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntriesRecord:
    pid: int
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class HardStateRecord:
    pid: int
    hard_state: HardState


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    pid: int
    meta: SnapshotMeta
    restart: bool
    """True for a snapshot installed from the leader: the log restarts after ``meta.index``."""


@dataclass(frozen=True, slots=True)
class CompactRecord:
    pid: int
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class PartitionCheckpoint:
    """Everything about one partition except its entries, as of a segment's start."""

    pid: int
    hard_state: HardState
    snapshot_meta: SnapshotMeta
    offset: int
    """The compacted index (``first_index - 1``)."""
    offset_term: int
    last_index: int


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    partitions: list[PartitionCheckpoint]


@dataclass(frozen=True, slots=True)
class RemovePartitionRecord:
    pid: int


Record = (
    EntriesRecord
    | HardStateRecord
    | SnapshotRecord
    | CompactRecord
    | CheckpointRecord
    | RemovePartitionRecord
)


class RecordDecodeError(ValueError):
    """A payload whose CRC matched but whose contents make no sense."""


# -- encoding ---------------------------------------------------------------------


def header(rtype: RecordType, payload: bytes) -> bytes:
    """The 9-byte frame header for ``payload``."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), crc32c(payload, _TYPE_CRC[rtype]), rtype)


def frame(rtype: RecordType, payload: bytes) -> bytes:
    """A whole record (header + payload) as one bytes object."""
    return header(rtype, payload) + payload


def entries_payload(pid: int, entries: Sequence[Entry]) -> bytes:
    """The ENTRIES payload; raises ValueError unless indexes are consecutive.

    The hot path: one ``pack`` per entry and a single join, no other objects.
    """
    pack = _ENTRY.pack
    parts = [_PID.pack(pid)]
    append = parts.append
    expect = entries[0].index if entries else 0
    for e in entries:
        if e.index != expect:
            raise ValueError(f"entries not consecutive: index {e.index} where {expect} was expected")
        expect += 1
        data = e.data
        append(pack(e.term, e.index, e.type, len(data)))
        append(data)
    return b"".join(parts)


def hard_state_payload(pid: int, hs: HardState) -> bytes:
    return _HARD_STATE.pack(pid, hs.term, hs.vote, hs.commit)


def snapshot_payload(pid: int, meta: SnapshotMeta, *, restart: bool) -> bytes:
    flags = SNAPSHOT_RESTART if restart else 0
    return _SNAPSHOT.pack(pid, meta.index, meta.term, flags) + encode_conf_state(meta.conf_state)


def compact_payload(pid: int, index: int, term: int) -> bytes:
    return _COMPACT.pack(pid, index, term)


def remove_partition_payload(pid: int) -> bytes:
    return _PID.pack(pid)


def checkpoint_payload(partitions: list[PartitionCheckpoint]) -> bytes:
    parts = [_COUNT.pack(len(partitions))]
    for p in partitions:
        hs, meta = p.hard_state, p.snapshot_meta
        parts.append(
            _CHECKPOINT_ITEM.pack(
                p.pid, hs.term, hs.vote, hs.commit, meta.index, meta.term,
                p.offset, p.offset_term, p.last_index,
            )
        )
        parts.append(encode_conf_state(meta.conf_state))
    return b"".join(parts)


@functools.lru_cache(maxsize=4096)
def encode_conf_state(cs: ConfState) -> bytes:
    """A ConfState's bytes (the WAL's and LMDB's format). Cached: every apply job writes its
    partition's membership, which almost never changes (ConfState is frozen and hashable)."""
    parts = [_U8.pack(1 if cs.auto_leave else 0)]
    for ids in (cs.voters, cs.voters_outgoing, cs.learners, cs.learners_next):
        parts.append(_COUNT.pack(len(ids)))
        parts.append(struct.pack(f"<{len(ids)}Q", *sorted(ids)))
    return b"".join(parts)


# -- decoding ---------------------------------------------------------------------


def record_crc(buf: bytes | memoryview, rtype: int, start: int, end: int) -> int:
    """CRC32C of the type byte followed by ``buf[start:end]``."""
    seed = _TYPE_CRC.get(rtype)
    if seed is None:
        seed = crc32c(bytes([rtype]))
    return crc32c(memoryview(buf)[start:end], seed)


def decode(rtype: int, buf: bytes, start: int, end: int) -> Record:
    """Decode the payload ``buf[start:end]`` of a record whose CRC already matched.

    Raises :class:`RecordDecodeError` for an unknown type or a malformed payload.
    """
    try:
        if rtype == RecordType.ENTRIES:
            return _decode_entries(buf, start, end)
        if rtype == RecordType.HARD_STATE:
            _expect_size(end - start, _HARD_STATE.size)
            pid, term, vote, commit = _HARD_STATE.unpack_from(buf, start)
            return HardStateRecord(pid, HardState(term, vote, commit))
        if rtype == RecordType.SNAPSHOT:
            pid, index, term, flags = _unpack(_SNAPSHOT, buf, start, end)
            if flags & ~SNAPSHOT_RESTART:
                raise RecordDecodeError(f"unknown snapshot flags {flags:#x}")
            cs, off = _decode_conf_state(buf, start + _SNAPSHOT.size, end)
            _expect_end(off, end)
            return SnapshotRecord(pid, SnapshotMeta(index, term, cs), bool(flags & SNAPSHOT_RESTART))
        if rtype == RecordType.COMPACT:
            _expect_size(end - start, _COMPACT.size)
            return CompactRecord(*_COMPACT.unpack_from(buf, start))
        if rtype == RecordType.CHECKPOINT:
            return _decode_checkpoint(buf, start, end)
        if rtype == RecordType.REMOVE_PARTITION:
            _expect_size(end - start, _PID.size)
            return RemovePartitionRecord(_PID.unpack_from(buf, start)[0])
    except struct.error as exc:
        raise RecordDecodeError(f"malformed {RecordType(rtype).name} payload: {exc}") from exc
    raise RecordDecodeError(f"unknown record type {rtype}")


def _expect_size(got: int, want: int) -> None:
    if got != want:
        raise RecordDecodeError(f"payload size {got}, expected {want}")


def _expect_end(off: int, end: int) -> None:
    if off != end:
        raise RecordDecodeError(f"{end - off} stray bytes after the payload")


def _unpack(s: struct.Struct, buf: bytes, off: int, end: int) -> tuple:
    # unpack_from happily reads past ``end`` into the next record: bound it ourselves.
    if off + s.size > end:
        raise RecordDecodeError(f"payload ends {off + s.size - end} bytes early")
    return s.unpack_from(buf, off)


def _decode_entries(buf: bytes, start: int, end: int) -> EntriesRecord:
    (pid,) = _unpack(_PID, buf, start, end)
    off = start + _PID.size
    unpack, size = _ENTRY.unpack_from, _ENTRY.size
    types = _ENTRY_TYPES
    ents: list[Entry] = []
    append = ents.append
    while off < end:
        if off + size > end:
            raise RecordDecodeError("truncated entry header")
        term, index, etype, n = unpack(buf, off)
        off += size
        if off + n > end:
            raise RecordDecodeError(f"entry {index} data runs past the payload")
        if etype >= len(types):
            raise RecordDecodeError(f"entry {index} has unknown type {etype}")
        if ents and index != ents[-1].index + 1:
            raise RecordDecodeError(f"entries not consecutive at index {index}")
        append(Entry(term, index, buf[off : off + n], types[etype]))
        off += n
    if not ents:
        raise RecordDecodeError("ENTRIES record holds no entry")
    return EntriesRecord(pid, ents)


def decode_conf_state(buf: bytes, off: int = 0, end: int | None = None) -> tuple[ConfState, int]:
    """Inverse of :func:`encode_conf_state`: (ConfState, offset after it).  Also LMDB's format."""
    return _decode_conf_state(buf, off, len(buf) if end is None else end)


def _decode_conf_state(buf: bytes, off: int, end: int) -> tuple[ConfState, int]:
    (auto_leave,) = _unpack(_U8, buf, off, end)
    if auto_leave > 1:
        raise RecordDecodeError(f"bad auto_leave byte {auto_leave}")
    off += 1
    sets = []
    for _ in range(4):
        (n,) = _unpack(_COUNT, buf, off, end)
        off += _COUNT.size
        if off + 8 * n > end:
            raise RecordDecodeError("conf state runs past the payload")
        sets.append(frozenset(struct.unpack_from(f"<{n}Q", buf, off)))
        off += 8 * n
    return ConfState(sets[0], sets[1], sets[2], sets[3], bool(auto_leave)), off


def _decode_checkpoint(buf: bytes, start: int, end: int) -> CheckpointRecord:
    (count,) = _unpack(_COUNT, buf, start, end)
    off = start + _COUNT.size
    parts = []
    for _ in range(count):
        pid, hterm, vote, commit, sindex, sterm, offset, oterm, last = _unpack(
            _CHECKPOINT_ITEM, buf, off, end
        )
        off += _CHECKPOINT_ITEM.size
        cs, off = _decode_conf_state(buf, off, end)
        if last < offset:
            raise RecordDecodeError(f"partition {pid}: last index {last} below compacted {offset}")
        parts.append(
            PartitionCheckpoint(
                pid, HardState(hterm, vote, commit), SnapshotMeta(sindex, sterm, cs), offset, oterm, last
            )
        )
    _expect_end(off, end)
    return CheckpointRecord(parts)
