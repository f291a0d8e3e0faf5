"""The load loop of one client process: ``concurrency`` workers, each with one request in flight.

A worker draws an operation (workload.OpStream), issues it through the Driver, and records the
latency of what succeeded in an HDR histogram and the kind of what failed, but only once the
warm-up is over: connection set-up, route-cache filling and the first elections after a fresh
start are not what the run measures. Every completion is also counted in a per-second
timeline (for the plot and the JSON), so a stall shows up as a dip rather than vanishing into
an average.

The runner is target-agnostic and knows nothing of processes: ``procs.py`` runs one per
client process and merges their results; ``failover.py`` runs one with a hook that sees every
write's outcome.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from tools.bench import histogram
from tools.bench.driver import Driver, DriverError
from tools.bench.workload import CAS, READ, SCAN, UPDATE, OpStream, key_of

PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class LoadSpec:
    """Everything a client process needs to generate its share of the load (picklable: it is
    what ``procs.py`` hands to spawned processes)."""

    target: str
    workload: str
    concurrency: int  # this process's workers
    duration: float  # measured seconds, after the warm-up
    warmup: float
    keys: int
    value_size: int
    consistency: str
    distribution: str
    timeout: float  # each request's deadline, the client's retries included
    seed: int = 1
    first_worker: int = 0  # global index of this process's first worker (distinct random streams)
    tls: tuple[str, str, str] | None = None  # (ca, cert, key) files: mutual TLS to a Tessera target
    token: str | None = None  # bearer token for a Tessera cluster run with --auth (docs/auth.md)
    wire: str = "tcp"  # how a Tessera client reaches nodes: "tcp" (the KV wire, D28) or "grpc" (KV.Stream)


@dataclass
class Snapshot:
    """The running totals the live progress line shows."""

    elapsed: float  # seconds since the measurement started (negative during the warm-up)
    ops: int
    errors: int
    histogram: HdrHistogram


@dataclass
class LoadResult:
    """One process's measurement; ``procs.merge`` adds several."""

    ops: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    histogram: str = ""  # encoded (histogram.encode)
    timeline: dict[int, list[int]] = field(default_factory=dict)  # second -> [ops, errors]
    cas_conflicts: int = 0
    seconds: float = 0.0  # the measured wall time
    cpu_pct: float = 0.0  # this process's user+sys time over the measured wall time, % of a core


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


OnResult = Callable[[str, bytes, float, bool], None]  # (op kind, key, loop time done, succeeded)


async def run_load(
    driver: Driver,
    spec: LoadSpec,
    *,
    start_at: float | None = None,
    on_progress: Callable[[Snapshot], None] | None = None,
    on_result: OnResult | None = None,
) -> LoadResult:
    """Run ``spec`` against ``driver``: warm-up from ``start_at`` (loop time; default now), then
    ``spec.duration`` measured seconds. ``on_result`` sees every operation's outcome, warm-up
    included (the failover report needs the writes right before the kill)."""
    loop = asyncio.get_running_loop()
    begin = loop.time() if start_at is None else start_at
    measure_from = begin + spec.warmup
    stop_at = measure_from + spec.duration
    value = os.urandom(spec.value_size)
    hist = histogram.new()
    result = LoadResult()
    errors = 0

    def count(done: float, ok: bool, kind: str) -> None:
        nonlocal errors
        second = result.timeline.setdefault(int(done - measure_from), [0, 0])
        if ok:
            second[0] += 1
        else:
            second[1] += 1
            errors += 1
            result.errors_by_kind[kind] = result.errors_by_kind.get(kind, 0) + 1

    async def issue(kind: str, key: bytes, scan_limit: int) -> None:
        if kind == UPDATE:
            await driver.put(key, value, spec.timeout)
        elif kind == READ:
            await driver.get(key, spec.consistency, spec.timeout)
        elif kind == SCAN:
            await driver.scan(key, scan_limit, spec.consistency, spec.timeout)
        elif kind == CAS:
            read = await driver.get(key, spec.consistency, spec.timeout)
            if not await driver.cas(key, read.version if read else 0, value, spec.timeout):
                result.cas_conflicts += loop.time() >= measure_from
        else:
            raise ValueError(f"unknown operation {kind!r}")

    async def worker(w: int) -> None:
        ops = OpStream(spec.workload, spec.distribution, spec.keys, spec.seed * 1_000_003 + w)
        delay = begin - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while loop.time() < stop_at:
            op = ops.next()
            t0 = time.perf_counter()
            try:
                await issue(op.kind, op.key, op.scan_limit)
                failure = ""
            except DriverError as exc:
                failure = exc.kind
            elapsed = time.perf_counter() - t0
            done = loop.time()
            if on_result is not None:
                on_result(op.kind, op.key, done, not failure)
            if measure_from <= done < stop_at:
                count(done, not failure, failure)
                if not failure:
                    result.ops += 1
                    histogram.record_seconds(hist, elapsed)

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            if on_progress is not None:
                on_progress(Snapshot(loop.time() - measure_from, result.ops, errors, hist))

    async def cpu_window() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        return time.monotonic(), cpu_seconds()

    reporter = asyncio.ensure_future(progress())
    window = asyncio.ensure_future(cpu_window())
    try:
        await asyncio.gather(*(worker(spec.first_worker + w) for w in range(spec.concurrency)))
    finally:
        reporter.cancel()
    wall0, cpu0 = await window
    wall = max(1e-9, time.monotonic() - wall0)
    result.seconds = round(wall, 3)
    result.cpu_pct = round(100.0 * (cpu_seconds() - cpu0) / wall, 1)
    result.histogram = histogram.encode(hist)
    if on_progress is not None:
        on_progress(Snapshot(loop.time() - measure_from, result.ops, errors, hist))
    return result


async def preload(
    driver: Driver,
    keys: int,
    value_size: int,
    concurrency: int,
    timeout: float,
    on_advance: Callable[[int], None] | None = None,
) -> None:
    """Write every key number in [0, keys) once, ``concurrency`` puts in flight, so a read
    workload reads values that exist and a CAS names a real version. A put that fails is
    retried (the cluster may still be electing); one that keeps failing stops the run."""
    value = os.urandom(value_size)
    next_key = 0

    async def loader() -> None:
        nonlocal next_key
        while next_key < keys:
            i = next_key
            next_key += 1
            for attempt in range(5):
                try:
                    await driver.put(key_of(i), value, timeout)
                    break
                except DriverError:
                    if attempt == 4:
                        raise
            if on_advance is not None:
                on_advance(1)

    await asyncio.gather(*(loader() for _ in range(min(concurrency, keys))))
