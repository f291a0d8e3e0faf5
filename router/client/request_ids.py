"""Idempotency keys for writes: a random per-process prefix, then a counter.

Every write carries a request id that a node remembers, with the write's result, for a window of
log indexes (node.state.store): a retry with the same id is answered from that record instead of
being applied twice. The ids are the Raft dissertation's client sessions (section 6.3) in
miniature: 8 random bytes drawn when the process starts (again in a forked child), then an
8-byte big-endian counter.

Why not 16 random bytes each: the node keys its dedup records by (partition, request id) in one
LMDB B-tree, so random ids put every write's record on a different leaf page, one more page for
LMDB to copy, write and fsync per write (and another when the record is collected). Ids that
increase within a client land side by side: a round's records of one client share a leaf.
Measured in docs/benchmarks.md. Uniqueness does not suffer: two processes collide only if
they draw the same 64-bit prefix.
"""

from __future__ import annotations

import itertools
import os

_prefix = os.urandom(8)
_counter = itertools.count(1)


def _reseed() -> None:
    """In a forked child: a prefix of its own, or parent and child would issue the same ids."""
    global _prefix, _counter
    _prefix, _counter = os.urandom(8), itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> bytes:
    """16 bytes naming one logical write (reused by its retries), unique across processes."""
    # No lock: next() on a count is atomic under the GIL, and only a fork replaces the two
    # (in the child, where the forking thread is the only one).
    return _prefix + next(_counter).to_bytes(8, "big")
