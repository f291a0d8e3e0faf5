"""A node whose disk is full: it stops taking writes, keeps serving what it correctly can, and
resumes by itself once space returns. See docs/limits.md.

Why not fail-stop, as for a failed fsync (docs/decisions.md D14)? A failed fsync leaves the page
cache in an unknown state: the kernel may have dropped dirty pages a later fsync would then
report as durable. A full disk fails earlier, at ``write(2)``: the bytes never entered the file
(the WAL cuts off the part of a batch that did, :meth:`node.wal.wal.WriteAheadLog._append`), and
LMDB aborts the transaction whose commit could not write its pages (its last committed state
stays). Nothing is half-written, so nothing needs a restart to be trusted again.

How a round meets a full disk (:class:`DiskFull`, raised by the round's disk trip):

* **before the WAL write is durable** (a snapshot install or the WAL append): nothing of the
  round is persisted, so none of its Readies is advanced; the messages that promise what is on
  the disk (votes, acknowledgements: ``messages_after_persist``) are dropped, which Raft takes
  as message loss, except those that promise nothing about this disk (:data:`NO_PROMISE`:
  heartbeat answers, ReadIndex traffic); read states are served (a read index does not depend
  on this node's disk; the read still waits until that index is applied). The core offers the same entries and
  hard state again in its next Ready: a Ready taken without ``advance`` is re-offered, as a
  superset, by the next (``RawNode.ready`` reads the unstable log and compares the hard state
  with the last *advanced* one), so the retry is simply a later round.
* **in the LMDB apply, after the WAL write** (the Readies are advanced and the writes maybe
  acknowledged from inside the transaction, D4: they are committed and in the WAL): the
  transaction is aborted, nothing is applied; the round's apply jobs are kept and applied again,
  first, before any later entry (``RaftStore._pending_applies``).

While full, rounds go on for what needs no disk: a Ready that asks for nothing to be persisted
or applied (a leader's heartbeats, a follower's answers to them, commit-only hard states,
which are carried anyway, D5) is carried out and advanced as usual, so leases hold and reads
whose index is applied are served; a Ready that needs the disk is *held* as above (its early
messages, a leader's appends and heartbeats, still leave). Once a second
(:data:`RETRY_S`) the round tries the disk again with everything; once one succeeds rounds
write as usual. Proposals are refused (``ServerBusy`` "disk full", RESOURCE_EXHAUSTED, with a
back-off hint), and a follower steps no appends with entries, so the unpersisted log does not
grow; the episode ends, and proposals are taken again, when the file system has room for the
:class:`Reserve` (given back at the first ENOSPC so that what is in flight lands) twice over.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lmdb

from node.raft import Message, MessageType, Ready

log = logging.getLogger("tessera.disk")

RETRY_S = 1.0
"""How often a node whose disk is full tries again to write what it holds."""

HOLD_BYTES = 8 << 20
"""What LMDB's open transaction may hold on a node without a reserve (DiskStatus.hold_budget)."""

LOW_SPACE_BYTES = 4 << 20
"""LMDB reports a page write that came up short (the file system filled up in the middle of it)
as EIO, not ENOSPC. Such an EIO counts as a full disk only when the file system really has less
than this free; any other EIO is a disk failure (fail-stop)."""

RETRY_AFTER_MS = 1000
"""The back-off a refused proposal suggests to its client (``ServerBusy.backoff_ms``)."""

_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


class DiskFull(Exception):
    """A round's disk trip found the disk full. ``persisted``: the WAL write was durable (and the
    Readies advanced) before the LMDB apply failed; otherwise nothing of the round persisted."""

    def __init__(self, message: str, *, persisted: bool) -> None:
        super().__init__(message)
        self.persisted = persisted


def lmdb_disk_full(exc: lmdb.Error, path: str) -> bool:
    """Whether LMDB's error means a full disk (its transaction was aborted: nothing written).

    ``MapFullError`` is LMDB's own map size, not the disk: not this."""
    if isinstance(exc, lmdb.MapFullError):
        return False
    text = str(exc)
    if any(t in text for t in _FULL_TEXTS):
        return True
    if os.strerror(errno.EIO) in text:
        try:
            st = os.statvfs(path)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES
    return False


@dataclass(slots=True)
class Reserve:
    """Space set aside in the node's data directory (a file of ``size`` bytes), given back the
    moment the disk is found full, so that what is already in flight lands: the committed
    entries whose apply found no room, and the held WAL writes. Without it, a node whose LMDB
    filled up could not apply the writes it had already acknowledged, and no lease or
    linearizable read of that partition could be served until an operator freed space.
    Re-created when the episode ends (``tessera node --disk-reserve-mb``)."""

    path: str
    size: int

    def ensure(self) -> bool:
        """Create the reserve if it is missing and there is room for it; True if it is there."""
        try:
            if os.path.getsize(self.path) >= self.size:
                return True
        except OSError:
            pass
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot set aside %d bytes at %s: %s", self.size, self.path, exc)
            self.release()
            return False
        return True

    def release(self) -> int:
        """Delete the reserve; returns the bytes given back."""
        try:
            size = os.path.getsize(self.path)
            os.unlink(self.path)
        except FileNotFoundError:
            return 0
        return size

    def room_to_resume(self) -> bool:
        """Whether the file system has room for the reserve and as much again."""
        return free_bytes(os.path.dirname(self.path)) >= 2 * self.size


RESERVE_NAME = "disk-reserve"
RESERVE_MAX_SHARE = 0.05


def reserve_in(data_dir: str, want: int) -> Reserve | None:
    """The node's reserve in ``data_dir``: ``want`` bytes but at most 5% of the file system,
    set aside now if there is room (None when ``want`` is 0)."""
    if want <= 0:
        return None
    st = os.statvfs(data_dir)
    size = min(want, int(st.f_blocks * st.f_frsize * RESERVE_MAX_SHARE))
    if size <= 0:
        return None
    reserve = Reserve(os.path.join(data_dir, RESERVE_NAME), size)
    if not reserve.ensure():
        log.warning("disk: no room for the %d-byte reserve in %s yet", size, data_dir)
    return reserve


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass(slots=True)
class DiskStatus:
    """The node's disk-full state, for health and metrics to read (``RaftStore.disk``).

    ``full`` is True from the first write that found no room to the first that succeeded again.
    ``listeners`` are called with the new value on every change (the node's gRPC health service
    sets ``tessera.disk`` NOT_SERVING while full)."""

    full: bool = False
    since: float = 0.0  # time.time() when the current (or last) episode began
    reserve: Reserve | None = None  # given back when the disk fills, re-created when it ends
    reason: str = ""
    episodes: int = 0  # how many times the disk was found full
    retries: int = 0  # rounds that tried the disk again while full
    listeners: list[Callable[[bool], None]] = field(default_factory=list)

    def set_full(self, reason: str) -> bool:
        """Note that a write found no room; True if this began an episode (and gave back the
        reserve: the writes in flight may land in it at once)."""
        self.reason = reason
        if self.full:
            return False
        self.full, self.since = True, time.time()
        self.episodes += 1
        freed = self.reserve.release() if self.reserve is not None else 0
        log.error("disk full: %s; refusing writes, serving reads, retrying every %.0f s%s", reason, RETRY_S,
                  f"; gave back the {freed}-byte reserve" if freed else "")
        self._tell()
        return True

    def room_to_resume(self) -> bool:
        """Once the writes in flight landed: may the node take new writes again? Yes when the
        reserve can be set aside again with as much room to spare (no reserve: yes)."""
        if self.reserve is None:
            return True
        return self.reserve.room_to_resume() and self.reserve.ensure()

    def hold_budget(self) -> int:
        """How many bytes of applies LMDB's open transaction may hold (D27, estimated by
        ``ApplyJob.nbytes``). A full disk aborts it, and what it held is applied again into
        the reserve given back then (its readers wait until it is): a quarter of the reserve,
        so that it lands with room to spare; without one, ``HOLD_BYTES``."""
        return self.reserve.size // 4 if self.reserve is not None else HOLD_BYTES

    def set_ok(self) -> None:
        if not self.full:
            return
        self.full = False
        log.warning("disk has room again after %.1f s: writes resume", time.time() - self.since)
        self._tell()

    def _tell(self) -> None:
        for fn in list(self.listeners):
            try:
                fn(self.full)
            except Exception:  # a listener must not break the round loop
                log.exception("disk status listener failed")


def needs_disk(rd: Ready) -> bool:
    """Whether carrying out ``rd`` writes to the WAL with fsync or applies anything to LMDB."""
    return bool(rd.entries or rd.snapshot is not None or rd.committed_entries or (rd.hard_state and rd.must_sync))


NO_PROMISE = frozenset({MessageType.HEARTBEAT_RESP, MessageType.READ_INDEX, MessageType.READ_INDEX_RESP})
"""Late messages that promise nothing about this node's disk, so a held Ready still sends them
(etcd's raft, with asynchronous storage writes, likewise holds back only the append and vote
responses): a heartbeat's answer says "I follow you in this term" and echoes the leader's stamp
and read context, which keeps the leader's lease and its ReadIndex rounds working while this
node cannot write. Votes and append acknowledgements are dropped (message loss to Raft)."""


def hold(
    readies: Sequence[tuple[int, Ready]], resolve_read: Callable[[int, bytes, int], None]
) -> list[tuple[int, tuple[Message, ...]]]:
    """Give up on persisting ``readies`` this round (they are not advanced, see the module doc):
    serve their read states; returns, by partition, the late messages that may still leave
    (:data:`NO_PROMISE`); the others are dropped."""
    out = []
    for pid, rd in readies:
        for rs in rd.read_states:
            resolve_read(pid, rs.context, rs.index)
        ok = tuple(m for m in rd.messages_after_persist if m.type in NO_PROMISE)
        if ok:
            out.append((pid, ok))
    return out


@dataclass(slots=True)
class RetryClock:
    """When the next retry of a full disk is due (loop time)."""

    next_at: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def tried(self, now: float, *, again_now: bool = False) -> None:
        """A retry was made (or the disk found full) at ``now``: the next is due RETRY_S later,
        or at once with ``again_now`` (the reserve was just given back: what is in flight lands
        in it before anything else, another node on the same file system say, takes the room)."""
        self.next_at = now if again_now else now + RETRY_S



DISK_HEALTH_SERVICE = "tessera.disk"
"""The gRPC health service name that says whether this node's disk takes writes: SERVING, or
NOT_SERVING while it is full (the node's overall health, service "", is someone else's call)."""


def watch_disk(status: DiskStatus, servicer: Any) -> None:
    """Keep ``DISK_HEALTH_SERVICE`` on the node's health servicer (grpc_health's, sync or aio)
    in step with ``status``."""
    from grpc_health.v1 import health_pb2  # only the node process needs it

    def set_health(full: bool) -> None:
        state = health_pb2.HealthCheckResponse.NOT_SERVING if full else health_pb2.HealthCheckResponse.SERVING
        res = servicer.set(DISK_HEALTH_SERVICE, state)
        if asyncio.iscoroutine(res):
            task = asyncio.get_running_loop().create_task(res)
            _health_tasks.add(task)
            task.add_done_callback(_health_tasks.discard)

    status.listeners.append(set_health)
    set_health(status.full)


_health_tasks: set[asyncio.Task[Any]] = set()  # the aio servicer's set() calls, kept until done
