"""The file interface of everything a node must find again after a crash (except LMDB).

The WAL and the snapshot spool do all their file I/O through a :class:`Files`, so that what a
power cut does to it can be modelled: bytes written but not yet synced may be lost, or kept
in part (a torn write), and a file created, or deleted, is only certain to stay so once its
directory is synced. The interface is exactly what the two users need, and says for each
call what it promises about durability, because that is the part a test double must get
right:

* :meth:`AppendFile.append` and :meth:`AppendFile.truncate` change what reads see at once,
  and what the disk holds only at the next :meth:`AppendFile.sync` (``fdatasync``);
* :meth:`Files.create`, :meth:`Files.create_temp` and :meth:`Files.unlink` change the
  directory at once, and durably only at the next :meth:`Files.sync_directory` of it;
* :meth:`Files.makedirs` is durable when it returns: a node's directories are created once
  and must outlive any crash after that.

The real implementation is :mod:`node.fs.os_files`; the WAL's use of it is in
:mod:`node.wal.wal`. See docs/decisions.md D2.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class AppendFile(Protocol):
    """An open file that grows at its end: a WAL segment or a snapshot being spooled."""

    @property
    def path(self) -> str: ...

    def append(self, data: bytes) -> None:
        """Write all of ``data`` at the end of the file (durable only after :meth:`sync`)."""
        ...

    def sync(self) -> None:
        """Make every byte appended so far, and the file's length, durable (``fdatasync``).

        Raises OSError if the disk failed; the caller must then assume any unsynced byte of
        the file may or may not be on the disk, for good (see node.wal.errors.WalSyncError).
        """
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (durable only after :meth:`sync`)."""
        ...

    def close(self) -> None:
        """Release the handle. It makes nothing durable: what was not synced stays at risk."""
        ...


class FileLock(Protocol):
    """An exclusive lock on a directory, held until :meth:`release`."""

    def release(self) -> None: ...


class Files(Protocol):
    """The file system as the WAL and the snapshot spool use it; paths are absolute."""

    def makedirs(self, path: str) -> None:
        """Create ``path`` and any missing parent, each made durable in its own parent."""
        ...

    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on the file ``path`` (created if missing) without waiting.

        Raises BlockingIOError if another holder has it.
        """
        ...

    def list_dir(self, path: str) -> list[str]:
        """The names in directory ``path``, in no particular order."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """The file's bytes as reads see them now, synced or not."""
        ...

    def create(self, path: str) -> AppendFile:
        """A new empty file (FileExistsError if there is one); its name is durable only after
        :meth:`sync_directory` of its directory."""
        ...

    def create_temp(self, directory: str, prefix: str, suffix: str) -> AppendFile:
        """A new empty file with a unique name ``prefix...suffix`` in ``directory``."""
        ...

    def open_append(self, path: str) -> AppendFile:
        """An existing file, to append to or truncate."""
        ...

    def unlink(self, path: str) -> None:
        """Delete the file (FileNotFoundError if absent); durable only after :meth:`sync_directory`."""
        ...

    def sync_directory(self, path: str) -> None:
        """Make every creation and deletion of a name in directory ``path`` durable."""
        ...
