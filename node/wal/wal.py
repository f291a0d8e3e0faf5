"""The node's write-ahead log: one log shared by every partition on the node.

Writes
------
:meth:`WriteAheadLog.write` takes a :class:`~node.wal.batch.WalBatch` holding
operations for any number of partitions and makes all of it durable with one
append and one sync (``os.write`` and ``os.fdatasync`` on the real file
system; group commit), then updates the
in-memory state the partitions' :class:`~node.wal.storage.WalLogStorage`
read from.  It blocks; call it from a worker thread
(``await asyncio.to_thread(wal.write, batch)``) so the event loop keeps
serving.  One lock serialises writers; readers take a second lock that is
held only while the in-memory state changes, never across I/O, so reads from
the event loop do not wait for a disk.

Before anything is written the batch is checked against the log's rules
(MemoryStorage's, with its errors): a record the replay would reject would
make the node unable to start.  A rejected batch writes nothing and the WAL
stays usable.

Failures
--------
If a write or an fsync fails (EIO, ...) the WAL is *failed* for good:
that write and every later one raise :class:`~node.wal.errors.WalSyncError`,
and the in-memory state keeps what the last successful write left.  fsync is
never retried: after a failed fsync the kernel may have dropped the dirty
pages, and a retry would report success for data that is not on disk.

A full disk is different, and told apart where it happens: ``ENOSPC`` (or
``EDQUOT``) from the *append* (``write(2)``) or from creating a segment means
the bytes never got into the file at all.  The WAL cuts off whatever part of
the batch did land (``ftruncate`` back to the size before it), keeps its
in-memory state, and raises :class:`~node.wal.errors.WalDiskFullError`; it
stays usable, and the caller retries once space returns.  A new segment whose
checkpoint met a full disk stays empty (replay accepts an empty last segment)
and gets its checkpoint at the next write.  The same errno from an fsync is
still an fsync failure (fail for good).  See docs/limits.md.

Segments
--------
Records go to the current segment; a write that would push it past
``segment_bytes`` first starts a new one (the directory is fsynced so the
new file survives a crash) that begins with a CHECKPOINT of every
partition's hard state, snapshot meta, compacted and last index.  Older
segments then matter only for their entries: once every entry a
non-current segment holds is compacted (or belongs to a removed partition,
or to a log that a snapshot restarted), the file is deleted.  See
:mod:`node.wal.replay` for the recovery rules.

What a power cut may do
-----------------------
All file I/O goes through a :class:`~node.fs.api.Files` (the real file
system unless a test passes its simulated disk), and the WAL assumes only
what that interface promises: appended bytes are durable after ``sync``,
new and deleted names after ``sync_directory``.  Hence three rules beyond
"fsync before acknowledging":

* a segment is closed only once every byte in it is synced, because damage
  is a harmless torn tail only in the *last* segment (a ``sync=False`` write
  may have left unsynced bytes in the segment being closed);
* segments are deleted only after a synced write: the records that made
  them dead (a compaction, a removal) must be on the disk before the
  deletion can be, or a crash keeps the deletion and loses the reason;
* opening syncs the directory and the last segment before trusting them: a
  process killed before its fsync leaves bytes in the kernel's cache that
  replay reads, and promises made on them must not vanish in a later power
  cut.

See docs/decisions.md D2.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, assert_never

from node.fs import OS_FILES, AppendFile, FileLock, Files
from node.raft import Entry, HardState, SnapshotMeta

from .batch import Op, WalBatch
from .errors import WalClosedError, WalDiskFullError, WalLockedError, WalSyncError
from .record import (
    RecordType,
    checkpoint_payload,
    compact_payload,
    header,
    snapshot_payload,
)
from .replay import LiveMap, forget_entries, note_entries, recover
from .segment import segment_name
from .state import PartitionState, Shadow
from .stats import WalStats

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 << 20
LOCK_FILE = "LOCK"
# What write(2) and open(2) say when the file system (or the user's quota) has no room left.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

# A batch's operation once checked, as the in-memory state takes it: a compaction carries the
# term of its index and a local snapshot its whole meta, both looked up while checking.
_Checked = (
    tuple[Literal[Op.ENTRIES], int, Sequence[Entry]]
    | tuple[Literal[Op.HARD_STATE], int, HardState]
    | tuple[Literal[Op.INSTALL_SNAPSHOT, Op.NOTE_SNAPSHOT], int, SnapshotMeta]
    | tuple[Literal[Op.COMPACT], int, tuple[int, int]]
    | tuple[Literal[Op.REMOVE], int, None]
)


@dataclass(slots=True)
class WalFaults:
    """Fault injection for tests and the nemesis; all off by default.

    The hooks act where the fsync happens, whether or not the WAL really
    syncs (``sync=False``), so a fast test cluster can still lose its disk.
    """

    fail_fsync: bool = False
    """While set, fsync raises EIO (after the data was written), which fails the WAL for good."""
    fsync_delay_s: float = 0.0
    """Sleep this long before every fsync: a slow disk."""
    append_enospc: bool = False
    """While set, every append writes half its bytes and then raises ENOSPC, as write(2) does
    on a file system that fills up in the middle of it (the WAL must cut the half off)."""


class WriteAheadLog:
    """One WAL directory, open for writing by this process only (an flock guards it)."""

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sync: bool = True,
        files: Files = OS_FILES,
    ) -> None:
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, not {segment_bytes}")
        self.directory = os.path.abspath(directory)
        self.segment_bytes = segment_bytes
        self.sync = sync
        self.files = files
        self.faults = WalFaults()
        self.stats = WalStats()  # for the node's metrics (node/metrics.py)
        self._io_lock = threading.Lock()  # serialises writers and segment files
        self._state_lock = threading.Lock()  # guards _parts; never held across I/O
        self._failed: BaseException | None = None
        self._closed = False
        self._file: AppendFile | None = None
        self._unsynced = False  # the current segment holds bytes written since its last sync
        self._gc_due = False  # segments may be dead, but what killed them is not synced yet
        self._needs_checkpoint = False  # the current segment is empty: its checkpoint met a full disk
        self._lock: FileLock | None = None

        files.makedirs(self.directory)  # durable: the directory's own name must survive a crash
        try:
            self._lock = files.lock(os.path.join(self.directory, LOCK_FILE))
        except BlockingIOError:
            raise WalLockedError(f"WAL directory {self.directory} is in use by another open WAL") from None
        try:
            rec = recover(self.directory, files, sync=sync)
            self._parts: dict[int, PartitionState] = rec.parts
            self._live: LiveMap = rec.live
            self._segments: dict[int, str] = rec.segments
            if rec.segments:
                self._seq, self._path = next(reversed(rec.segments.items()))
                self._file = files.open_append(self._path)
                self._size = rec.tail_size
                self._has_batches = rec.tail_size > 0
                if sync:
                    # What replay read may still be only in the kernel's cache (a process killed
                    # between its write and its fsync): make it durable before promising
                    # anything on top of it. Earlier segments were synced before they were closed.
                    files.sync_directory(self.directory)
                    self._file.sync()
                if rec.tail_size == 0:
                    # Left empty by a crash while starting it, or its only record was
                    # torn: it still needs the checkpoint every segment begins with.
                    self._write_checkpoint_or_fail()
            else:
                self._seq = 0
                self._start_segment(1)
            self._collect_garbage()
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(
        cls,
        directory: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sync: bool = True,
        files: Files = OS_FILES,
    ) -> WriteAheadLog:
        """Open (creating if needed) the WAL in ``directory`` and replay it.

        ``sync=False`` never syncs anything (tests and benchmarks that do not
        measure durability); ``files`` is where the segments live (a test's
        simulated disk, see :mod:`node.fs`).

        Raises :class:`~node.wal.errors.WalCorruptionError` if the log is
        damaged anywhere but a torn tail, :class:`~node.wal.errors.WalLockedError`
        if another open WAL holds the directory.
        """
        return cls(directory, segment_bytes=segment_bytes, sync=sync, files=files)

    # -- reads ----------------------------------------------------------------------

    def partition_ids(self) -> list[int]:
        with self._state_lock:
            return sorted(self._parts)

    def state(self, pid: int) -> PartitionState:
        """A copy of ``pid``'s state (empty if the WAL holds nothing for it); later writes don't change it."""
        with self._state_lock:
            st = self._parts.get(pid)
            return st.copy() if st is not None else PartitionState()

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def segment_paths(self) -> list[str]:
        """Paths of the segment files currently in use, oldest first."""
        with self._io_lock:
            return list(self._segments.values())

    # -- writes ---------------------------------------------------------------------

    def write(self, batch: WalBatch, sync: bool = True) -> None:
        """Make ``batch`` durable (one write, one fsync), then apply it to the in-memory state.

        With ``sync=False`` the fsync is skipped: for records whose loss in a
        crash is harmless (a commit index that only moved forward, which the
        applied state re-establishes; compaction marks).  A later synced
        write makes them durable along with its own.

        Raises the core's CompactedError / UnavailableError /
        SnapshotOutOfDateError (nothing written, WAL still usable) for a batch
        that breaks the log's rules, :class:`WalSyncError` if the disk failed
        now or earlier, :class:`WalClosedError` after :meth:`close`.
        """
        if batch.empty:
            return
        with self._io_lock:
            self._check_usable()
            ops, chunks, gc = self._plan(batch)
            data = b"".join(chunks)
            try:
                if self._needs_checkpoint:
                    self._write_checkpoint()
                if self._has_batches and self._size + len(data) > self.segment_bytes:
                    self._start_segment(self._seq + 1)
                    gc = True
                f = self._file
                assert f is not None  # open and not failed, so a segment is open
                self._append(f, data)
                self.stats.writes += 1
                self.stats.bytes_written += len(data)
                if sync:
                    self._fsync(f)
                self._unsynced = not sync
            except WalDiskFullError:
                raise  # nothing of the batch is in the file; the WAL stays usable
            except BaseException as exc:
                # Even an interrupt may have left half a batch in the file: appending
                # after it would bury a bad record in the middle of the log.
                self._fail(exc, f"writing {len(data)} bytes to {self._path}")
            self._size += len(data)
            self._has_batches = True
            try:
                with self._state_lock:
                    self._apply(ops)
            except BaseException as exc:  # pragma: no cover - the plan made this impossible
                self._failed = exc
                raise
            if gc or self._gc_due:
                if sync:  # everything the in-memory state says is on the disk now
                    self._gc_due = False
                    self._collect_garbage()
                else:
                    self._gc_due = True

    def remove_partition(self, pid: int) -> None:
        """Durably forget ``pid`` (its replica moved away); its segments become deletable."""
        batch = WalBatch()
        batch.remove_partition(pid)
        self.write(batch)

    def close(self) -> None:
        """Close the files and release the directory; idempotent."""
        with self._io_lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals: planning and applying ---------------------------------------------

    def _plan(self, batch: WalBatch) -> tuple[list[_Checked], list[bytes], bool]:
        """Check ``batch`` against the current state; returns ops, record chunks, and whether to collect.

        Runs under the I/O lock, so the state cannot change underneath.
        Compactions and local snapshots get their term here.
        """
        shadows: dict[int, Shadow] = {}
        parts = self._parts
        ops: list[_Checked] = []
        chunks: list[bytes] = []
        gc = False
        for item in batch.ops:
            pid = item[1]
            sh = shadows.get(pid)
            if sh is None:
                sh = shadows[pid] = Shadow(parts.get(pid))
            match item:
                case (Op.ENTRIES as op, _, entries, hdr, payload):
                    sh.append(entries)
                    ops.append((op, pid, entries))
                case (Op.HARD_STATE as op, _, hs, hdr, payload):
                    ops.append((op, pid, hs))
                case (Op.INSTALL_SNAPSHOT as op, _, meta, hdr, payload):
                    sh.install_snapshot(meta)
                    ops.append((op, pid, meta))
                    gc = True
                case (Op.NOTE_SNAPSHOT as op, _, (index, cs), _, _):
                    meta = SnapshotMeta(index, sh.note_snapshot(index), cs)
                    payload = snapshot_payload(pid, meta, restart=False)
                    hdr = header(RecordType.SNAPSHOT, payload)
                    ops.append((op, pid, meta))
                case (Op.COMPACT as op, _, index, _, _):
                    term = sh.compact(index)
                    payload = compact_payload(pid, index, term)
                    hdr = header(RecordType.COMPACT, payload)
                    ops.append((op, pid, (index, term)))
                    gc = True
                case (Op.REMOVE as op, _, _, hdr, payload):
                    shadows[pid] = Shadow(None)
                    ops.append((op, pid, None))
                    gc = True
                case _:
                    assert_never(item)
            chunks.append(hdr)
            chunks.append(payload)
        return ops, chunks, gc

    def _apply(self, ops: list[_Checked]) -> None:
        """Apply checked ops to the in-memory state (after the fsync succeeded)."""
        parts = self._parts
        seg_live = self._live[self._seq]
        for item in ops:
            pid = item[1]
            st = parts.get(pid)
            if st is None:
                if item[0] is Op.REMOVE:
                    continue
                st = parts[pid] = PartitionState()
            match item:
                case (Op.ENTRIES, _, entries):
                    prev_last = st.last_index()
                    start = st.append(entries)
                    if start:
                        note_entries(self._live, seg_live, pid, start, entries[-1].index, prev_last)
                case (Op.HARD_STATE, _, hs):
                    st.hard_state = hs
                case (Op.INSTALL_SNAPSHOT, _, meta):
                    st.install_snapshot(meta)
                    forget_entries(self._live, pid)
                case (Op.NOTE_SNAPSHOT, _, meta):
                    st.note_snapshot(meta)
                case (Op.COMPACT, _, (index, term)):
                    st.compact(index, term)
                case (Op.REMOVE, _, _):
                    del parts[pid]
                    forget_entries(self._live, pid)
                case _:
                    assert_never(item)

    # -- internals: segments -------------------------------------------------------

    def _start_segment(self, seq: int) -> None:
        """Create segment ``seq``, make its name durable, and write the checkpoint it starts with.

        A full disk while creating the file changes nothing (WalDiskFullError); while writing
        the checkpoint it leaves the new segment empty and current, to be checkpointed by the
        next write (an empty last segment is what a crash while starting one leaves too)."""
        old = self._file
        if old is not None and self._unsynced:
            # Bytes of a sync=False write: torn by a crash in a segment that is not the
            # last, they would read as corruption and the node would refuse to start.
            self._fsync(old)
            self._unsynced = False
        path = os.path.join(self.directory, segment_name(seq))
        try:
            new = self.files.create(path)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise WalDiskFullError(f"WAL {self.directory}: creating {path}: {exc}") from exc
            raise
        if old is not None:
            self._file = None
            old.close()
        self._file = new
        self._seq, self._path, self._size = seq, path, 0
        self._segments[seq] = path
        self._live[seq] = {}
        self._has_batches = False
        if self.sync:
            self.files.sync_directory(self.directory)
        self._needs_checkpoint = True
        self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        with self._state_lock:
            cps = [st.checkpoint(pid) for pid, st in sorted(self._parts.items())]
        payload = checkpoint_payload(cps)
        data = header(RecordType.CHECKPOINT, payload) + payload
        f = self._file
        assert f is not None
        self._append(f, data)
        self._fsync(f)
        self._size += len(data)
        self._needs_checkpoint = False

    def _write_checkpoint_or_fail(self) -> None:
        try:
            self._write_checkpoint()
        except BaseException as exc:
            self._fail(exc, f"writing the checkpoint of {self._path}")

    def _collect_garbage(self) -> None:
        """Delete every non-current segment none of whose entries is still live."""
        parts = self._parts
        for seq in list(self._segments):
            if seq == self._seq:
                continue
            seg_live = self._live.get(seq, {})
            if any(pid in parts and last > parts[pid].offset for pid, last in seg_live.items()):
                continue
            path = self._segments[seq]
            try:
                self.files.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Harmless: an extra dead segment replays to the same state. Retry next time.
                log.warning("WAL: could not delete dead segment %s: %s", path, exc)
                continue
            del self._segments[seq]
            self._live.pop(seq, None)
            log.debug("WAL: deleted dead segment %s", path)
        # No directory fsync: a deletion lost in a crash brings back a dead
        # segment, and replaying a dead segment yields the same state. (The records
        # that made it dead are synced: write() collects only after a synced write.)

    # -- internals: I/O and failure ------------------------------------------------

    def _append(self, f: AppendFile, data: bytes) -> None:
        """Append ``data``, or on a full disk cut off what of it landed and raise WalDiskFullError.

        ``self._size`` is the file's length before the append (every byte before it was
        written by a write that returned). The cut is not synced: until the next sync the disk
        may keep part of the lost batch past that length, which replay would see as a torn tail
        of the last segment, the one place a torn tail is harmless (the next write syncs the
        new length along with its own bytes). A truncate that fails is not a full disk: it
        propagates and fails the WAL."""
        try:
            if self.faults.append_enospc:
                f.append(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "injected: no space left on device")
            f.append(data)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            f.truncate(self._size)
            log.warning("WAL: %s is full (%s); %d bytes not written, cut back to %d", self._path, exc,
                        len(data), self._size)
            raise WalDiskFullError(
                f"WAL {self.directory}: appending {len(data)} bytes to {self._path}: {exc}"
            ) from exc

    def _fsync(self, f: AppendFile) -> None:
        started = time.perf_counter()
        faults = self.faults
        if faults.fsync_delay_s > 0:
            time.sleep(faults.fsync_delay_s)
        if faults.fail_fsync:
            raise OSError(errno.EIO, "injected fsync failure")
        if self.sync:
            f.sync()
        self.stats.fsync.observe(time.perf_counter() - started)

    def _check_usable(self) -> None:
        if self._closed:
            raise WalClosedError(f"WAL {self.directory} is closed")
        if self._failed is not None:
            raise WalSyncError(
                f"WAL {self.directory} failed earlier ({self._failed}); it accepts no more writes"
            ) from self._failed

    def _fail(self, exc: BaseException, what: str) -> NoReturn:
        """Enter the failed state for good; OSErrors surface as WalSyncError, anything else as itself."""
        self._failed = exc
        log.error("WAL: %s failed: %r; the WAL is failed and accepts no more writes", what, exc)
        if not isinstance(exc, OSError):
            raise exc
        raise WalSyncError(f"WAL {self.directory}: {what} failed: {exc}; the WAL accepts no more writes") from exc

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
