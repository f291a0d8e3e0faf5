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
