"""Consistency checkers for Tessera client histories.

:mod:`tools.checker.history` defines the Jepsen-shaped event records and their
JSONL format; :mod:`tools.checker.linearizability` checks a history against a
per-key get/put/cas register.
"""

from tools.checker.history import (
    Op,
    Operation,
    pair_events,
    pair_ops,
    read_events,
    read_jsonl,
    write_events,
    write_jsonl,
)
from tools.checker.linearizability import (
    CheckResult,
    KeyFailure,
    KeyStats,
    check_history,
    check_operations,
    describe,
)

__all__ = [
    "CheckResult",
    "KeyFailure",
    "KeyStats",
    "Op",
    "Operation",
    "check_history",
    "check_operations",
    "describe",
    "pair_events",
    "pair_ops",
    "read_events",
    "read_jsonl",
    "write_events",
    "write_jsonl",
]
