"""Segment files: naming, listing and scanning.

A WAL directory holds segment files named ``NNNNNNNNNNNNNNNN.wal`` (a
16-digit, zero-padded sequence number; lexical order is numeric order).
Sequence numbers only grow; gaps are normal once old segments are deleted.
Other files in the directory (the ``LOCK`` file) are ignored.

:class:`SegmentScan` reads a whole segment and yields ``(offset, record)``
for every valid record from the start, stopping at the first problem, which
it describes in :attr:`SegmentScan.damage`.  Deciding whether that problem is
a harmless torn tail or corruption is the caller's business (see
:mod:`node.wal.replay`); the scan supplies the facts: where, what, and
whether any valid record exists after it (:meth:`SegmentScan.find_valid_after`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from node.fs import OS_FILES, Files

from .record import HEADER, Record, RecordDecodeError, RecordType, decode, record_crc

_NAME = re.compile(r"^(\d{16})\.wal$")
# Any byte that could be the type byte of a record: resync candidates, found at C speed.
_TYPE_BYTE = re.compile(b"[" + b"".join(re.escape(bytes([t])) for t in RecordType) + b"]")


def segment_name(seq: int) -> str:
    return f"{seq:016d}.wal"


def parse_segment_name(name: str) -> int | None:
    """The sequence number of a segment file name, or None for any other file."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_segments(directory: str, files: Files = OS_FILES) -> list[tuple[int, str]]:
    """``(seq, path)`` of every segment in ``directory``, oldest first."""
    found = []
    for name in files.list_dir(directory):
        seq = parse_segment_name(name)
        if seq is not None:
            found.append((seq, os.path.join(directory, name)))
    found.sort()
    return found


@dataclass(frozen=True, slots=True)
class Damage:
    """The first record of a segment that could not be read."""

    offset: int
    reason: str
    tearable: bool
    """True for the kinds of damage an interrupted append produces (a short
    header, a record running past the end of the file, a CRC mismatch).  A
    record whose CRC matches but whose payload is nonsense was written that
    way and is never a torn write."""


class SegmentScan:
    """One segment file read into memory, iterable as ``(offset, record)``.

    Iteration stops at the end of the file or at the first bad record; after
    it, :attr:`damage` is None if the whole file was valid and
    :attr:`valid_end` is the offset just past the last valid record.
    """

    def __init__(self, path: str, files: Files = OS_FILES) -> None:
        self.path = path
        with files.open_read(path) as f:
            self.data = f.read()
        self.size = len(self.data)
        self.damage: Damage | None = None
        self.valid_end = 0

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        data, size, hsize = self.data, self.size, HEADER.size
        off = 0
        while off < size:
            if size - off < hsize:
                self._damaged(off, f"truncated record header ({size - off} of {hsize} bytes)", True)
                return
            length, crc, rtype = HEADER.unpack_from(data, off)
            start = off + hsize
            end = start + length
            if end > size:
                self._damaged(
                    off, f"record of {length} payload bytes runs past the end of the file ({size} bytes)", True
                )
                return
            actual = record_crc(data, rtype, start, end)
            if actual != crc:
                self._damaged(off, f"CRC mismatch (stored {crc:#010x}, computed {actual:#010x})", True)
                return
            try:
                rec = decode(rtype, data, start, end)
            except RecordDecodeError as exc:
                self._damaged(off, str(exc), False)
                return
            yield off, rec
            off = end
            self.valid_end = off

    def _damaged(self, offset: int, reason: str, tearable: bool) -> None:
        self.damage = Damage(offset, reason, tearable)

    def find_valid_after(self, offset: int) -> int | None:
        """The first offset past ``offset`` where a complete record with a matching CRC starts.

        A torn append leaves garbage only at the very end; finding an intact
        record after a bad one means the bad one is damage in the middle.  The
        damaged record's length field cannot be trusted, so every byte
        position is a candidate; a regular expression finds the few whose
        type byte is plausible, the length filters most of the rest before
        any CRC is computed.  A random match needs a 32-bit CRC collision.
        """
        data, size, hsize = self.data, self.size, HEADER.size
        type_at = hsize - 1
        for m in _TYPE_BYTE.finditer(data, offset + 1 + type_at, size):
            pos = m.start() - type_at
            length, crc, rtype = HEADER.unpack_from(data, pos)
            end = pos + hsize + length
            if end <= size and record_crc(data, rtype, pos + hsize, end) == crc:
                return pos
        return None
