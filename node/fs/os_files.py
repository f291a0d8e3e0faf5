"""The real file system behind :class:`~node.fs.api.Files`: plain ``os`` calls.

``sync`` is ``fdatasync``: the data and the file's length, not its timestamps. Directories are
synced with ``fsync`` on a descriptor of the directory, the only way POSIX offers to make a
new or deleted name durable. Every descriptor is opened with ``O_CLOEXEC`` so the node's child
processes (none today) could never hold a segment open.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from typing import BinaryIO

from .api import AppendFile


class OsFile:
    """A file descriptor opened for appending (``O_APPEND`` except for temp files, which are
    only ever appended to by their one writer)."""

    __slots__ = ("_fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path

    def append(self, data: bytes) -> None:
        n = os.write(self._fd, data)
        if n != len(data):  # a regular file writes short only when the disk is full
            self._append_rest(memoryview(data)[n:])

    def _append_rest(self, view: memoryview) -> None:
        while view:
            n = os.write(self._fd, view)
            if n <= 0:  # pragma: no cover - regular files report errors, not writes of 0
                raise OSError(errno.EIO, "write wrote nothing")
            view = view[n:]

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsLock:
    """An ``flock`` held on an open descriptor; closing the descriptor releases it."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFiles:
    """:class:`~node.fs.api.Files` on the real file system."""

    def makedirs(self, path: str) -> None:
        missing = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise
            self.sync_directory(os.path.dirname(d))  # the new name must survive a crash

    def lock(self, path: str) -> OsLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return OsLock(fd)

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)

    def open_read(self, path: str) -> BinaryIO:
        return open(path, "rb")  # the caller closes it

    def create(self, path: str) -> AppendFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        return OsFile(fd, path)

    def create_temp(self, directory: str, prefix: str, suffix: str) -> AppendFile:
        fd, path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)  # O_EXCL, O_CLOEXEC
        return OsFile(fd, path)

    def open_append(self, path: str) -> AppendFile:
        return OsFile(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), path)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def sync_directory(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS_FILES = OsFiles()
"""The one real file system; stateless, so shared."""
