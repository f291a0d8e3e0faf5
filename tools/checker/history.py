"""Jepsen-shaped client histories: the records, their validation and JSONL I/O.

A history is a flat list of :class:`Op` events in the order they were
recorded.  Each client *process* alternates ``invoke`` with one completion
(``ok``, ``fail`` or ``info``); an invoke may also be left without completion
(the client crashed or the test ended).  This is the same shape Jepsen uses, so
histories from the deterministic simulator and from a real-cluster nemesis can
share one checker and one on-disk format.

Value conventions (per ``f``):

* ``put``: invoke ``value`` is the value written; the completion repeats it.
* ``get``: invoke ``value`` is ``None``; an ``ok`` completion carries the value
  read (``None`` means the key was absent).
* ``cas``: invoke and completion ``value`` are ``[expected, new]``;
  ``expected is None`` means "the key must be absent".  ``ok`` means the swap
  happened; a compare that did not match is reported as ``fail``.

Outcomes: ``ok`` happened, with that result; ``fail`` definitely did not take
effect; ``info`` (or no completion at all) is unknown.

:func:`pair_ops` validates a history and pairs each invoke with its
completion into an :class:`Operation`, the unit the checker works on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

TYPES = ("invoke", "ok", "fail", "info")
FUNCTIONS = ("get", "put", "cas")
FIELDS = ("process", "type", "f", "key", "value", "time")


@dataclass(slots=True)
class Op:
    """One history event: an invocation or a completion."""

    process: int
    type: str  # "invoke" | "ok" | "fail" | "info"
    f: str  # "get" | "put" | "cas"
    key: str
    value: object
    time: int  # ns, or simulated time


@dataclass(slots=True)
class Operation:
    """An invoke paired with its completion (``None``: it never completed).

    ``index`` is the position of the invoke in the history, which gives every
    operation a stable identity for reports.
    """

    index: int
    invoke: Op
    completion: Op | None

    @property
    def process(self) -> int:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def key(self) -> str:
        return self.invoke.key

    @property
    def outcome(self) -> str:
        """``"ok"``, ``"fail"`` or ``"info"`` (also for a missing completion)."""
        return "info" if self.completion is None else self.completion.type

    @property
    def start(self) -> int:
        return self.invoke.time

    @property
    def end(self) -> int | None:
        """Completion time, or ``None`` when the operation never completed."""
        return None if self.completion is None else self.completion.time

    @property
    def input(self) -> object:
        """What was asked: the put value, ``(expected, new)`` for cas, None for get."""
        if self.f == "cas":
            return self.cas
        return self.invoke.value

    @property
    def cas(self) -> tuple[object, object]:
        """A cas's ``(expected, new)``."""
        value = self.invoke.value
        assert isinstance(value, (list, tuple)), f"not a cas: {self.invoke}"  # pair_ops checked the shape
        expected, new = value
        return expected, new

    @property
    def output(self) -> object:
        """The value a ``get`` read (only meaningful when ``outcome == "ok"``)."""
        return None if self.completion is None else self.completion.value

    def __str__(self) -> str:
        if self.f == "get":
            what = "get" if self.outcome != "ok" else f"get -> {self.output!r}"
        elif self.f == "put":
            what = f"put {self.input!r}"
        else:
            expected, new = self.cas
            what = f"cas {expected!r} -> {new!r}"
        end = "?" if self.end is None else str(self.end)
        return f"p{self.process} {what} {self.outcome} [{self.start}..{end}]"


def _check_op(op: Op, where: str = "op") -> None:
    """Raise ValueError unless ``op`` is a well-formed event on its own."""
    if op.type not in TYPES:
        raise ValueError(f"{where}: unknown type {op.type!r} (expected one of {', '.join(TYPES)})")
    if op.f not in FUNCTIONS:
        raise ValueError(f"{where}: unknown f {op.f!r} (expected one of {', '.join(FUNCTIONS)})")
    if op.f == "cas" and not (isinstance(op.value, (list, tuple)) and len(op.value) == 2):
        raise ValueError(f"{where}: cas value must be [expected, new], got {op.value!r}")
    try:
        hash(tuple(op.value) if isinstance(op.value, list) else op.value)
    except TypeError:
        raise ValueError(f"{where}: value {op.value!r} is not hashable") from None


def pair_ops(ops: Iterable[Op], label: Callable[[int], str] | None = None) -> list[Operation]:
    """Validate a history and pair invokes with completions, in invoke order.

    Raises ValueError (naming the offending event by its 0-based position, or
    as ``label(position)`` says, e.g. a line of the file it came from) on
    an unknown type or f, a malformed cas value, a completion without an
    outstanding invoke, a second invoke while the process still has one
    outstanding, a completion whose f/key differ from its invoke, or a
    completion earlier than its invoke.  Events need not be sorted by time,
    only recorded in each process's order.  A process may invoke again after
    an ``info`` completion (Jepsen retires it; either is fine here, since the
    unknown operation stays concurrent with everything after it).
    """
    return _pair(list(ops), label or (lambda i: f"op #{i}"))


def pair_events(ops: Iterable[Op]) -> list[Operation]:
    """:func:`pair_ops` for a history of any operations (``f`` any name, ``value`` any JSON
    value, as in the nemesis's bank histories): the same pairing rules, no register rules."""
    return _pair(list(ops), lambda i: f"op #{i}", _check_event)


def _check_event(op: Op, where: str = "op") -> None:
    """Raise ValueError unless ``op`` is a well-formed event of any kind of operation."""
    if op.type not in TYPES:
        raise ValueError(f"{where}: unknown type {op.type!r} (expected one of {', '.join(TYPES)})")


def _pair(
    ops: list[Op], label: Callable[[int], str], check: Callable[[Op, str], None] = _check_op
) -> list[Operation]:
    pending: dict[int, Operation] = {}
    result: list[Operation] = []
    for i, op in enumerate(ops):
        where = label(i)
        check(op, where)
        if op.type == "invoke":
            prior = pending.get(op.process)
            if prior is not None:
                raise ValueError(
                    f"{where}: process {op.process} invoked {op.f} while its {prior.f} "
                    f"({label(prior.index)}) is still outstanding"
                )
            invoked = Operation(i, op, None)
            pending[op.process] = invoked
            result.append(invoked)
            continue
        operation = pending.pop(op.process, None)
        if operation is None:
            raise ValueError(
                f"{where}: {op.type} completion for process {op.process} has no outstanding invoke"
            )
        inv = operation.invoke
        if op.f != inv.f or op.key != inv.key:
            raise ValueError(
                f"{where}: completion {op.f} {op.key!r} does not match its invoke "
                f"{inv.f} {inv.key!r} ({label(operation.index)})"
            )
        if op.time < inv.time:
            raise ValueError(f"{where}: completion time {op.time} is before its invoke time {inv.time}")
        operation.completion = op
    return result


def _check_json_value(op: Op, where: str) -> None:
    # A cas's value is a pair (its shape already checked by _check_op), any other one value.
    values = op.value if op.f == "cas" and isinstance(op.value, (list, tuple)) else (op.value,)
    if not all(v is None or isinstance(v, str) for v in values):
        raise ValueError(f"{where}: value {op.value!r} must be a str or null (cas: [str|null, str|null])")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def write_jsonl(ops: Iterable[Op], path_or_file: str | os.PathLike | IO[str]) -> None:
    """Write one JSON object per event with exactly the keys of :data:`FIELDS`.

    Each event is validated on its own (type, f, field types, str/null values)
    but pairing is not checked, so a caller may append a history in chunks.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "w", encoding="utf-8") as fh:
            write_jsonl(ops, fh)
        return
    for i, op in enumerate(ops):
        where = f"op #{i}"
        _check_op(op, where)
        if not (_is_int(op.process) and _is_int(op.time) and isinstance(op.key, str)):
            raise ValueError(f"{where}: process and time must be int and key str, got {op!r}")
        _check_json_value(op, where)
        value = list(op.value) if isinstance(op.value, tuple) else op.value
        record = dict(zip(FIELDS, (op.process, op.type, op.f, op.key, value, op.time)))
        path_or_file.write(json.dumps(record, separators=(",", ":")) + "\n")


def write_events(ops: Iterable[Op], path_or_file: str | os.PathLike | IO[str]) -> None:
    """:func:`write_jsonl` for a history of any operations (see :func:`pair_events`): the
    same six keys, any ``f``, any JSON ``value``. Nothing is validated."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "w", encoding="utf-8") as fh:
            write_events(ops, fh)
        return
    for op in ops:
        record = dict(zip(FIELDS, (op.process, op.type, op.f, op.key, op.value, op.time)))
        path_or_file.write(json.dumps(record, separators=(",", ":")) + "\n")


def read_jsonl(path_or_file: str | os.PathLike | IO[str]) -> list[Op]:
    """Read a history written by :func:`write_jsonl` and validate it.

    Blank lines are skipped.  Raises ValueError naming the 1-based line for
    bad JSON, a wrong key set, wrong field types, or any :func:`pair_ops`
    error (completion without invoke, two outstanding invokes, ...).
    """
    return _read(path_or_file, register=True)


def read_events(path_or_file: str | os.PathLike | IO[str]) -> list[Op]:
    """Read a history written by :func:`write_events` (or :func:`write_jsonl`): any ``f``,
    any JSON ``value``, validated as :func:`pair_events` does. Errors as :func:`read_jsonl`'s."""
    return _read(path_or_file, register=False)


def _read(path_or_file: str | os.PathLike | IO[str], register: bool) -> list[Op]:
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, encoding="utf-8") as fh:
            return _read(fh, register)
    ops: list[Op] = []
    lines: list[int] = []
    for lineno, line in enumerate(path_or_file, 1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if set(record) != set(FIELDS):
            missing = sorted(set(FIELDS) - set(record))
            extra = sorted(set(record) - set(FIELDS))
            raise ValueError(
                f"{where}: keys must be exactly {list(FIELDS)}; missing {missing}, unexpected {extra}"
            )
        if not (_is_int(record["process"]) and _is_int(record["time"])):
            raise ValueError(f"{where}: process and time must be integers")
        for name in ("type", "f", "key"):
            if not isinstance(record[name], str):
                raise ValueError(f"{where}: {name} must be a string, got {record[name]!r}")
        op = Op(**record)
        if register:
            _check_op(op, where)
            _check_json_value(op, where)
        ops.append(op)
        lines.append(lineno)
    _pair(ops, lambda i: f"line {lines[i]}", _check_op if register else _check_event)
    return ops
