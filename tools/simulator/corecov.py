"""Branch coverage of the consensus core over a simulator run (``tessera simulate --coverage``).

Only ``node/raft/`` is measured (``mutations.py``, the known-bug table, is left out: it runs only
under ``--mutation``).  Seeds always run in worker processes here, one or more: each worker
starts measuring in its pool initializer and saves its data when it exits, and :func:`report`
combines the files.  The figure is *branch* coverage (coverage.py's arcs): the core is imported
while a worker unpickles its first task, before or after measuring starts depending on how the
process was launched, so module-level lines are not a stable measure, and branches, which all
live inside functions, are.

Needs the ``coverage`` package (the dev extra).
"""

from __future__ import annotations

import json
import multiprocessing.util
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .refusals import REFUSALS, Refusal, locate

CORE = Path(__file__).resolve().parents[2] / "node" / "raft"
OMIT = (str(CORE / "mutations.py"),)


def _coverage(data_file: str, suffix: bool):
    import coverage  # the dev extra; imported only when asked for

    return coverage.Coverage(
        data_file=data_file,
        data_suffix=suffix,
        branch=True,
        source=[str(CORE)],
        omit=list(OMIT),
        config_file=False,
    )


def worker_init(data_file: str) -> None:
    """Pool initializer: measure this worker until it exits, then save to its own file."""
    cov = _coverage(data_file, suffix=True)
    cov.start()

    def save() -> None:
        cov.stop()
        cov.save()

    # Runs when the worker leaves its task loop (Pool.close() + join(), not terminate()).
    multiprocessing.util.Finalize(None, save, exitpriority=100)


@dataclass
class CoverageReport:
    branches: int
    covered: int
    per_file: dict[str, tuple[int, int]]  # file -> (covered branches, branches)
    missing: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # file -> arcs never taken
    taken: list[tuple[Refusal, int]] = field(default_factory=list)  # (refusal, line)
    missed: list[tuple[Refusal, int]] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / max(1, self.branches)

    def text(self, branches: bool = False) -> str:
        """The summary; with ``branches`` also every branch never taken, as ``file:from->to``
        (a negative ``to`` leaves the function)."""
        lines = [
            f"coverage of node/raft (branches): {self.covered}/{self.branches} = {self.percent:.1f}%",
            "  " + ", ".join(
                f"{f} {c}/{n}" for f, (c, n) in sorted(self.per_file.items()) if n
            ),
            f"refusals taken: {len(self.taken)} of {len(self.taken) + len(self.missed)}",
        ]
        for r, line in self.missed:
            lines.append(f"  NOT TAKEN {r.file}:{line} ({r.function}) [{r.kind}] {r.what}")
        if branches:
            lines.append("branches never taken:")
            for f, arcs in sorted(self.missing.items()):
                if arcs:
                    lines.append(f"  {f}: " + " ".join(f"{a}->{b}" for a, b in arcs))
        return "\n".join(lines)


def report(data_dir: str) -> CoverageReport:
    """Combine every worker's data file under ``data_dir`` and measure it."""
    base = str(Path(data_dir) / ".coverage")
    cov = _coverage(base, suffix=False)
    cov.combine([data_dir])
    cov.save()
    with tempfile.TemporaryDirectory(prefix="tessera-cov-") as tmp:
        out = Path(tmp) / "cov.json"
        cov.json_report(outfile=str(out))
        data = json.loads(out.read_text())
    per_file: dict[str, tuple[int, int]] = {}
    missing: dict[str, list[tuple[int, int]]] = {}
    for path, f in data["files"].items():
        s = f["summary"]
        per_file[Path(path).name] = (s["covered_branches"], s["num_branches"])
        missing[Path(path).name] = [(a, b) for a, b in f.get("missing_branches", [])]
    executed: dict[str, set[int]] = {}
    measured = cov.get_data()
    for path in measured.measured_files():
        executed[Path(path).name] = set(measured.lines(path) or ())
    rep = CoverageReport(
        branches=data["totals"]["num_branches"],
        covered=data["totals"]["covered_branches"],
        per_file=per_file,
        missing=missing,
    )
    for r in REFUSALS:
        line = locate(r)
        (rep.taken if line in executed.get(r.file, set()) else rep.missed).append((r, line))
    return rep
