"""Timestamped marks along a request's path, for the per-hop timeline (``tools/bench_timeline.py``).

Off unless the process starts with ``TESSERA_TRACE_DIR`` set: :func:`mark` is then a function
that does nothing (a call, tens of nanoseconds), and :data:`ON` lets a caller skip building a
label. On, every mark is a ``(time.perf_counter_ns(), name)`` pair kept in memory and appended
to ``$TESSERA_TRACE_DIR/<pid>.trace`` every 4,096 marks and at exit. ``perf_counter_ns`` is
``CLOCK_MONOTONIC`` on Linux, one clock for every process on the machine, so the marks of a
client, a leader and its followers line up into one timeline.

Marks are for measuring, not logging: a name says where on the path the process is
(``round.start``, ``kv.read``); the tool pairs them up. Where they are made is listed in
docs/benchmarks.md ("Where a write's time goes").
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable

ENV = "TESSERA_TRACE_DIR"
_FLUSH_EVERY = 4096

_dir = os.environ.get(ENV)
ON = bool(_dir)
_marks: list[tuple[int, str]] = []


def _flush() -> None:
    global _marks
    if not _marks:
        return
    marks, _marks = _marks, []
    with open(os.path.join(_dir or ".", f"{os.getpid()}.trace"), "a") as f:
        f.write("".join(f"{t} {name}\n" for t, name in marks))


def _mark_on(name: str) -> None:
    _marks.append((time.perf_counter_ns(), name))
    if len(_marks) >= _FLUSH_EVERY:
        _flush()


def _mark_off(name: str) -> None:
    pass


mark: Callable[[str], None] = _mark_on if ON else _mark_off
"""Note that this process reached ``name`` now (nothing unless tracing is on)."""

if ON:
    atexit.register(_flush)


def read_dir(directory: str) -> dict[int, list[tuple[int, str]]]:
    """Every process's marks in ``directory``: pid -> [(ns, name)], in time order."""
    out: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir(directory):
        if not name.endswith(".trace"):
            continue
        marks = []
        with open(os.path.join(directory, name)) as f:
            for line in f:
                t, _, label = line.rstrip("\n").partition(" ")
                marks.append((int(t), label))
        marks.sort()
        out[int(name[: -len(".trace")])] = marks
    return out
