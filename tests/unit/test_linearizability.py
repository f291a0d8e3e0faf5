"""Tests for tools.checker: history validation/JSONL and the linearizability search.

Small hand-written histories pin down the semantics (ok / fail / info), a
brute-force reference cross-checks the search on many tiny random histories,
and histories generated from a real sequential execution check that valid
histories pass and a single corrupted read is caught, at realistic size.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import time
from collections.abc import Sequence

import pytest

import tools.checker.linearizability as lin
from tools.checker import (
    CheckResult,
    Op,
    check_history,
    describe,
    pair_events,
    pair_ops,
    read_events,
    read_jsonl,
    write_events,
    write_jsonl,
)
from tools.checker.history import FIELDS

# ---------------------------------------------------------------- helpers

# What an operation carries: a put's value, a cas's [expected, new], or what a get read.
Value = str | list[str | None] | None


class H:
    """Build histories tersely: ``h.op(p, "put", "1", 0, 10)`` etc.

    Events are sorted by time at the end (stable, so an invoke and its
    completion keep their order), like a recorder would emit them.
    """

    def __init__(self) -> None:
        self.events: list[tuple[int, int, Op]] = []

    def _add(self, time_: int, op: Op) -> None:
        self.events.append((time_, len(self.events), op))

    def op(
        self, p: int, f: str, value: Value, start: int, end: int | None,
        outcome: str = "ok", key: str = "k", result: Value = None,
    ) -> H:
        """One operation.  ``value``: put value, [expected, new] for cas, or the
        value read for get (``result`` overrides what a get completion carries).
        ``end=None`` leaves the invoke without completion."""
        inv_value = None if f == "get" else value
        done_value = value if result is None else result
        if f == "get" and outcome != "ok":
            done_value = None
        self._add(start, Op(p, "invoke", f, key, inv_value, start))
        if end is not None:
            self._add(end, Op(p, outcome, f, key, done_value, end))
        return self

    def put(self, p: int, v: str | None, start: int, end: int | None, outcome: str = "ok", key: str = "k") -> H:
        return self.op(p, "put", v, start, end, outcome, key)

    def get(self, p: int, v: str | None, start: int, end: int | None, outcome: str = "ok", key: str = "k") -> H:
        return self.op(p, "get", v, start, end, outcome, key)

    def cas(
        self, p: int, expected: str | None, new: str | None, start: int, end: int | None,
        outcome: str = "ok", key: str = "k",
    ) -> H:
        return self.op(p, "cas", [expected, new], start, end, outcome, key)

    @property
    def ops(self) -> list[Op]:
        return [op for _, _, op in sorted(self.events, key=lambda e: (e[0], e[1]))]

    def check(self, time_limit_s: float | None = None) -> CheckResult:
        return check_history(self.ops, time_limit_s=time_limit_s)


def brute_force(ops: list[Op]) -> bool:
    """Reference: try every subset of unknown writes and every order."""
    by_key: dict[str, list] = {}
    for o in pair_ops(ops):
        by_key.setdefault(o.key, []).append(o)
    for key_ops in by_key.values():
        must = [o for o in key_ops if o.outcome == "ok"]
        may = [o for o in key_ops if o.outcome == "info" and o.f != "get"]
        subsets = (sub for r in range(len(may) + 1) for sub in itertools.combinations(may, r))
        if not any(_some_order(must + list(sub)) for sub in subsets):
            return False
    return True


def _some_order(ops) -> bool:
    for perm in itertools.permutations(ops):
        if any(b.outcome == "ok" and b.end < a.start for i, a in enumerate(perm) for b in perm[i + 1 :]):
            continue  # violates real time: b finished before a started but is ordered after it
        state, good = None, True
        for o in perm:
            if o.f == "get":
                good = state == o.output
            elif o.f == "put":
                state = o.input
            else:
                expected, new = o.input
                good = state == expected
                state = new
            if not good:
                break
        if good:
            return True
    return False


def random_small_history(rng: random.Random, keys=("k",), values=(None, "1", "2"), unique=False) -> list[Op]:
    """Arbitrary (mostly non-linearizable) tiny history.

    Values come from ``values`` (so writes collide), or with ``unique`` every
    write gets a fresh value while reads and cas expectations pick among all
    of them (plus None), which exercises the unique-value search rules.
    """
    h = H()
    n_ops = 0
    fresh = iter(range(1, 100))
    pool = [None] + [str(i) for i in range(1, 7)]
    for p in range(rng.randint(1, 3)):
        t = rng.randint(0, 4)
        for _ in range(rng.randint(1, 3)):
            if n_ops == 6:
                break
            n_ops += 1
            f = rng.choice(["get", "put", "cas"])
            start = t
            end: int | None = t + rng.randint(0, 6)
            outcome = rng.choice(["ok", "ok", "ok", "fail", "info"])
            if outcome == "info" and rng.random() < 0.5:
                end = None
            v: Value
            if unique:
                v = rng.choice(pool) if f == "get" else str(next(fresh))
                if f == "cas":
                    v = [rng.choice(pool), v]
            else:
                v = rng.choice(values[1:]) if f == "put" else rng.choice(values)
                if f == "cas":
                    v = [rng.choice(values), rng.choice(values[1:])]
            h.op(p, f, v, start, end, outcome, key=rng.choice(keys))
            if end is None:
                break  # this process never completes: it issues nothing more
            t = end + rng.randint(0, 3)
    return h.ops


def generate(
    seed: int,
    processes: int = 10,
    ops_per_process: int = 100,
    keys: Sequence[str] = ("a", "b", "c"),
    info_rate: float = 0.05,
) -> list[Op]:
    """A history recorded from a real sequential execution of a register map.

    Every operation gets an interval and a linearization point inside it
    (unknown operations may take effect after their completion, or not at
    all); results come from applying operations in linearization-point order,
    so the history is linearizable by construction.  Written values are
    unique.  A process whose operation was unknown continues under a fresh
    process id, as in Jepsen.
    """
    rng = random.Random(seed)
    specs = []
    next_pid = processes
    for first_pid in range(processes):
        pid = first_pid
        t = rng.randrange(50)
        for _ in range(ops_per_process):
            inv = t + rng.randrange(1, 50)
            point = inv + rng.randrange(1, 100)
            comp = point + rng.randrange(1, 100)
            unknown = rng.random() < info_rate
            if unknown and rng.random() < 0.3:
                point = comp + rng.randrange(1, 1000)  # took effect after the client gave up
            f, key = rng.choice(["get", "put", "cas"]), rng.choice(keys)
            specs.append((point, pid, f, key, inv, comp, unknown, not unknown or rng.random() < 0.7))
            t = comp
            if unknown:
                pid, next_pid = next_pid, next_pid + 1
    state: dict[str, str] = {}
    fresh = itertools.count()
    written: list[str] = []
    events = []
    for _point, pid, f, key, inv, comp, unknown, completes in sorted(specs):
        cur = state.get(key)
        effect = not unknown or rng.random() < 0.5
        outcome = "info" if unknown else "ok"
        inv_value: Value
        value: Value
        if f == "get":
            inv_value, value = None, (None if unknown else cur)
        elif f == "put":
            inv_value = value = f"v{next(fresh)}"
            written.append(value)
            if effect:
                state[key] = value
        else:
            expected = cur if rng.random() < 0.6 else rng.choice([None, *written[-5:]])
            new = f"v{next(fresh)}"
            written.append(new)
            inv_value = value = [expected, new]
            if expected != cur and not unknown:
                outcome = "fail"
            elif expected == cur and effect:
                state[key] = new
        events.append((inv, 0, Op(pid, "invoke", f, key, inv_value, inv)))
        if completes:
            events.append((comp, 1, Op(pid, outcome, f, key, value, comp)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [op for _, _, op in events]


def corrupt_one_read(ops: list[Op], rng: random.Random) -> Op:
    """Make one successful read return a value nobody ever wrote."""
    victim = rng.choice([op for op in ops if op.f == "get" and op.type == "ok"])
    victim.value = "never-written"
    return victim


# ---------------------------------------------------------------- accepted histories


def test_empty_history_is_linearizable():
    result = check_history([])
    assert result.ok is True and result.failures == [] and result.stats == {}


def test_sequential_valid_history():
    h = (
        H()
        .get(1, None, 0, 1)
        .put(1, "1", 2, 3)
        .get(2, "1", 4, 5)
        .cas(2, "1", "2", 6, 7)
        .get(1, "2", 8, 9)
        .cas(1, None, "3", 10, 11, outcome="fail")
        .get(1, "2", 12, 13)
    )
    result = h.check()
    assert result.ok is True
    assert result.stats["k"].ok is True and result.stats["k"].operations == 7


def test_concurrent_ops_with_a_valid_order():
    # put 2 must linearize before put 1 (the later read sees 1), although
    # put 1 was invoked first; the early reader sees either.
    h = (
        H()
        .put(1, "1", 0, 10)
        .put(2, "2", 5, 15)
        .get(3, "2", 6, 9)
        .get(3, "1", 16, 20)
        .get(4, "1", 12, 30)
    )
    assert h.check().ok is True


def test_equal_timestamps_count_as_concurrent():
    h = H().put(1, "1", 0, 10).get(2, None, 10, 12)
    assert h.check().ok is True


# ---------------------------------------------------------------- classic violations


def test_stale_read_after_completed_write():
    h = H().put(1, "1", 0, 10).put(1, "2", 20, 30).get(2, "1", 40, 50)
    result = h.check()
    assert result.ok is False
    stuck = result.failures[0].stuck.completion
    assert stuck is not None and stuck.value == "1"


def test_reads_observing_writes_in_contradictory_orders():
    h = (
        H()
        .put(1, "a", 0, 100)
        .put(2, "b", 0, 100)
        .get(3, "a", 10, 20)
        .get(3, "b", 30, 40)
        .get(4, "b", 10, 20)
        .get(4, "a", 30, 40)
    )
    assert h.check().ok is False


def test_cas_from_a_value_that_was_never_current():
    assert H().put(1, "1", 0, 10).cas(2, "2", "3", 20, 30).check().ok is False
    assert H().put(1, "1", 0, 10).cas(2, None, "3", 20, 30).check().ok is False
    assert H().put(1, "1", 0, 10).cas(2, "1", "3", 20, 30).check().ok is True


def test_read_of_a_value_never_written():
    assert H().put(1, "1", 0, 10).get(2, "zzz", 5, 15).check().ok is False


def test_read_cannot_see_a_write_invoked_after_it_completed():
    assert H().get(1, "1", 0, 5).put(2, "1", 10, 20).check().ok is False


# ---------------------------------------------------------------- fail and info


def test_failed_ops_are_ignored():
    assert H().put(1, "1", 0, 10, outcome="fail").get(2, None, 20, 30).check().ok is True
    # a read that sees a failed write's value is a violation
    assert H().put(1, "1", 0, 10, outcome="fail").get(2, "1", 20, 30).check().ok is False
    # a failed cas does not take effect either
    h = H().put(1, "1", 0, 10).cas(2, "1", "2", 20, 30, outcome="fail").get(2, "2", 40, 50)
    assert h.check().ok is False


@pytest.mark.parametrize("end", [10, None], ids=["info", "no-completion"])
def test_unknown_write_may_or_may_not_take_effect(end):
    outcome = "info"
    seen = H().put(1, "1", 0, end, outcome).get(2, "1", 20, 30).check()
    unseen = H().put(1, "1", 0, end, outcome).get(2, None, 20, 30).get(2, None, 40, 50).check()
    late = H().put(1, "1", 0, end, outcome).get(2, None, 20, 30).get(2, "1", 40, 50).check()
    assert (seen.ok, unseen.ok, late.ok) == (True, True, True)
    # once observed it cannot be undone
    assert H().put(1, "1", 0, end, outcome).get(2, "1", 20, 30).get(2, None, 40, 50).check().ok is False
    # it cannot be seen before it was invoked
    assert H().get(2, "1", 0, 5).put(1, "1", 10, end, outcome).check().ok is False


def test_unknown_cas_takes_effect_only_from_its_expected_value():
    assert H().cas(1, None, "1", 0, 10, "info").get(2, "1", 20, 30).check().ok is True
    h = H().put(1, "0", 0, 5).cas(1, None, "1", 10, 20, "info").get(2, "1", 30, 40)
    assert h.check().ok is False


def test_unknown_and_failed_reads_constrain_nothing():
    h = H().put(1, "1", 0, 10).get(2, "zzz", 20, 30, outcome="info").get(3, "zzz", 20, 30, outcome="fail")
    assert h.check().ok is True


def test_duplicate_values_with_unknown_writes():
    # Two writers of "1": the reductions must not assume the info one is the source.
    h = H().put(1, "1", 0, 10, "info").put(2, "2", 20, 30).put(3, "1", 40, 50).get(4, "1", 60, 70)
    assert h.check().ok is True
    h = H().put(1, "1", 0, None, "info").put(2, "2", 20, 30).get(4, "1", 60, 70).get(4, "2", 80, 90)
    assert h.check().ok is False


def test_cas_from_a_value_written_twice_may_wait_for_the_second_write():
    # The cas is legal right after put 1, but must wait for the second put 1.
    h = H().put(1, "1", 0, 1).cas(2, "1", "3", 2, 100).put(3, "2", 2, 10).get(3, "2", 11, 12)
    assert h.put(3, "1", 13, 14).get(3, "3", 101, 102).check().ok is True
    # Same with the initial value: None is written again by a put of None.
    h = H().cas(2, None, "3", 0, 100).put(3, "2", 0, 10).get(3, "2", 11, 12)
    assert h.put(3, None, 13, 14).get(3, "3", 101, 102).check().ok is True
    h = H().cas(2, None, "3", 0, 100).put(3, "2", 0, 10).get(3, "2", 11, 12).get(3, "3", 101, 102)
    assert h.check().ok is False


def test_unobserved_put_followed_by_a_put_that_starts_after_it():
    # put 2 is never read; it must directly precede put 3, which starts later.
    h = H().put(1, "1", 0, 1).get(2, "1", 2, 30).put(1, "2", 2, 10).put(1, "3", 11, 12).get(3, "3", 13, 14)
    assert h.check().ok is True
    h = H().put(1, "1", 0, 1).put(1, "2", 2, 10).get(2, "1", 11, 30).put(1, "3", 31, 32)
    assert h.check().ok is False


# ---------------------------------------------------------------- reporting


def test_multi_key_history_reports_only_the_broken_key():
    h = H()
    for i, key in enumerate("abc"):
        h.put(i, f"{key}1", 0, 10, key=key).get(i, f"{key}1", 20, 30, key=key)
    h.put(9, "x", 40, 50, key="b").get(9, "b1", 60, 70, key="b")  # stale read on b
    result = h.check()
    assert result.ok is False
    assert [f.key for f in result.failures] == ["b"]
    assert {k: s.ok for k, s in result.stats.items()} == {"a": True, "b": False, "c": True}


def test_window_contains_the_offending_op_and_the_state(monkeypatch):
    monkeypatch.setattr(lin, "_PREPASS", False)  # the pre-pass would see the stale read first
    h = H()
    for i in range(20):  # a long valid prefix
        h.put(1, f"v{i}", 100 * i, 100 * i + 10).get(2, f"v{i}", 100 * i + 20, 100 * i + 30)
    h.put(1, "x", 5000, 5010)
    h.put(3, "y", 5020, 5100)  # concurrent with the bad read
    h.get(2, "v3", 5030, 5040)  # stale
    h.get(4, "x", 6000, 6010)  # after the failure: not in the window
    result = h.check()
    assert result.ok is False
    (failure,) = result.failures
    bad = failure.stuck
    assert (bad.f, bad.output, bad.start) == ("get", "v3", 5030)
    assert bad in failure.window
    starts = [op.start for op in failure.window]
    assert starts == sorted(starts)
    assert 5020 in starts and 5000 in starts and 6000 not in starts
    assert all(op in failure.window for op in failure.linearized[-lin.WINDOW_CONTEXT :])
    assert len(failure.window) <= 2 + lin.WINDOW_CONTEXT + 1
    assert failure.state in ("x", "y")
    assert len(failure.linearized) >= 41
    assert [op.start for op in failure.linearized[:3]] == [0, 20, 100]
    text = describe(result)
    assert "key 'k'" in text and "get -> 'v3'" in text and "cannot be linearized" in text
    assert "NOT LINEARIZABLE" in text


def test_describe_ok_and_unknown():
    assert "OK" in describe(H().put(1, "1", 0, 1).check())
    result = H().put(1, "1", 0, 1).check(time_limit_s=0)
    assert result.ok is None and result.stats["k"].ok is None
    assert "UNKNOWN" in describe(result)


def test_time_limit_gives_up_on_a_hard_history():
    # Many concurrent completed writes of colliding values, observed by reads, then two
    # readers that see the last two in opposite orders: every order of the writes must be
    # ruled out, and no reduction applies (the values repeat, the writes are all definite).
    h = H()
    for p in range(24):
        h.put(100 + p, "12"[p % 2], 0, 100_000)
    for i in range(24):
        h.get(1, "12"[i % 2], 10 + 10 * i, 15 + 10 * i)
    for reader, first, second in ((1, "1", "2"), (2, "2", "1")):
        h.get(reader, first, 5000, 5010).get(reader, second, 5020, 5030)
    started = time.monotonic()
    result = h.check(time_limit_s=0.2)
    assert result.ok is None
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- history format


def test_jsonl_round_trip(tmp_path):
    ops = H().put(1, "1", 0, 10).cas(2, None, "2", 5, 15, "fail").get(3, "1", 20, None, "info").ops
    path = tmp_path / "h.jsonl"
    write_jsonl(ops, path)
    lines = path.read_text().splitlines()
    assert len(lines) == len(ops)
    assert all(set(json.loads(line)) == {"process", "type", "f", "key", "value", "time"} for line in lines)
    assert read_jsonl(path) == ops
    buf = io.StringIO()
    write_jsonl(ops, buf)
    buf.seek(0)
    assert read_jsonl(buf) == ops
    cas = {"process": 2, "type": "invoke", "f": "cas", "key": "k", "value": [None, "2"], "time": 5}
    assert json.loads(lines[1]) == cas


def _jsonl(*records) -> io.StringIO:
    return io.StringIO("".join(json.dumps(r) + "\n" for r in records))


def _rec(process=1, type="invoke", f="put", key="k", value="1", time=0):
    return {"process": process, "type": type, "f": f, "key": key, "value": value, "time": time}


@pytest.mark.parametrize(
    "records, message",
    [
        ([_rec(type="started")], "line 1: unknown type 'started'"),
        ([_rec(f="delete")], "line 1: unknown f 'delete'"),
        ([_rec(type="ok")], "line 1: ok completion for process 1 has no outstanding invoke"),
        ([_rec(), _rec(f="get", value=None, time=1)], "line 2: process 1 invoked get while its put (line 1)"),
        ([_rec(), _rec(type="ok", time=-1)], "line 2: completion time -1 is before its invoke time 0"),
        ([_rec(), _rec(type="ok", key="other", time=1)], "does not match its invoke"),
        ([_rec(f="cas", value="1")], "cas value must be [expected, new]"),
        ([{**_rec(), "extra": 1}], "unexpected ['extra']"),
        ([{k: v for k, v in _rec().items() if k != "time"}], "missing ['time']"),
        ([_rec(time="0")], "process and time must be integers"),
        ([_rec(value=7)], "must be a str or null"),
    ],
)
def test_jsonl_validation_errors(records, message):
    with pytest.raises(ValueError) as err:
        read_jsonl(_jsonl(*records))
    assert message in str(err.value)


def test_events_of_any_operation_round_trip(tmp_path):
    # The bank's vocabulary: its own operations and JSON values, paired like any history.
    ops = [
        Op(7, "invoke", "transfer", "bank", {"from": "a", "to": "b", "amount": 3}, 0),
        Op(8, "invoke", "read", "bank", None, 1),
        Op(7, "ok", "transfer", "bank", {"from": "a", "to": "b", "amount": 3}, 2),
        Op(8, "ok", "read", "bank", {"a": 7, "b": 13}, 3),
    ]
    path = tmp_path / "bank.jsonl"
    write_events(ops, path)
    assert read_events(path) == ops
    assert [o.output for o in pair_events(ops)] == [ops[2].value, {"a": 7, "b": 13}]
    with pytest.raises(ValueError, match="f 'transfer'"):
        read_jsonl(path)  # not a register history
    path.write_text(path.read_text() + json.dumps(dict(zip(FIELDS, (8, "ok", "read", "bank", None, 4)))) + "\n")
    with pytest.raises(ValueError, match="line 5: ok completion for process 8 has no outstanding invoke"):
        read_events(path)


def test_jsonl_rejects_bad_json_and_skips_blank_lines():
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_jsonl(io.StringIO(json.dumps(_rec()) + "\n{oops\n"))
    assert len(read_jsonl(io.StringIO("\n" + json.dumps(_rec()) + "\n\n"))) == 1


def test_check_history_validates():
    with pytest.raises(ValueError, match="op #1: process 1 invoked"):
        check_history([Op(1, "invoke", "put", "k", "1", 0), Op(1, "invoke", "put", "k", "2", 1)])
    with pytest.raises(ValueError, match="op #0: unknown type"):
        check_history([Op(1, "start", "put", "k", "1", 0)])
    with pytest.raises(ValueError, match="op #0: unknown f"):
        write_jsonl([Op(1, "invoke", "incr", "k", "1", 0)], io.StringIO())


# ---------------------------------------------------------------- randomized


@pytest.mark.parametrize("unique", [False, True], ids=["colliding-values", "unique-values"])
@pytest.mark.parametrize("reduce", [True, False], ids=["reduced", "unreduced"])
def test_matches_brute_force_on_small_random_histories(monkeypatch, reduce, unique):
    monkeypatch.setattr(lin, "_REDUCE", reduce)
    rng = random.Random(1234)
    verdicts = []
    for _ in range(600):
        ops = random_small_history(rng, keys=rng.choice([("k",), ("k", "j")]), unique=unique)
        expected = brute_force(ops)
        result = check_history(ops)
        assert result.ok is expected, "\n".join(map(str, ops))
        if not expected:
            assert all(f.stuck in f.window for f in result.failures)
        verdicts.append(expected)
    assert 100 < sum(verdicts) < 500  # both kinds of history were exercised


@pytest.mark.parametrize("seed", range(8))
def test_generated_histories_pass_and_a_corrupted_read_fails(seed):
    ops = generate(seed, processes=5, ops_per_process=60, keys=("a", "b"), info_rate=0.1)
    result = check_history(ops)
    assert result.ok is True, describe(result)
    victim = corrupt_one_read(ops, random.Random(seed))
    result = check_history(ops)
    assert result.ok is False
    assert [f.key for f in result.failures] == [victim.key]
    assert victim in [op.completion for op in result.failures[0].window]


def test_performance_10_processes_x_1000_ops():
    ops = generate(7, processes=10, ops_per_process=1000, keys=tuple("abcde"), info_rate=0.05)
    assert len([op for op in ops if op.type == "invoke"]) == 10_000
    started = time.perf_counter()
    result = check_history(ops, time_limit_s=10)
    valid_s = time.perf_counter() - started
    assert result.ok is True
    victim = corrupt_one_read(ops, random.Random(7))
    started = time.perf_counter()
    result = check_history(ops, time_limit_s=10)
    invalid_s = time.perf_counter() - started
    assert result.ok is False and result.failures[0].key == victim.key
    assert valid_s < 2 and invalid_s < 2, (valid_s, invalid_s)


# ---------------------------------------------------------------- the pre-pass


def test_prepass_rejects_values_no_operation_could_have_written():
    cases = {
        "never written": H().put(1, "1", 0, 10).get(2, "zzz", 20, 30),
        "written by a failed put": H().put(1, "1", 0, 10, "fail").get(2, "1", 20, 30),
        "written only after the read": H().get(2, "1", 0, 5).put(1, "1", 10, None, "info"),
        "overwritten before the read": H().put(1, "1", 0, 10).put(1, "2", 20, 30).get(2, "1", 40, 50),
        "the initial value, overwritten": H().put(1, "1", 0, 10).get(2, None, 20, 30),
        "a cas from a value never written": H().put(1, "1", 0, 10).cas(2, "2", "3", 20, 30),
    }
    for what, h in cases.items():
        result = h.check()
        assert result.ok is False, what
        (failure,) = result.failures
        assert failure.reason and failure.stuck in failure.window, what
        assert result.stats["k"].steps == 0, what  # no search
    text = describe(cases["overwritten before the read"].check())
    assert "though every write of it came before p1 put '2' ok [20..30], which completed before the read began" in text


def test_prepass_leaves_possible_observations_to_the_search():
    # Each of these observations could have been written (the search decides the rest).
    assert H().put(1, "1", 0, None, "info").put(3, "2", 20, 30).get(2, "1", 40, 50).check().ok is True
    assert H().put(1, "1", 0, 25).put(3, "2", 20, 30).get(2, "1", 40, 50).check().ok is True  # overlap
    assert H().get(2, "1", 0, 10).put(1, "1", 10, 20).check().ok is True  # invoked as it completed
    assert H().cas(1, "0", "1", 0, 10, "fail").get(2, None, 20, 30).check().ok is True
    # Possible by real time, impossible by order: for the search to find.
    result = H().put(1, "a", 0, 100).put(2, "b", 0, 100).get(3, "a", 10, 20).get(3, "b", 30, 40) \
        .get(4, "b", 10, 20).get(4, "a", 30, 40).check()
    assert result.ok is False and not result.failures[0].reason and result.stats["k"].steps > 0


@pytest.mark.parametrize("seed", range(4))
def test_prepass_never_rejects_a_linearizable_history(seed):
    ops = generate(seed, processes=5, ops_per_process=60, keys=("a", "b"), info_rate=0.3)
    assert check_history(ops).ok is True


def test_search_rules_agree_with_the_plain_search_on_many_unknown_writes(monkeypatch):
    # Medium histories, too big for the brute force: mostly unknown writes over few values,
    # where twins, tight unknown writes, dominance and the pre-pass all come into play.
    rng = random.Random(99)
    verdicts = []
    for _ in range(300):
        ops = random_unknown_heavy_history(rng, operations=10)
        monkeypatch.setattr(lin, "_REDUCE", True)
        monkeypatch.setattr(lin, "_PREPASS", True)
        reduced = check_history(ops).ok
        monkeypatch.setattr(lin, "_REDUCE", False)
        monkeypatch.setattr(lin, "_PREPASS", False)
        plain = check_history(ops).ok
        assert reduced is plain, "\n".join(map(str, ops))
        verdicts.append(plain is True)
    assert 30 < sum(verdicts) < 270  # both kinds of history were exercised


def random_unknown_heavy_history(rng: random.Random, operations: int) -> list[Op]:
    """One key, values None/1/2/3, each operation its own process at a random time; writes
    are mostly unknown (half of those never complete)."""
    h = H()
    values = [None, "1", "2", "3"]
    for p in range(operations):
        start = rng.randrange(3 * operations)
        end: int | None = start + rng.randrange(8)
        f = rng.choice(["get", "put", "cas"])
        outcome = "info" if f != "get" and rng.random() < 0.7 else rng.choice(["ok", "ok", "fail"])
        if outcome == "info" and rng.random() < 0.5:
            end = None
        v: Value = rng.choice(values) if f == "get" else rng.choice(values[1:])
        if f == "cas":
            v = [rng.choice(values), rng.choice(values[1:])]
        h.op(p, f, v, start, end, outcome)
    return h.ops


# ---------------------------------------------------------------- the stated bound
#
# tools/checker/README.md and linearizability.py's docstring state it: a history with an
# observation no operation could have written is rejected without search, however big; a
# linearizable history shaped like Jepsen's etcd register test at its worst is decided within
# STEP_BOUND search steps.

STEP_BOUND = 500_000


def jepsen_like(seed: int, clients: int = 20, operations: int = 2000, values: int = 5,
                unknown: float = 0.9) -> list[Op]:
    """One register, values 0..values-1, ``clients`` clients issuing reads, writes and cas in
    equal parts; a fraction ``unknown`` of the writes time out (info), each of those taking
    effect or not, and half of those long after the client gave up (anywhere later). Results
    come from a sequential execution in linearization-point order: linearizable by construction.
    A client whose operation timed out goes on as a new process, as in Jepsen."""
    rng = random.Random(seed)
    specs = []
    fresh = itertools.count(clients)
    for client in range(clients):
        process, t = client, rng.randrange(10)
        for _ in range(operations // clients):
            invoke = t + rng.randrange(1, 10)
            point = invoke + rng.randrange(1, 20)
            complete = point + rng.randrange(1, 20)
            f = rng.choice(["get", "put", "cas"])
            timed_out = f != "get" and rng.random() < unknown
            if timed_out and rng.random() < 0.5:
                point = complete + rng.randrange(1, 10 * operations)
            specs.append((point, process, f, invoke, complete, timed_out))
            t = complete
            if timed_out:
                process = next(fresh)
    state: str | None = None
    events = []
    names = [str(i) for i in range(values)]
    for _point, process, f, invoke, complete, timed_out in sorted(specs):
        applies = not timed_out or rng.random() < 0.5
        value: Value
        asked: Value
        if f == "get":
            asked, value, outcome = None, state, "ok"
        elif f == "put":
            written = rng.choice(names)
            asked = value = written
            outcome = "info" if timed_out else "ok"
            state = written if applies else state
        else:
            expected, new = state if rng.random() < 0.5 else rng.choice([None, *names]), rng.choice(names)
            asked = value = [expected, new]
            outcome = "info" if timed_out else "ok" if expected == state else "fail"
            state = new if expected == state and applies else state
        events.append((invoke, 0, Op(process, "invoke", f, "k", asked, invoke)))
        events.append((complete, 1, Op(process, outcome, f, "k", value, complete)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [op for _, _, op in events]


@pytest.mark.parametrize("seed", range(3))
def test_a_pathological_linearizable_history_is_decided_within_the_bound(seed):
    ops = jepsen_like(seed)
    unknown = sum(op.type == "info" for op in ops)
    assert unknown > 500  # many indeterminate writes over five values
    result = check_history(ops)
    assert result.ok is True
    assert result.stats["k"].steps <= STEP_BOUND


def test_a_pathological_impossible_observation_is_rejected_without_search():
    ops = jepsen_like(0)
    end = max(op.time for op in ops)
    # After everything, a client writes x, then y, then reads x: no other operation writes x
    # (the unknown writes that may still land write 0 to 4), so the read is impossible.
    late = H().put(-1, "x", end + 1, end + 2).put(-1, "y", end + 3, end + 4).get(-1, "x", end + 5, end + 6)
    ops += late.ops
    started = time.perf_counter()
    result = check_history(ops)
    assert result.ok is False and result.failures[0].reason
    assert result.stats["k"].steps == 0
    assert time.perf_counter() - started < 5  # O(n log n): milliseconds here


def test_prepass_is_linear_on_a_huge_history_of_unknown_writes():
    # 100,000 operations: 50,000 unknown writes of three values, reads of them, and one read
    # of a value that was overwritten: rejected without search.
    h = H()
    for i in range(50_000):
        h.put(i, "123"[i % 3], 2 * i, None, "info")
    for i in range(49_997):
        h.get(100_000 + i, "123"[i % 3], 2 * i + 1, 2 * i + 2)
    h.put(-1, "x", 200_000, 200_001).put(-1, "y", 200_002, 200_003).get(-1, "x", 200_004, 200_005)
    ops = h.ops
    started = time.perf_counter()
    result = check_history(ops)
    assert result.ok is False and result.stats["k"].steps == 0
    assert time.perf_counter() - started < 5  # half a second here: generous for a loaded machine
