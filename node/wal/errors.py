"""Typed errors raised by the write-ahead log.

Callers branch on the type, never on the message text.  Requests that break
the log's rules (appending past the end, compacting what is gone, an older
snapshot) raise the core's own :class:`~node.raft.CompactedError`,
:class:`~node.raft.UnavailableError` and
:class:`~node.raft.SnapshotOutOfDateError`, exactly like
:class:`~node.raft.storage.MemoryStorage`; nothing is written then and the WAL
stays usable.
"""

from __future__ import annotations


class WalError(Exception):
    """Base class for every error the WAL raises itself."""


class WalCorruptionError(WalError):
    """The WAL on disk is damaged somewhere other than a torn tail.

    The node must refuse to start: serving from a log with a hole in the
    middle could acknowledge reads and votes that contradict what it promised
    before the crash.  ``path`` and ``offset`` locate the first bad byte range
    (``offset`` is ``None`` when the damage is not one record, e.g. a segment
    holding live entries is missing).
    """

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = path if offset is None else f"{path} at byte offset {offset}"
        super().__init__(f"WAL corrupt: {where}: {reason}; refusing to start")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalSyncError(WalError):
    """A write or fsync failed; the WAL is now permanently failed.

    Retrying fsync after a failure is unsafe: the kernel may already have
    dropped the dirty pages and a second fsync would report success for data
    that never reached the disk.  Every later write raises this error too; the
    node must stop acknowledging writes and restart, which replays what really
    is on disk.
    """


class WalDiskFullError(WalError):
    """A write found the disk full (``ENOSPC``/``EDQUOT`` from ``write(2)``, never from fsync).

    Nothing of the batch was kept: the bytes the failed append left were cut off again, the
    in-memory state is as before, and the WAL stays usable, so the same batch (or a later
    superset of it) can be written once space returns. Unlike :class:`WalSyncError` this is
    not final: a write that failed never reached the page cache as far as the file's length
    says, so no later fsync can vouch for bytes that were lost (see docs/limits.md).
    """


class WalClosedError(WalError):
    """The WAL was used after :meth:`~node.wal.wal.WriteAheadLog.close`."""


class WalLockedError(WalError):
    """Another process (or another open WAL in this one) holds the directory."""
