"""Applied state of every partition on a node, in one LMDB environment.

Why these choices:

* **One transaction per apply batch**, holding the data *and* the
  partition's applied index: after a crash LMDB is at some committed
  transaction, so the applied index says exactly where log replay resumes.
* **User keys stored raw** in one ``data`` database: partitions own disjoint
  ranges, so a scan is one cursor walk and a split moves no data.
* **Version = the Raft index of the write.**  Unique and increasing per key
  (a partition created by a split continues its parent's index space), so a
  compare-and-set can never confuse two writes; 0 means absent.
* **A split moves no data** (docs/decisions.md D21): applying a split entry rewrites the
  parent's descriptor, writes the new partition's descriptor, applied state (the split's
  index and term, so its log continues the parent's index space) and size, and copies the
  parent's dedup records, all in the entry's transaction.  Each partition's approximate size
  (the bytes of its LMDB records) is kept in the same transactions as the data.
* **Request-id dedup in the same transaction**: a retried write whose id
  was already applied returns the first result and changes nothing.  Dedup
  records are kept for ``dedup_window`` log indexes, then collected.
* LMDB is opened with ``metasync=False``: data pages are flushed at commit,
  the meta page at the next commit (or :meth:`StateStore.sync`), so a power
  cut may undo the last transaction but never corrupts the file — and the
  Raft log, which is fsynced first, replays that transaction again.  The
  log keeps what it replays from: the node syncs LMDB before the log drops
  entries (see node.round_executor).

See docs/decisions.md D3 and D4.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import lmdb

from common.descriptor import Descriptor
from common.wire.descriptors import decode_descriptor, encode_descriptor
from node.fs import OS_FILES
from node.raft import ConfState
from node.wal.record import decode_conf_state, encode_conf_state

from . import layout
from .commands import Command, CommandError, OpKind, SplitCommand

_U64 = struct.Struct(">Q")  # big-endian so keys sort numerically
_META = struct.Struct("<QQ")
_RESULT = struct.Struct("<BBQI")

REJECTED: list[OpResult] = []
"""The results of a command applied after a split moved one of its keys out of the
partition: nothing was written, and the client retries against the new partition."""


@dataclass(frozen=True, slots=True)
class OpResult:
    """Outcome of one operation: ``version`` is the key's version after it (0 = absent)."""

    succeeded: bool
    version: int
    existed: bool = False
    value: bytes = b""  # CAS only: the current value when the compare failed


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    applied_index: int
    applied_term: int
    conf_state: ConfState


@dataclass(frozen=True, slots=True)
class ApplyEntry:
    """One committed entry to apply: ``command`` is None for no-ops and conf changes.

    ``descriptor`` is set on conf changes: the partition's descriptor from this
    entry on, stored in the same transaction.
    """

    index: int
    term: int
    command: Command | None
    descriptor: Descriptor | None = None
    # A split entry (with ``descriptor`` the shrunk parent's): what to create beside it.
    split: SplitApply | None = None
    # A command whose keys a split has moved out of the range: applied as nothing (REJECTED).
    rejected: bool = False


@dataclass(frozen=True, slots=True)
class SplitApply:
    """What applying a split writes for the new partition (decided by node.round_plan)."""

    command: SplitCommand
    child: Descriptor  # the new partition's descriptor
    replica_id: int  # our replica in it (0: this store has none)
    conf_state: ConfState  # the new group's membership


def _pid_key(pid: int) -> bytes:
    return _U64.pack(pid)


def _encode_conf(cs: ConfState) -> bytes:
    return encode_conf_state(cs)  # one ConfState format on disk, the WAL's


def _decode_conf(data: bytes) -> ConfState:
    return decode_conf_state(data)[0]


def encode_results(results: list[OpResult]) -> bytes:
    out = [struct.pack("<H", len(results))]
    for r in results:
        out.append(_RESULT.pack(int(r.succeeded), int(r.existed), r.version, len(r.value)))
        out.append(r.value)
    return b"".join(out)


def decode_results(data: bytes) -> list[OpResult]:
    (n,) = struct.unpack_from("<H", data, 0)
    off = 2
    out = []
    for _ in range(n):
        ok, existed, version, vlen = _RESULT.unpack_from(data, off)
        off += _RESULT.size
        out.append(OpResult(bool(ok), version, bool(existed), bytes(data[off : off + vlen])))
        off += vlen
    return out


class StateStore:
    """The LMDB environment of one node.  Not thread-safe for writers: one applier at a time.

    An apply may leave its transaction *open* (``apply_many(..., keep_open=True)``, D27): the
    next apply continues it, and :meth:`commit_open` commits it, with one fsync for all of
    them. Readers meanwhile see the last commit, which is why whatever the open transaction
    holds is reported applied only by its ``after_commit`` callbacks. Every other write on the
    thread that holds it commits it first (an LMDB writer cannot begin a second transaction);
    a writer on another thread waits for the write lock, which py-lmdb waits for without the
    GIL, until the owner commits.
    """

    def __init__(self, path: str, *, map_size: int = 1 << 36, dedup_window: int = 100_000) -> None:
        OS_FILES.makedirs(path)
        self.env = lmdb.open(path, map_size=map_size, max_dbs=12, metasync=False, sync=True, readahead=False)
        # LMDB syncs its file but never the directory it created the file in.
        OS_FILES.sync_directory(path)
        self._data = self.env.open_db(b"data")
        self._meta = self.env.open_db(b"meta")
        self._dedup = self.env.open_db(b"dedup")
        self._dedup_idx = self.env.open_db(b"dedup_idx")
        self._desc = self.env.open_db(b"descriptors")
        self._sizes = self.env.open_db(b"sizes")
        self.dedup_window = dedup_window
        self._open: layout.Txn | None = None  # an apply transaction not committed yet
        self._open_thread = 0  # the thread that holds it (LMDB write transactions are bound to one)
        self._after_commit: list[Callable[[], object]] = []
        self.held = 0  # the weight of the applies the open transaction holds (apply_many)
        # Told when an open transaction that earlier applies left is aborted (a commit or a
        # later apply failed): what they held is not applied after all (RoundExecutor).
        self.on_open_lost: Callable[[BaseException], object] | None = None

    def close(self) -> None:
        if self._open is not None and self._open_thread == threading.get_ident():
            self.commit_open()
        self.env.close()

    @property
    def has_open(self) -> bool:
        """Whether an apply transaction is waiting for :meth:`commit_open`."""
        return self._open is not None

    @property
    def open_elsewhere(self) -> bool:
        """Whether another thread holds an apply transaction open (it must commit it there)."""
        return self._open is not None and self._open_thread != threading.get_ident()

    def commit_open(self) -> None:
        """Commit the open apply transaction, if any (on the thread that opened it), then run
        its ``after_commit`` callbacks in the order their applies ran. On an error the
        transaction is aborted and its callbacks dropped: nothing it held is reported applied
        (the WAL still has it), and the error propagates for the caller to fail-stop on."""
        txn = self._open
        if txn is None or self._open_thread != threading.get_ident():
            # Another thread's: the disk thread's apply, between its apply and its own commit
            # (an LMDB write transaction is committed by the thread that began it).
            return
        callbacks, self._after_commit = self._after_commit, []
        self._open, self.held = None, 0
        try:
            txn.commit()
        except BaseException as exc:
            txn.abort()
            self._lost(exc, callbacks)
            raise
        for cb in callbacks:
            cb()

    def abort_open(self, exc: BaseException) -> None:
        """Abort the open apply transaction, if this thread holds one: nothing it held is
        applied after all (``on_open_lost`` is told, with ``exc`` as the reason)."""
        txn = self._open
        if txn is None or self._open_thread != threading.get_ident():
            return
        callbacks, self._after_commit = self._after_commit, []
        self._open, self.held = None, 0
        txn.abort()
        self._lost(exc, callbacks)

    def copy(self, path: str) -> None:
        """Copy the environment as of its last commit to ``path`` (a test's snapshot of the
        disk). LMDB's copy takes the write lock, so an open apply is committed first."""
        if self._open is not None and self._open_thread == threading.get_ident():
            self.commit_open()
        self.env.copy(path)

    def _lost(self, exc: BaseException, callbacks: list[Callable[[], object]]) -> None:
        if callbacks and self.on_open_lost is not None:
            self.on_open_lost(exc)

    def _begin_write(self) -> layout.Txn:
        if self._open is not None and self._open_thread == threading.get_ident():
            self.commit_open()
        return self.env.begin(write=True)

    def sync(self) -> None:
        """Make the last committed transaction durable.

        A commit flushes its data pages but not its meta page (``metasync=False``): a power
        cut may undo the last transaction until the next commit or this call flushes it.
        An open apply transaction is committed first.
        """
        if self._open is not None and self._open_thread == threading.get_ident():
            self.commit_open()
        self.env.sync(True)

    # -- partition metadata ---------------------------------------------------

    def meta(self, pid: int) -> PartitionMeta | None:
        with self.env.begin(db=self._meta) as txn:
            raw = txn.get(_pid_key(pid))
        if raw is None:
            return None
        index, term = _META.unpack_from(raw, 0)
        return PartitionMeta(index, term, _decode_conf(raw[_META.size :]))

    def partitions(self) -> list[int]:
        with self.env.begin(db=self._meta) as txn:
            return [_U64.unpack(k)[0] for k, _ in txn.cursor()]

    def init_partition(self, pid: int, index: int, term: int, conf_state: ConfState) -> None:
        with self._begin_write() as txn:
            txn.put(_pid_key(pid), _META.pack(index, term) + _encode_conf(conf_state), db=self._meta)
            txn.put(_pid_key(pid), _U64.pack(0), db=self._sizes)

    # -- sizes ------------------------------------------------------------------

    def size(self, pid: int, start: bytes, end: bytes) -> int:
        """Approximate bytes of the partition's records: kept with the data, or measured once
        for a partition written before sizes were kept."""
        with self.env.begin() as txn:
            raw = txn.get(_pid_key(pid), db=self._sizes)
            if raw is not None:
                return int(_U64.unpack(raw)[0])
            return sum(layout.record_size(k, v) for k, v in layout.records(txn, self._data, start, end))

    def sizes(self) -> dict[int, int]:
        """Every partition's kept size, from one read transaction (the heartbeat's reports)."""
        with self.env.begin(db=self._sizes) as txn:
            return {_U64.unpack(k)[0]: int(_U64.unpack(v)[0]) for k, v in txn.cursor()}

    def size_below(self, start: bytes, key: bytes) -> int:
        """Bytes of the records holding [start, key) (how a split at ``key`` shares the size)."""
        with self.env.begin() as txn:
            return sum(layout.record_size(k, v) for k, v in layout.records(txn, self._data, start, key))

    def ensure_size(self, pid: int, start: bytes, end: bytes) -> None:
        """Measure and keep the size of a partition written before sizes were kept."""
        with self._begin_write() as txn:
            if txn.get(_pid_key(pid), db=self._sizes) is None:
                size = sum(layout.record_size(k, v) for k, v in layout.records(txn, self._data, start, end))
                txn.put(_pid_key(pid), _U64.pack(size), db=self._sizes)

    def split_point(self, pid: int, start: bytes, end: bytes) -> tuple[bytes, int] | None:
        """The middle key of a partition by size, and the bytes below it; None when no key
        splits it into two non-empty halves.  The key is an inline key or a bucket's prefix
        (node/state/layout.py), so never longer than layout.INLINE."""
        total = self.size(pid, start, end)
        below = 0
        best: tuple[bytes, int] | None = None
        with self.env.begin() as txn:
            # Every record's first key is a candidate (split just before it); the one whose
            # share below is nearest half wins, and past half they only get worse.
            for k, v in layout.records(txn, self._data, start, end):
                key = bytes(k[: layout.INLINE]) if len(k) == layout.INLINE + 1 else k
                if key > start and (not end or key < end):
                    if best is None or abs(2 * below - total) < abs(2 * best[1] - total):
                        best = (key, below)
                    if below * 2 >= total:
                        break
                below += layout.record_size(k, v)
        return best

    def save_descriptor(self, pid: int, replica_id: int, descriptor: Descriptor) -> None:
        """Persist the partition's descriptor (range, epoch, members) and our replica id in it."""
        with self._begin_write() as txn:
            txn.put(_pid_key(pid), _U64.pack(replica_id) + encode_descriptor(descriptor), db=self._desc)

    def _put_descriptor(self, txn: layout.Txn, pid: int, descriptor: Descriptor) -> None:
        """Replace the descriptor, keeping our replica id (which a new descriptor cannot change)."""
        old = txn.get(_pid_key(pid), db=self._desc)
        if old is None:
            raise KeyError(f"partition {pid} has no descriptor to replace")
        txn.put(_pid_key(pid), bytes(old[:8]) + encode_descriptor(descriptor), db=self._desc)

    def descriptor(self, pid: int) -> tuple[int, Descriptor] | None:
        """Our replica id in a hosted partition and its descriptor."""
        with self.env.begin(db=self._desc) as txn:
            v = txn.get(_pid_key(pid))
        return None if v is None else (_U64.unpack_from(v, 0)[0], decode_descriptor(bytes(v[8:])))

    def descriptors(self) -> dict[int, tuple[int, Descriptor]]:
        """Every hosted partition: our replica id in it and its descriptor."""
        with self.env.begin(db=self._desc) as txn:
            return {
                _U64.unpack(k)[0]: (_U64.unpack_from(v, 0)[0], decode_descriptor(bytes(v[8:])))
                for k, v in txn.cursor()
            }

    def open_snapshot(self, pid: int, start: bytes, end: bytes) -> SnapshotReader:
        """A consistent image of one partition: its meta and data from one read transaction."""
        return SnapshotReader(self, pid, start, end)

    # -- applying ---------------------------------------------------------------

    def apply(self, pid: int, entries: Iterable[ApplyEntry], conf_state: ConfState) -> list[list[OpResult] | None]:
        """Apply committed entries of one partition in one transaction; returns each command's results.

        ``conf_state`` is the membership after these entries (the core applies
        conf changes itself); it is stored with the applied index.
        """
        return self.apply_many([(pid, entries, conf_state)])[0]

    def apply_many(
        self,
        work: Sequence[tuple[int, Iterable[ApplyEntry], ConfState]],
        before_commit: Callable[[list[list[list[OpResult] | None]]], object] | None = None,
        *,
        keep_open: bool = False,
        after_commit: Callable[[], object] | None = None,
        weight: int = 0,
    ) -> list[list[list[OpResult] | None]]:
        """Apply several partitions' entries in ONE transaction (one fsync per Raft round).

        ``before_commit`` sees the results before the transaction commits:
        the node acknowledges committed writes from there without waiting for
        LMDB's fsync (a crash replays them from the WAL to the same results).
        ``after_commit`` runs once they are committed: at once, or, with ``keep_open``, when
        :meth:`commit_open` commits the transaction this apply left open (or continued).
        ``weight`` (the caller's estimate of what the apply adds) is counted in ``held``.
        """
        out = []
        if self._open is not None and self._open_thread != threading.get_ident():
            raise RuntimeError("an apply transaction is open on another thread: commit it there first")
        txn: layout.Txn = self._open or self.env.begin(write=True)
        self._open = None
        try:
            for pid, entries, conf_state in work:
                out.append(self._apply_in(txn, pid, entries, conf_state))
            if before_commit is not None:
                before_commit(out)
        except BaseException as exc:
            lost, self._after_commit = self._after_commit, []  # what earlier applies left open goes too
            self.held = 0
            txn.abort()
            self._lost(exc, lost)
            raise
        if after_commit is not None:
            self._after_commit.append(after_commit)
        self._open, self._open_thread = txn, threading.get_ident()
        self.held += weight
        if not keep_open:
            self.commit_open()
        return out

    def _apply_in(
        self, txn: layout.Txn, pid: int, entries: Iterable[ApplyEntry], conf_state: ConfState
    ) -> list[list[OpResult] | None]:
        results: list[list[OpResult] | None] = []
        last_index = last_term = 0
        grown = [0]  # bytes the partition's records grew by in this job
        for e in entries:
            last_index, last_term = e.index, e.term
            if e.descriptor is not None:
                self._put_descriptor(txn, pid, e.descriptor)
            if e.split is not None:
                self._apply_split(txn, pid, e, e.split, grown[0])
                grown[0] = 0
            if e.rejected:
                results.append(REJECTED)
                continue
            if e.command is None:
                results.append(None)
                continue
            results.append(self._apply_command(txn, pid, e.index, e.command, grown))
        if grown[0]:
            self._add_size(txn, pid, grown[0])
        if last_index:
            txn.put(_pid_key(pid), _META.pack(last_index, last_term) + _encode_conf(conf_state), db=self._meta)
            self._collect_dedup(txn, pid, last_index)
        return results

    def _stored_size(self, txn: layout.Txn, pid: int) -> int:
        raw = txn.get(_pid_key(pid), db=self._sizes)
        return int(_U64.unpack(raw)[0]) if raw is not None else 0

    def _add_size(self, txn: layout.Txn, pid: int, delta: int) -> None:
        txn.put(_pid_key(pid), _U64.pack(max(0, self._stored_size(txn, pid) + delta)), db=self._sizes)

    def _apply_split(self, txn: layout.Txn, pid: int, e: ApplyEntry, sp: SplitApply, grown: int) -> None:
        """Create the new partition beside its (already shrunk) parent; no data moves."""
        total = max(0, self._stored_size(txn, pid) + grown)
        left = min(max(sp.command.left_bytes, 0), total)
        txn.put(_pid_key(pid), _U64.pack(left), db=self._sizes)
        child = _pid_key(sp.child.id)
        if not sp.replica_id or txn.get(child, db=self._meta) is not None:
            return  # (already hosted: created from its own leader's snapshot, which is newer)
        txn.put(child, _META.pack(e.index, e.term) + _encode_conf(sp.conf_state), db=self._meta)
        txn.put(child, _U64.pack(sp.replica_id) + encode_descriptor(sp.child), db=self._desc)
        txn.put(child, _U64.pack(total - left), db=self._sizes)
        # A write acknowledged by the parent and retried by its client against the new
        # partition must find its first result there too.
        prefix = _pid_key(pid)
        for db in (self._dedup, self._dedup_idx):
            cur = txn.cursor(db=db)
            copied = []
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    copied.append((child + k[8:], v))
            for k, v in copied:
                txn.put(k, v, db=db)

    def _apply_command(
        self, txn: layout.Txn, pid: int, index: int, cmd: Command, grown: list[int]
    ) -> list[OpResult]:
        rid = cmd.request_id
        if rid:
            seen = txn.get(_pid_key(pid) + rid, db=self._dedup)
            if seen is not None:
                return decode_results(seen[8:])
        results = self._execute(txn, index, cmd, grown)
        if rid:
            txn.put(_pid_key(pid) + rid, _U64.pack(index) + encode_results(results), db=self._dedup)
            txn.put(_pid_key(pid) + _U64.pack(index), rid, db=self._dedup_idx)
        return results

    def _execute(self, txn: layout.Txn, index: int, cmd: Command, grown: list[int]) -> list[OpResult]:
        """All-or-nothing: if any compare-and-set fails, no operation is applied."""
        data = self._data
        for op in cmd.ops:
            if op.kind == OpKind.CAS:
                cur = layout.get(txn, data, op.key)
                version = cur[0] if cur is not None else 0
                if version != op.expected_version:
                    value = cur[1] if cur is not None else b""
                    failed = OpResult(False, version, cur is not None, value)
                    return [failed if o is op else OpResult(False, 0) for o in cmd.ops]
        out = []
        for op in cmd.ops:
            if op.kind == OpKind.PUT or (op.kind == OpKind.CAS and not op.delete):
                existed, delta = layout.put(txn, data, op.key, index, op.value)
                grown[0] += delta
                out.append(OpResult(True, index, existed))
            elif op.kind in (OpKind.DELETE, OpKind.CAS):
                existed, delta = layout.delete(txn, data, op.key)
                grown[0] += delta
                out.append(OpResult(True, 0, existed))
            else:  # pragma: no cover - decode rejects unknown kinds
                raise CommandError(f"unknown op kind {op.kind}")
        return out

    def _collect_dedup(self, txn: layout.Txn, pid: int, applied: int) -> None:
        horizon = applied - self.dedup_window
        if horizon <= 0:
            return
        prefix = _pid_key(pid)
        cur = txn.cursor(db=self._dedup_idx)
        if not cur.set_range(prefix):
            return
        while True:
            k = cur.key()
            if not k.startswith(prefix) or _U64.unpack_from(k, 8)[0] >= horizon:
                return
            txn.delete(prefix + cur.value(), db=self._dedup)
            if not cur.delete():
                return

    # -- reading ----------------------------------------------------------------

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        with self.env.begin() as txn:
            got = layout.get(txn, self._data, key)
        if got is None:
            return None
        return got[1], got[0]

    def scan(self, start: bytes, end: bytes, limit: int) -> list[tuple[bytes, bytes, int]]:
        """Up to ``limit`` (key, value, version) with start <= key < end (empty end = unbounded)."""
        out: list[tuple[bytes, bytes, int]] = []
        if limit <= 0:
            return out
        with self.env.begin() as txn:
            for k, version, value in layout.scan(txn, self._data, start, end):
                out.append((k, value, version))
                if len(out) >= limit:
                    break
        return out

    def dedup_result(self, pid: int, request_id: bytes) -> list[OpResult] | None:
        with self.env.begin(db=self._dedup) as txn:
            raw = txn.get(_pid_key(pid) + request_id)
        return decode_results(raw[8:]) if raw is not None else None

    # -- snapshots ----------------------------------------------------------------

    def destroy_partition(self, pid: int, start: bytes, end: bytes) -> None:
        """Delete everything of a replica that left its group: data, applied state, descriptor, dedup."""
        prefix = _pid_key(pid)
        with self._begin_write() as txn:
            for k in [k for k, _ in layout.records(txn, self._data, start, end)]:
                txn.delete(k, db=self._data)
            for db in (self._dedup, self._dedup_idx):
                cur = txn.cursor(db=db)
                if cur.set_range(prefix):
                    while cur.key().startswith(prefix):
                        if not cur.delete():
                            break
            txn.delete(prefix, db=self._meta)
            txn.delete(prefix, db=self._desc)
            txn.delete(prefix, db=self._sizes)

    def snapshot_items(self, start: bytes, end: bytes, chunk: int = 1024) -> Iterator[list[tuple[bytes, bytes]]]:
        """The raw LMDB records of a range, in chunks, from one read transaction."""
        with self.env.begin() as txn:
            yield from _chunked(layout.records(txn, self._data, start, end), chunk)

    def install_snapshot(
        self,
        pid: int,
        start: bytes,
        end: bytes,
        items: Iterable[list[tuple[bytes, bytes]]],
        meta: PartitionMeta,
        descriptor: Descriptor | None = None,
    ) -> None:
        """Replace the range's data, applied state and (if given) descriptor in one transaction."""
        with self._begin_write() as txn:
            if descriptor is not None:
                self._put_descriptor(txn, pid, descriptor)
            stale = [k for k, _ in layout.records(txn, self._data, start, end)]
            for k in stale:
                txn.delete(k, db=self._data)
            size = 0
            for chunk in items:
                for k, v in chunk:
                    txn.put(k, v, db=self._data)
                    size += layout.record_size(k, v)
            txn.put(_pid_key(pid), _U64.pack(size), db=self._sizes)
            txn.put(
                _pid_key(pid),
                _META.pack(meta.applied_index, meta.applied_term) + _encode_conf(meta.conf_state),
                db=self._meta,
            )


class SnapshotReader:
    """Holds one LMDB read transaction: ``meta``, ``descriptor`` and :meth:`chunks` see the same state."""

    def __init__(self, store: StateStore, pid: int, start: bytes, end: bytes) -> None:
        self._txn = store.env.begin()
        self._store = store
        self.start, self.end = start, end
        raw = self._txn.get(_pid_key(pid), db=store._meta)
        if raw is None:
            self._txn.abort()
            raise KeyError(f"partition {pid} has no applied state")
        index, term = _META.unpack_from(raw, 0)
        self.meta = PartitionMeta(index, term, _decode_conf(raw[_META.size :]))
        desc = self._txn.get(_pid_key(pid), db=store._desc)
        # The descriptor as of meta's index (conf changes write both in one transaction).
        self.descriptor = decode_descriptor(bytes(desc[8:])) if desc is not None else None

    def chunks(self, chunk: int = 1024) -> Iterator[list[tuple[bytes, bytes]]]:
        return _chunked(layout.records(self._txn, self._store._data, self.start, self.end), chunk)

    def close(self) -> None:
        self._txn.abort()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunked(records: Iterator[tuple[bytes, bytes]], size: int) -> Iterator[list[tuple[bytes, bytes]]]:
    batch: list[tuple[bytes, bytes]] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def decode_entry_command(data: bytes) -> Command | None:
    """The command of a NORMAL entry, or None for the leader's empty no-op."""
    if not data:
        return None
    return Command.decode(data)


__all__ = [
    "REJECTED",
    "ApplyEntry",
    "OpResult",
    "PartitionMeta",
    "SplitApply",
    "StateStore",
    "decode_entry_command",
]
