"""The node's one disk thread: the event loop hands it a function, and awaits its result.

Work on the thread may ask for a call of its own a little later (:meth:`IoThread.later`): the
thread makes it when nothing else is queued by then, or between two items once it is due, so
an apply transaction the thread holds open is committed on time however busy the loop is (D27).

Why not ``loop.run_in_executor(ThreadPoolExecutor(1), ...)``: every Raft round crosses to the
disk thread and back, and under load a profile of a node put about a tenth of the time it held
the GIL in ``ThreadPoolExecutor.submit`` and the concurrent-to-asyncio future chain (two locks,
a semaphore, a second future, callbacks to copy its state). Here a hand-off is one
``SimpleQueue.put`` (C) and the way back one ``call_soon_threadsafe`` that settles the
awaited future. Work runs in submission order, one item at a time, as rounds need.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("tessera.io")


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class IoThread:
    """One worker thread, FIFO; ``run`` must be called on the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._due: tuple[float, Callable[[], object]] | None = None  # (monotonic time, call): see later
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Call ``fn(*args)`` on the thread; the future settles with its result or exception.
        Cancelling the future does not stop a call already running."""
        if self._closed:
            raise RuntimeError("the I/O thread is shut down")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fut, fn, args))
        return fut

    def later(self, fn: Callable[[], object], delay: float) -> None:
        """On the thread only: call ``fn()`` on the thread ``delay`` seconds from now, unless a
        call is already due (the earlier one stands). Its exceptions are logged and dropped."""
        if self._due is None:
            self._due = (time.monotonic() + delay, fn)

    def _call_due(self) -> None:
        due, self._due = self._due, None
        if due is not None:
            try:
                due[1]()
            except Exception:
                log.exception("a deferred call on the disk thread failed")

    def _main(self) -> None:
        call_soon = self._loop.call_soon_threadsafe
        get = self._queue.get
        while True:
            due = self._due
            if due is None:
                item = get()
            else:
                wait = due[0] - time.monotonic()
                try:
                    item = get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    self._call_due()
                    continue
                if wait <= 0:  # due: before the item, which waited no longer than it
                    self._call_due()
            if item is None:
                self._call_due()  # shutting down: what was deferred is done now
                return
            fut, fn, args = item
            try:
                value = fn(*args)
            except BaseException as exc:
                try:
                    call_soon(_settle, fut, False, exc)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return
                continue
            try:
                call_soon(_settle, fut, True, value)
            except RuntimeError:
                return

    def shutdown(self) -> None:
        """Finish what was handed over, then stop the thread (idempotent; blocks)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()
