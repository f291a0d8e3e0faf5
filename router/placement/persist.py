"""Atomic, durable replacement of the placement file.

A crash at any point leaves either the old file or the new one, never a torn mix: write a
temporary file, fsync it, rename it over the target, fsync the directory (so the rename itself
survives a power cut).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

TABLE_FILE = "placement.json"
LOCK_FILE = "LOCK"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_if_exists(path: Path) -> bytes | None:
    """The file's bytes, or None on a fresh data dir. A leftover temporary file is an
    interrupted write whose rename never happened: the target is the truth, so it goes."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class DataDirLock:
    """An exclusive flock on DATA_DIR/LOCK: two routers on one data dir would overwrite each
    other's table. The kernel drops the lock when the process dies, even by SIGKILL."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self._path.parent} is in use by another router (locked {self._path})") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
