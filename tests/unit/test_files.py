"""The file systems behind node.fs.api.Files: the real one, and the testing one that holds
unsynced bytes in memory. The power-cut tests trust both to keep the interface's promises;
these tests check that they do, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.fs import OS_FILES
from node.fs.unsynced_lost import UnsyncedIsLost


def test_sync_is_fdatasync_and_directories_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What "durable" means on the real file system: the calls are really made, on the right
    descriptors (the one written to, or one of the directory)."""
    calls: list[tuple[str, str]] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        calls.append(("fdatasync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    OS_FILES.makedirs(str(tmp_path / "a" / "b"))
    assert calls == [("fsync", str(tmp_path)), ("fsync", str(tmp_path / "a"))]  # each new name's parent
    calls.clear()
    OS_FILES.makedirs(str(tmp_path / "a" / "b"))  # nothing new, nothing to sync
    f = OS_FILES.create(str(tmp_path / "a" / "b" / "seg"))
    f.append(b"hello")
    f.sync()
    OS_FILES.sync_directory(str(tmp_path / "a" / "b"))
    f.close()
    assert calls == [("fdatasync", str(tmp_path / "a" / "b" / "seg")), ("fsync", str(tmp_path / "a" / "b"))]


def test_the_real_files_do_what_the_interface_says(tmp_path: Path) -> None:
    path = str(tmp_path / "seg")
    f = OS_FILES.create(path)
    with pytest.raises(FileExistsError):
        OS_FILES.create(path)
    f.append(b"abc")
    f.append(b"defg")
    f.truncate(5)
    f.append(b"!")  # appends go to the end, after a truncate too
    f.close()
    with OS_FILES.open_read(path) as r:
        assert r.read() == b"abcde!"
    g = OS_FILES.open_append(path)
    g.append(b"?")
    g.close()
    t = OS_FILES.create_temp(str(tmp_path), "snap-", ".part")
    t.close()
    assert sorted(OS_FILES.list_dir(str(tmp_path))) == sorted(["seg", os.path.basename(t.path)])
    OS_FILES.unlink(t.path)
    with pytest.raises(FileNotFoundError):
        OS_FILES.unlink(t.path)
    with OS_FILES.open_read(path) as r:
        assert r.read() == b"abcde!?"
    lock = OS_FILES.lock(str(tmp_path / "LOCK"))
    with pytest.raises(BlockingIOError):
        OS_FILES.lock(str(tmp_path / "LOCK"))
    lock.release()
    OS_FILES.lock(str(tmp_path / "LOCK")).release()


def test_unsynced_bytes_live_in_the_process_until_synced(tmp_path: Path) -> None:
    path = str(tmp_path / "seg")
    files = UnsyncedIsLost()
    f = files.create(path)
    f.append(b"synced|")
    f.sync()
    f.append(b"held")
    f.close()  # closing makes nothing durable
    with files.open_read(path) as r:
        assert r.read() == b"synced|held"  # reads see them, as they see the page cache
    assert Path(path).read_bytes() == b"synced|"  # the kernel has not got them
    # A new process (what SIGKILL leaves): the held bytes are gone.
    after = UnsyncedIsLost()
    with after.open_read(path) as r:
        assert r.read() == b"synced|"
    g = after.open_append(path)
    g.append(b"0123456789")
    g.truncate(10)  # within what is held
    g.sync()
    assert Path(path).read_bytes() == b"synced|012"
    g.append(b"held again")
    g.truncate(3)  # below what is on the disk: the held bytes go too
    g.sync()
    assert Path(path).read_bytes() == b"syn"
    g.append(b"x")
    g.close()
    after.unlink(path)
    assert after.held == {}


def test_with_fsync_a_noop_nothing_held_reaches_the_kernel(tmp_path: Path) -> None:
    path = str(tmp_path / "seg")
    files = UnsyncedIsLost(fsync_is_noop=True)
    f = files.create(path)
    f.append(b"acknowledged?")
    f.sync()
    f.close()
    assert Path(path).read_bytes() == b""
