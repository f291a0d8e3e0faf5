"""Child-process hygiene shared by every launcher: no orphans, ever."""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_ENV = "TESSERA_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child started by :class:`Cluster`: exit when the launcher dies, even by SIGKILL.

    Called by the child itself at startup (``tools.cli.main``), not as a
    ``preexec_fn``: running Python between fork and exec in a threaded
    parent (gRPC, test runners) can crash the child.  Closing the race where
    the launcher died before this ran: compare the parent pid it passed.
    """
    expected = os.environ.get(PARENT_ENV)
    if not expected:
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(expected):
        os._exit(1)


def exec_with_parent(argv: list[str]) -> None:
    """Become ``argv`` (a program that is not ours, e.g. etcd) after :func:`die_with_parent`.

    The death signal survives ``execve`` (Linux clears it only for set-user-id programs), so a
    launcher runs ``python PATH/TO/tools/lifecycle.py PROGRAM ARGS...`` with ``PARENT_ENV`` set
    (by file, not ``-m``, so it does not matter which ``tools`` package the child's sys.path
    would find first; this file imports nothing of the project) and gets the same no-orphans
    guarantee for a child that cannot call us itself. The pid stays the same, so the launcher's
    Popen still signals and reaps the program.
    """
    die_with_parent()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        print("usage: python tools/lifecycle.py PROGRAM [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    exec_with_parent(sys.argv[1:])
