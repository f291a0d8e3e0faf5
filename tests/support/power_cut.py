"""A simulated disk for unit tests: what a power cut may do to what was not synced.

:class:`PowerCutDisk` implements :class:`node.fs.api.Files` in memory, with POSIX's promises
and nothing more:

* **Bytes.** An append or a truncate changes a file's *cache* (what reads see); ``sync`` copies
  the cache to the file's *disk*. At a power cut a file whose cache extends its disk keeps the
  disk plus, chosen at random, none of the unsynced bytes, all of them, a prefix of them (a
  torn write), or a prefix followed by zeros up to the cached length (the length reached the
  disk, the data did not: what XFS, or ext4 with ``data=writeback``, may show). A file
  truncated since its last sync comes back at either length.
* **Names.** ``create``, ``create_temp``, ``unlink`` and ``makedirs`` change a directory's
  cached names; ``sync_directory`` makes them durable. At a power cut a directory keeps its
  durable names plus a prefix of the changes since, chosen at random (file systems journal
  metadata in order): a file created and not synced in its directory may vanish with its
  data, one deleted may come back, and a deletion may survive while unsynced data it relied
  on does not.
* **The process.** A power cut also ends the process: every handle and lock is gone, and an
  old handle's calls fail (``close`` does nothing). :meth:`PowerCutDisk.kill` ends the process
  *without* a power cut, as SIGKILL does: handles and locks go, the cache stays.

A trip wire cuts the power in the middle of the code under test: :meth:`PowerCutDisk.cut_after`
makes the n-th mutating call from now (append, sync, truncate, create, create_temp, unlink,
sync_directory, makedirs, lock) cut the power; an append cut this way first puts a random
prefix of its bytes in the cache, and the call raises :class:`PowerCut`.

Two switches put in the bugs the crash tests must catch: ``sync_is_noop`` (``sync`` does
nothing: the WAL without its fdatasync) and ``directory_sync_is_noop``.

Every choice comes from ``random.Random(seed)``: the same seed and the same calls give the
same disk.
"""

from __future__ import annotations

import errno
import io
import os
import random
from enum import Enum
from typing import BinaryIO


class PowerCut(BaseException):
    """The power failed in the middle of this call. Nothing may handle it, as nothing runs
    after a power cut: only the test, which then opens the disk again."""


class Keep(Enum):
    """What a power cut keeps of what was not synced, when a test wants to choose."""

    NOTHING = "nothing"
    EVERYTHING = "everything"
    HALF = "half"
    """Of bytes, the first half of each file's unsynced bytes (a torn write); of names, the
    first half of each directory's unsynced changes."""


class _Inode:
    __slots__ = ("cache", "disk")

    def __init__(self) -> None:
        self.cache = bytearray()  # what reads see
        self.disk = b""  # what survives a power cut for sure


class _Dir:
    __slots__ = ("changes", "durable", "names")

    def __init__(self) -> None:
        self.names: dict[str, _Inode | _Dir] = {}  # what reads see
        self.durable: dict[str, _Inode | _Dir] = {}  # what survives a power cut for sure
        self.changes: list[tuple[str, _Inode | _Dir | None]] = []  # since the last sync; None: deleted


class _Handle:
    """An open file of :class:`PowerCutDisk` (an :class:`node.fs.api.AppendFile`)."""

    __slots__ = ("_disk", "_generation", "_inode", "path")

    def __init__(self, disk: PowerCutDisk, inode: _Inode, path: str) -> None:
        self._disk = disk
        self._inode = inode
        self._generation = disk.generation
        self.path = path

    def _live(self) -> _Inode:
        if self._generation != self._disk.generation:
            raise OSError(errno.EBADF, f"{self.path}: the process that opened it is gone")
        return self._inode

    def append(self, data: bytes) -> None:
        inode = self._live()
        if self._disk._trip("append"):
            inode.cache += data[: self._disk.rng.randint(0, len(data))]
            self._disk._cut_now()
        inode.cache += data

    def sync(self) -> None:
        inode = self._live()
        self._disk._trip_and_cut("sync")
        if not self._disk.sync_is_noop:
            inode.disk = bytes(inode.cache)

    def truncate(self, size: int) -> None:
        inode = self._live()
        self._disk._trip_and_cut("truncate")
        del inode.cache[size:]

    def close(self) -> None:
        pass  # closing makes nothing durable; a dead process's handle closes nothing


class _Lock:
    __slots__ = ("_disk", "_generation", "_inode")

    def __init__(self, disk: PowerCutDisk, inode: _Inode) -> None:
        self._disk, self._inode, self._generation = disk, inode, disk.generation

    def release(self) -> None:
        if self._generation == self._disk.generation:
            self._disk._locked.discard(id(self._inode))


class PowerCutDisk:
    """A whole simulated disk (a :class:`node.fs.api.Files`); paths are absolute."""

    def __init__(self, seed: int, *, sync_is_noop: bool = False, directory_sync_is_noop: bool = False) -> None:
        self.rng = random.Random(seed)
        self.sync_is_noop = sync_is_noop
        self.directory_sync_is_noop = directory_sync_is_noop
        self.generation = 0  # of the process using the disk: bumped by a power cut or kill()
        self.power_cuts = 0
        self.tripped_in: list[str] = []  # the calls the trip wire cut the power in, in order
        self._root = _Dir()
        self._locked: set[int] = set()
        self._countdown: int | None = None
        self._temp_names = 0

    # -- faults -----------------------------------------------------------------------

    def cut_after(self, calls: int) -> None:
        """Cut the power during the ``calls``-th mutating call from now (1: the next one)."""
        if calls < 1:
            raise ValueError("calls must be at least 1")
        self._countdown = calls

    def disarm(self) -> None:
        self._countdown = None

    def kill(self) -> None:
        """End the process using the disk (SIGKILL): handles and locks go, the cache stays."""
        self.generation += 1
        self._locked.clear()
        self._countdown = None

    def power_cut(self, *, data: Keep | None = None, names: Keep | None = None) -> None:
        """Lose power now: every file and directory settles to something the disk may hold
        (chosen at random unless ``data`` / ``names`` say what to keep), and the process dies."""
        self.kill()
        self.power_cuts += 1
        self._settle_dir(self._root, data, names)

    def _trip(self, call: str) -> bool:
        """Count a mutating call; True if it is the one that cuts the power."""
        if self._countdown is None:
            return False
        self._countdown -= 1
        if self._countdown:
            return False
        self.tripped_in.append(call)
        return True

    def _cut_now(self) -> None:
        self.power_cut()
        raise PowerCut(f"power cut #{self.power_cuts} in {self.tripped_in[-1]}")

    def _trip_and_cut(self, call: str) -> None:
        if self._trip(call):
            self._cut_now()

    def _settle_dir(self, d: _Dir, data: Keep | None, names: Keep | None) -> None:
        kept = self._prefix_length(len(d.changes), names)
        durable = dict(d.durable)
        for name, node in d.changes[:kept]:
            if node is None:
                durable.pop(name, None)
            else:
                durable[name] = node
        d.durable, d.names, d.changes = durable, dict(durable), []
        for node in durable.values():
            if isinstance(node, _Dir):
                self._settle_dir(node, data, names)
            else:
                self._settle_file(node, data)

    def _settle_file(self, f: _Inode, data: Keep | None) -> None:
        disk, cache = f.disk, f.cache
        if cache[: len(disk)] == disk:  # only appended to since the last sync
            extra = bytes(cache[len(disk) :])
            kept = self._prefix_length(len(extra), data)
            zeros = data is None and kept < len(extra) and self.rng.random() < 0.25
            f.disk = disk + extra[:kept] + (bytes(len(extra) - kept) if zeros else b"")
        elif data is not Keep.EVERYTHING:  # truncated: either length may be on the disk
            f.disk = disk if data is not None else self.rng.choice([disk, bytes(cache)])
        else:
            f.disk = bytes(cache)
        f.cache = bytearray(f.disk)

    def _prefix_length(self, n: int, keep: Keep | None) -> int:
        if keep is Keep.NOTHING:
            return 0
        if keep is Keep.EVERYTHING:
            return n
        if keep is Keep.HALF:
            return n // 2
        r = self.rng.random()  # the extremes are the interesting cases: a third each
        return 0 if r < 1 / 3 else n if r < 2 / 3 else self.rng.randint(0, n)

    # -- Files ------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        d = self._root
        for part in _parts(path):
            node = d.names.get(part)
            if node is None:
                self._trip_and_cut("makedirs")
                node = _Dir()
                d.names[part] = node
                d.changes.append((part, node))
                self._sync_dir(d)
            elif not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            d = node

    def lock(self, path: str) -> _Lock:
        d, name = self._parent(path)
        inode = d.names.get(name)
        if inode is None:
            self._trip_and_cut("lock")
            inode = d.names[name] = _Inode()
            d.changes.append((name, inode))
        if not isinstance(inode, _Inode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if id(inode) in self._locked:
            raise BlockingIOError(errno.EWOULDBLOCK, "locked", path)
        self._locked.add(id(inode))
        return _Lock(self, inode)

    def list_dir(self, path: str) -> list[str]:
        return list(self._dir(path).names)

    def open_read(self, path: str) -> BinaryIO:
        return io.BytesIO(bytes(self._file(path).cache))

    def create(self, path: str) -> _Handle:
        d, name = self._parent(path)
        if name in d.names:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        self._trip_and_cut("create")
        inode = d.names[name] = _Inode()
        d.changes.append((name, inode))
        return _Handle(self, inode, path)

    def create_temp(self, directory: str, prefix: str, suffix: str) -> _Handle:
        self._temp_names += 1
        return self.create(os.path.join(directory, f"{prefix}{self._temp_names}{suffix}"))

    def open_append(self, path: str) -> _Handle:
        return _Handle(self, self._file(path), path)

    def unlink(self, path: str) -> None:
        d, name = self._parent(path)
        if not isinstance(d.names.get(name), _Inode):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self._trip_and_cut("unlink")
        del d.names[name]
        d.changes.append((name, None))

    def sync_directory(self, path: str) -> None:
        d = self._dir(path)
        self._trip_and_cut("sync_directory")
        self._sync_dir(d)

    # -- internals -----------------------------------------------------------------------

    def _sync_dir(self, d: _Dir) -> None:
        if not self.directory_sync_is_noop:
            d.durable = dict(d.names)
            d.changes = []

    def _dir(self, path: str) -> _Dir:
        d = self._root
        for part in _parts(path):
            node = d.names.get(part)
            if not isinstance(node, _Dir):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            d = node
        return d

    def _parent(self, path: str) -> tuple[_Dir, str]:
        head, name = os.path.split(os.path.normpath(path))
        return self._dir(head), name

    def _file(self, path: str) -> _Inode:
        d, name = self._parent(path)
        node = d.names.get(name)
        if not isinstance(node, _Inode):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return node


def _parts(path: str) -> list[str]:
    if not os.path.isabs(path):
        raise ValueError(f"PowerCutDisk paths are absolute, not {path!r}")
    return [p for p in os.path.normpath(path).split("/") if p]
