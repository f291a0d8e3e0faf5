"""The placement group's snapshot: the whole table as of one applied log index, on disk.

A router keeps the placement table in memory and its commands in the write-ahead log; every
so often it writes the table, with the index and term of the last command applied to it and
the group's voters, to ``DATA_DIR/placement.json`` (atomically: temp file, fsync, rename,
directory fsync). On restart the router loads this checkpoint and replays the log from the
next index; the log before it can be compacted; and a router that fell too far behind is sent
this file as its Raft snapshot.

Format 2: ``{"format": 2, "index", "term", "voters": [...], "table": <format-1 document>}``.
A format-1 file is what a router wrote before placement was replicated (the table alone); a
single router adopts it as the initial state of its group (see router/placement/group.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.placement import codec, persist
from router.placement.table import PlacementTable

FORMAT = 2


@dataclass(frozen=True, slots=True)
class Checkpoint:
    index: int  # the last log index applied to ``table`` (0: a format-1 file, no log yet)
    term: int
    voters: frozenset[int]
    table: PlacementTable


def encode(cp: Checkpoint) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "index": cp.index,
        "term": cp.term,
        "voters": sorted(cp.voters),
        "table": codec.table_to_doc(cp.table),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Checkpoint:
    """Raises codec.CodecError for anything this version did not write."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise codec.CodecError(f"not JSON: {exc}") from None
    if isinstance(doc, dict) and doc.get("format") == codec.FORMAT:
        return Checkpoint(0, 0, frozenset(), codec.table_from_doc(doc))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        shown = doc.get("format") if isinstance(doc, dict) else doc
        raise codec.CodecError(f"unknown placement checkpoint format {shown!r}")
    try:
        return Checkpoint(int(doc["index"]), int(doc["term"]), frozenset(int(v) for v in doc["voters"]),
                          codec.table_from_doc(doc["table"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise codec.CodecError(f"malformed placement checkpoint: {exc!r}") from None


def load(directory: Path) -> Checkpoint | None:
    data = persist.read_if_exists(directory / persist.TABLE_FILE)
    return decode(data) if data is not None else None


def save(directory: Path, cp: Checkpoint) -> None:
    persist.write_atomic(directory / persist.TABLE_FILE, encode(cp))
