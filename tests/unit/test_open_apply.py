"""An apply transaction left open (D27): the node answers a write from its apply results, and
LMDB commits up to 10 ms later or when a read asks, so the commit's fsync is not between a
write and its answer. What must hold meanwhile: readers see only committed state, the applied index moves
only at the commit, later applies join the same transaction, every other writer commits it
first (same thread) or waits for it (another thread), and a failure loses nothing the WAL
does not still have. A real LMDB environment; the last test a real node (RaftStore, WAL)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from conftest import eventually_async
from node import disk_full, round_executor
from node.disk_full import reserve_in
from node.raft import ConfState
from node.raftstore import RaftStore
from node.round_plan import Carried
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import ApplyEntry, StateStore
from node.wal import WriteAheadLog
from support.lone_replica import DESC, NoPeers, lone_leader

CS = ConfState(voters=frozenset({1}))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(str(tmp_path / "state"), map_size=1 << 26)
    s.init_partition(1, 0, 0, CS)
    yield s
    s.close()


def _apply(store: StateStore, index: int, key: bytes, done: list[int], keep: bool = True) -> None:
    store.apply_many([(1, [ApplyEntry(index, 1, put(key, b"v%d" % index))], CS)], keep_open=keep,
                     after_commit=lambda: done.append(index))


def test_open_applies_are_invisible_until_one_commit_reports_them_in_order(store: StateStore) -> None:
    done: list[int] = []
    _apply(store, 1, b"a", done)
    _apply(store, 2, b"b", done)  # continues the same transaction
    assert store.has_open and done == []
    assert store.get(b"a") is None and store.meta(1).applied_index == 0  # type: ignore[union-attr]
    store.commit_open()
    assert done == [1, 2] and not store.has_open
    assert store.get(b"a") == (b"v1", 1) and store.get(b"b") == (b"v2", 2)
    assert store.meta(1).applied_index == 2
    store.commit_open()  # nothing open: nothing happens
    assert done == [1, 2]


def test_an_apply_that_commits_commits_what_was_left_open_first(store: StateStore) -> None:
    done: list[int] = []
    _apply(store, 1, b"a", done)
    _apply(store, 2, b"b", done, keep=False)
    assert done == [1, 2] and not store.has_open and store.get(b"a") == (b"v1", 1)


def test_any_other_write_on_the_same_thread_commits_the_open_transaction_first(store: StateStore) -> None:
    done: list[int] = []
    _apply(store, 1, b"a", done)
    store.init_partition(2, 0, 0, CS)  # a second write transaction on this thread would deadlock
    assert done == [1] and store.get(b"a") == (b"v1", 1)
    _apply(store, 2, b"b", done)
    store.sync()  # the log may drop entries only once LMDB holds them durably
    assert done == [1, 2] and not store.has_open


def test_a_failed_apply_drops_the_open_transaction_and_its_callbacks(store: StateStore) -> None:
    done: list[int] = []
    _apply(store, 1, b"a", done)

    def boom(results: object) -> None:
        raise RuntimeError("the node fails here")

    with pytest.raises(RuntimeError):
        store.apply_many([(1, [ApplyEntry(2, 1, put(b"b", b"x"))], CS)], boom, keep_open=True,
                         after_commit=lambda: done.append(2))
    assert not store.has_open
    store.commit_open()
    assert done == [] and store.get(b"a") is None and store.meta(1).applied_index == 0  # type: ignore[union-attr]
    _apply(store, 1, b"a", done, keep=False)  # the WAL replays it; the store is usable
    assert done == [1] and store.get(b"a") == (b"v1", 1)


def test_a_writer_on_another_thread_waits_for_the_commit(store: StateStore) -> None:
    done: list[int] = []
    _apply(store, 1, b"a", done)
    wrote = threading.Event()

    def other() -> None:
        store.init_partition(3, 0, 0, CS)
        wrote.set()

    t = threading.Thread(target=other)
    t.start()
    assert not wrote.wait(0.2)  # LMDB's write lock is ours until the commit
    store.commit_open()
    assert wrote.wait(10)
    t.join(10)
    assert store.meta(3) is not None and done == [1]

    _apply(store, 2, b"b", done)
    failed: list[BaseException] = []

    def apply_there() -> None:
        try:
            _apply(store, 3, b"c", done)
        except RuntimeError as exc:
            failed.append(exc)

    t = threading.Thread(target=apply_there)
    t.start()
    t.join(10)
    assert failed and "another thread" in str(failed[0])  # refused, not a deadlock
    store.commit_open()
    assert done == [1, 2]


def test_commit_open_leaves_a_transaction_another_thread_began_alone(store: StateStore) -> None:
    """The disk thread holds its apply open until its own commit; a commit asked for on the loop
    meanwhile (a read waiting, the timer) must not commit it from the wrong thread."""
    done: list[int] = []
    applied, release = threading.Event(), threading.Event()

    def disk_thread() -> None:
        _apply(store, 1, b"a", done)
        applied.set()
        release.wait(10)
        store.commit_open()

    t = threading.Thread(target=disk_thread)
    t.start()
    try:
        assert applied.wait(10)
        store.commit_open()  # not this thread's: nothing happens
        assert store.has_open and done == [] and store.get(b"a") is None
    finally:
        release.set()
        t.join(10)
    assert not store.has_open and done == [1] and store.get(b"a") == (b"v1", 1)




def test_a_node_answers_a_write_before_lmdb_commits_it_and_reads_wait_for_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trips stay on the loop even when a busy machine makes an fsync slow: only inline trips
    # leave their transaction open. And the commit timer does not fire on its own while the
    # writes are checked: only a reader's asking commits (Replica.wait_applied), whatever the
    # machine's speed; the timer is checked last.
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)

    async def main() -> None:
        async with lone_leader(tmp_path / "wal", tmp_path / "state") as (rs, rep, _, state):
            seen = []
            for n in range(50):
                results = await rep.propose(put(b"k%d" % n, b"v"))
                assert results is not None
                version = results[0].version
                # Answered: LMDB has not committed it yet, and the applied index (what reads
                # wait for) has not moved.
                seen.append((state.has_open, rep.applied < version, state.get(b"k%d" % n)))
                await asyncio.wait_for(rep.wait_applied(version), 5)
                assert state.get(b"k%d" % n) == (b"v", version)
                assert rep.applied >= version
            assert rs.executor.trips_threaded == 0
            assert all(s == (True, True, None) for s in seen), seen
            assert not state.has_open  # the last reader's asking committed it
            # With nobody asking, the timer commits what a write left open.
            monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 0.02)
            results = await rep.propose(put(b"unread", b"v"))
            assert results is not None and state.has_open and rep.applied < results[0].version
            await eventually_async(lambda: not state.has_open, 5, "the timer to commit the open transaction")
            assert rep.applied >= results[0].version and state.get(b"unread") == (b"v", results[0].version)
            assert rs.failed is None

    asyncio.run(main())


def test_the_open_transaction_holds_no_more_than_the_disk_can_take_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an open transaction holds, a full disk loses, and it is applied again into the room
    the reserve gives back (reads of those writes wait until it is): a round that would take it
    past the budget (node.disk_full.DiskStatus.hold_budget) commits it all instead. Found by
    test_disk_full when the transaction was held 50 ms: a lease read of an acknowledged write
    waited out the episode."""
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)  # trips on the loop: they hold
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)  # only the budget commits
    value = b"v" * 10_000
    monkeypatch.setattr(disk_full, "HOLD_BYTES", 3 * (len(value) + 4096) + 500)  # three writes

    async def main() -> None:
        async with lone_leader(tmp_path / "wal", tmp_path / "state") as (rs, rep, _, _):
            await asyncio.wait_for(rep.wait_applied(rep.raw.status().commit), 5)  # nothing held
            held = []
            for n in range(12):
                assert await rep.propose(put(b"k%d" % n, value)) is not None
                held.append(sum(len(job.entries) for plan, _ in rs.executor._kept for job in plan.applies))
            assert max(held) == 3, held  # three held, the fourth commits them all
            assert held.count(0) >= 2, held
            assert rs.failed is None

    asyncio.run(main())


def test_an_aborted_open_transaction_tells_who_kept_applies_in_it(tmp_path: Path) -> None:
    """A later apply that LMDB refuses (here: the map is full) aborts what earlier applies left
    open too; the store says so, so that the node applies them again (D27, node.disk_full)."""
    store = StateStore(str(tmp_path / "state"), map_size=1 << 20)
    lost: list[BaseException] = []
    store.on_open_lost = lost.append
    try:
        store.init_partition(1, 0, 0, CS)
        done: list[int] = []
        _apply(store, 1, b"a", done)
        big = put(b"b", b"x" * (2 << 20))
        with pytest.raises(lmdb.MapFullError):
            store.apply_many([(1, [ApplyEntry(2, 1, big)], CS)], keep_open=True)
        assert len(lost) == 1 and isinstance(lost[0], lmdb.MapFullError)
        assert done == [] and not store.has_open and store.get(b"a") is None
        _apply(store, 1, b"a", done, keep=False)  # applied again, as the node does once there is room
        assert done == [1] and store.get(b"a") == (b"v1", 1) and len(lost) == 1
    finally:
        store.close()


def test_a_compaction_scheduled_again_for_what_the_log_dropped_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a commit made by the disk thread notes its rounds' applies on the loop while
    a later round's trip is in the thread. When that trip writes a compaction, the log's first
    index has not moved yet, so the same compaction was scheduled again, and the next round's
    WAL write failed ("index N already compacted"), failing the node. Here the stale schedule is
    made directly: the round that meets it must drop it, not write it."""
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 0.001)
    monkeypatch.setattr(round_executor, "THREAD_KEEPS", True)  # the disk thread holds its apply open

    async def main() -> None:
        settings = RaftSettings(tick_s=0.005, compact_threshold=20, compact_keep=5)
        async with lone_leader(tmp_path / "wal", tmp_path / "state", settings, threaded=True, map_size=1 << 26) as (
                rs, rep, _, _):
            for wave in range(10):
                got = await asyncio.gather(*(rep.propose(put(b"k%d" % i, b"w%d" % wave)) for i in range(8)))
                assert all(r is not None for r in got)
                await asyncio.wait_for(rep.wait_applied(rep.raw.status().commit), 5)  # a reader asks
            first = rep.storage.first_index()
            assert first > 20, first  # compacted already
            rep.carried = Carried(None, first - 1)  # what the log dropped, scheduled again
            assert await rep.propose(put(b"after", b"v")) is not None
            assert rs.failed is None, rs.failed
            assert rep.carried.compact_to is None and rep.storage.first_index() == first
            assert rs.executor.trips_inline == 0

    asyncio.run(main())


def test_a_full_disk_met_by_the_sync_before_a_compaction_holds_the_round_not_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the disk thread holds its apply transaction open (D27); a round whose WAL
    write drops entries first syncs LMDB, which commits that transaction. On a full disk
    that commit fails; it used to escape as an LMDB error and fail-stop the node (seen as a
    leaderless partition in test_disk_full's 48 MB trial) instead of being the full disk
    that holds the round and hands the open rounds back to be applied again."""
    from support.small_fs import fill, small_tmpfs

    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)  # only a sync commits
    monkeypatch.setattr(round_executor, "THREAD_KEEPS", True)  # the disk thread holds its apply open

    async def main() -> None:
        settings = RaftSettings(tick_s=0.005, compact_threshold=1000, compact_keep=5)
        with small_tmpfs(str(tmp_path / "fs"), 8 << 20) as fs:  # LMDB on it; the WAL has room
            async with lone_leader(tmp_path / "wal", Path(fs) / "state", settings, threaded=True,
                                   map_size=1 << 26) as (rs, rep, _, state):
                value = b"v" * (64 << 10)
                for n in range(40):  # with room: applied and committed (a reader asks)
                    assert await rep.propose(put(b"k%d" % n, value)) is not None
                await asyncio.wait_for(rep.wait_applied(rep.raw.status().commit), 5)
                assert await rep.propose(put(b"open", value)) is not None  # held open in the thread
                # (answered from the apply's results, a moment before the thread keeps it open)
                await eventually_async(lambda: state.has_open, 5, "the disk thread to hold the apply open")
                fill(fs, 16 << 10)
                rep.carried = Carried(None, rep.applied - 5)  # a compaction (made due): the next round syncs
                with pytest.raises(Exception):  # noqa: B017 - refused or timed out: the disk is full
                    await asyncio.wait_for(rep.propose(put(b"next", value)), 1.5)
                await eventually_async(lambda: rs.disk.full, 5, "the full disk to be noticed")
                assert rs.failed is None, rs.failed  # held, not failed

    asyncio.run(main())


def test_a_read_waiting_for_what_a_threaded_round_applies_gets_it_committed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the commit timer far away (60 s), a read that waits for an index must not wait for
    it: a round that applies what a read waits for commits in its trip (not held open), and a
    read that asks while a threaded trip is in flight gets a commit queued behind that trip
    (the trip's results reach the loop before the thread holds the transaction open: the
    race a CI run met, 'wait_applied' timing out)."""
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)
    monkeypatch.setattr(round_executor, "THREAD_KEEPS", True)  # the disk thread holds its apply open

    async def main() -> None:
        settings = RaftSettings(tick_s=0.005)
        async with lone_leader(tmp_path / "wal", tmp_path / "state", settings, threaded=True, map_size=1 << 26) as (
                rs, rep, _, state):
            for n in range(30):
                waiting = rep.wait_applied(rep.storage.last_index() + 1)  # before the write exists
                results = await rep.propose(put(b"k%d" % n, b"v"))
                assert results is not None
                await asyncio.wait_for(waiting, 2)
                assert state.get(b"k%d" % n) == (b"v", results[0].version)
                # And asked right after the answer (the trip may still be keeping it open):
                results = await rep.propose(put(b"j%d" % n, b"v"))
                assert results is not None
                await asyncio.wait_for(rep.wait_applied(results[0].version), 2)
                assert state.get(b"j%d" % n) == (b"v", results[0].version)
            assert rs.executor.trips_inline == 0 and rs.failed is None

    asyncio.run(main())


def test_the_first_full_disk_retries_at_once_into_the_reserve_it_gave_back(tmp_path: Path) -> None:
    """Regression: the write that finds the disk full gives the node's reserve back, so that
    what is in flight lands; the retry that lands it came a second later (RETRY_S), and on a
    file system shared with other writers (test_disk_full's 48 MB trial: three nodes on one
    tmpfs) the others took the room meanwhile, so the applies of acknowledged writes waited
    out the episode and lease reads of them timed out (2 CI-like runs in 6). It comes at once
    now (RaftStore._found_full)."""
    from support.small_fs import fill, small_tmpfs

    async def main() -> None:
        settings = RaftSettings(tick_s=0.005)
        with small_tmpfs(str(tmp_path / "fs"), 8 << 20) as fs:  # LMDB and the reserve on it
            async with lone_leader(tmp_path / "wal", Path(fs) / "state", settings, threaded=True,
                                   map_size=1 << 26) as (rs, rep, _, _):
                rs.disk.reserve = reserve_in(fs, 1 << 20)  # 5% of the file system at most: ~400 KiB
                assert rs.disk.reserve is not None and rs.disk.reserve.ensure()
                value = b"v" * (64 << 10)
                for n in range(10):
                    assert await rep.propose(put(b"k%d" % n, value)) is not None
                fill(fs, 16 << 10)  # the reserve is the only room left
                loop = asyncio.get_running_loop()
                results = await rep.propose(put(b"last", value))  # answered before LMDB's commit (D4)
                assert results is not None
                index = results[0].version
                await eventually_async(lambda: rs.disk.full, 5, "the full disk to be noticed")
                full_at = loop.time()
                await eventually_async(lambda: rep.applied >= index, 5, "the lost apply to land")
                took = loop.time() - full_at
                assert took < disk_full.RETRY_S / 2, f"the apply landed {took:.2f} s after the disk filled"
                assert rs.disk.retries >= 1 and rs.failed is None

    asyncio.run(main())


def test_a_held_apply_lost_by_the_round_that_found_the_disk_full_is_retried_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, when one full disk is reported twice: an inline round's apply held open (D27)
    is committed by the next round before its trip goes to the disk thread; the commit finds
    no room, so the open transaction's loss (the held round handed back) and the round's own
    DiskFull report one episode. The second report used to put the retry the first made due at
    once back by a second."""
    from support.small_fs import fill, small_tmpfs

    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)  # small trips stay on the loop
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)  # only the next round commits

    async def main() -> None:
        with small_tmpfs(str(tmp_path / "fs"), 8 << 20) as fs:
            wal = WriteAheadLog.open(str(tmp_path / "wal"))  # the WAL has room
            state = StateStore(str(Path(fs) / "state"), map_size=1 << 26)
            rs = RaftStore(1, wal, state, NoPeers(), RaftSettings(tick_s=0.005))
            rs.disk.reserve = reserve_in(fs, 1 << 20)
            await rs.start()
            try:
                await rs.create_replica(DESC, 1, bootstrap=True)
                rep = rs.replicas[1]
                await eventually_async(rep.is_leader, 10, "the replica to lead")
                assert rs.disk.reserve is not None and rs.disk.reserve.ensure()
                small = b"v" * (16 << 10)
                for n in range(10):
                    assert await rep.propose(put(b"k%d" % n, small)) is not None
                await asyncio.wait_for(rep.wait_applied(rep.raw.status().commit), 5)  # committed
                results = await rep.propose(put(b"held", small))  # applied, held open, answered
                assert results is not None and state.has_open
                index = results[0].version
                fill(fs, 16 << 10)  # the reserve is the only room left
                loop = asyncio.get_running_loop()
                big = rep.propose(put(b"big", b"b" * (300 << 10)))  # over INLINE_MAX_BYTES: the thread
                await eventually_async(lambda: rs.disk.full, 5, "the full disk to be noticed")
                full_at = loop.time()
                await eventually_async(lambda: rep.applied >= index, 5, "the held apply to land")
                took = loop.time() - full_at
                assert took < disk_full.RETRY_S / 2, f"the held apply landed {took:.2f} s after the disk filled"
                assert rs.failed is None
                big.cancel()
            finally:
                await rs.stop()
                wal.close()
                state.close()

    asyncio.run(main())
