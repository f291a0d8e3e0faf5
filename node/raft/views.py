"""Read-only windows onto a replica's internals, for checkers and operators.

The core's own objects stay private to this package; what callers may look at
they see through these views, which expose reads and nothing that mutates.
"""

from __future__ import annotations

from .errors import CompactedError, UnavailableError
from .log import RaftLog
from .types import Entry


class LogView:
    """A replica's log as the core sees it: stable storage plus the unpersisted tail.

    Valid until the next input to the :class:`~node.raft.rawnode.RawNode` it came
    from; take a new one after stepping, ticking or advancing.
    """

    __slots__ = ("_log",)

    def __init__(self, log: RaftLog) -> None:
        self._log = log

    @property
    def committed(self) -> int:
        return self._log.committed

    @property
    def applied(self) -> int:
        return self._log.applied

    def first_index(self) -> int:
        return self._log.first_index()

    def last_index(self) -> int:
        return self._log.last_index()

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError / UnavailableError outside the log."""
        return self._log.term(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries in ``[lo, hi)``; raises CompactedError / UnavailableError outside the log."""
        return self._log.slice(lo, hi)

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index``, or None when compacted away or not there."""
        try:
            return self._log.slice(index, index + 1)[0]
        except (CompactedError, UnavailableError):
            return None
