"""A small real file system, for tests that need the kernel's own ENOSPC.

``small_tmpfs(path, size)`` mounts a tmpfs of ``size`` bytes at ``path`` for the ``with`` block
and unmounts it afterwards (lazily, so a process still holding a file in it cannot keep it
mounted). Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped, saying why.
Nothing else gives a real ENOSPC honestly: RLIMIT_FSIZE gives EFBIG (and SIGXFSZ), a fault hook
is not the kernel. ``fill(path, leave)`` writes a filler file until about ``leave`` bytes are
free; deleting it gives the space back; ``grow(path, size)`` remounts it bigger.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

_MNT_DETACH = 2
_MS_REMOUNT = 32


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextmanager
def small_tmpfs(path: str, size: int) -> Iterator[str]:
    """mount(2) and umount2(2) called directly (no child process: the unit tier may use it)."""
    if not can_mount():
        pytest.skip("needs root to mount a small tmpfs (a real ENOSPC from the kernel)")
    os.makedirs(path, exist_ok=True)
    libc = _libc()
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, f"size={size}".encode()) != 0:
        err = ctypes.get_errno()
        pytest.skip(f"cannot mount a tmpfs here: {os.strerror(err)}")
    try:
        yield path
    finally:
        libc.umount2(path.encode(), _MNT_DETACH)


def grow(path: str, size: int) -> None:
    """Remount the tmpfs at ``path`` with room for ``size`` bytes (what an operator's fix does)."""
    if _libc().mount(b"tmpfs", path.encode(), b"tmpfs", _MS_REMOUNT, f"size={size}".encode()) != 0:
        raise OSError(ctypes.get_errno(), f"remounting {path}")


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: str, leave: int, name: str = "filler") -> str:
    """Write ``path/name`` until at most ``leave`` bytes are free; returns the filler's path."""
    filler = os.path.join(path, name)
    chunk = b"\0" * (64 << 10)
    with open(filler, "ab") as f:
        while free_bytes(path) > leave:
            want = min(len(chunk), free_bytes(path) - leave)
            try:
                f.write(chunk[: max(want, 4096)])
                f.flush()
            except OSError:
                break
    return filler
