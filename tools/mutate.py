"""Mutation testing of the consensus core: would the simulator notice a one-line bug?

Every mutation point in ``node/raft/*.py`` is found by walking the source's syntax tree with a
small set of operators, the kind of slip a person makes:

- ``compare``: flip a comparison (``<`` and ``<=``, ``>`` and ``>=``, ``==`` and ``!=``);
- ``off-by-one``: ``x + 1`` becomes ``x`` and ``x - 1`` becomes ``x``; a small integer
  constant ``n`` becomes ``n + 1``;
- ``boolean``: ``and`` and ``or`` swap; ``not x`` becomes ``x``;
- ``guard``: an ``if`` whose body returns, raises or continues is never taken;
- ``minmax``: ``min`` and ``max`` swap;
- ``return``: ``return True`` and ``return False`` swap.

A sample of them (drawn from ``--seed``) is applied one at a time to a private copy of the
core, and the simulator runs ``--seeds`` seeds against each (``--with-unit`` runs the core's
own tests first, which kill cheap mutants quickly). A mutant is *killed* when a run fails or
hangs, and *survives* when everything holds. The score is killed / sampled. Survivors are
printed with their diff: read each one, and either make the simulator catch its class (a fault
profile, a check) or write down why it cannot matter (an equivalent mutant).

    python -m tools.mutate --sample 60 --seeds 300 --jobs 2
    python -m tools.mutate --list | less          # every mutation point
    python -m tools.mutate --only raft.py:412:compare:0   # one mutant, by its id

How it fits the rest of the testing: docs/testing.md.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "node" / "raft"
# Modules whose bugs the simulator is not meant to see: the known-bug table itself, and the
# read-only views used only by checkers.
SKIP = frozenset({"mutations.py", "views.py", "__init__.py"})

_FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_EXITS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


@dataclass(frozen=True, slots=True)
class Mutant:
    file: str  # relative to node/raft
    line: int
    operator: str
    ordinal: int  # which point of that operator on that line
    description: str
    source: str  # the whole mutated module

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.operator}:{self.ordinal}"

    def diff(self, original: str) -> str:
        lines = difflib.unified_diff(
            original.splitlines(), self.source.splitlines(), f"a/node/raft/{self.file}", f"b/node/raft/{self.file}",
            n=1, lineterm="",
        )
        return "\n".join(list(lines)[2:])


class _Points(ast.NodeVisitor):
    """Collects (node, operator, description) for every mutation point of a module."""

    def __init__(self) -> None:
        self.points: list[tuple[ast.AST, str, str]] = []
        self._in_docstring: set[int] = set()

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if type(op) in _FLIP:
                self.points.append((node, "compare", f"{type(op).__name__} -> {_FLIP[type(op)].__name__}"))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, (ast.Add, ast.Sub)) and isinstance(node.right, ast.Constant) and node.right.value == 1:
            self.points.append((node, "off-by-one", f"drop '{'+' if isinstance(node.op, ast.Add) else '-'} 1'"))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) is int and 0 <= node.value <= 16:
            self.points.append((node, "off-by-one", f"{node.value} -> {node.value + 1}"))

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.points.append((node, "boolean", "and -> or" if isinstance(node.op, ast.And) else "or -> and"))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self.points.append((node, "boolean", "drop 'not'"))
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if any(isinstance(s, _EXITS) for s in node.body):
            self.points.append((node, "guard", "the guard is never taken"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            self.points.append((node, "minmax", f"{node.func.id} -> {'max' if node.func.id == 'min' else 'min'}"))
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):
            self.points.append((node, "return", f"return {node.value.value} -> return {not node.value.value}"))
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for stmt in node.body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(stmt.value, ast.Constant):
                continue  # an enum member's value or a field's default: a renumbering, not a slip
            self.visit(stmt)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring: nothing to mutate
        self.generic_visit(node)


def _mutate(tree: ast.Module, target: ast.AST, operator: str) -> None:
    """Apply ``operator`` to ``target`` in place (``target`` is a node of ``tree``)."""
    if operator == "compare":
        assert isinstance(target, ast.Compare)
        for i, op in enumerate(target.ops):
            if type(op) in _FLIP:
                target.ops[i] = _FLIP[type(op)]()
                # A compare with several flippable operators gets one mutant per operator; the
                # points list holds it once per operator, so flip only the first unflipped.
                return
    elif operator == "off-by-one":
        if isinstance(target, ast.BinOp):
            _replace(tree, target, target.left)
        else:
            assert isinstance(target, ast.Constant) and isinstance(target.value, int)
            target.value = target.value + 1
    elif operator == "boolean":
        if isinstance(target, ast.BoolOp):
            target.op = ast.Or() if isinstance(target.op, ast.And) else ast.And()
        else:
            assert isinstance(target, ast.UnaryOp)
            _replace(tree, target, target.operand)
    elif operator == "guard":
        assert isinstance(target, ast.If)
        target.test = ast.Constant(False)
    elif operator == "minmax":
        assert isinstance(target, ast.Call) and isinstance(target.func, ast.Name)
        target.func = ast.Name("max" if target.func.id == "min" else "min", ast.Load())
    elif operator == "return":
        assert isinstance(target, ast.Return) and isinstance(target.value, ast.Constant)
        target.value = ast.Constant(not target.value.value)


def _replace(tree: ast.Module, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return
    raise ValueError("node not found in its tree")


def _points_of(tree: ast.Module) -> list[tuple[ast.AST, str, str]]:
    v = _Points()
    v.visit(tree)
    return v.points


@dataclass(frozen=True, slots=True)
class Point:
    """Where a mutant would go: the k-th point the visitor finds in a module."""

    file: str
    k: int
    line: int
    operator: str
    ordinal: int
    description: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.operator}:{self.ordinal}"

    def build(self) -> Mutant:
        tree = ast.parse((CORE / self.file).read_text())
        node, operator, _ = _points_of(tree)[self.k]
        _mutate(tree, node, operator)
        source = ast.unparse(ast.fix_missing_locations(tree))
        return Mutant(self.file, self.line, self.operator, self.ordinal, self.description, source)


def points() -> list[Point]:
    """Every mutation point of the core, in a stable order."""
    out = []
    for path in sorted(CORE.glob("*.py")):
        if path.name in SKIP:
            continue
        seen: dict[tuple[int, str], int] = {}
        for k, (node, operator, description) in enumerate(_points_of(ast.parse(path.read_text()))):
            line = getattr(node, "lineno", 0)
            ordinal = seen.get((line, operator), 0)
            seen[(line, operator)] = ordinal + 1
            out.append(Point(path.name, k, line, operator, ordinal, description))
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    mutant: Mutant
    killed: bool
    how: str
    seconds: float


def run_mutant(m: Mutant, seeds: int, with_unit: bool, timeout: float) -> Verdict:
    """Run the checks against one mutant in a private overlay of the repository."""
    return run_overlay([m], seeds, with_unit, timeout)


def run_overlay(modules: list[Mutant], seeds: int, with_unit: bool, timeout: float) -> Verdict:
    """Run the checks with ``modules`` replacing their files of the core."""
    t0 = time.perf_counter()
    m = modules[0]
    with tempfile.TemporaryDirectory(prefix="tessera-mutant-") as overlay:
        core = Path(overlay) / "node" / "raft"
        shutil.copytree(CORE, core, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "node" / "__init__.py", core.parent / "__init__.py")
        # A mutated module is rewritten from its syntax tree, comments and formatting dropped;
        # main() first checks that the unmutated trees, unparsed the same way, hold.
        for module in modules:
            (core / module.file).write_text(module.source)
        env = dict(os.environ, PYTHONPATH=f"{overlay}{os.pathsep}{REPO}", PYTHONDONTWRITEBYTECODE="1")
        steps = []
        if with_unit:
            steps.append(("unit", [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                   str(REPO / "tests" / "unit" / "raft")]))
        steps.append(("simulator", [sys.executable, "-m", "tools.simulator", "--seeds", str(seeds)]))
        for name, argv in steps:
            try:
                proc = subprocess.run(argv, cwd=overlay, env=env, capture_output=True, text=True,
                                      timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                return Verdict(m, True, f"{name}: hung (over {timeout:g}s)", time.perf_counter() - t0)
            if proc.returncode != 0:
                last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["?"])[-1]
                return Verdict(m, True, f"{name}: {last[:120]}", time.perf_counter() - t0)
    return Verdict(m, False, "every check held", time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=int, default=40, help="mutants to run, drawn at random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the sample (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=300, help="simulator seeds per mutant (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="mutants run at once (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a run counts as hung")
    p.add_argument("--with-unit", action="store_true", help="run tests/unit/raft before the simulator")
    p.add_argument("--only", action="append", default=[], metavar="ID", help="run this mutant (repeatable)")
    p.add_argument("--list", action="store_true", help="list every mutation point and exit")
    args = p.parse_args(argv)

    everything = points()
    originals = {path.name: path.read_text() for path in CORE.glob("*.py")}
    if args.list:
        for pt in everything:
            print(f"{pt.id:40} {pt.description}")
        print(f"{len(everything)} mutation points", file=sys.stderr)
        return 0
    by_id = {pt.id: pt for pt in everything}
    if args.only:
        unknown = [i for i in args.only if i not in by_id]
        if unknown:
            p.error(f"unknown mutant id(s): {', '.join(unknown)} (see --list)")
        picked = [by_id[i] for i in args.only]
    else:
        picked = random.Random(args.seed).sample(everything, min(args.sample, len(everything)))
    chosen = [pt.build() for pt in picked]
    print(f"{len(chosen)} of {len(everything)} mutants, {args.seeds} seeds each, {args.jobs} at a time", flush=True)
    # The harness itself must hold: every module rewritten from its syntax tree, unmutated.
    baseline = [Mutant(f, 0, "none", 0, "unmutated", ast.unparse(ast.parse(src))) for f, src in originals.items()]
    check = run_overlay(baseline, args.seeds, args.with_unit, args.timeout)
    if check.killed:
        print(f"the unmutated core fails in the harness ({check.how}): fix that first", file=sys.stderr)
        return 2
    verdicts: list[Verdict] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for v in pool.map(lambda m: run_mutant(m, args.seeds, args.with_unit, args.timeout), chosen):
            verdicts.append(v)
            mark = "killed  " if v.killed else "SURVIVED"
            print(f"{mark} {v.mutant.id:40} {v.mutant.description:32} {v.seconds:6.1f}s  {v.how}", flush=True)
    survivors = [v for v in verdicts if not v.killed]
    killed = len(verdicts) - len(survivors)
    print(f"\nmutation score: {killed}/{len(verdicts)} = {100 * killed / max(1, len(verdicts)):.1f}% killed")
    for v in survivors:
        original = ast.unparse(ast.parse(originals[v.mutant.file]))
        print(f"\n--- survivor {v.mutant.id}: {v.mutant.description}\n{v.mutant.diff(original)}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    raise SystemExit(main())
