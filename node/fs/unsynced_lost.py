"""TESTING ONLY: a file system on which SIGKILL loses what was not synced, as a power cut would.

A process killed with SIGKILL loses nothing it wrote: the kernel keeps its page cache. So a
WAL that never called fdatasync would pass every process-killing test. :class:`UnsyncedIsLost`
(``tessera node --testing-unsynced-is-lost``) keeps the bytes appended to a file in this
process's memory until the file is synced, and only then writes them to the kernel and calls
``fdatasync``: killing the process now drops exactly what a power cut may drop. Reads see the
held bytes, as they would see the page cache.

What it does not model: torn writes (a SIGKILL drops all of a file's unsynced bytes, never a
prefix of them) and directory entries (a file is created and deleted in the kernel at once,
so a new segment survives a SIGKILL even without the directory fsync). The unit tests' disk
(``tests/support/power_cut.py``) models both; this one puts real clusters of real processes
through power cuts.

``fsync_is_noop`` (``--testing-fsync-is-noop``) makes ``sync`` do nothing, so held bytes never
reach the kernel: the WAL without its fdatasync. The crash tests must then lose acknowledged
writes, which proves they can tell (tests/process/test_power_cut.py).

Loaded only when one of those flags is given (``tests/process/test_cli.py`` checks that a
production start never imports it).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from .api import AppendFile
from .os_files import OsFiles


class HeldFile:
    """A real file whose appends wait in memory until :meth:`sync`."""

    __slots__ = ("_files", "_inner", "path")

    def __init__(self, files: UnsyncedIsLost, inner: AppendFile) -> None:
        self._files = files
        self._inner = inner
        self.path = inner.path

    def append(self, data: bytes) -> None:
        self._files.held.setdefault(self.path, bytearray()).extend(data)

    def sync(self) -> None:
        if self._files.fsync_is_noop:
            return
        held = self._files.held.pop(self.path, None)
        if held:
            self._inner.append(bytes(held))
        self._inner.sync()

    def truncate(self, size: int) -> None:
        on_disk = os.stat(self.path).st_size
        held = self._files.held.get(self.path)
        if size >= on_disk:
            if held is not None:
                del held[size - on_disk :]
        else:
            self._files.held.pop(self.path, None)
            self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()  # held bytes stay held: closing makes nothing durable


class UnsyncedIsLost(OsFiles):
    """The real file system, except that unsynced appends live in this process until synced.

    ``held`` maps a path to its bytes appended and not yet synced. The WAL's I/O thread and the
    snapshot spool on the event loop use different paths, and each dict operation is atomic
    under the GIL, so no lock is needed.
    """

    def __init__(self, *, fsync_is_noop: bool = False) -> None:
        self.fsync_is_noop = fsync_is_noop
        self.held: dict[str, bytearray] = {}

    def open_read(self, path: str) -> BinaryIO:
        with open(path, "rb") as f:
            data = f.read()
        return io.BytesIO(data + bytes(self.held.get(path, b"")))

    def create(self, path: str) -> AppendFile:
        return HeldFile(self, super().create(path))

    def create_temp(self, directory: str, prefix: str, suffix: str) -> AppendFile:
        return HeldFile(self, super().create_temp(directory, prefix, suffix))

    def open_append(self, path: str) -> AppendFile:
        return HeldFile(self, super().open_append(path))

    def unlink(self, path: str) -> None:
        os.unlink(path)
        self.held.pop(path, None)
