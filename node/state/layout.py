"""How user keys map onto LMDB records, order preserved, keys of any length.

LMDB keys are at most 511 bytes, while Tessera accepts keys up to 4 KiB.
So a key of at most :data:`INLINE` bytes is stored as itself (value =
``u64 version | user value``), and every longer key lives in a *bucket*
record whose LMDB key is its first :data:`INLINE` bytes ``P`` plus one zero
byte; the bucket holds the sorted ``(suffix, version, value)`` of every long
key starting with ``P``.

Order is preserved: ``P + b"\\0"`` is the immediate successor of ``P``, and
no inline key lies between ``P`` and any ``P + suffix`` (an inline key above
``P`` differs from it within its first INLINE bytes, so it is also above
every ``P + suffix``).  A cursor walk therefore yields user keys in order.

Partition boundaries (split keys) must be at most INLINE bytes, so a bucket
never straddles two partitions: placement refuses longer split keys, and a
leader choosing one picks an inline key or a bucket's prefix ``P`` (every key
of the bucket is above ``P``).  INLINE is common.keyspace.MAX_SPLIT_KEY_BYTES.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from typing import TypeAlias

import lmdb

from common.keyspace import MAX_SPLIT_KEY_BYTES

INLINE = MAX_SPLIT_KEY_BYTES
_VER = struct.Struct("<Q")
_ITEM = struct.Struct("<IQI")

Txn: TypeAlias = "lmdb.Transaction[bytes]"
"""A transaction as the node opens them (without ``buffers=True``): keys and values come back as bytes."""
# A database handle (``env.open_db``) is an ``lmdb._Database``: lmdb gives that type no public name.


def _decode_bucket(raw: bytes) -> list[tuple[bytes, int, bytes]]:
    out = []
    off = 0
    n = len(raw)
    while off < n:
        slen, version, vlen = _ITEM.unpack_from(raw, off)
        off += _ITEM.size
        suffix = bytes(raw[off : off + slen])
        off += slen
        out.append((suffix, version, bytes(raw[off : off + vlen])))
        off += vlen
    return out


def _encode_bucket(items: list[tuple[bytes, int, bytes]]) -> bytes:
    parts = []
    for suffix, version, value in items:
        parts.append(_ITEM.pack(len(suffix), version, len(value)))
        parts.append(suffix)
        parts.append(value)
    return b"".join(parts)


def get(txn: Txn, db: lmdb._Database, key: bytes) -> tuple[int, bytes] | None:
    """(version, value) of ``key``, or None."""
    if not key:
        return None  # LMDB has no empty key, and writes refuse it
    if len(key) <= INLINE:
        raw = txn.get(key, db=db)
        if raw is None:
            return None
        return _VER.unpack_from(raw, 0)[0], bytes(raw[8:])
    raw = txn.get(key[:INLINE] + b"\0", db=db)
    if raw is None:
        return None
    suffix = key[INLINE:]
    for s, version, value in _decode_bucket(raw):
        if s == suffix:
            return version, value
    return None


def record_size(key: bytes, value: bytes) -> int:
    """What one LMDB record counts toward a partition's size (node/state/store.py)."""
    return len(key) + len(value)


def put(txn: Txn, db: lmdb._Database, key: bytes, version: int, value: bytes) -> tuple[bool, int]:
    """Write ``key``; whether it existed before, and by how many bytes the range's records grew."""
    if len(key) <= INLINE:
        stored = _VER.pack(version) + value
        old = txn.replace(key, stored, db=db)
        grown = record_size(key, stored) - (record_size(key, old) if old is not None else 0)
        return old is not None, grown
    bkey = key[:INLINE] + b"\0"
    raw = txn.get(bkey, db=db)
    items = _decode_bucket(raw) if raw is not None else []
    suffix = key[INLINE:]
    suffixes = [s for s, _, _ in items]
    i = bisect.bisect_left(suffixes, suffix)
    existed = i < len(items) and items[i][0] == suffix
    if existed:
        items[i] = (suffix, version, value)
    else:
        items.insert(i, (suffix, version, value))
    encoded = _encode_bucket(items)
    txn.put(bkey, encoded, db=db)
    return existed, record_size(bkey, encoded) - (record_size(bkey, raw) if raw is not None else 0)


def delete(txn: Txn, db: lmdb._Database, key: bytes) -> tuple[bool, int]:
    """Delete ``key``; whether it existed, and by how many bytes the range's records grew (<= 0)."""
    if not key:
        return False, 0
    if len(key) <= INLINE:
        old = txn.pop(key, db=db)
        return old is not None, -record_size(key, old) if old is not None else 0
    bkey = key[:INLINE] + b"\0"
    raw = txn.get(bkey, db=db)
    if raw is None:
        return False, 0
    suffix = key[INLINE:]
    items = _decode_bucket(raw)
    kept = [it for it in items if it[0] != suffix]
    if len(kept) == len(items):
        return False, 0
    if kept:
        encoded = _encode_bucket(kept)
        txn.put(bkey, encoded, db=db)
        return True, len(encoded) - len(raw)
    txn.delete(bkey, db=db)
    return True, -record_size(bkey, raw)


def _seek(cur: lmdb.Cursor[bytes], start: bytes) -> bool:
    head = start[:INLINE]
    return cur.set_range(head) if head else cur.first()


def scan(txn: Txn, db: lmdb._Database, start: bytes, end: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(key, version, value) for start <= key < end (empty end: unbounded), in key order."""
    cur = txn.cursor(db=db)
    if not _seek(cur, start):
        return
    for lk, lv in cur:
        if len(lk) == INLINE + 1:
            prefix = bytes(lk[:INLINE])
            if end and prefix >= end:
                return
            for suffix, version, value in _decode_bucket(lv):
                k = prefix + suffix
                if k < start:
                    continue
                if end and k >= end:
                    return
                yield k, version, value
        else:
            if end and lk >= end:
                return
            if lk < start:
                continue
            yield bytes(lk), _VER.unpack_from(lv, 0)[0], bytes(lv[8:])


def records(txn: Txn, db: lmdb._Database, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The raw LMDB records holding [start, end) (whole buckets), for snapshots and range deletes."""
    cur = txn.cursor(db=db)
    if not _seek(cur, start):
        return
    for lk, lv in cur:
        user_floor = lk[:INLINE] if len(lk) == INLINE + 1 else lk
        if end and user_floor >= end:
            return
        if len(lk) != INLINE + 1 and lk < start:
            continue
        yield bytes(lk), bytes(lv)
