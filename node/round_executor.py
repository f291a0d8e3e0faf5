"""Carry out a :class:`~node.round_plan.RoundPlan`: the round's sends, its one disk trip, and the
bookkeeping that follows each step.

The order is what makes it safe (see :mod:`node.round_plan` for what is decided):

1. the messages allowed before the write leave at once;
2. ONE trip to the I/O thread: install received snapshots into LMDB (a WAL that lags LMDB is
   repaired on restart; the reverse would lose data), make LMDB durable if the WAL batch lets
   the log drop entries (see below), write the WAL batch with ONE fsync, then apply every
   partition's committed entries in ONE LMDB transaction (on the loop, a leader's entries that
   were on disk before the round are applied and answered before the WAL write: D31);
3. as soon as the WAL is durable (still during step 2, on the event loop): send the messages
   that had to wait, switch descriptors changed by conf changes (the core switches
   membership in ``advance``, and the stores of new members must be known before anything
   is sent to them), serve read states, ``advance`` every Ready;
4. as soon as the apply results are known, before LMDB's own commit: acknowledge the writes
   (they are committed on a quorum; reads wait for step 5);
5. after the trip: note what is applied (reads waiting on it go), note installed snapshots,
   and schedule the compactions that became due.

The executor holds no state of its own between rounds: what a partition carries lives on
its :class:`~node.replica.Replica`.

Why LMDB is synced before some WAL writes: LMDB runs with ``metasync=False``, so a power cut
may undo its last committed transaction (the one whose meta page is not flushed yet), and
the WAL replays it from the applied index LMDB is left at. That holds only while the WAL
still has those entries. A compaction is computed from the applied index of LMDB's *last*
commit, and an installed snapshot's record restarts the log at an index only LMDB's *last*
commit holds; before either record is written, ``StateStore.sync`` makes that commit
durable. Both are rare (a compaction every ``compact_threshold`` entries per partition), so
the extra fsync costs nothing that matters.

See docs/decisions.md D3 (LMDB derivable from the WAL), D4 (acknowledge before LMDB commits)
and D9 (plan, then act).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb

from common.trace import mark
from node.answer_flush import AnswerFlush
from node.disk_full import HOLD_BYTES, DiskFull, lmdb_disk_full
from node.fs import Files
from node.io_thread import IoThread
from node.outbox import Outbox
from node.raft import ConfState, Role
from node.replica import Replica
from node.round_plan import ApplyJob, Carried, RoundPlan, SnapshotInstall, compaction_point
from node.state.snapshot_file import read_snapshot_file
from node.state.store import ApplyEntry, OpResult, PartitionMeta, StateStore
from node.wal.errors import WalDiskFullError
from node.wal.wal import WriteAheadLog

log = logging.getLogger("tessera.round")

# A round's disk trip runs on the event loop: a write and an fsync take well under a millisecond
# on a healthy disk, less than the hand-off to the disk thread and back costs (a queue, a thread
# wake-up, the GIL changing hands twice, a wake-up of the loop). Busy rounds too (D24, amended
# a second time): the thread lets the loop read the next round's traffic while a trip waits for
# the disk, but its hand-offs cost more CPU than that overlap gave back where the CPU is what
# limits (three nodes on two cores: c=64 +13% with every trip on the loop and its LMDB
# transaction held COMMIT_AFTER_S, see docs/benchmarks.md). A disk that looks slow (two of the
# last three inline trips slower than SLOW_TRIP_S: one slow fsync now and then is the machine,
# not the disk) sends the trips of the next THREAD_FOR_S to the thread, and trips there are
# timed too, so a disk that stays slow keeps them there: a stalling disk stalls the loop
# (ticks, heartbeats, reads) for two trips, not once a second. Slow is 10 ms: a loaded
# machine's trips (an fsync and a round's applies, with two other processes wanting the same
# cores) take a few milliseconds without the disk being at fault.
INLINE_MAX_BYTES = 256 << 10
SLOW_TRIP_S = 0.010
THREAD_FOR_S = 1.0
# A trip leaves its LMDB transaction open and commits it this long after (D27, amended twice):
# the commit's fsync is then never between a write and its answer, nor (in the disk thread)
# between one round's WAL write and the next's, and the rounds in between continue the same
# transaction, one fsync (and one copy of each B-tree path) for all of them. Whichever thread
# opened it commits it: the loop on a timer, the disk thread by IoThread.later. A read that
# must see an apply held open does not wait for the timer: asking for it
# (Replica.wait_applied) commits at once (commit_now). 50 ms (D27, amended a third time; etcd
# commits its backend every 100 ms): under load a commit then carries some fifteen rounds, and
# each B-tree page they share (a leaf of random keys, the paths above, a partition's dedup
# tail) is written and flushed once instead of once a round: disk written per write at c=64
# 31 -> 12 KiB, node CPU per write -18%. What it risks is bounded: a crash loses at most 50 ms
# of LMDB's applies, which the WAL replays.
COMMIT_AFTER_S = 0.050
THREAD_KEEPS = False  # whether threaded trips hold their apply open too (off: see execute)

Results = list[list[list[OpResult] | None]]


class RoundExecutor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        io: IoThread,
        wal: WriteAheadLog,
        state: StateStore,
        outbox: Outbox,
        answers: AnswerFlush,
        *,
        compact_threshold: int,
        compact_keep: int,
        on_leader: Callable[[Replica], None] | None,
        on_descriptor: Callable[[Replica], None] | None = None,
        fail: Callable[[str], None],
        files: Files,
        hold_budget: Callable[[], int] = lambda: HOLD_BYTES,
    ) -> None:
        self.loop = loop
        self.io = io
        self.wal = wal
        self.state = state
        self.outbox = outbox
        self.answers = answers
        self.files = files  # where received snapshot images are spooled
        self.compact_threshold = compact_threshold
        self.compact_keep = compact_keep
        self.on_leader = on_leader
        self.on_descriptor = on_descriptor
        self.fail = fail
        self.hold_budget = hold_budget  # bytes of applies the open transaction may hold (D27)
        self._thread_until = 0.0  # loop time before which disk trips go to the thread
        self._threaded_took: deque[float] = deque(maxlen=3)  # the last threaded trips' durations
        self._inline_took: deque[float] = deque(maxlen=3)  # the last inline trips' durations
        self.trips_inline = 0  # counters: disk trips done on the loop and in the thread
        self.trips_threaded = 0
        self._commit_timer: asyncio.TimerHandle | None = None  # commits what inline trips left open
        self._thread_commit_asked = False  # a commit of the disk thread's open transaction is queued
        self._trip_in_thread = False  # a round's trip is in the disk thread (it may keep its apply open)
        self._full_error: BaseException | None = None  # the last error judged a full disk (_is_disk_full)
        self._loop_thread = threading.get_ident()
        # Rounds whose applies are in LMDB's open transaction, oldest first (D27).
        self._kept: deque[tuple[RoundPlan, dict[int, Replica]]] = deque()
        # Where those applies go when LMDB loses them to a full disk (RaftStore sets it).
        self.on_lost_applies: Callable[[list[tuple[RoundPlan, dict[int, Replica]]], str], None] = _no_one
        state.on_open_lost = self._open_lost
        self.entries_committed = 0  # counters for the metrics: committed entries handed to apply,
        self.entries_applied = 0  # and applied (node/metrics.py)

    async def execute(self, plan: RoundPlan, replicas: Mapping[int, Replica]) -> None:
        # The round owns these replicas until it ends: nothing destroys one meanwhile.
        reps = {pid: replicas[pid] for pid, _ in plan.readies}
        for pid, carry in plan.carry.items():
            replicas[pid].carried = carry
        inline = self._inline(plan)
        # A round with nothing to persist answers first: its applies' answers are queued from
        # the apply (node.requests), and its Raft traffic (commit indexes, heartbeat answers)
        # goes after them, in the transport's flush later in this loop turn (docs/decisions.md D29).
        answer_first = inline and plan.wal.empty and bool(plan.applies) and _may_stay_open(plan)
        if not answer_first:
            for pid, msgs in plan.send_now:
                self.outbox.send(reps[pid], msgs)
            # On the wire before the disk trip starts: followers write while we do.
            self.outbox.flush()
            mark("round.sent")
        else:
            # What earlier code queued (a tick's heartbeats) goes now: its flush, scheduled
            # before this round's answers, would otherwise carry this round's traffic too.
            self.outbox.flush()
        ranges = {i.pid: (reps[i.pid].start, reps[i.pid].end) for i in plan.installs}

        def advance() -> None:
            try:
                self._after_persist(plan, reps)
            except Exception as exc:
                log.exception("advancing the Raft state failed")
                self.fail(f"internal error advancing the Raft state: {exc!r}")

        def persisted() -> None:
            advance()
            self.outbox.flush()  # the acknowledgements leave before the trip applies anything
            mark("round.persisted")

        def answered() -> None:  # an answer-first round's own traffic, once its applies are done
            for pid, msgs in plan.send_now:
                self.outbox.send(reps[pid], msgs)
            advance()  # queued, not flushed: the transport writes it after the answers

        def applied(jobs: tuple[ApplyJob, ...], results: Results) -> None:
            mark("round.applied")
            for job, res in zip(jobs, results):
                rep = reps[job.pid]
                for e, r in zip(job.entries, res):
                    rep.resolve_applied(e.index, e.term, r)

        def noted() -> None:  # a kept round's applies are in LMDB: its commit's callback (D27)
            self._kept.popleft()
            self._note_applies(plan, reps)

        def noted_in_thread() -> None:  # the same, told by the disk thread's commit
            self._kept.popleft()  # there and then: the thread's next trip may keep another round
            self.loop.call_soon_threadsafe(self._note_applies, plan, reps)

        def kept() -> None:  # a kept round's applies joined LMDB's open transaction (in the trip)
            self._kept.append((plan, reps))

        for job in plan.applies:
            self.entries_committed += len(job.entries)
        # Kept open only while no read waits for what it applies: a waiting read gets it now.
        # Only an inline trip's: held open in the disk thread too (THREAD_KEEPS), the applies a
        # full disk loses grew enough that reads of acknowledged writes waited out the episode
        # (test_disk_full's 48 MB trial), for no throughput gained (docs/decisions.md D27).
        keep = (
            (inline or THREAD_KEEPS) and bool(plan.applies) and _may_stay_open(plan) and not _read_waits(plan, reps)
            # A full disk loses what is held, to be applied again into the room its reserve
            # leaves: past the budget, this round commits all of it.
            and self.state.held + _weight(plan.applies) <= self.hold_budget()
        )
        # A leader's applies of entries already on disk are answered before the round's own
        # WAL write blocks the loop (D31); a follower's wait: nobody waits for them, and its
        # acknowledgements would.
        early = tuple(job for job in plan.applies if job.on_disk and reps[job.pid].is_leader()) \
            if inline and keep and not answer_first and not plan.wal.empty else ()
        try:
            if inline:
                self.trips_inline += 1
                if self.state.open_elsewhere:  # LMDB write transactions belong to the thread that began them
                    await self._commit_in_thread()
                hold = _Hold(kept, noted, self._arm_commit) if keep else None
                told, took = self._timed_trip(plan, ranges, None if answer_first else persisted, applied, _call_now,
                                              hold, early)
            else:
                self.trips_threaded += 1
                self._commit_before_thread()  # LMDB write transactions belong to the thread that began them
                hold = _Hold(kept, noted_in_thread, self._arm_thread_commit)
                self._trip_in_thread = True
                try:
                    told, took = await self.io.run(
                        self._timed_trip, plan, ranges, persisted, applied, self.loop.call_soon_threadsafe,
                        hold if keep else None,
                    )
                finally:
                    self._trip_in_thread = False
        except DiskFull as exc:
            if exc.persisted:  # the installs and the WAL write stand; the applies are retried
                if answer_first:
                    answered()
                self._note_installs(plan, reps)
            raise
        mark("round.end")
        if plan.sync and not plan.wal.empty and self._slow(took, inline):  # only trips that fsynced tell
            self._thread_until = self.loop.time() + THREAD_FOR_S
        if answer_first:
            answered()
        elif not told:
            persisted()
        self._note_installs(plan, reps)
        if not keep:
            self._note_applies(plan, reps)

    async def retry_applies(self, plan: RoundPlan, replicas: Mapping[int, Replica]) -> None:
        """Apply ``plan``'s jobs again, after a full disk aborted their transaction (DiskFull with
        ``persisted``): the WAL holds them and the cores advanced past them. Raises DiskFull
        again while there is still no room."""
        reps = {job.pid: replicas[job.pid] for job in plan.applies}

        def applied(results: Results) -> None:
            for job, res in zip(plan.applies, results):
                for e, r in zip(job.entries, res):
                    reps[job.pid].resolve_applied(e.index, e.term, r)

        def trip() -> None:
            with self._full_disk("applying", persisted=True):
                self.state.apply_many(
                    [_apply_work(job) for job in plan.applies],
                    before_commit=lambda results: self.loop.call_soon_threadsafe(applied, results),
                )

        self._commit_before_thread()
        await self.io.run(trip)
        self._note_applies(plan, reps)

    def _note_installs(self, plan: RoundPlan, reps: Mapping[int, Replica]) -> None:
        for inst in plan.installs:
            rep = reps[inst.pid]
            log.info("installed snapshot of partition %d at index %d", inst.pid, inst.meta.index,
                     extra={"partition": inst.pid})
            if inst.descriptor is not None:
                rep.set_descriptor(inst.descriptor)
                if self.on_descriptor is not None:
                    self.on_descriptor(rep)
            rep.note_applied(inst.meta.index, inst.meta.term)
            rep.finish_snapshot(True, "")

    def _note_applies(self, plan: RoundPlan, reps: Mapping[int, Replica]) -> None:
        for job in plan.applies:
            reps[job.pid].note_applied(job.last.index, job.last.term)
            self.entries_applied += len(job.entries)
        self._schedule_compactions(reps.values())

    def _schedule_compactions(self, reps: Iterable[Replica]) -> None:
        for rep in reps:
            point = compaction_point(rep.applied, rep.storage.first_index(), self.compact_threshold, self.compact_keep)
            if point is not None:
                rep.carried = Carried(rep.carried.hard_state, point)

    def _arm_commit(self) -> None:
        if self._commit_timer is None:
            self._commit_timer = self.loop.call_later(COMMIT_AFTER_S, self.commit_now)

    def _arm_thread_commit(self) -> None:  # on the disk thread, in its trip
        self.io.later(self._commit_here, COMMIT_AFTER_S)

    def commit_now(self) -> None:
        """Commit what trips left open in LMDB (D27): on the timer, or at once when a read
        waits for an apply held open; the disk thread's open transaction is committed there
        (asked for here, done soon after). If LMDB refuses, :meth:`_open_lost` hands the rounds
        it held on (a full disk) or fails the node."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        # A trip in the thread may be about to keep its apply open (its results can reach a
        # reader before the thread holds the transaction): the commit queued behind it sees it.
        if self.state.open_elsewhere or self._trip_in_thread:
            if not self._thread_commit_asked:
                self._thread_commit_asked = True
                self.io.run(self._commit_here).add_done_callback(_retrieved)
            return
        self._commit_here()

    async def commit_all(self) -> None:
        """Commit whatever trips left open in LMDB, on whichever thread holds it (a clean stop)."""
        self.commit_now()
        await self._commit_in_thread()

    def _commit_here(self) -> None:
        """Commit the open transaction if this thread holds it (on either thread)."""
        if threading.get_ident() != self._loop_thread:
            self._thread_commit_asked = False
        try:
            self.state.commit_open()
        except Exception as exc:
            log.warning("committing applied entries to LMDB failed: %s", exc)

    async def _commit_in_thread(self) -> None:
        """Commit what the disk thread holds open, there (before the loop writes LMDB; at a stop)."""
        await self.io.run(self._commit_here)

    def _commit_before_thread(self) -> None:
        """Before LMDB is written from the disk thread: commit what the loop holds open. A full
        disk here is a round that wrote nothing yet (its trip has not started)."""
        with self._full_disk("committing applied entries", persisted=False):
            self.state.commit_open()

    @contextmanager
    def _full_disk(self, doing: str, *, persisted: bool) -> Iterator[None]:
        """An LMDB error that means a full disk, raised as the round's :class:`DiskFull`
        (``persisted``: whether the round's installs and WAL write stand; node.disk_full)."""
        try:
            yield
        except lmdb.Error as exc:
            if not self._is_disk_full(exc):
                raise
            raise DiskFull(f"{doing} in LMDB: {exc}", persisted=persisted) from exc

    def _is_disk_full(self, exc: BaseException) -> bool:
        """Whether ``exc`` means a full disk, judged once per error: an error that aborted an
        open transaction was judged when it did (``_open_lost``), before the rounds it held were
        handed back and the reserve file given back; judged again after that, a commit's EIO
        (LMDB's word for a write that found no room) would find the disk no longer low and
        fail the node instead of holding the round."""
        if exc is self._full_error:
            return True
        return isinstance(exc, lmdb.Error) and lmdb_disk_full(exc, self.state.env.path())

    def _open_lost(self, exc: BaseException) -> None:
        """LMDB aborted the transaction rounds left open (``StateStore.on_open_lost``):
        nothing in it is applied, though those rounds answered their writes and their cores
        moved on. On a full disk their applies are handed back (``on_lost_applies``) to be
        applied again first, in order (node.disk_full); any other error fails the node. Told on
        the disk thread, which holds the transaction: which rounds it held is taken there and
        then (the thread's next trip may keep a round in a new one), and handled on the loop,
        after the commits noted before it."""
        kept = list(self._kept)
        self._kept.clear()
        full = self._is_disk_full(exc)
        if full:
            self._full_error = exc  # the same error, raised on to the round, is judged the same
        if threading.get_ident() != self._loop_thread:
            self.loop.call_soon_threadsafe(self._hand_back, kept, exc, full)
        else:
            self._hand_back(kept, exc, full)

    def _hand_back(self, kept: list[tuple[RoundPlan, dict[int, Replica]]], exc: BaseException, full: bool) -> None:
        if not kept:
            return
        if full:
            log.warning("LMDB found the disk full with %d rounds' applies uncommitted: applying them again later",
                        len(kept))
            self.on_lost_applies(kept, f"committing applied entries in LMDB: {exc}")
        else:
            log.error("committing applied entries to LMDB failed", exc_info=exc)
            self.fail(f"applying to LMDB failed: {exc!r}")

    def _inline(self, plan: RoundPlan) -> bool:
        """Whether this round's disk trip runs on the event loop itself (see SLOW_TRIP_S)."""
        return (
            not plan.installs
            and not plan.wal.drops_entries
            and plan.wal.nbytes <= INLINE_MAX_BYTES
            and self.loop.time() >= self._thread_until
        )

    def _after_persist(self, plan: RoundPlan, reps: Mapping[int, Replica]) -> None:
        """On the event loop, once the WAL write is durable (step 3)."""
        for pid, msgs in plan.send_after_persist:
            self.outbox.send(reps[pid], msgs)
        for job in plan.applies:
            if job.descriptor is not None:
                reps[job.pid].set_descriptor(job.descriptor)
                if self.on_descriptor is not None:
                    self.on_descriptor(reps[job.pid])
        for pid, rd in plan.readies:
            rep = reps[pid]
            for rs in rd.read_states:
                rep.resolve_read(rs.context, rs.index)
            rep.raw.advance(rd)
            if rd.soft_state is not None:
                rep.on_role_change(rd.soft_state.role)
                if self.on_leader is not None and rd.soft_state.role == Role.LEADER:
                    self.on_leader(rep)

    def _slow(self, took: float, inline: bool) -> bool:
        """Whether the disk looks slow. On a machine shared with other processes one fsync in a
        few hundred takes milliseconds, and a trip in the thread also waits for the GIL (up to
        the interpreter's 5 ms switch interval while the loop runs Python), so one slow trip
        says little: inline, the disk is slow when two of the last three trips were; threaded,
        when the last three all were."""
        recent = self._inline_took if inline else self._threaded_took
        recent.append(took)
        if inline:
            return sum(t > SLOW_TRIP_S for t in recent) >= 2
        return min(recent) > SLOW_TRIP_S

    def _timed_trip(self, *args: Any) -> tuple[bool, float]:
        started = time.perf_counter()
        told = self._disk_trip(*args)
        return told, time.perf_counter() - started

    def _disk_trip(
        self,
        plan: RoundPlan,
        ranges: Mapping[int, tuple[bytes, bytes]],
        persisted: Callable[[], None] | None,
        applied: Callable[[tuple[ApplyJob, ...], Results], None],
        tell: Callable[..., object],
        hold: _Hold | None,
        early: tuple[ApplyJob, ...] = (),
    ) -> bool:
        """Step 2, in the I/O thread or on the loop (``tell`` is how it reaches the loop: a
        thread-safe call, or a call now); tells the loop when the WAL is durable and when the
        results are known. Returns False when it did not say the WAL is durable because nothing
        followed the write: the trip's own completion says it, one wake-up of the loop fewer
        (or because ``persisted`` is None: an answer-first round says it after the trip).
        With ``hold`` the apply leaves its LMDB transaction open (D27): see :class:`_Hold`.
        ``early`` (on the loop, with ``hold``): jobs whose entries were on disk before the
        round, applied and answered before its WAL write (D31)."""
        with self._full_disk("installing a snapshot", persisted=False):
            for inst in plan.installs:
                self._install(inst, *ranges[inst.pid])
        if plan.wal.drops_entries:
            # The log may drop entries only once the applied state that holds them survives a
            # power cut; LMDB's last commit does only after the next one or a sync (see above).
            # The sync first commits what the thread holds open: on a full disk that fails like
            # any commit (the rounds it held are handed back), and this round wrote nothing yet.
            with self._full_disk("committing applied entries", persisted=False):
                self.state.sync()
        committed = hold.committed if hold is not None else None  # one callback per round
        if early:
            assert hold is not None
            # Aborted: nothing of the round written or applied; it is offered again whole.
            with self._full_disk("applying", persisted=False):
                self._apply(early, applied, tell, True, committed)
            committed = None
            self.answers.now()  # on the wire before the fsync below blocks the loop
        if not plan.wal.empty:
            try:
                self.wal.write(plan.wal, sync=plan.sync)
                mark("round.wal")
            except WalDiskFullError as exc:  # nothing written: nothing of the round persisted
                if early:  # nor applied: the open transaction goes, and the rounds it held
                    self._full_error = exc  # are handed back as a full disk's (_open_lost)
                    self.state.abort_open(exc)
                raise DiskFull(str(exc), persisted=False) from exc
        early_pids = {job.pid for job in early}  # (one job per partition)
        late = tuple(job for job in plan.applies if job.pid not in early_pids)
        told = False
        if late:
            told = persisted is not None
            if persisted is not None:
                tell(persisted)
            with self._full_disk("applying", persisted=True):  # aborted: nothing applied (node.disk_full)
                self._apply(late, applied, tell, hold is not None, committed)
        if hold is not None:  # (only a round with applies holds: early or late ran)
            hold.kept()
            hold.arm()
        return told

    def _apply(
        self,
        jobs: tuple[ApplyJob, ...],
        applied: Callable[[tuple[ApplyJob, ...], Results], None],
        tell: Callable[..., object],
        keep_open: bool,
        committed: Callable[[], object] | None,
    ) -> None:
        self.state.apply_many(
            [_apply_work(job) for job in jobs],
            before_commit=lambda results: tell(applied, jobs, results),
            keep_open=keep_open,
            after_commit=committed,
            weight=_weight(jobs),
        )

    def _install(self, inst: SnapshotInstall, start: bytes, end: bytes) -> None:
        meta = inst.meta
        self.state.install_snapshot(
            inst.pid,
            start,
            end,
            read_snapshot_file(self.files, inst.path),
            PartitionMeta(meta.index, meta.term, meta.conf_state),
            inst.descriptor,
        )


@dataclass(frozen=True, slots=True)
class _Hold:
    """How a trip leaves its apply open in LMDB (D27): ``kept`` records the round among those
    the open transaction holds (on the trip's thread, right after the apply), ``committed`` is
    the commit's callback for it (on the thread that commits; the round's applies are noted on
    the loop), ``arm`` makes sure a commit comes on the trip's own thread (the loop's timer, or the disk
    thread's ``later``)."""

    kept: Callable[[], None]
    committed: Callable[[], object]
    arm: Callable[[], None]


def _read_waits(plan: RoundPlan, reps: Mapping[int, Replica]) -> bool:
    """Whether a read waits for an index this round applies (then its applies are committed in
    the trip, not held open)."""
    for job in plan.applies:
        first = reps[job.pid].requests.first_wait()
        if first is not None and first <= job.last.index:
            return True
    return False


def _retrieved(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # _commit_here logs its own failures; nothing else is expected


def _no_one(kept: list[tuple[RoundPlan, dict[int, Replica]]], why: str) -> None:
    raise RuntimeError(f"LMDB lost {len(kept)} rounds' applies and nobody takes them back: {why}")


def _may_stay_open(plan: RoundPlan) -> bool:
    """Whether a round's applies may stay uncommitted in LMDB for a few loop turns: not when
    anything after the round reads what they wrote (a split's new partition is opened from
    LMDB, a leaving replica is destroyed) or a descriptor changes (it is read back from LMDB)."""
    return not plan.splits and not plan.leaving and all(job.descriptor is None for job in plan.applies)


def _weight(jobs: Iterable[ApplyJob]) -> int:
    """What applying ``jobs`` may add to LMDB, roughly (ApplyJob.nbytes)."""
    return sum(job.nbytes for job in jobs)


def _call_now(fn: Callable[..., object], *args: object) -> None:
    fn(*args)


def _apply_work(job: ApplyJob) -> tuple[int, Iterable[ApplyEntry], ConfState]:
    return job.pid, job.entries, job.conf_state
