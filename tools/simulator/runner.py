"""Run seeds: ``run_seed`` for one, ``main`` for ``tessera simulate``.

Reproduce any failure with the command ``main`` prints, e.g.::

    tessera simulate --seeds 1 --start 1234 --mutation vote-ignores-log
    PYTHONPATH=. python3 -m tools.simulator --seeds 1 --start 1234 -v
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import corecov
from .cluster import Simulation
from .invariants import CORE_EXCEPTION
from .mutations import get_mutation


@dataclass
class SeedResult:
    seed: int
    ok: bool
    invariant: str | None
    detail: str
    digest: str
    mutation: str | None = None
    profile: str = ""
    size: int = 0
    trace_tail: str = ""
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ticks(self) -> int:
        return self.stats.get("ticks", 0)

    @property
    def elections(self) -> int:
        return self.stats.get("elections", 0)

    @property
    def ops(self) -> int:
        return self.stats.get("ops", 0)

    @property
    def snapshots(self) -> int:
        return self.stats.get("snapshots_installed", 0)


def run_seed(seed: int, mutation: str | None = None) -> SeedResult:
    """Run one seed; deterministic: same seed and mutation, same ``digest``."""
    get_mutation(mutation)  # ValueError for an unknown name
    t0 = time.perf_counter()
    sim = Simulation(seed, mutation)
    violation = sim.run()
    tail = "" if violation is None else sim.trace.tail_text()
    sim.trace.record(f"end {sim.now} history {len(sim.history)} {violation.name if violation else 'ok'}")
    for op in sim.history:
        sim.trace.record(f"{op.process} {op.type} {op.f} {op.key} {op.value!r} {op.time}")
    stats = dict(sorted(sim.stats.items()))
    stats["events"] = sim.trace.events
    stats["history"] = len(sim.history)
    return SeedResult(
        seed=seed,
        ok=violation is None,
        invariant=None if violation is None else violation.name,
        detail="" if violation is None else violation.detail,
        digest=sim.trace.digest(),
        mutation=mutation,
        profile=sim.profile.name,
        size=sim.size,
        trace_tail=tail,
        stats=stats,
        seconds=time.perf_counter() - t0,
    )


def _run(args: tuple[int, str | None]) -> SeedResult:
    return run_seed(*args)


def reproduce_command(seed: int, mutation: str | None) -> str:
    cmd = f"tessera simulate --seeds 1 --start {seed}"
    if mutation:
        cmd += f" --mutation {mutation}"
    return cmd


def format_failure(r: SeedResult) -> str:
    lines = [
        f"FAIL seed {r.seed} ({r.profile}, {r.size} replicas"
        + (f", mutation {r.mutation}" if r.mutation else "")
        + f"): invariant {r.invariant} broken",
        f"  {r.detail}".replace("\n", "\n  "),
    ]
    if r.trace_tail:
        lines.append("  last events:")
        lines.extend("    " + line for line in r.trace_tail.splitlines())
    lines.append(f"reproduce: {reproduce_command(r.seed, r.mutation)}")
    return "\n".join(lines)


def run_many(
    seeds: int, start: int = 0, mutation: str | None = None, workers: int = 1, coverage_dir: str | None = None
):
    """Yield SeedResults in seed order (computed in parallel when workers > 1).

    With ``coverage_dir`` the seeds always run in worker processes (``workers`` of them, at
    least one), each measuring the core and saving its data there when it exits.
    """
    get_mutation(mutation)
    jobs = [(s, mutation) for s in range(start, start + seeds)]
    if coverage_dir is None and (workers <= 1 or seeds <= 1):
        for job in jobs:
            yield _run(job)
        return
    # forkserver, not fork: a caller with threads (grpc, a test runner) must not be cloned
    # into the workers, and a fresh interpreter keeps each worker's heap small.
    ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if coverage_dir is None:
        pool = ctx.Pool(workers)
    else:
        pool = ctx.Pool(max(1, workers), corecov.worker_init, (str(Path(coverage_dir) / ".coverage"),))
    finished = False
    try:
        yield from pool.imap(_run, jobs, chunksize=1)
        finished = True
    finally:
        if finished:
            pool.close()  # the workers leave their loop and run their finalizers (coverage saves)
        else:
            pool.terminate()  # a failure (or the caller gave up): stop at once
        pool.join()


def _consume(results, totals: dict, verbose: bool) -> SeedResult | None:
    totals["_done"] = 0
    for k in ("ticks", "elections", "ops", "snapshots_installed", "crashes", "partitions", "conf_changes"):
        totals[k] = 0
    for r in results:
        totals["_done"] += 1
        for k in list(totals):
            if not k.startswith("_"):
                totals[k] += r.stats.get(k, 0)
        if verbose:
            print(
                f"seed {r.seed}: {'ok' if r.ok else 'FAIL ' + str(r.invariant)} {r.profile}/{r.size} "
                f"{r.seconds:.2f}s elections={r.elections} ops={r.ops} snapshots={r.snapshots} "
                f"digest={r.digest}",
                flush=True,
            )
        if not r.ok:
            return r
    return None


def main(
    seeds: int,
    start: int = 0,
    mutation: str | None = None,
    workers: int = 1,
    verbose: bool = False,
    coverage: bool = False,
) -> int:
    """Run seeds start..start+seeds-1; 0 when every seed holds, 1 at the first failure.

    ``coverage``: measure the core's branch coverage over the run and print it, with the
    refusals of :mod:`tools.simulator.refusals` that were never taken (and, with ``verbose``,
    every branch never taken); only when every seed holds: a failure stops the workers
    before they save.
    """
    get_mutation(mutation)  # ValueError naming the valid ones for an unknown name
    t0 = time.perf_counter()
    totals: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-simcov-") as cov_dir:
        results = run_many(seeds, start, mutation, workers, cov_dir if coverage else None)
        try:
            failure = _consume(results, totals, verbose)
        finally:
            results.close()  # stops the worker pool early on a failure
        cov_report = corecov.report(cov_dir) if coverage and failure is None else None
    if failure is not None:
        print(format_failure(failure), flush=True)
        if failure.invariant == CORE_EXCEPTION:
            print("  (an exception escaped the core or the simulator; see the traceback above)")
        return 1
    done = totals.pop("_done")
    elapsed = time.perf_counter() - t0
    mut = f" with mutation {mutation}" if mutation else ""
    print(
        f"simulate: {done} seeds ({start}..{start + seeds - 1}){mut} hold in {elapsed:.1f}s "
        f"[{totals['elections']} elections, {totals['crashes']} crashes, {totals['partitions']} partitions, "
        f"{totals['conf_changes']} conf changes, {totals['snapshots_installed']} snapshot installs, "
        f"{totals['ops']} client ops, {totals['ticks']} ticks]"
    )
    if cov_report is not None:
        print(cov_report.text(branches=verbose))
    return 0
