"""Random histories of one partition's log, as WAL batches and as MemoryStorage calls.

The WAL's tests compare what it rebuilds with :class:`~node.raft.MemoryStorage` fed the same
operations, the consensus core's reference semantics: :func:`random_op` draws an operation
that is usually valid and sometimes breaks the log's rules, :func:`apply_to_memory` performs
it on a MemoryStorage (raising the core's errors), :func:`add_to_batch` adds it to a
:class:`~node.wal.WalBatch`. :func:`ready_batch` is what a driver of the core persists of a
Ready.
"""

from __future__ import annotations

import random
from typing import Literal

from node.raft import ConfState, Entry, HardState, MemoryStorage, Ready, Snapshot, SnapshotMeta
from node.wal import WalBatch

CS = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))

# One operation on a partition's log, and its argument.
LogOp = (
    tuple[Literal["append"], list[Entry]]
    | tuple[Literal["compact"], int]
    | tuple[Literal["install"], SnapshotMeta]
    | tuple[Literal["create"], int]
    | tuple[Literal["hard"], HardState]
    | tuple[Literal["reopen"], None]
)


def mk(lo: int, hi: int, term: int = 1, size: int = 8) -> list[Entry]:
    """Entries lo..hi inclusive whose data names their term and index."""
    return [Entry(term, i, f"{term}:{i}:".encode().ljust(size, b".")) for i in range(lo, hi + 1)]


def random_op(rng: random.Random, mem: MemoryStorage, term: int) -> LogOp:
    """An operation on ``mem``'s log at ``term``: mostly valid, now and then not."""
    first, last, snap = mem.first_index(), mem.last_index(), mem.snapshot().meta.index

    def around(lo: int, hi: int) -> int:
        # A local snapshot may end above the last index once a later append cut the log shorter.
        return rng.randint(min(lo, hi), hi)

    r = rng.random()
    if r < 0.5:
        lo = last + 2 if rng.random() < 0.05 else rng.randint(max(1, first - 3), last + 1)
        return "append", mk(lo, lo + rng.randint(0, 6), term=term, size=rng.randint(0, 40))
    if r < 0.65:
        return "compact", rng.randint(first - 2, last + 1)
    if r < 0.72:
        return "install", SnapshotMeta(around(max(0, snap - 1), last + 8), term, CS)
    if r < 0.8:
        return "create", around(snap - 1, last + 1)
    if r < 0.95:
        return "hard", HardState(term, rng.randint(0, 3), rng.randint(0, last))
    return "reopen", None


def apply_to_memory(mem: MemoryStorage, op: LogOp) -> None:
    match op:
        case ("append", entries):
            mem.append(entries)
        case ("compact", index):
            mem.compact(index)
        case ("install", meta):
            mem.apply_snapshot(Snapshot(meta))
        case ("create", index):
            mem.create_snapshot(index, CS, b"")
        case ("hard", hs):
            mem.set_hard_state(hs)


def add_to_batch(b: WalBatch, pid: int, op: LogOp) -> None:
    match op:
        case ("append", entries):
            b.entries(pid, entries)
        case ("compact", index):
            b.compact(pid, index)
        case ("install", meta):
            b.snapshot(pid, meta)
        case ("create", index):
            b.create_snapshot(pid, index, CS)
        case ("hard", hs):
            b.hard_state(pid, hs)


def ready_batch(pid: int, rd: Ready) -> WalBatch:
    """What a Ready asks to persist, in the order that keeps any prefix of it consistent:
    the snapshot, the entries, the hard state."""
    b = WalBatch()
    if rd.snapshot is not None:
        b.snapshot(pid, rd.snapshot.meta)
    b.entries(pid, rd.entries)
    if rd.hard_state is not None:
        b.hard_state(pid, rd.hard_state)
    return b
