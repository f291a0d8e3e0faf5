"""Byte key-space arithmetic: half-open ranges where the empty key means unbounded.

Shared because the placement table and the client's routing cache must agree on these
conventions to the byte: a key one of them places in a partition the other must too.
"""

from __future__ import annotations

import itertools

MAX_PRESPLIT = 65536

MAX_SPLIT_KEY_BYTES = 496
"""The longest partition boundary: a node stores keys up to this length as themselves and longer
ones in buckets under their first MAX_SPLIT_KEY_BYTES bytes (node/state/layout.py), and a
boundary no longer than that never cuts a bucket in two. Placement refuses longer split keys and
a node picks none (docs/decisions.md D21)."""


def even_boundaries(n: int) -> list[bytes]:
    """The n-1 inner split keys that cut the key space into n pre-split partitions.

    Boundaries are evenly spaced fixed-width big-endian prefixes: one byte while n <= 256
    (8 partitions: 0x20, 0x40, ..., 0xe0), two bytes beyond. Keys are arbitrary bytes, so an
    even cut of the first byte is the only split that needs no knowledge of the data.
    """
    if not 1 <= n <= MAX_PRESPLIT:
        raise ValueError(f"partitions must be in [1, {MAX_PRESPLIT}], got {n}")
    width = 1 if n <= 256 else 2
    space = 256**width
    return [(i * space // n).to_bytes(width, "big") for i in range(1, n)]


def even_ranges(n: int) -> list[tuple[bytes, bytes]]:
    """[start, end) of each of n pre-split partitions, covering the key space exactly."""
    cuts = [b"", *even_boundaries(n), b""]
    return list(itertools.pairwise(cuts))


def end_after(a: bytes, b: bytes) -> bool:
    """True if range end ``a`` lies beyond range end ``b`` (empty = +infinity)."""
    if a == b:
        return False
    if not a:
        return True
    if not b:
        return False
    return a > b


def overlaps(start1: bytes, end1: bytes, start2: bytes, end2: bytes) -> bool:
    """Do [start1, end1) and [start2, end2) share a key?"""
    return (not end2 or start1 < end2) and (not end1 or start2 < end1)


def contains(start: bytes, end: bytes, key: bytes) -> bool:
    return start <= key and (not end or key < end)


def strictly_inside(start: bytes, end: bytes, key: bytes) -> bool:
    """A valid split key: inside the range and not its start (both halves non-empty)."""
    return key > start and (not end or key < end)
