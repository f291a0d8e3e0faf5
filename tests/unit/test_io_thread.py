"""node.io_thread: the disk thread's hand-off keeps order, carries results and errors back,
survives a cancelled waiter, and stops cleanly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from node.io_thread import IoThread


def test_calls_run_in_order_on_one_other_thread_and_return_their_results() -> None:
    async def main() -> None:
        io = IoThread(asyncio.get_running_loop(), "test-io")
        seen: list[tuple[int, str]] = []

        def work(i: int) -> int:
            seen.append((i, threading.current_thread().name))
            return i * i

        try:
            results = await asyncio.gather(*(io.run(work, i) for i in range(50)))
        finally:
            io.shutdown()
        assert results == [i * i for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        assert {name for _, name in seen} == {"test-io"}

    asyncio.run(main())


def test_an_exception_reaches_the_awaiter_and_the_thread_goes_on() -> None:
    async def main() -> None:
        io = IoThread(asyncio.get_running_loop(), "test-io")

        def boom() -> None:
            raise OSError(28, "No space left on device")

        try:
            with pytest.raises(OSError, match="No space left"):
                await io.run(boom)
            assert await io.run(lambda: "still serving") == "still serving"
        finally:
            io.shutdown()

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_break_the_hand_back_and_shutdown_drains() -> None:
    async def main() -> None:
        io = IoThread(asyncio.get_running_loop(), "test-io")
        release = threading.Event()
        done: list[int] = []
        blocked = io.run(lambda: release.wait(5))
        later = io.run(done.append, 1)
        later.cancel()  # its call still runs; settling a cancelled future is skipped
        release.set()
        assert await blocked is True
        await asyncio.sleep(0)  # let the hand-back of the cancelled one run
        io.shutdown()  # blocks until the queue is drained and the thread ended
        assert done == [1]
        with pytest.raises(RuntimeError, match="shut down"):
            io.run(lambda: None)

    asyncio.run(main())
