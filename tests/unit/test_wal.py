"""The node's write-ahead log on real files with real fsync (pytest's tmp_path).

Every state the WAL rebuilds is compared against MemoryStorage fed the same
operations: the core's reference semantics.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.raft import (
    CompactedError,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    RawNode,
    Snapshot,
    SnapshotMeta,
    SnapshotOutOfDateError,
    UnavailableError,
)
from node.wal import (
    WalBatch,
    WalCorruptionError,
    WalLockedError,
    WalLogStorage,
    WalSyncError,
    WriteAheadLog,
)
from node.wal import record as rec
from node.wal.segment import SegmentScan, list_segments
from support.wal_ops import CS, add_to_batch, apply_to_memory, mk, random_op, ready_batch


def batch(entries: dict[int, list[Entry]] | None = None, hard: dict[int, HardState] | None = None) -> WalBatch:
    """A batch of these entries and hard states, by partition."""
    b = WalBatch()
    for pid, es in (entries or {}).items():
        b.entries(pid, es)
    for pid, hs in (hard or {}).items():
        b.hard_state(pid, hs)
    return b


def reopen(wal: WriteAheadLog) -> WriteAheadLog:
    wal.close()
    return WriteAheadLog.open(wal.directory, segment_bytes=wal.segment_bytes, sync=wal.sync)


def assert_same(wal: WriteAheadLog, pid: int, mem: MemoryStorage) -> None:
    """WalLogStorage for ``pid`` answers like ``mem`` on every read."""
    s = WalLogStorage(wal, pid)
    first, last = mem.first_index(), mem.last_index()
    assert (s.first_index(), s.last_index()) == (first, last)
    assert s.initial_state() == mem.initial_state()
    assert s.snapshot().meta == mem.snapshot().meta
    assert s.entries(first, last + 1) == mem.entries(first, last + 1)
    for i in range(first - 1, last + 1):
        assert s.term(i) == mem.term(i), i
    for size in (0, 20, 100):
        assert s.entries(first, last + 1, size) == mem.entries(first, last + 1, size)
    with pytest.raises((CompactedError, UnavailableError)):
        s.entries(first - 1, last + 1)
    with pytest.raises((CompactedError, UnavailableError)):
        s.entries(first, last + 2)
    if first >= 2:
        with pytest.raises(CompactedError):
            s.term(first - 2)
    with pytest.raises(UnavailableError):
        s.term(last + 1)


def offsets(path: str) -> list[int]:
    return [off for off, _ in SegmentScan(path)]


def only_segment(wal: WriteAheadLog) -> str:
    paths = wal.segment_paths()
    assert len(paths) == 1
    return paths[0]


@pytest.fixture
def wal(tmp_path: Path) -> Iterator[WriteAheadLog]:
    w = WriteAheadLog.open(str(tmp_path / "wal"))
    yield w
    w.close()


# -- format ------------------------------------------------------------------------


def test_records_round_trip() -> None:
    meta = SnapshotMeta(7, 3, ConfState(frozenset({1, 2}), frozenset({3}), frozenset({4}), frozenset({5}), True))
    cases: list[tuple[rec.RecordType, bytes, object]] = [
        (
            rec.RecordType.ENTRIES,
            rec.entries_payload(9, [Entry(2, 5, b"a"), Entry(2, 6, b"", EntryType.CONF_CHANGE)]),
            rec.EntriesRecord(9, [Entry(2, 5, b"a"), Entry(2, 6, b"", EntryType.CONF_CHANGE)]),
        ),
        (
            rec.RecordType.HARD_STATE,
            rec.hard_state_payload(9, HardState(4, 2, 3)),
            rec.HardStateRecord(9, HardState(4, 2, 3)),
        ),
        (rec.RecordType.SNAPSHOT, rec.snapshot_payload(9, meta, restart=True), rec.SnapshotRecord(9, meta, True)),
        (rec.RecordType.SNAPSHOT, rec.snapshot_payload(9, meta, restart=False), rec.SnapshotRecord(9, meta, False)),
        (rec.RecordType.COMPACT, rec.compact_payload(9, 12, 4), rec.CompactRecord(9, 12, 4)),
        (
            rec.RecordType.REMOVE_PARTITION,
            rec.remove_partition_payload(2**64 - 1),
            rec.RemovePartitionRecord(2**64 - 1),
        ),
    ]
    cp = rec.PartitionCheckpoint(3, HardState(5, 1, 9), meta, 7, 3, 11)
    cases.append((rec.RecordType.CHECKPOINT, rec.checkpoint_payload([cp, cp]), rec.CheckpointRecord([cp, cp])))
    for rtype, payload, want in cases:
        framed = rec.frame(rtype, payload)
        length, crc, t = rec.HEADER.unpack_from(framed)
        assert (length, t) == (len(payload), rtype)
        assert rec.record_crc(framed, t, rec.HEADER.size, len(framed)) == crc
        assert rec.decode(t, framed, rec.HEADER.size, len(framed)) == want


def test_entries_must_be_consecutive() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        WalBatch().entries(1, [Entry(1, 1), Entry(1, 3)])


def test_segment_file_names(wal: WriteAheadLog) -> None:
    (path,) = wal.segment_paths()
    assert os.path.basename(path) == "0000000000000001.wal"


# -- round trips ---------------------------------------------------------------------


def test_round_trip_many_partitions(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    mems = {pid: MemoryStorage() for pid in range(1, 41)}
    for rnd in range(1, 26):
        b = WalBatch()
        for pid, mem in mems.items():
            if rnd == 1 and pid % 5 == 0:
                meta = SnapshotMeta(10 * pid, 2, CS)
                b.snapshot(pid, meta)
                mem.apply_snapshot(Snapshot(meta))
            es = mk(mem.last_index() + 1, mem.last_index() + 1 + pid % 4, term=rnd, size=pid)
            b.entries(pid, es)
            mem.append(es)
            hs = HardState(rnd, pid % 3, mem.last_index() - 1)
            b.hard_state(pid, hs)
            mem.set_hard_state(hs)
        wal.write(b)
    for pid in (3, 7):  # a local snapshot, then compaction below it
        b = WalBatch()
        idx = mems[pid].last_index() - 2
        b.create_snapshot(pid, idx, CS)
        b.compact(pid, idx - 3)
        wal.write(b)
        mems[pid].create_snapshot(idx, CS, b"")
        mems[pid].compact(idx - 3)
    for _ in range(2):
        wal = reopen(wal)
        assert wal.partition_ids() == sorted(mems)
        for pid, mem in mems.items():
            assert_same(wal, pid, mem)
    wal.close()


def test_conflicting_suffix_overwrite_survives_reopen(wal: WriteAheadLog) -> None:
    mem = MemoryStorage()
    for es in (mk(1, 10, term=1), mk(6, 8, term=2), mk(9, 9, term=3)):
        wal.write(batch(entries={1: es}))
        mem.append(es)
    assert_same(wal, 1, mem)
    wal = reopen(wal)
    assert_same(wal, 1, mem)
    assert [e.term for e in WalLogStorage(wal, 1).entries(1, 10)] == [1] * 5 + [2] * 3 + [3]
    wal.close()


def test_unknown_partition_reads_as_empty(wal: WriteAheadLog) -> None:
    assert_same(wal, 42, MemoryStorage())
    assert wal.partition_ids() == []


def test_invalid_batch_writes_nothing_and_wal_stays_usable(wal: WriteAheadLog) -> None:
    wal.write(batch(entries={1: mk(1, 5)}))
    path = only_segment(wal)
    size = os.path.getsize(path)
    cases = [
        (UnavailableError, lambda b: b.entries(1, mk(7, 8))),  # gap after 5
        (UnavailableError, lambda b: b.compact(1, 6)),
        (SnapshotOutOfDateError, lambda b: b.snapshot(1, SnapshotMeta(0, 1))),
        (UnavailableError, lambda b: b.create_snapshot(1, 9, CS)),
    ]
    for exc, add in cases:
        b = WalBatch()
        b.entries(2, mk(1, 3))  # a valid op for another partition in the same batch
        b.hard_state(1, HardState(9, 9, 9))
        add(b)
        with pytest.raises(exc):
            wal.write(b)
        assert os.path.getsize(path) == size  # the whole batch was rejected before any I/O
        assert wal.partition_ids() == [1]
        assert wal.state(1).hard_state == HardState()
    b = WalBatch()
    b.compact(1, 3)
    b.compact(1, 3)  # the second one sees the first
    with pytest.raises(CompactedError):
        wal.write(b)
    wal.write(batch(entries={1: mk(6, 6)}))
    assert wal.state(1).last_index() == 6


def test_batch_ops_apply_in_order_within_a_batch(wal: WriteAheadLog) -> None:
    mem = MemoryStorage()
    b = WalBatch()
    meta = SnapshotMeta(20, 3, CS)
    b.entries(1, mk(1, 5))
    b.snapshot(1, meta)  # restarts the log after 20: entries 1..5 go
    b.entries(1, mk(21, 30, term=3))
    b.entries(1, mk(25, 26, term=4))  # overwrite within the same batch
    b.compact(1, 22)
    b.create_snapshot(1, 24, ConfState(voters=frozenset({1})))
    wal.write(b)
    mem.append(mk(1, 5))
    mem.apply_snapshot(Snapshot(meta))
    mem.append(mk(21, 30, term=3))
    mem.append(mk(25, 26, term=4))
    mem.compact(22)
    mem.create_snapshot(24, ConfState(voters=frozenset({1})), b"")
    assert_same(wal, 1, mem)
    wal = reopen(wal)
    assert_same(wal, 1, mem)
    wal.close()


def test_snapshot_provider_supplies_data(wal: WriteAheadLog) -> None:
    b = WalBatch()
    b.snapshot(1, SnapshotMeta(5, 2, CS))
    wal.write(b)
    assert WalLogStorage(wal, 1).snapshot() == Snapshot(SnapshotMeta(5, 2, CS), b"")
    snap = Snapshot(SnapshotMeta(9, 2, CS), b"lmdb image")
    assert WalLogStorage(wal, 1, lambda: snap).snapshot() is snap


def test_state_is_a_copy(wal: WriteAheadLog) -> None:
    wal.write(batch(entries={1: mk(1, 3)}))
    st = wal.state(1)
    wal.write(batch(entries={1: mk(4, 6)}))
    assert st.last_index() == 3 and wal.state(1).last_index() == 6


def test_directory_is_locked(tmp_path: Path) -> None:
    w = WriteAheadLog.open(str(tmp_path))
    with pytest.raises(WalLockedError):
        WriteAheadLog.open(str(tmp_path))
    w.close()
    WriteAheadLog.open(str(tmp_path)).close()


# -- crash recovery --------------------------------------------------------------------


def _fill(wal: WriteAheadLog, n: int = 10) -> None:
    for i in range(1, n + 1):
        wal.write(batch(entries={1: mk(i, i, size=40), 2: mk(i, i)}, hard={1: HardState(1, 1, i)}))


@pytest.mark.parametrize(
    "damage",
    ["cut-3", "cut-into-header", "cut-to-header", "garbage", "zeros", "cut-and-garbage"],
)
def test_torn_tail_is_truncated(tmp_path: Path, damage: str) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    _fill(wal)
    path = only_segment(wal)
    offs = offsets(path)
    last_rec = offs[-1]  # the hard state of write 10
    size = os.path.getsize(path)
    wal.close()
    with open(path, "r+b") as f:
        if damage == "cut-3":
            f.truncate(size - 3)
        elif damage == "cut-into-header":
            f.truncate(last_rec + 5)
        elif damage == "cut-to-header":
            f.truncate(last_rec + rec.HEADER.size)
        elif damage == "cut-and-garbage":
            f.truncate(size - 10)
            f.seek(0, os.SEEK_END)
            f.write(random.Random(1).randbytes(500))
        else:
            f.seek(0, os.SEEK_END)
            f.write(random.Random(2).randbytes(300) if damage == "garbage" else bytes(4096))
    wal = WriteAheadLog.open(str(tmp_path))
    want_end = size if damage in ("garbage", "zeros") else last_rec
    assert os.path.getsize(path) == want_end
    st = wal.state(1)
    assert st.last_index() == 10
    assert st.hard_state == (HardState(1, 1, 10) if want_end == size else HardState(1, 1, 9))
    # The WAL keeps working and the result survives another reopen.
    wal.write(batch(entries={1: mk(11, 11)}, hard={1: HardState(2, 1, 11)}))
    wal = reopen(wal)
    assert wal.state(1).last_index() == 11 and wal.state(1).hard_state == HardState(2, 1, 11)
    wal.close()


def test_flipped_byte_mid_log_raises_naming_file_and_offset(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    _fill(wal)
    path = only_segment(wal)
    wal.close()
    offs = offsets(path)
    victim = offs[5]
    with open(path, "r+b") as f:
        f.seek(victim + rec.HEADER.size + 12)  # inside the payload
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog.open(str(tmp_path))
    err = info.value
    assert (err.path, err.offset) == (path, victim)
    assert path in str(err) and f"offset {victim}" in str(err) and "CRC" in str(err)
    assert os.path.getsize(path) > victim  # nothing was truncated


def test_flipped_length_field_raises(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    _fill(wal)
    path = only_segment(wal)
    wal.close()
    victim = offsets(path)[3]
    with open(path, "r+b") as f:
        f.seek(victim)
        f.write((7).to_bytes(4, "little"))
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog.open(str(tmp_path))
    assert info.value.offset == victim and "intact record follows" in str(info.value)


@pytest.mark.parametrize("where", ["middle", "last-record", "cut"])
def test_damage_in_a_non_last_segment_raises(tmp_path: Path, where: str) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=600)
    _fill(wal, 40)
    paths = wal.segment_paths()
    assert len(paths) >= 3
    wal.close()
    path = paths[1]
    offs = offsets(path)
    victim = offs[len(offs) // 2] if where == "middle" else offs[-1]
    with open(path, "r+b") as f:
        if where == "cut":
            f.truncate(os.path.getsize(path) - 2)
        else:
            f.seek(victim + rec.HEADER.size)
            f.write(b"\xff")
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog.open(str(tmp_path), segment_bytes=600)
    assert (info.value.path, info.value.offset) == (path, victim)
    assert "not the last" in str(info.value)


def test_valid_crc_but_nonsense_payload_raises(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    _fill(wal, 2)
    path = only_segment(wal)
    wal.close()
    size = os.path.getsize(path)
    with open(path, "ab") as f:  # a well-framed record of an unknown type at the very end
        f.write(rec.HEADER.pack(1, rec.record_crc(b"\x00", 99, 0, 1), 99) + b"\x00")
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog.open(str(tmp_path))
    assert info.value.offset == size and "unknown record type 99" in str(info.value)


def test_a_segment_must_start_with_a_checkpoint(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    wal.close()
    path = os.path.join(tmp_path, "0000000000000002.wal")
    with open(path, "wb") as f:
        f.write(rec.frame(rec.RecordType.HARD_STATE, rec.hard_state_payload(1, HardState(1, 0, 0))))
    with pytest.raises(WalCorruptionError, match="does not start with a checkpoint"):
        WriteAheadLog.open(str(tmp_path))


def test_missing_segment_with_live_entries_is_detected(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=600)
    _fill(wal, 40)
    paths = wal.segment_paths()
    wal.close()
    os.unlink(paths[1])
    with pytest.raises(WalCorruptionError, match="missing"):
        WriteAheadLog.open(str(tmp_path), segment_bytes=600)


def test_crash_while_starting_a_segment(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    _fill(wal, 3)
    wal.close()
    # The next segment was created but nothing (or half a checkpoint) reached it.
    for last, content in enumerate((b"", rec.frame(rec.RecordType.CHECKPOINT, rec.checkpoint_payload([]))[:7]), 3):
        nxt = os.path.join(tmp_path, f"{len(list_segments(str(tmp_path))) + 1:016d}.wal")
        with open(nxt, "wb") as f:
            f.write(content)
        wal = WriteAheadLog.open(str(tmp_path))
        assert isinstance(next(iter(SegmentScan(nxt)))[1], rec.CheckpointRecord)
        assert wal.state(1).last_index() == last
        wal.write(batch(entries={1: mk(last + 1, last + 1)}))
        wal.close()
    wal = WriteAheadLog.open(str(tmp_path))
    assert wal.state(1).last_index() == 5
    wal.close()


# -- failures ------------------------------------------------------------------------


def test_failed_fsync_fails_the_wal_for_good(wal: WriteAheadLog) -> None:
    wal.write(batch(entries={1: mk(1, 3)}, hard={1: HardState(1, 1, 2)}))
    before = wal.state(1)
    wal.faults.fail_fsync = True
    with pytest.raises(WalSyncError, match="fsync"):
        wal.write(batch(entries={1: mk(4, 6), 2: mk(1, 1)}, hard={1: HardState(2, 1, 5)}))
    after = wal.state(1)
    assert (after.last_index(), after.hard_state, after.entries) == (3, before.hard_state, before.entries)
    assert wal.partition_ids() == [1] and wal.failed
    wal.faults.fail_fsync = False  # the disk "recovers": the WAL must not
    for _ in range(2):
        with pytest.raises(WalSyncError):
            wal.write(batch(entries={1: mk(4, 4)}))
    assert wal.state(1).last_index() == 3


def test_fsync_delay(wal: WriteAheadLog) -> None:
    import time

    wal.faults.fsync_delay_s = 0.05
    t0 = time.monotonic()
    wal.write(batch(entries={1: mk(1, 1)}))
    assert time.monotonic() - t0 >= 0.05


# -- segments --------------------------------------------------------------------------


def test_rotation_and_compaction_delete_old_segments(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=2048)
    mems = {pid: MemoryStorage() for pid in (1, 2, 3)}
    for i in range(1, 301):
        b = WalBatch()
        for pid, mem in mems.items():
            es = mk(i, i, term=1 + i // 100, size=20)
            b.entries(pid, es)
            mem.append(es)
            hs = HardState(1 + i // 100, pid, i - 1)
            b.hard_state(pid, hs)
            mem.set_hard_state(hs)
            if i % 25 == 0 and i > 25:
                b.compact(pid, i - 10 * pid)
                mem.compact(i - 10 * pid)
        wal.write(b)
    paths = wal.segment_paths()
    seqs = [s for s, _ in list_segments(str(tmp_path))]
    assert seqs[-1] > 50  # it rotated many times...
    # ...and deleted what compaction freed: about 55 live entries per partition remain, ~7 segments.
    assert len(paths) <= 8 and seqs[0] > 40
    assert [p for _, p in list_segments(str(tmp_path))] == paths
    wal = reopen(wal)
    for pid, mem in mems.items():
        assert_same(wal, pid, mem)
    wal.close()


def test_a_lagging_partition_pins_only_its_own_segments(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=1024)
    slow, fast = MemoryStorage(), MemoryStorage()
    wal.write(batch(entries={2: mk(1, 3)}))
    slow.append(mk(1, 3))
    for i in range(1, 200):
        b = batch(entries={1: mk(i, i, size=30)})
        fast.append(mk(i, i, size=30))
        if i > 1:
            b.compact(1, i - 1)
            fast.compact(i - 1)
        if i == 150:  # the slow partition writes once more, much later
            b.entries(2, mk(4, 4))
            slow.append(mk(4, 4))
        wal.write(b)
    seqs = [s for s, _ in list_segments(str(tmp_path))]
    assert seqs[0] == 1 and len(seqs) <= 4  # the first segment stays, the middle ones went
    wal = reopen(wal)
    assert_same(wal, 1, fast)
    assert_same(wal, 2, slow)
    b = WalBatch()
    b.compact(2, 4)
    wal.write(b)
    slow.compact(4)
    assert list_segments(str(tmp_path))[0][0] != 1
    wal = reopen(wal)
    assert_same(wal, 2, slow)
    wal.close()


def test_remove_partition(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=1024)
    for i in range(1, 60):
        wal.write(batch(entries={1: mk(i, i, size=30), 2: mk(i, i, size=30)}, hard={2: HardState(1, 2, i)}))
        if i > 1:
            b = WalBatch()
            b.compact(1, i - 1)
            wal.write(b)
    assert len(wal.segment_paths()) > 3  # partition 2 never compacts
    wal.remove_partition(2)
    assert wal.partition_ids() == [1]
    assert len(wal.segment_paths()) <= 2
    wal = reopen(wal)
    assert wal.partition_ids() == [1]
    assert_same(wal, 2, MemoryStorage())
    # The replica comes back later: a fresh log, nothing of the old one.
    wal.write(batch(entries={2: mk(1, 2, term=7)}))
    wal = reopen(wal)
    assert [e.term for e in WalLogStorage(wal, 2).entries(1, 3)] == [7, 7]
    wal.close()


# -- differential: WalLogStorage vs MemoryStorage --------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_differential_against_memory_storage(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    mem = MemoryStorage()
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=rng.choice([512, 4096, 1 << 20]))
    term = 1
    outcomes: set[str] = set()
    for _ in range(400):
        term += rng.random() < 0.1
        op = random_op(rng, mem, term)
        if op[0] == "reopen":
            wal = reopen(wal)
        else:
            try:
                apply_to_memory(mem, op)
                want: type[BaseException] | None = None
            except (CompactedError, UnavailableError, SnapshotOutOfDateError) as exc:
                want = type(exc)
            b = WalBatch()
            add_to_batch(b, 5, op)
            try:
                wal.write(b)
                got: type[BaseException] | None = None
            except (CompactedError, UnavailableError, SnapshotOutOfDateError) as exc:
                got = type(exc)
            assert got is want, op
            outcomes.add(f"{op[0]}:{want.__name__ if want else 'ok'}")
        assert_same(wal, 5, mem)
    wal = reopen(wal)
    assert_same(wal, 5, mem)
    wal.close()
    assert {"append:ok", "compact:ok", "install:ok", "create:ok"} <= outcomes
    assert {"append:UnavailableError", "compact:CompactedError", "install:SnapshotOutOfDateError"} <= outcomes


@pytest.mark.parametrize("seed", range(4))
def test_many_partitions_random_history_with_tiny_segments(tmp_path: Path, seed: int) -> None:
    """Rotation, deletion of dead segments and replay agree with MemoryStorage across reopens.

    This checks the replay and segment-deletion logic, not durability, so it skips fsync:
    with segments this small nearly every write starts a new segment (three fsyncs).
    """
    rng = random.Random(100 + seed)
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=rng.choice([300, 1500]), sync=False)
    mems: dict[int, MemoryStorage] = {}
    term = 1
    max_segments = 0
    for step in range(700):
        term += rng.random() < 0.05
        b = WalBatch()
        for pid in rng.sample(range(1, 7), rng.randint(1, 4)):
            mem = mems.setdefault(pid, MemoryStorage())
            r = rng.random()
            if r < 0.03:
                b.remove_partition(pid)
                del mems[pid]
                continue
            if r < 0.35 and mem.last_index() > mem.first_index():
                # Compact most of the log, as a node that applied it would.
                idx = rng.randint(max(mem.first_index(), mem.last_index() - 4), mem.last_index())
                b.compact(pid, idx)
                mem.compact(idx)
                continue
            for _ in range(rng.randint(1, 2)):
                op = random_op(rng, mem, term)
                if op[0] == "reopen":
                    continue
                try:
                    apply_to_memory(mem, op)
                except (CompactedError, UnavailableError, SnapshotOutOfDateError):
                    continue
                add_to_batch(b, pid, op)
        wal.write(b)
        max_segments = max(max_segments, len(wal.segment_paths()))
        if step % 97 == 96:
            wal = reopen(wal)
            # A model may exist for a partition no operation reached: the WAL never heard of it.
            assert set(wal.partition_ids()) <= set(mems)
            for pid, mem in mems.items():
                assert_same(wal, pid, mem)
    # Compact everything: only the current segment and its predecessor may remain.
    b = WalBatch()
    for pid, mem in mems.items():
        if mem.last_index() >= mem.first_index():
            b.compact(pid, mem.last_index())
            mem.compact(mem.last_index())
    wal.write(b)
    assert len(wal.segment_paths()) == 1
    assert max_segments < 60
    wal = reopen(wal)
    for pid, mem in mems.items():
        assert_same(wal, pid, mem)
    wal.close()


# -- group commit -----------------------------------------------------------------------


def test_group_commit_from_eight_threads(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=64 * 1024)
    errors: list[BaseException] = []

    def writer(pid: int) -> None:
        try:
            for i in range(1, 101):
                b = WalBatch()
                b.entries(pid, mk(2 * i - 1, 2 * i, term=pid, size=50))
                b.hard_state(pid, HardState(pid, pid, 2 * i))
                if i % 20 == 0:
                    b.compact(pid, 2 * i - 30)
                wal.write(b)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(pid,)) for pid in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    wal = reopen(wal)
    assert wal.partition_ids() == list(range(1, 9))
    for pid in range(1, 9):
        mem = MemoryStorage()
        mem.append(mk(1, 200, term=pid, size=50))
        mem.compact(170)
        mem.set_hard_state(HardState(pid, pid, 200))
        assert_same(wal, pid, mem)
    wal.close()


# -- with the consensus core -----------------------------------------------------------------


def _drive(node: RawNode, wal: WriteAheadLog, pid: int) -> None:
    while node.has_ready():
        rd = node.ready()
        wal.write(ready_batch(pid, rd))
        node.advance(rd)


def test_raw_node_restarts_from_the_wal(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    b = WalBatch()
    b.snapshot(1, SnapshotMeta(1, 1, ConfState(voters=frozenset({1}))))
    wal.write(b)
    node = RawNode(Config(id=1), WalLogStorage(wal, 1), random.Random(1))
    node.campaign()
    _drive(node, wal, 1)
    assert node.is_leader
    for i in range(20):
        node.propose(f"cmd{i}".encode())
        _drive(node, wal, 1)
    hs = node.hard_state()
    wal = reopen(wal)
    node = RawNode(Config(id=1), WalLogStorage(wal, 1), random.Random(2))
    assert node.hard_state() == hs
    assert node.conf_state.voters == {1}
    data = [e.data for e in WalLogStorage(wal, 1).entries(2, hs.commit + 1)]
    assert [d for d in data if d] == [f"cmd{i}".encode() for i in range(20)]
    wal.close()
