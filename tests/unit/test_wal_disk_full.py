"""A full disk is not a failed disk: the WAL tells ENOSPC on a write from a failed fsync.

ENOSPC (or EDQUOT) from ``write(2)`` or from creating a segment: the part of the batch that
landed is cut off, nothing changes in memory, the WAL stays usable and the same batch succeeds
once there is room; replay never sees the lost bytes. Any error from fsync, ENOSPC included,
still fails the WAL for good. The faults come through ``node.fs`` (a ``Files`` whose appends
and creates can be made to find a full disk) and through the WAL's own fault hook; the last
test fills a real tmpfs (root only) for the kernel's own ENOSPC.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from node.fs import OS_FILES, AppendFile
from node.fs.os_files import OsFiles
from node.raft import HardState
from node.wal import WalBatch, WalDiskFullError, WalSyncError, WriteAheadLog
from node.wal.segment import SegmentScan, list_segments
from support.small_fs import fill, small_tmpfs
from support.wal_ops import mk


class FullableFile:
    """An OS file whose appends, while its disk is full, write half and then raise ENOSPC."""

    def __init__(self, inner: AppendFile, disk: FullableDisk) -> None:
        self._inner, self._disk = inner, disk

    @property
    def path(self) -> str:
        return self._inner.path

    def append(self, data: bytes) -> None:
        if self._disk.full:
            self._inner.append(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._inner.append(data)

    def sync(self) -> None:
        if self._disk.fsync_errno:
            raise OSError(self._disk.fsync_errno, os.strerror(self._disk.fsync_errno))
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class FullableDisk(OsFiles):
    """The real file system, except that ``full`` makes appends and creates find no room."""

    def __init__(self) -> None:
        self.full = False
        self.full_for_create = False
        self.fsync_errno = 0

    def create(self, path: str) -> AppendFile:
        if self.full_for_create:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return FullableFile(super().create(path), self)

    def open_append(self, path: str) -> AppendFile:
        return FullableFile(super().open_append(path), self)


def batch(pid: int, lo: int, hi: int, size: int = 8, hs: HardState | None = None) -> WalBatch:
    b = WalBatch()
    b.entries(pid, mk(lo, hi, size=size))
    if hs is not None:
        b.hard_state(pid, hs)
    return b


def sizes(directory: str) -> list[int]:
    return [os.path.getsize(p) for _, p in list_segments(directory)]


def clean(directory: str) -> None:
    """Every segment reads to its end without damage: no lost batch left behind."""
    for _, path in list_segments(directory):
        scan = SegmentScan(path)
        list(scan)
        assert scan.damage is None, (path, scan.damage)


def test_enospc_on_append_cuts_the_batch_off_and_the_wal_stays_usable(tmp_path: Path) -> None:
    disk = FullableDisk()
    wal = WriteAheadLog.open(str(tmp_path), files=disk)
    wal.write(batch(1, 1, 3, hs=HardState(1, 1, 3)))
    before, state = sizes(wal.directory), wal.state(1)
    disk.full = True
    for _ in range(3):  # it stays full for a while: every try fails the same way
        with pytest.raises(WalDiskFullError, match="No space left"):
            wal.write(batch(1, 4, 100, size=64, hs=HardState(2, 1, 50)))
        assert not wal.failed
        assert sizes(wal.directory) == before  # the half that landed was cut off
        after = wal.state(1)
        assert (after.last_index(), after.hard_state) == (state.last_index(), state.hard_state)
    disk.full = False
    wal.write(batch(1, 4, 100, size=64, hs=HardState(2, 1, 50)))
    assert wal.state(1).last_index() == 100
    wal.close()
    clean(str(tmp_path))
    wal = WriteAheadLog.open(str(tmp_path))
    assert (wal.state(1).last_index(), wal.state(1).hard_state) == (100, HardState(2, 1, 50))
    wal.close()


def test_a_crash_while_full_replays_only_what_was_written(tmp_path: Path) -> None:
    disk = FullableDisk()
    wal = WriteAheadLog.open(str(tmp_path), files=disk)
    wal.write(batch(1, 1, 3))
    disk.full = True
    with pytest.raises(WalDiskFullError):
        wal.write(batch(1, 4, 9))
    wal.close()  # the process goes away while the disk is full
    clean(str(tmp_path))
    wal = WriteAheadLog.open(str(tmp_path))
    assert wal.state(1).last_index() == 3
    wal.close()


def test_an_error_from_fsync_is_a_failed_disk_even_enospc(tmp_path: Path) -> None:
    """ENOSPC from fsync (thin provisioning, NFS) says written pages were lost: fail for good."""
    disk = FullableDisk()
    wal = WriteAheadLog.open(str(tmp_path), files=disk)
    wal.write(batch(1, 1, 3))
    disk.fsync_errno = errno.ENOSPC
    with pytest.raises(WalSyncError):
        wal.write(batch(1, 4, 6))
    assert wal.failed
    disk.fsync_errno = 0
    with pytest.raises(WalSyncError):  # never retried
        wal.write(batch(1, 4, 6))
    wal.close()


def test_a_new_segment_that_finds_the_disk_full(tmp_path: Path) -> None:
    """Creating the file fails: nothing changes. Its checkpoint fails: the empty segment stays
    current and gets its checkpoint at the next write (and a crash then is harmless too)."""
    disk = FullableDisk()
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=600, files=disk)
    wal.write(batch(1, 1, 10, size=40))
    assert len(sizes(wal.directory)) == 1
    disk.full_for_create = True
    with pytest.raises(WalDiskFullError, match="creating"):
        wal.write(batch(1, 11, 20, size=40))
    assert len(sizes(wal.directory)) == 1 and not wal.failed
    disk.full_for_create = False
    disk.full = True
    with pytest.raises(WalDiskFullError):
        wal.write(batch(1, 11, 20, size=40))
    assert sizes(wal.directory)[-1] == 0 and not wal.failed
    disk.full = False
    wal.write(batch(1, 11, 20, size=40))
    wal.close()
    clean(str(tmp_path))
    wal = WriteAheadLog.open(str(tmp_path), segment_bytes=600)
    assert wal.state(1).last_index() == 20
    wal.close()


def test_the_fault_hook_writes_half_and_reports_enospc(tmp_path: Path) -> None:
    """``WalFaults.append_enospc`` (the nemesis's and the fault file's) behaves as a full disk."""
    wal = WriteAheadLog.open(str(tmp_path))
    wal.write(batch(1, 1, 3))
    before = sizes(wal.directory)
    wal.faults.append_enospc = True
    with pytest.raises(WalDiskFullError):
        wal.write(batch(1, 4, 6))
    assert sizes(wal.directory) == before and not wal.failed
    wal.faults.append_enospc = False
    wal.write(batch(1, 4, 6))
    wal.close()
    clean(str(tmp_path))


def test_other_write_errors_still_fail_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog.open(str(tmp_path))
    wal.write(batch(1, 1, 3))

    def broken(fd: int, data: bytes) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("node.fs.os_files.os.write", broken)
    with pytest.raises(WalSyncError):
        wal.write(batch(1, 4, 6))
    assert wal.failed
    wal.close()


def test_the_kernels_enospc_on_a_small_tmpfs(tmp_path: Path) -> None:
    """A real full file system: writes fail with WalDiskFullError until a file is deleted, then
    the same WAL takes them again, and a reopen replays exactly what was written."""
    with small_tmpfs(str(tmp_path / "fs"), 1 << 20) as fs:
        wal = WriteAheadLog.open(os.path.join(fs, "wal"), files=OS_FILES)
        wal.write(batch(1, 1, 3))
        filler = fill(fs, 16 << 10)
        written, full_at = 3, None
        for _ in range(200):
            try:
                wal.write(batch(1, written + 1, written + 10, size=1000))
                written += 10
            except WalDiskFullError:
                full_at = written
                break
        assert full_at is not None, "the tmpfs never filled up"
        assert not wal.failed and wal.state(1).last_index() == written
        os.unlink(filler)
        wal.write(batch(1, written + 1, written + 10, size=1000))
        wal.close()
        clean(os.path.join(fs, "wal"))
        wal = WriteAheadLog.open(os.path.join(fs, "wal"))
        assert wal.state(1).last_index() == written + 10
        wal.close()

