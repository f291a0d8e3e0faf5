"""Jepsen's etcd register logs read as histories (tools/checker/jepsen_etcd.py).

The fixtures in tests/unit/histories/ are small logs written for these tests in Jepsen's
format; the published ones are checked on demand by tools/checker/published_etcd.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tools.checker import Op, check_history
from tools.checker.jepsen_etcd import KEY, read_jepsen_etcd
from tools.checker.published_etcd import expected

HISTORIES = Path(__file__).parent / "histories"


def _log(*lines: str) -> io.StringIO:
    return io.StringIO("".join(f"INFO  jepsen.util - {line}\n" for line in lines))


def test_operations_become_register_events() -> None:
    ops = read_jepsen_etcd(HISTORIES / "etcd_linearizable.log")
    assert ops[:4] == [
        Op(0, "invoke", "get", KEY, None, 2),  # line 1 is not an operation
        Op(0, "ok", "get", KEY, None, 3),  # nil: the register is absent
        Op(1, "invoke", "put", KEY, "3", 4),
        Op(2, "invoke", "cas", KEY, ["3", "1"], 5),
    ]
    by_line = {op.time: op for op in ops}
    assert by_line[11] == Op(1, "info", "put", KEY, "4", 11)  # the invoke's value, not :timed-out
    assert by_line[13] == Op(2, "fail", "get", KEY, None, 13)
    assert by_line[15] == Op(6, "fail", "cas", KEY, ["1", "2"], 15)  # spaces separate fields too
    assert 16 not in by_line  # the nemesis's line
    assert ops[-1] == Op(3, "invoke", "put", KEY, "0", 19)  # never completed: unknown


def test_fixture_verdicts() -> None:
    assert check_history(read_jepsen_etcd(HISTORIES / "etcd_linearizable.log")).ok is True
    # Two readers see two concurrent writes in opposite orders: only the search sees it.
    result = check_history(read_jepsen_etcd(HISTORIES / "etcd_not_linearizable.log"))
    assert result.ok is False and not result.failures[0].reason


@pytest.mark.parametrize("lines,message", [
    (["0\t:invoke\t:cas\t3"], "line 1: a cas value must be [A B], got '3'"),
    (["0\t:invoke\t:write\tx"], "line 1: a put value must be an integer or nil"),
    (["0\t:invoke\t:add\t1"], "line 1: unknown operation :add"),
    (["0\t:crash\t:read\tnil"], "line 1: unknown type :crash"),
    (["0\t:ok\t:read\t1"], "line 1: ok completion for process 0 has no outstanding invoke"),
    (["0\t:invoke\t:write\t1", "0\t:ok\t:write\t2"], "line 2: completion '2' does not repeat"),
    (["0\t:invoke\t:write\t1", "0\t:invoke\t:read\tnil"], "line 2: process 0 invoked get while its put (line 1)"),
])
def test_malformed_operations_name_their_line(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        read_jepsen_etcd(_log(*lines))


def test_porcupines_verdicts_are_recorded_for_every_published_history() -> None:
    verdicts = [expected(n) for n in range(103)]
    assert verdicts.count(True) == 23 and verdicts.count(False) == 79 and verdicts[95] is None
    assert verdicts[2] is True and verdicts[0] is False
