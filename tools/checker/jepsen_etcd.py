"""Jepsen's etcd register logs, read as a history of one register.

Jepsen's etcd test (as published with Knossos and reused as Porcupine's test data) logs each
client operation as it is invoked and as it completes, one line each, in the order they
happened::

    INFO  jepsen.util - 3	:invoke	:read	nil
    INFO  jepsen.util - 3	:ok	:read	4
    INFO  jepsen.util - 1	:invoke	:cas	[1 4]
    INFO  jepsen.util - 1	:fail	:cas	[1 4]
    INFO  jepsen.util - 0	:invoke	:write	2
    INFO  jepsen.util - 0	:info	:write	:timed-out

``process :type :f value``, the fields separated by tabs or spaces. The whole file is one
register (key :data:`KEY`) holding small integers or ``nil`` (absent, as at the start). They
become our :class:`~tools.checker.history.Op` events as follows:

* ``:read`` -> ``get``; ``:write V`` -> ``put "V"``; ``:cas [A B]`` -> ``cas ["A", "B"]``
  (values as strings, ``nil`` as None);
* ``:ok``, ``:fail`` and ``:info`` keep their meaning. A completion repeats its invoke's
  value except an ``:ok :read`` (the value read); a ``:fail`` or ``:info`` completion's own
  value (``:timed-out``) is not kept;
* times are line numbers: the log's order is the real-time order, and no two events share a
  line, so "completed before invoked" is exactly "on an earlier line";
* lines that are not client operations (other loggers, the nemesis's ``:nemesis`` process)
  are skipped; an operation line this reader does not understand is an error, never skipped.

An invoke never completed (the test ended) stays outstanding, as Jepsen means it: unknown.
"""

from __future__ import annotations

import os
import re
from typing import IO

from tools.checker.history import Op, pair_ops

KEY = "register"  # the one key of the history

# "INFO  jepsen.util - 3 :invoke :read nil": a client process (a number), then the rest.
_OPERATION = re.compile(r"^\S+\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)(?:\s+(.*?))?\s*$")
_FUNCTIONS = {"read": "get", "write": "put", "cas": "cas"}
_TYPES = ("invoke", "ok", "fail", "info")
_VALUE = re.compile(r"nil|-?\d+")
_PAIR = re.compile(r"\[\s*(nil|-?\d+)\s+(nil|-?\d+)\s*\]")


def _value(text: str) -> str | None:
    return None if text == "nil" else text


def _parse(text: str, f: str, where: str) -> object:
    """An invoke's value (or an ``:ok`` completion's) of ``f``, in our conventions."""
    if f == "cas":
        m = _PAIR.fullmatch(text)
        if m is None:
            raise ValueError(f"{where}: a cas value must be [A B], got {text!r}")
        return [_value(m.group(1)), _value(m.group(2))]
    if not _VALUE.fullmatch(text):
        raise ValueError(f"{where}: a {f} value must be an integer or nil, got {text!r}")
    return _value(text)


def read_jepsen_etcd(path_or_file: str | os.PathLike | IO[str]) -> list[Op]:
    """The history in a Jepsen etcd register log, validated as :func:`~tools.checker.pair_ops`
    does; ValueError naming the 1-based line of anything malformed (see the module docstring)."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, encoding="utf-8") as fh:
            return read_jepsen_etcd(fh)
    ops: list[Op] = []
    lines: list[int] = []
    invoked: dict[int, object] = {}  # process -> the value of its outstanding invoke
    for lineno, line in enumerate(path_or_file, 1):
        m = _OPERATION.match(line)
        if m is None:
            continue  # not a client operation
        where = f"line {lineno}"
        process, type_, name, text = int(m.group(1)), m.group(2), m.group(3), m.group(4) or ""
        if type_ not in _TYPES:
            raise ValueError(f"{where}: unknown type :{type_} (expected one of :{', :'.join(_TYPES)})")
        if name not in _FUNCTIONS:
            raise ValueError(f"{where}: unknown operation :{name} (expected :{', :'.join(_FUNCTIONS)})")
        f = _FUNCTIONS[name]
        if type_ == "invoke":
            value = None if f == "get" else _parse(text, f, where)
            invoked[process] = value
        elif type_ == "ok" and f == "get":
            value = _parse(text, f, where)
        elif process in invoked:
            value = invoked[process]
            if type_ == "ok" and _parse(text, f, where) != value:
                raise ValueError(f"{where}: completion {text!r} does not repeat its invoke's value")
        else:
            value = None  # a completion without an invoke: pair_ops says so below
        if type_ != "invoke":
            invoked.pop(process, None)
        if type_ in ("fail", "info") and f == "get":
            value = None  # a read that did not complete read nothing
        ops.append(Op(process, type_, f, KEY, value, lineno))
        lines.append(lineno)
    pair_ops(ops, lambda i: f"line {lines[i]}")
    return ops
