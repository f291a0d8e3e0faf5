"""The test suite's tiers and its one waiting helper.

Tiers are folders, and each folder's tests carry the marker of the same name (added here, so
no test file can forget it):

    tests/unit      in-process only: no sockets, no child processes; real files and LMDB are
                    fine. Seconds. ``make test-fast`` runs this tier.
    tests/sim       the deterministic simulator at scale: many seeds, every mutation.
    tests/process   real gRPC servers on loopback and real processes (nodes, routers,
                    ``cluster up``, SIGKILL).
    tests/nemesis   real clusters under faults, with their histories checked.

Everything outside ``unit`` is also marked ``slow``, so ``-m "not slow"`` is the unit tier.

Waiting: never sleep and hope. :func:`eventually` polls a condition until a deadline and
fails naming what it waited for; :func:`eventually_async` is the same inside a coroutine.
Shared harnesses live in ``tests/support`` (the Raft-core network, in-process nodes, nemesis
fakes). The ``root_logger`` fixture is for in-process tests that run ``common.logs.setup``
(directly or through ``tools.cli.main``): it puts the root logger back afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar, overload

import pytest

TIERS = ("unit", "sim", "process", "nemesis")
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).resolve().relative_to(TESTS).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one of tests/{{{','.join(TIERS)}}}")
        item.add_marker(getattr(pytest.mark, tier))
        if tier != "unit":
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, put back as it was afterwards (pytest's capture handlers included)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@overload
async def eventually_async(
    cond: Callable[[], Awaitable[T]], timeout: float, what: str, *, interval: float = 0.05
) -> T: ...
@overload
async def eventually_async(cond: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T: ...
async def eventually_async(
    cond: Callable[[], T | Awaitable[T]], timeout: float, what: str, *, interval: float = 0.05
) -> T:
    """Poll ``cond()`` until it gives something truthy and return that; fail after ``timeout``.

    ``cond`` may be a coroutine function (its result is awaited) and may raise: an exception
    counts as "not yet" until the deadline, then it propagates, so a wait that can never
    succeed shows why.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            if time.monotonic() >= deadline:
                raise
        else:
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)


def eventually(cond: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T:
    """:func:`eventually_async` for code outside an event loop (it runs one for the wait)."""
    return asyncio.run(eventually_async(cond, timeout, what, interval=interval))
