"""What must hold of a workload's recorded history: pure functions of the history alone.

The nemesis runs these on the history it just recorded, and ``tessera check`` on one saved
with ``tessera nemesis --history``; both call :func:`check_workload`, so a saved history
checks offline exactly as it did online.

- :func:`check_register`: per-key linearizability with the project's checker
  (:mod:`tools.checker`); a failure shows every bad key's smallest failing window the checker
  found, the smallest first.
- :func:`check_set`: after healing, every acknowledged add is present exactly once, nothing is
  present that was never attempted, an add whose every attempt definitely failed is absent,
  and an ``info`` add is present at most once. For list-valued keys also: elements in the
  order they were appended, and every read along the way a prefix of the final list.
- :func:`check_bank`: every successful read (and the final one) sees every account, no
  negative balance, and the initial total (all taken from the history's initial deposit).

The workloads (:mod:`tools.nemesis.workloads`) record the histories these read, to the
contract in :mod:`tools.nemesis.histories`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tools.checker import Op, Operation, check_history, describe, pair_events, pair_ops
from tools.nemesis.histories import CHECK_TIME_LIMIT_S, FINAL_READER, SETUP_PROCESS, WORKLOADS

KEYS_SHOWN = 20  # failing keys whose windows a register verdict shows

WINDOW_LIMIT = 40  # operations shown for one failure


@dataclass
class Verdict:
    name: str
    ok: bool | None  # None: undecided (the checker ran out of time)
    summary: str
    details: list[str] = field(default_factory=list)  # why not ok, smallest failing window first

    def report(self) -> str:
        state = {True: "OK", False: "FAILED", None: "UNDECIDED"}[self.ok]
        lines = [f"{self.name}: {state}: {self.summary}"]
        lines += [f"  {line}" for d in self.details for line in d.splitlines()]
        return "\n".join(lines)


# -- register ---------------------------------------------------------------------------------


def check_register(
    history: list[Op], time_limit_s: float = CHECK_TIME_LIMIT_S, name: str = "linearizability"
) -> Verdict:
    """Linearizability of the get/put/cas operations, per key; on failure every bad key's
    smallest failing window (the first :data:`KEYS_SHOWN`, the smallest windows first)."""
    ops = [op for op in history if op.f in ("get", "put", "cas")]
    result = check_history(ops, time_limit_s=time_limit_s)
    total = sum(s.operations for s in result.stats.values())
    summary = f"{len(result.stats)} keys, {total} operations"
    if result.ok:
        return Verdict(name, True, summary)
    details = []
    if result.failures:
        failures = sorted(result.failures, key=lambda f: len(f.window))
        details.append(f"{len(failures)} key(s) fail; the smallest failing window of each:")
        details.append(describe(dataclasses.replace(result, failures=failures[:KEYS_SHOWN])))
        if len(failures) > KEYS_SHOWN:
            details.append(f"... and {len(failures) - KEYS_SHOWN} more: "
                           + ", ".join(repr(f.key) for f in failures[KEYS_SHOWN:]))
    else:
        details.append(describe(result))
    return Verdict(name, result.ok, summary, details)


# -- set --------------------------------------------------------------------------------------

ADD_KEY = re.compile(r"set/add/(.+)$")
LIST_KEY = re.compile(r"set/list/(.+)$")


def _elements(value: object) -> list[str]:
    return str(value).split(",") if value else []


def _window(title: str, ops: Iterable[Operation]) -> tuple[str, list[Operation]]:
    unique = {o.index: o for o in ops}.values()
    chosen = sorted(unique, key=lambda o: (o.start, o.index))[:WINDOW_LIMIT]
    return title, chosen


def _show(problems: list[tuple[str, list[Operation]]], name: str, summary: str) -> Verdict:
    if not problems:
        return Verdict(name, True, summary)
    problems.sort(key=lambda p: len(p[1]))
    title, ops = problems[0]
    details = [f"{len(problems)} problem(s); the smallest failing window:", f"{title}:"]
    details += [f"  {op}" for op in ops]
    if len(problems) > 1:
        details.append("other problems:")
        details += [f"  {t}" for t, _ in problems[1:20]]
        if len(problems) > 20:
            details.append(f"  ... and {len(problems) - 20} more")
    return Verdict(name, False, summary, details)


def check_set(history: list[Op]) -> Verdict:
    """The set/append workload's invariants (see the module docstring)."""
    operations = pair_ops(history)
    finals: dict[str, Operation] = {}
    adds: dict[str, list[Operation]] = {}
    lists: dict[str, list[Operation]] = {}
    for op in operations:
        if op.process == FINAL_READER:
            if op.f == "get" and op.outcome == "ok":
                finals[op.key] = op
        elif ADD_KEY.search(op.key):
            adds.setdefault(op.key, []).append(op)
        elif LIST_KEY.search(op.key):
            lists.setdefault(op.key, []).append(op)
    problems: list[tuple[str, list[Operation]]] = []
    acked = 0

    add_elems = {key: m.group(1) for key in [*adds, *finals] if (m := ADD_KEY.search(key))}  # key -> element
    for key, elem in sorted(add_elems.items()):
        attempts = [op for op in adds.get(key, []) if op.f == "put"]
        final = finals.get(key)
        ok = any(a.outcome == "ok" for a in attempts)
        maybe = any(a.outcome == "info" for a in attempts)
        acked += ok
        if final is None:
            problems.append(_window(f"add {elem!r}: no final read of {key!r}", attempts))
            continue
        present = final.output is not None
        window = [*attempts, final]
        if present and final.output != elem:
            problems.append(_window(f"add {elem!r}: {key!r} holds {final.output!r}", window))
        elif present and not attempts:
            problems.append(_window(f"element {elem!r} present but never added", window))
        elif ok and not present:
            problems.append(_window(f"acknowledged add {elem!r} lost", window))
        elif present and not ok and not maybe:
            problems.append(_window(f"add {elem!r} failed, yet it is present", window))

    list_keys = set(lists) | {k for k in finals if LIST_KEY.search(k)}
    for key in sorted(list_keys):
        ops = lists.get(key, [])
        final = finals.get(key)
        if final is None:
            problems.append(_window(f"list {key!r}: no final read", ops[-WINDOW_LIMIT:]))
            continue
        final_elems = _elements(final.output)
        appends: dict[str, list[Operation]] = {}  # element -> the cas operations appending it
        for op in ops:
            if op.f == "cas":
                _, new = op.cas
                appends.setdefault(_elements(new)[-1], []).append(op)
        for elem, count in Counter(final_elems).items():
            if count > 1:
                problems.append(_window(
                    f"list {key!r}: element {elem!r} present {count} times (a write applied twice?)",
                    [*appends.get(elem, []), final],
                ))
        for elem, tries in appends.items():
            ok = any(t.outcome == "ok" for t in tries)
            maybe = any(t.outcome == "info" for t in tries)
            acked += ok
            if ok and elem not in final_elems:
                problems.append(_window(f"list {key!r}: acknowledged append of {elem!r} lost", [*tries, final]))
            elif not ok and not maybe and elem in final_elems:
                problems.append(_window(
                    f"list {key!r}: every cas appending {elem!r} answered failed, yet it is present",
                    [*tries, final],
                ))
        for elem in final_elems:
            if elem not in appends:
                problems.append(_window(f"list {key!r}: element {elem!r} present but never appended", [final]))
        order = {e: min(t.index for t in tries) for e, tries in appends.items()}
        ranks = [order[e] for e in final_elems if e in order]
        if ranks != sorted(ranks):
            problems.append(_window(f"list {key!r}: elements out of append order: {final.output!r}", [final]))
        for op in ops:
            seen = None
            if op.f == "get" and op.outcome == "ok":
                seen = op.output
            elif op.f == "cas" and op.outcome == "ok":
                seen = op.cas[1]
            if seen is not None and _elements(seen) != final_elems[: len(_elements(seen))]:
                problems.append(_window(
                    f"list {key!r}: {seen!r} observed, not a prefix of the final {final.output!r}", [op, final]
                ))
    summary = f"{len(add_elems)} add keys, {len(list_keys)} lists, {acked} acknowledged adds/appends"
    return _show(problems, "set", summary)


# -- bank -------------------------------------------------------------------------------------


def _show_bank(op: Operation) -> str:
    end = "?" if op.end is None else str(op.end)
    value = op.output if op.f == "read" else op.invoke.value
    return f"p{op.process} {op.f} {value!r} {op.outcome} [{op.start}..{end}]"


def bank_setup(history: list[Op]) -> tuple[list[str], int]:
    """The accounts and their total, from the history's initial deposit (the ``transfer`` by
    :data:`SETUP_PROCESS` whose value is ``{"deposit": {account: balance}}``); ValueError if
    the history has none."""
    for op in history:
        if op.process == SETUP_PROCESS and op.type == "invoke" and op.f == "transfer":
            deposit = op.value.get("deposit") if isinstance(op.value, dict) else None
            if isinstance(deposit, dict) and all(isinstance(v, int) for v in deposit.values()):
                return sorted(deposit), sum(deposit.values())
    raise ValueError(f"not a bank history: no initial deposit (a transfer by process {SETUP_PROCESS} "
                     'of {"deposit": {account: balance}})')


def check_bank(history: list[Op], accounts: list[str], total: int) -> Verdict:
    """Every ok read (and the final one) sees all accounts, none negative, the same total."""
    operations = pair_events(history)
    reads = [op for op in operations if op.f == "read" and op.outcome == "ok"]
    transfers = [op for op in operations if op.f == "transfer" and op.process != FINAL_READER]
    problems: list[tuple[str, list[Operation]]] = []
    want = set(accounts)
    for r in reads:
        balances = r.output if isinstance(r.output, dict) else {}
        why = []
        if set(balances) != want:
            missing, extra = sorted(want - set(balances)), sorted(set(balances) - want)
            why.append(f"accounts missing {missing} extra {extra}")
        bad = {k: v for k, v in balances.items() if not isinstance(v, int)}
        if bad:
            why.append(f"non-integer balances {bad}")
        else:
            if any(v < 0 for v in balances.values()):
                why.append("a negative balance")
            if sum(balances.values()) != total:
                why.append(f"total {sum(balances.values())} != {total}")
        if why:
            concurrent = [
                t for t in transfers
                if t.outcome != "fail" and t.start <= (r.end or 0) and (t.end is None or t.end >= r.start)
            ]
            concurrent.sort(key=lambda t: abs(t.start - r.start))
            window = sorted([r, *concurrent[: WINDOW_LIMIT - 1]], key=lambda o: (o.start, o.index))
            problems.append((f"read by p{r.process}: {'; '.join(why)}", window))
    if not any(r.process == FINAL_READER for r in reads):
        problems.append(("no final read", []))
    ok_transfers = sum(1 for t in transfers if t.outcome == "ok")
    summary = f"{len(reads)} reads, {ok_transfers} transfers acknowledged, total {total}"
    if not problems:
        return Verdict("bank", True, summary)
    problems.sort(key=lambda p: len(p[1]))
    title, ops = problems[0]
    details = [f"{len(problems)} bad read(s); the smallest failing window:", f"{title}:"]
    details += [f"  {_show_bank(op)}" for op in ops]
    details += [f"  also: {t}" for t, _ in problems[1:10]]
    return Verdict("bank", False, summary, details)


# -- all of a workload's checks ---------------------------------------------------------------


def check_workload(model: str, history: list[Op], time_limit_s: float = CHECK_TIME_LIMIT_S) -> list[Verdict]:
    """Every history check of the workload ``model`` (one of ``histories.WORKLOADS``): what the nemesis
    decides online and ``tessera check`` offline. ValueError for an unknown model, a malformed
    history, or a bank history without its initial deposit."""
    if model == "register":
        return [check_register(history, time_limit_s)]
    if model == "set":
        return [check_set(history), check_register(history, time_limit_s)]
    if model == "bank":
        accounts, total = bank_setup(history)
        return [check_bank(history, accounts, total)]
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(WORKLOADS)}")
