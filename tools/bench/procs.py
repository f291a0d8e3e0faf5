"""``--procs N``: the load from N client processes, merged as if one client had measured it.

One Python process tops out at one core, and a client that saturates its core measures itself,
not the store. So the workers can be split over N processes (multiprocessing, spawn: no
inherited event loops or gRPC state), each with its own Driver and its own HDR histogram. They
start measuring at one agreed wall-clock instant, so their per-second timelines line up; the
parent adds the histograms (exact merged percentiles), the counts and the timelines, and
keeps each process's CPU share so the report can say whether a client was the bottleneck.

With N = 1 the load runs in this process: no spawn cost, same code path otherwise.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue as queue_mod
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hdrh.histogram import HdrHistogram

from common import aio
from tools.bench import histogram
from tools.bench.live import StatusLine
from tools.bench.runner import LoadResult, LoadSpec, Snapshot, run_load
from tools.bench.targets import make_driver, parse_target

READY_TIMEOUT_S = 60.0
START_DELAY_S = 0.2  # from "all ready" to the agreed start: time for every child to see it


@dataclass
class Merged:
    """The whole client's measurement: every process's results added."""

    ops: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    histogram: HdrHistogram = field(default_factory=histogram.new)
    timeline: list[list[float]] = field(default_factory=list)  # [second, ops, errors]
    cas_conflicts: int = 0
    client_cpu: list[float] = field(default_factory=list)  # % of a core, one per process

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())


def split(concurrency: int, procs: int) -> list[int]:
    """Workers per process: ``concurrency`` shared as evenly as possible."""
    if procs < 1 or concurrency < procs:
        raise ValueError(f"--concurrency {concurrency} cannot be shared by --procs {procs}")
    base, extra = divmod(concurrency, procs)
    return [base + (1 if i < extra else 0) for i in range(procs)]


def merge(results: list[LoadResult], duration: float) -> Merged:
    """Add per-process results; the timeline has one row per measured second, zeros included
    (a second with no completion is exactly what a stall looks like)."""
    out = Merged()
    seconds: dict[int, list[int]] = {}
    for r in results:
        out.ops += r.ops
        out.cas_conflicts += r.cas_conflicts
        out.client_cpu.append(r.cpu_pct)
        for kind, n in r.errors_by_kind.items():
            out.errors_by_kind[kind] = out.errors_by_kind.get(kind, 0) + n
        out.histogram.add(histogram.decode(r.histogram))
        for t, (ops, errs) in r.timeline.items():
            row = seconds.setdefault(int(t), [0, 0])
            row[0] += ops
            row[1] += errs
    span = max([math.ceil(duration), *(t + 1 for t in seconds)])
    out.timeline = [[t, *seconds.get(t, [0, 0])] for t in range(span)]
    return out


def run_clients(spec: LoadSpec, procs: int, status: StatusLine) -> Merged:
    """Run ``spec`` (its ``concurrency`` being the total) from ``procs`` client processes."""
    shares = split(spec.concurrency, procs)
    if procs == 1:
        return merge([aio.run(_in_process(spec, status))], spec.duration)
    return merge(_spawned(spec, shares, status), spec.duration)


async def _in_process(spec: LoadSpec, status: StatusLine) -> LoadResult:
    driver = make_driver(parse_target(spec.target), deadline_s=spec.timeout, tls=spec.tls, token=spec.token,
                         wire=spec.wire)
    try:
        def show(s: Snapshot) -> None:
            p99 = s.histogram.get_value_at_percentile(99.0) / 1000.0 if s.ops else 0.0
            status.show(s.elapsed, s.ops, s.errors, p99)

        return await run_load(driver, spec, on_progress=show)
    finally:
        await driver.close()


# -- spawned client processes ------------------------------------------------------------------


def _child(spec: LoadSpec, index: int, out: Any, go: Any, start_wall: Any) -> None:
    """A client process: connect, say ready, wait for the agreed start, run, send the result."""
    try:
        result = aio.run(_child_load(spec, index, out, go, start_wall))
        out.put(("done", index, asdict(result)))
    except BaseException:
        out.put(("error", index, traceback.format_exc()))


async def _child_load(spec: LoadSpec, index: int, out: Any, go: Any, start_wall: Any) -> LoadResult:
    driver = make_driver(parse_target(spec.target), deadline_s=spec.timeout, tls=spec.tls, token=spec.token,
                         wire=spec.wire)
    try:
        out.put(("ready", index))
        if not await asyncio.to_thread(go.wait, READY_TIMEOUT_S * 2):
            raise TimeoutError("the parent never gave the start signal")
        loop = asyncio.get_running_loop()
        start_at = loop.time() + (start_wall.value - time.time())

        def send(s: Snapshot) -> None:
            out.put(("progress", index, s.elapsed, s.ops, s.errors, histogram.encode(s.histogram)))

        return await run_load(driver, spec, start_at=start_at, on_progress=send)
    finally:
        await driver.close()


def _spawned(spec: LoadSpec, shares: list[int], status: StatusLine) -> list[LoadResult]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    start_wall = ctx.Value("d", 0.0)
    children = []
    first = 0
    for i, n in enumerate(shares):
        child_spec = replace(spec, concurrency=n, first_worker=first)
        first += n
        p = ctx.Process(target=_child, args=(child_spec, i, out, go, start_wall), name=f"bench-client-{i}",
                        daemon=True)
        p.start()
        children.append(p)
    try:
        return _collect(children, out, go, start_wall, status)
    finally:
        for p in children:
            if p.is_alive():
                p.terminate()
            p.join(5)


def _collect(children: list[Any], out: Any, go: Any, start_wall: Any, status: StatusLine) -> list[LoadResult]:
    ready: set[int] = set()
    results: dict[int, LoadResult] = {}
    latest: dict[int, tuple[float, int, int, str]] = {}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(results) < len(children):
        try:
            msg = out.get(timeout=0.5)
        except queue_mod.Empty:
            dead = [p.name for i, p in enumerate(children) if not p.is_alive() and i not in results]
            if dead:
                raise RuntimeError(f"client process {', '.join(dead)} exited without a result") from None
            if not go.is_set() and time.monotonic() > deadline:
                raise TimeoutError(f"only {len(ready)} of {len(children)} client processes got ready") from None
            continue
        tag, index = msg[0], msg[1]
        if tag == "error":
            raise RuntimeError(f"client process {index} failed:\n{msg[2]}")
        if tag == "ready":
            ready.add(index)
            if len(ready) == len(children):
                start_wall.value = time.time() + START_DELAY_S
                go.set()
        elif tag == "progress":
            latest[index] = (msg[2], msg[3], msg[4], msg[5])
            _show(latest, status)
        elif tag == "done":
            fields = dict(msg[2])
            fields["timeline"] = {int(k): v for k, v in fields["timeline"].items()}
            results[index] = LoadResult(**fields)
    return [results[i] for i in range(len(children))]


def _show(latest: dict[int, tuple[float, int, int, str]], status: StatusLine) -> None:
    """The status line over every process's latest totals (histograms merged for the p99)."""
    if not status.active:
        return
    merged = histogram.merge([h for _, _, _, h in latest.values()])
    ops = sum(o for _, o, _, _ in latest.values())
    errors = sum(e for _, _, e, _ in latest.values())
    elapsed = min(t for t, _, _, _ in latest.values())
    p99 = merged.get_value_at_percentile(99.0) / 1000.0 if ops else 0.0
    status.show(elapsed, ops, errors, p99)
