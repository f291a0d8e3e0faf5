"""Client answers written at the end of a loop turn, or at once when a round is about to block.

A client connection with answers ready does not write them at once: the answers of one loop
turn leave together, in as few frames as their size allows (node.kv_wire). It asks an
:class:`AnswerFlush` for a write, which runs every asked-for write once, later in the same
turn. A round that answers writes and then blocks the loop in its WAL fsync (a round on the
event loop that applies entries already on disk before writing the round's own, D31) calls
:meth:`AnswerFlush.now` between the two, so the answers do not wait for that fsync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class AnswerFlush:
    """The connections' answer writes asked for in this loop turn (event loop only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asked: list[Callable[[], None]] = []

    def ask(self, write: Callable[[], None]) -> None:
        """Have ``write`` called once, later in this loop turn or at the next :meth:`now`
        (the caller asks again only after it ran)."""
        if not self._asked:
            self._loop.call_soon(self.now)
        self._asked.append(write)

    def now(self) -> None:
        """Run every write asked for so far."""
        asked, self._asked = self._asked, []
        for write in asked:
            write()
