"""The simulator's clock: a priority queue of (time, seq, kind, args).

``seq`` is a global insertion counter, so two events at the same simulated
time run in the order they were scheduled and the heap never compares the
payloads.  Time is an integer count of abstract units (see ``cluster.TICK``).
"""

from __future__ import annotations

import heapq


class EventQueue:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple] = []
        self._seq = 0

    def push(self, time: int, kind: str, *args) -> None:
        heapq.heappush(self._heap, (time, self._seq, kind, args))
        self._seq += 1

    def pop(self) -> tuple:
        return heapq.heappop(self._heap)

    def peek_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
