"""A pre-pass before the search: observations that no operation could have written.

A completed get that read ``x``, or a completed cas that found ``x``, needs a write of ``x``
linearized before it and not overwritten since. This pass looks for an observation with no
such write possible, judging by real time alone, so it never needs the search:

* a *writer* of ``x`` is a put of ``x`` or a cas to ``x`` that did not fail (``ok``, or
  ``info``: it may have happened), or, for ``None``, the register's initial state (a writer
  that completed before everything);
* a writer ``W`` cannot explain an observation ``R`` when it was invoked after ``R``
  completed, or when some definite write ``D`` (a ``put`` or ``cas`` that completed ``ok``)
  lies strictly between them in real time (``W`` completed before ``D`` was invoked, ``D``
  completed before ``R`` was invoked): ``D`` surely overwrote ``W``'s value first. (If ``D``
  wrote ``x`` too, ``D`` is a writer of its own.) An ``info`` writer never completed, so
  nothing surely follows it.

An observation that no writer can explain makes the key not linearizable, whatever the other
operations did: the checker reports it at once, with the observation, the value's writers
and the write that overwrote them. This is sound, never complete: a history that passes may
still fail the search. The cost is one sort and one binary search per operation,
``O(n log n)`` for ``n`` operations, whatever the history's concurrency or how many of its
operations have unknown outcomes, so a history that observes a value it cannot have (the
typical bug: a read of a value never written, or of one long overwritten) is rejected before
the search could explode on its unknown writes.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from tools.checker.history import Operation


@dataclass(frozen=True, slots=True)
class Impossible:
    """An observation of ``value`` that no operation could have written (see the module
    docstring). ``writers``: every operation that writes ``value`` (empty: none does);
    ``overwrite``: a definite write that came after every writer invoked in time (None
    when there is no writer at all, or every one was invoked after ``observer`` completed)."""

    observer: Operation
    value: object
    writers: tuple[Operation, ...]
    overwrite: Operation | None

    def reason(self) -> str:
        """Why, in one line (``describe`` prints it)."""
        what, noun = ("read", "read") if self.observer.f == "get" else ("expected", "cas")
        if not self.writers and self.value is not None:
            return f"{what} {self.value!r}, which no operation writes"
        if self.overwrite is None:
            return f"{what} {self.value!r}, which only operations invoked after the {noun} completed write"
        initial = " (the initial state included)" if self.value is None else ""
        return (f"{what} {self.value!r}, though every write of it{initial} came before "
                f"{self.overwrite}, which completed before the {noun} began")


def observed(op: Operation) -> object:
    """The value a completed get read, or a completed cas found; None for a put."""
    return op.output if op.f == "get" else op.cas[0] if op.f == "cas" else None


def written(op: Operation) -> object:
    """The value a put or cas writes (if it takes effect); None for a get."""
    return op.input if op.f == "put" else op.cas[1] if op.f == "cas" else None


def impossible_observation(operations: list[Operation]) -> Impossible | None:
    """The first-invoked impossible observation among one key's ``operations``, or None.

    ``operations`` are :func:`~tools.checker.history.pair_ops`'s, all of one key.
    """
    # The definite writes, by completion: for an observation invoked at t, the latest-invoked
    # of those that completed before t is the one most likely to lie after a writer.
    definite = sorted(
        (op for op in operations if op.f != "get" and op.outcome == "ok"), key=lambda op: op.end or 0
    )
    ends = [op.end or 0 for op in definite]
    latest: list[int] = []  # latest[i]: index into definite of the latest-invoked among definite[:i + 1]
    for i, op in enumerate(definite):
        latest.append(i if not latest or op.start > definite[latest[-1]].start else latest[-1])

    # Per value, its writers by invoke time and the latest completion among each prefix
    # (an info writer completes at +infinity). None's first writer is the initial state.
    writers: dict[object, list[Operation]] = {}
    for op in sorted(operations, key=lambda op: (op.start, op.index)):
        if op.f != "get" and op.outcome != "fail":
            writers.setdefault(written(op), []).append(op)
    starts: dict[object, list[float]] = {}
    reach: dict[object, list[float]] = {}  # prefix maximum of the writers' completion times
    for value, ops in writers.items():
        starts[value] = [op.start for op in ops]
        reach[value], best = [], -math.inf
        for op in ops:
            best = max(best, math.inf if op.outcome == "info" else op.end or 0)
            reach[value].append(best)

    for op in sorted(operations, key=lambda op: (op.start, op.index)):
        if op.outcome != "ok" or op.f == "put":
            continue
        value, end = observed(op), op.end
        assert end is not None  # ok operations completed
        k = bisect.bisect_left(ends, op.start)  # definite[:k] completed before op was invoked
        overwrite = definite[latest[k - 1]] if k else None
        after = -math.inf if overwrite is None else overwrite.start  # a writer must complete no earlier
        n = bisect.bisect_right(starts.get(value, []), end)  # writers invoked by op's completion
        alive = n and reach[value][n - 1] >= after
        if not alive and value is None:
            alive = overwrite is None  # the initial state, unless a definite write surely followed
        if not alive:
            return Impossible(op, value, tuple(writers.get(value, ())), overwrite if n or value is None else None)
    return None
