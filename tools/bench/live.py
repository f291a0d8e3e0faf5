"""What the bench shows while it runs: the preload's progress bar and a live status line.

Both go to stderr and only when stderr is a terminal: piped or captured output (CI, tests,
``> results.txt``) gets the final report and nothing else, with no control sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text


def console() -> Console:
    return Console(stderr=True)


@contextmanager
def preload_bar(keys: int, con: Console | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar over the ``keys`` preload puts; yields the function that advances it."""
    con = con or console()
    if not con.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("loading keys"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=con, transient=True,
    ) as progress:
        task = progress.add_task("load", total=keys)
        yield lambda n: progress.advance(task, n)


class StatusLine:
    """One line, refreshed in place: elapsed time, throughput, p99 so far, errors so far."""

    def __init__(self, duration: float, con: Console | None = None) -> None:
        self._con = con or console()
        self._duration = duration
        self._live: Live | None = None

    def __enter__(self) -> StatusLine:
        if self._con.is_terminal:
            self._live = Live(Text("starting..."), console=self._con, transient=True, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    @property
    def active(self) -> bool:
        """Whether anything is shown (a caller can skip computing what would not be)."""
        return self._live is not None

    def show(self, elapsed: float, ops: int, errors: int, p99_ms: float) -> None:
        if self._live is None:
            return
        if elapsed < 0:
            self._live.update(Text(f"warming up ({-elapsed:.1f} s)"))
            return
        rate = ops / elapsed if elapsed > 0 else 0.0
        self._live.update(Text(
            f"{min(elapsed, self._duration):5.1f}/{self._duration:g} s  {rate:,.0f} ops/s  "
            f"p99 {p99_ms:.2f} ms  errors {errors}"
        ))
