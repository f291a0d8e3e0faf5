"""The WAL on a disk that loses power: nothing acknowledged is lost, and the log stays a log.

Killing a process proves little about durability: the kernel keeps what a killed process wrote
but never synced. Here the WAL runs on :class:`~support.power_cut.PowerCutDisk`, which loses
what was not synced the way a power cut may (all of it, a torn prefix, a prefix and zeros;
names whose directory was not synced), and the power is cut at random calls, in the middle of
appends, syncs, segment creations and deletions, and during recovery itself.

What must hold after every cut, once the WAL opens again (it may not refuse to):

* *Nothing acknowledged is lost*: a ``write(..., sync=True)`` that returned, and the state an
  ``open`` returned (a node acts on it at once: it votes and answers appends from it).
* *The log is consistent*: the WAL's state is exactly the state after some prefix of the
  operations written, at least as long as the acknowledged ones. A crash may keep part of a
  batch, record by record, but never a mix: no hole, no record out of order.
* *Torn tails are truncated*: after opening, every segment on the disk reads cleanly.

The expected states come from :class:`~node.raft.MemoryStorage` (the core's reference) fed
the same operations. Then the same histories run with ``fdatasync`` made a no-op, and with
directory fsyncs made no-ops, and must fail: the suite can tell a WAL that syncs from one that
does not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import pytest

from node.raft import HardState, LogStorage, MemoryStorage
from node.wal import WalBatch, WalCorruptionError, WalLogStorage, WriteAheadLog
from node.wal.segment import SegmentScan, list_segments
from support.power_cut import Keep, PowerCut, PowerCutDisk
from support.wal_ops import LogOp, add_to_batch, apply_to_memory, mk, random_op

WAL_DIR = "/node/wal"
SEEDS = range(12)
CUTS_PER_HISTORY = 25

# An operation of a history: one on a partition's log, or the removal of the partition.
Op = tuple[int, LogOp | tuple[Literal["remove"], None]]
Summary = tuple[object, ...]


class LostAcknowledged(AssertionError):
    """After a power cut the WAL no longer holds what it had acknowledged (or holds a mix)."""


def summary(s: LogStorage) -> Summary:
    """Everything a partition's log answers, as one comparable value."""
    first, last = s.first_index(), s.last_index()
    hs, cs = s.initial_state()
    return hs, cs, s.snapshot().meta, first, s.term(first - 1), tuple(s.entries(first, last + 1))


EMPTY = summary(MemoryStorage())


class Model:
    """What the WAL may hold: every state from the last acknowledged one on.

    ``states[j]`` is every partition's :func:`summary` after the acknowledged operations and
    the first ``j`` written since (the ``tail``); after a power cut the WAL must be in one of
    them. ``mems`` are the MemoryStorages after every operation written.
    """

    def __init__(self) -> None:
        self.acked: list[Op] = []
        self.tail: list[Op] = []
        self.states: list[dict[int, Summary]] = [{}]
        self.mems: dict[int, MemoryStorage] = {}

    def write(self, pid: int, op: LogOp) -> bool:
        """Perform ``op`` on the model if the log's rules allow it; True if it did."""
        mem = self.mems.setdefault(pid, MemoryStorage())
        try:
            apply_to_memory(mem, op)
        except Exception:  # the core's CompactedError etc.: the WAL would reject the batch
            return False
        self._issued((pid, op), summary(mem))
        return True

    def remove(self, pid: int) -> None:
        self.mems.pop(pid, None)
        self._issued((pid, ("remove", None)), None)

    def _issued(self, op: Op, state: Summary | None) -> None:
        self.tail.append(op)
        nxt = dict(self.states[-1])
        if state is None:
            nxt.pop(op[0], None)
        else:
            nxt[op[0]] = state
        self.states.append(nxt)

    def acknowledge(self) -> None:
        self.acked += self.tail
        self.tail = []
        self.states = [self.states[-1]]

    def recovered(self, wal: WriteAheadLog, what: str) -> int:
        """Check the reopened WAL against the states it may be in; adopt the one it is in (an
        open acknowledges what it recovered). Returns how many unacknowledged operations it kept."""
        pids = set(wal.partition_ids()).union(*(s.keys() for s in self.states))
        got = {pid: summary(WalLogStorage(wal, pid)) for pid in pids}
        for j in range(len(self.states) - 1, -1, -1):
            if all(got[pid] == self.states[j].get(pid, EMPTY) for pid in pids):
                break
        else:
            acked = self.states[0]
            lost = sorted(pid for pid in pids if got[pid] != acked.get(pid, EMPTY))
            raise LostAcknowledged(
                f"{what}: the WAL holds no state from the last acknowledged one on "
                f"(partitions {lost} differ from what was acknowledged, and from every later state)"
            )
        self.acked += self.tail[:j]
        self.tail = []
        self.states = [self.states[j]]
        self.mems = {}
        for pid, op in self.acked:  # what the WAL holds now, as MemoryStorages, from scratch
            match op:
                case ("remove", None):
                    self.mems.pop(pid, None)
                case _:
                    apply_to_memory(self.mems.setdefault(pid, MemoryStorage()), op)
        return j


@dataclass
class Coverage:
    """What a history went through, so the test can require that it went through enough."""

    cuts: int = 0
    tripped_in: frozenset[str] = frozenset()
    torn_tails: int = 0
    kept_unacknowledged: int = 0
    kills: int = 0
    acked_writes: int = 0
    segments_deleted: int = 0

    def add(self, other: Coverage) -> Coverage:
        return Coverage(*(a + b if not isinstance(a, frozenset) else a | b
                          for a, b in zip(vars(self).values(), vars(other).values())))


def _open(disk: PowerCutDisk, segment_bytes: int, rng: random.Random) -> WriteAheadLog:
    """Open the WAL, sometimes cutting the power during recovery (then open it again)."""
    while True:
        if rng.random() < 0.2:
            disk.cut_after(rng.randint(1, 6))
        try:
            wal = WriteAheadLog.open(WAL_DIR, segment_bytes=segment_bytes, files=disk)
        except PowerCut:
            continue
        disk.disarm()
        return wal


def _torn(disk: PowerCutDisk) -> bool:
    """Whether the last segment ends in a torn write now (before the WAL opens again)."""
    try:
        segs = list_segments(WAL_DIR, disk)
    except FileNotFoundError:  # the WAL directory itself was not made durable (a bug under test)
        return False
    if not segs:
        return False
    scan = SegmentScan(segs[-1][1], disk)
    list(scan)
    return scan.damage is not None


def _next_batch(rng: random.Random, model: Model, term: int) -> tuple[WalBatch, bool]:
    """A batch as a node writes it: usually Ready output, synced; sometimes only what a round
    carries (compactions of applied entries, commit indexes), not synced."""
    b = WalBatch()
    carried = rng.random() < 0.25
    for pid in rng.sample(range(1, 6), rng.randint(1, 3)):
        mem = model.mems.get(pid)
        if carried:
            if mem is not None and mem.last_index() >= mem.first_index():
                index = rng.randint(max(mem.first_index(), mem.last_index() - 3), mem.last_index())
                if model.write(pid, ("compact", index)):
                    b.compact(pid, index)
            if mem is not None:
                hs = mem.hard_state
                op: LogOp = ("hard", HardState(hs.term, hs.vote, mem.last_index()))
                if model.write(pid, op):
                    add_to_batch(b, pid, op)
            continue
        if mem is not None and rng.random() < 0.03:
            model.remove(pid)
            b.remove_partition(pid)
            continue
        for _ in range(rng.randint(1, 3)):
            op = random_op(rng, mem if mem is not None else MemoryStorage(), term)
            if op[0] != "reopen" and model.write(pid, op):
                add_to_batch(b, pid, op)
            mem = model.mems.get(pid)
    return b, not carried


def run_history(seed: int, *, sync_is_noop: bool = False, directory_sync_is_noop: bool = False) -> Coverage:
    """Random writes on a disk whose power is cut, or whose process is killed, now and then.

    Raises :class:`LostAcknowledged` if the WAL ever loses what it acknowledged (or keeps a
    state no prefix of the writes explains), WalCorruptionError if it refuses to open.
    """
    rng = random.Random(seed)
    disk = PowerCutDisk(seed, sync_is_noop=sync_is_noop, directory_sync_is_noop=directory_sync_is_noop)
    segment_bytes = rng.choice([400, 1500, 6000, 1 << 20])  # the last: one segment, no rotation
    model = Model()
    cov = Coverage()
    term = 1
    wal = _open(disk, segment_bytes, rng)
    for cut in range(CUTS_PER_HISTORY):
        kill = rng.random() < 0.15
        writes = rng.randint(1, 40)
        if not kill:
            disk.cut_after(rng.randint(1, 4 * writes))
        try:
            for _ in range(writes):
                term += rng.random() < 0.05
                b, sync = _next_batch(rng, model, term)
                before = set(wal.segment_paths())
                wal.write(b, sync=sync)
                cov.segments_deleted += len(before - set(wal.segment_paths()))
                if sync:
                    model.acknowledge()
                    cov.acked_writes += 1
            if kill:
                disk.kill()  # SIGKILL: the cache stays
                cov.kills += 1
            else:
                disk.power_cut()  # between two writes
        except PowerCut:
            pass
        cov.cuts += not kill
        cov.torn_tails += _torn(disk)
        wal = _open(disk, segment_bytes, rng)
        kept = model.recovered(wal, f"seed {seed}, after {'kill' if kill else 'power cut'} #{cut + 1}")
        cov.kept_unacknowledged += kept
        for _, path in list_segments(WAL_DIR, disk):  # the torn tail is gone
            scan = SegmentScan(path, disk)
            list(scan)
            assert scan.damage is None, (path, scan.damage)
    cov.tripped_in = frozenset(disk.tripped_in)
    return cov


def test_nothing_acknowledged_is_lost_in_power_cuts() -> None:
    cov = Coverage()
    for seed in SEEDS:
        cov = cov.add(run_history(seed))
    # The histories went where the bugs would be.
    assert cov.cuts >= 200 and cov.kills >= 20 and cov.acked_writes >= 2000, cov
    assert {"append", "sync", "create", "sync_directory", "unlink", "truncate"} <= cov.tripped_in, cov
    assert cov.torn_tails >= 20 and cov.kept_unacknowledged >= 50 and cov.segments_deleted >= 100, cov


@pytest.mark.parametrize("bug", ["sync_is_noop", "directory_sync_is_noop"])
def test_the_same_histories_lose_acknowledged_writes_without_fsync(bug: str) -> None:
    """The suite above can tell: with the WAL's fdatasync (or its directory fsyncs) doing
    nothing, every history loses acknowledged writes, silently or, when the loss leaves a hole
    in the middle of the log, with a WAL that refuses to open."""
    lost = 0
    for seed in SEEDS:
        with pytest.raises((LostAcknowledged, WalCorruptionError)) as failure:
            run_history(seed, **{bug: True})
        lost += isinstance(failure.value, LostAcknowledged)
    assert lost >= 2  # not only refusals: acknowledged writes silently gone


# -- the rules beyond "fsync before acknowledging", one power cut each ---------------------


def test_a_segment_is_synced_before_it_is_closed() -> None:
    """A write that is not synced (a carried commit index) leaves bytes at the end of the
    current segment; if the next write starts a new segment, those bytes must be synced first,
    or a torn tail ends up in a segment that is not the last: corruption, a node that cannot
    start."""
    disk = PowerCutDisk(1)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    b = WalBatch()
    b.entries(1, mk(1, 3))
    wal.write(b)
    b = WalBatch()
    b.hard_state(1, HardState(1, 1, 3))
    wal.write(b, sync=False)
    b = WalBatch()
    b.entries(1, mk(4, 20, size=40))
    wal.write(b)  # starts segment 2
    assert len(wal.segment_paths()) == 2
    disk.power_cut(data=Keep.HALF, names=Keep.EVERYTHING)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    assert WalLogStorage(wal, 1).last_index() == 20


def _dead_segment_behind_an_unsynced_compaction(disk: PowerCutDisk) -> WriteAheadLog:
    """Entries 1..10 in segment 1, entry 11 in segment 2 (whose checkpoint says 1..10 live in
    segment 1), then a compaction to 10 written without sync: segment 1 is dead, for a reason
    that is not on the disk yet."""
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    for entries in (mk(1, 10, size=40), mk(11, 11)):
        b = WalBatch()
        b.entries(1, entries)
        wal.write(b)
    assert len(wal.segment_paths()) == 2
    b = WalBatch()
    b.compact(1, 10)
    wal.write(b, sync=False)
    return wal


def test_segments_are_deleted_only_once_what_made_them_dead_is_synced() -> None:
    """A compaction written without sync makes the old segment dead; deleting it at once lets
    a power cut keep the deletion (metadata) and lose the compaction (data): live entries gone."""
    disk = PowerCutDisk(2)
    wal = _dead_segment_behind_an_unsynced_compaction(disk)
    assert len(wal.segment_paths()) == 2  # not yet: the compaction is not on the disk
    disk.power_cut(data=Keep.NOTHING, names=Keep.EVERYTHING)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    s = WalLogStorage(wal, 1)
    assert (s.first_index(), s.last_index()) == (1, 11)
    b = WalBatch()
    b.compact(1, 10)
    wal.write(b, sync=False)
    b = WalBatch()
    b.hard_state(1, HardState(1, 1, 11))
    wal.write(b)  # synced: now segment 1 goes
    assert len(wal.segment_paths()) == 1


def test_opening_makes_what_it_read_durable() -> None:
    """A process killed between its write and its fsync leaves the bytes in the kernel's
    cache; the next process reads them and acts on them (here: deletes a segment they made
    dead), so opening must sync before a power cut can take them back."""
    disk = PowerCutDisk(3)
    _dead_segment_behind_an_unsynced_compaction(disk)
    disk.kill()
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    assert len(wal.segment_paths()) == 1  # the dead segment went at once
    disk.power_cut(data=Keep.NOTHING, names=Keep.EVERYTHING)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    s = WalLogStorage(wal, 1)
    assert (s.first_index(), s.last_index()) == (11, 11)


def test_opening_makes_a_new_segments_name_durable() -> None:
    """A process killed after creating a segment and before syncing the directory leaves a
    file whose name a power cut may still take; the next process writes (and acknowledges)
    into it, so opening syncs the directory first."""
    disk = PowerCutDisk(4)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    b = WalBatch()
    b.entries(1, mk(1, 2))
    wal.write(b)
    disk.kill()
    disk.create(f"{WAL_DIR}/{2:016d}.wal")  # what the killed process got as far as
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    b = WalBatch()
    b.entries(1, mk(3, 4))
    wal.write(b)
    disk.power_cut(data=Keep.EVERYTHING, names=Keep.NOTHING)
    wal = WriteAheadLog.open(WAL_DIR, segment_bytes=300, files=disk)
    assert WalLogStorage(wal, 1).last_index() == 4
