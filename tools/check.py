"""``tessera check``: the verdict on a saved history, offline.

Reads a history (a file, or ``-`` for stdin) and runs on it exactly the checks the nemesis
runs online (:func:`tools.nemesis.history_checks.check_workload`), printing the same
verdicts: a history written by ``tessera nemesis --history`` checks the same way here as it
did in its run. ``--format jepsen-etcd`` reads Jepsen's etcd register logs instead
(:mod:`tools.checker.jepsen_etcd`), so published histories can be checked too.

Exit statuses: 0 every check holds; 1 a check failed, or the linearizability search was not
decided within ``--time-limit`` (the verdict says ``UNDECIDED``); 2 a usage error, or a
history that cannot be read (a missing file, bad JSON, a malformed history: the message names
the line).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

from tools.checker import Op, read_events, read_jsonl
from tools.checker.jepsen_etcd import read_jepsen_etcd
from tools.nemesis.histories import CHECK_TIME_LIMIT_S, WORKLOADS
from tools.nemesis.history_checks import check_workload

FORMATS = ("jsonl", "jepsen-etcd")
EXIT_HOLDS, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2
STDIN = "-"


def reader(model: str, fmt: str) -> Callable[[IO[str]], list[Op]]:
    """How to read a history of ``model`` in ``fmt``; ValueError for a pair that cannot be."""
    if fmt == "jepsen-etcd":
        if model != "register":
            raise ValueError(f"--format jepsen-etcd is a register history; it cannot be checked as {model}")
        return read_jepsen_etcd
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    # The bank's histories have their own operations (transfer, read) and JSON values.
    return read_events if model == "bank" else read_jsonl


def run(path: str, model: str = "register", fmt: str = "jsonl", time_limit_s: float = CHECK_TIME_LIMIT_S) -> int:
    """Check the history at ``path`` as ``model``; print the verdicts; the exit status."""
    name = "tessera check"
    if model not in WORKLOADS:
        print(f"{name}: unknown model {model!r}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        read = reader(model, fmt)
        if path == STDIN:
            history = read(sys.stdin)
        else:
            with open(path, encoding="utf-8") as fh:
                history = read(fh)
        verdicts = check_workload(model, history, time_limit_s)
    except OSError as exc:
        print(f"{name}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, UnicodeDecodeError) as exc:  # a malformed history: the message names the line
        print(f"{name}: cannot read {path} as a {fmt} {model} history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for verdict in verdicts:
        print(verdict.report())
    holds = all(v.ok for v in verdicts)
    print(f"{name}: {'OK' if holds else 'FAILED'} ({path}: {len(history)} events, model {model})")
    return EXIT_HOLDS if holds else EXIT_VIOLATION
