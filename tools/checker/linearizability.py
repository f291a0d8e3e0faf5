"""Linearizability checking of get/put/cas register histories.

The search is Wing & Gong's, with the improvements of Lowe ("Testing for
linearizability", 2017) as implemented by Porcupine's ``checkSingle``:

* **P-compositionality**: linearizability is local, so the history is split by
  key and every key's register is checked on its own.  This turns one search
  that is exponential in the whole history into several small ones.
* **Memoisation**: a search state is (set of linearized operations, register
  value).  Two paths reaching the same state have the same future, so each
  state is explored at most once.  The set is held as Python ``int`` bitmasks
  relative to the oldest not-yet-linearized operation (see
  :meth:`_Search.run`), so a state is a small hashable tuple whose size
  follows the history's concurrency, not its length.
* **Dancing links**: call and return events live in one time-ordered doubly
  linked list (arrays of indices; nothing is copied per step).  Linearizing an
  operation unlinks its two events; backtracking relinks them in LIFO order.
  The candidates at any point are exactly the calls before the first
  remaining return: that return's operation must be linearized before
  anything that starts after it.

Outcome semantics: ``ok`` operations took effect between invoke and
completion with the recorded result.  ``fail`` operations did not take effect
and are dropped.  ``info`` operations (and invokes that never completed) may
have taken effect at any time after their invoke, or never: they have no
return event (their return is at +infinity), they are never required to be
linearized, and a get whose result is unknown constrains nothing so it is
dropped.  An unknown put always succeeds; an unknown cas may take effect only
where the register holds its expected value (a cas that found another value
is a no-op, the same as never taking effect).  Real time is compared
strictly: an operation completing at the same time another is invoked counts
as concurrent with it.

Before the search, two sound reductions keep unknown writes cheap (many
pending writes otherwise explode the search, since each may go anywhere):

* an unknown write whose value no get or cas ever observes is dropped: if a
  linearization places it, the next operation to touch the register must
  overwrite it, so removing it leaves a valid linearization;
* an unknown write whose value (not ``None``) is written by no other
  operation of that key, and which a completed get/cas observes, must have
  happened before that observer returned; it gets the earliest such
  observer's completion as its return time and becomes mandatory.

During the search three rules (greedy reads, once-cas, absorbed puts; see
:meth:`_Search.run`) cut branching without losing any linearization.  They
matter most when written values are unique per key, as Jepsen-style clients
make them: then the cost stays near-linear up to ~20 concurrent clients per
key.  Values that repeat, or many unknown writes that are observed, still
make the search exponential in the number of concurrent operations on one
key: keep that concurrency modest and pass ``time_limit_s``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from tools.checker.history import Op, Operation, pair_ops

_GET, _PUT, _CAS = 0, 1, 2
_SKIP = -1  # a call the plain scan never tries on its own
_KINDS = {"get": _GET, "put": _PUT, "cas": _CAS}

_REDUCE = True  # tests turn off the reductions, once-cas and absorbed puts to cross-check them

WINDOW_CONTEXT = 2
"""How many of the last linearized operations a failure window includes."""


@dataclass(slots=True)
class KeyStats:
    """What the search did for one key."""

    key: str
    ok: bool | None  # None: not decided before the time limit
    operations: int  # operations on this key in the history, any outcome
    searched: int  # operations the search considered (see module docstring)
    unknown: int  # of which had an unknown outcome and could be omitted
    steps: int  # search-loop iterations
    cache_size: int  # distinct (linearized set, value) states visited
    seconds: float


@dataclass(slots=True)
class KeyFailure:
    """Why one key's history is not linearizable.

    ``linearized``: the longest partial linearization found, in linearization
    order (every operation in it took effect in that order, consistently with
    the register model and real time).

    ``stuck``: the operation whose completion the search could not get past
    after ``linearized``: the first to complete among those not linearized
    (an unknown write that a read observes counts as completing when that
    read does).  Every way to go on from ``linearized`` was tried, so no
    linearization of the history starts with it.

    ``state``: the register value after ``linearized`` (``None``: absent).

    ``window``: a small sub-history around the failure, sorted by invoke time:
    ``stuck``; every searched operation whose interval overlaps ``stuck``'s
    (``[invoke, completion]``, an unknown operation's interval extends to
    +infinity) and that is not part of ``linearized``, or is a definite
    operation of it; the last :data:`WINDOW_CONTEXT` operations of
    ``linearized``; and the last write in ``linearized`` (the operation that
    put ``state`` there).  It is context for a human: the window checked on
    its own is not guaranteed to fail, because earlier operations set the
    state it starts from.
    """

    key: str
    linearized: list[Operation]
    stuck: Operation
    state: object
    window: list[Operation]


@dataclass(slots=True)
class CheckResult:
    """``ok`` is True if every key is linearizable, False if any key is not
    (even when others ran out of time), None if none failed but some key was
    not decided within the time limit."""

    ok: bool | None
    failures: list[KeyFailure] = field(default_factory=list)
    stats: dict[str, KeyStats] = field(default_factory=dict)


def check_history(ops: list[Op], *, time_limit_s: float | None = None) -> CheckResult:
    """Check a Jepsen-shaped event history (validated by :func:`pair_ops`).

    ``time_limit_s`` bounds the whole check; keys not decided in time report
    ``ok=None``.  Raises ValueError on a malformed history.
    """
    return check_operations(pair_ops(ops), time_limit_s=time_limit_s)


def check_operations(operations: list[Operation], *, time_limit_s: float | None = None) -> CheckResult:
    """Like :func:`check_history`, for operations already paired (and so
    validated) by :func:`pair_ops`."""
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    by_key: dict[str, list[Operation]] = {}
    for operation in operations:
        by_key.setdefault(operation.key, []).append(operation)
    result = CheckResult(ok=True)
    for key, key_ops in by_key.items():
        started = time.monotonic()
        problem = _Problem(key_ops)
        search = _Search(problem)
        if deadline is None or started < deadline:
            search.run(deadline)
        result.stats[key] = KeyStats(
            key=key,
            ok=search.ok,
            operations=len(key_ops),
            searched=len(problem.ops),
            unknown=problem.optional,
            steps=search.steps,
            cache_size=search.cache_size,
            seconds=time.monotonic() - started,
        )
        if search.ok is False:
            result.failures.append(_failure(key, problem, search))
            result.ok = False
        elif search.ok is None and result.ok:
            result.ok = None
    return result


class _Problem:
    """One key's operations, reduced and flattened into parallel arrays.

    Index ``j`` refers to ``ops[j]`` (sorted by invoke time); ``kind/a/b``
    encode the model step (get: a = value read; put: a = value; cas: a =
    expected, b = new); ``call``/``ret`` are times, ``ret[j] is None`` for
    optional operations.  ``bit[j]`` numbers mandatory operations 0, 1, ...
    in invoke order and optional ones -1, -2, ... (two separate bitsets, see
    :meth:`_Search.run`).  ``absorbable[j]``: a completed put whose value no
    get or cas observes (see :meth:`_Search.run`).
    """

    def __init__(self, operations: list[Operation]) -> None:
        kept = sorted(
            (op for op in operations if op.outcome == "ok" or (op.outcome == "info" and op.f != "get")),
            key=lambda op: (op.start, op.index),
        )
        observed: set[object] = set()
        observed_by: dict[object, int] = {}  # value -> earliest definite observer's return
        writers: Counter[object] = Counter()
        for op in kept:
            if op.f == "put":
                writers[op.input] += 1
                continue
            if op.f == "get":
                seen = op.output
            else:
                seen, new = op.cas
                writers[new] += 1
            observed.add(seen)
            end = op.end
            if op.outcome == "ok" and end is not None and (seen not in observed_by or end < observed_by[seen]):
                observed_by[seen] = end

        self.ops: list[Operation] = []
        self.kind: list[int] = []
        self.a: list[object] = []
        self.b: list[object] = []
        self.call: list[int] = []
        self.ret: list[int | None] = []
        self.bit: list[int] = []
        self.absorbable: list[bool] = []
        self.once: list[bool] = []
        self.mandatory = 0
        self.optional = 0
        for op in kept:
            kind = _KINDS[op.f]
            if kind == _GET:
                a, b = op.output, None
            elif kind == _PUT:
                a, b = op.input, None
            else:
                a, b = op.cas
            ret = op.end
            written = a if kind == _PUT else b
            if op.outcome == "info":
                if _REDUCE and written not in observed:
                    continue
                deadline = observed_by.get(written)
                unique = written is not None and writers[written] == 1
                tighten = _REDUCE and unique and deadline is not None and deadline >= op.start
                ret = deadline if tighten else None
            if ret is None:
                self.optional += 1
                self.bit.append(-self.optional)
            else:
                self.bit.append(self.mandatory)
                self.mandatory += 1
            self.absorbable.append(_REDUCE and kind == _PUT and ret is not None and written not in observed)
            # A mandatory cas from a value the register can hold only once
            # (one writer; None: the initial value, and nobody writes None).
            self.once.append(_REDUCE and kind == _CAS and ret is not None and writers[a] <= (a is not None))
            self.ops.append(op)
            self.kind.append(kind)
            self.a.append(a)
            self.b.append(b)
            self.call.append(op.start)
            self.ret.append(ret)


class _Search:
    """Porcupine's ``checkSingle`` over a :class:`_Problem`, plus two rules
    that cut the branching without losing linearizations (see :meth:`run`)."""

    def __init__(self, problem: _Problem) -> None:
        self.problem = problem
        self.ok: bool | None = None
        self.steps = 0
        self.cache_size = 0
        self.best: list[int] = []  # op indices of the longest partial linearization
        self.best_state: object = None
        self.stuck = -1

    def run(self, deadline: float | None) -> None:
        """Search; sets ``ok`` (left None if ``deadline`` passes) and the stats.

        State encoding.  A search state is the tuple ``(base, rel, opt,
        value)``: every mandatory operation numbered below ``base`` is
        linearized and ``base`` itself is not; ``rel`` has bit ``i`` set when
        mandatory operation ``base + i`` is; ``opt`` is the bitset of
        linearized optional operations; ``value`` is the register.  It is a
        canonical encoding of (linearized set, value), so it keys the memo
        cache, and since mandatory operations are numbered in invoke order and
        are all linearized by their completion, ``rel`` stays about as wide as
        the concurrency: cache memory and big-int work stay linear in the
        history's length.

        Moves.  At each node (a prefix already linearized) the candidates are
        the calls before the first remaining return, as in Porcupine, but:

        * Greedy reads.  If some candidate get is legal now, it is linearized
          next and no alternative is tried at this node ("forced"): a get
          changes nothing and may precede every other candidate (it was
          invoked before any pending completion), so if any linearization
          from here exists, one starts with that get.
        * Once-cas.  Otherwise, if a completed cas is legal now and its
          expected value can be held only once (a single writer, which put it
          there; or None, the initial value, when nothing writes None), it is
          linearized next, forced: any write before it would change the
          register for good, and no get can go first (none is legal).
        * Absorbed puts.  A completed put whose value nobody observes can
          only be followed directly by another put, or by nothing.  It is
          never tried on its own: every put move also linearizes, just before
          it, all such candidate puts (moving one earlier, to just before a
          put, while it is a candidate keeps any linearization valid); and
          when the scan reaches the return of one not yet absorbed, that put
          is linearized there as a forced move (the case where the put after
          it only starts after it completed).
        """
        p = self.problem
        n = len(p.ops)
        events = [(p.call[j], 0, j) for j in range(n)]
        events += [(ret, 1, j) for j, ret in enumerate(p.ret) if ret is not None]
        events.sort()
        # Linked list over slots 0 (head), 1..m (events), m + 1 (tail).
        m = len(events)
        tail = m + 1
        nxt = list(range(1, m + 2)) + [tail]
        prv = [0] + list(range(m + 1))
        slot_op = [-1] * (m + 2)
        is_call = [False] * (m + 2)  # the tail reads as a return: a dead end
        ret_slot = [-1] * (m + 2)  # call slot -> its return slot (-1: optional op)
        scan = [_SKIP] * (m + 2)  # call slot -> how the plain scan treats it
        forced_at = [0] * (m + 2)  # return slot of an absorbable put -> its call slot
        op_call, op_ret = [-1] * n, [-1] * n
        for s, (_, is_ret, j) in enumerate(events, 1):
            slot_op[s] = j
            if is_ret:
                op_ret[j] = s
            else:
                op_call[j] = s
                is_call[s] = True
                scan[s] = _SKIP if p.kind[j] == _GET or p.absorbable[j] else p.kind[j]
        for j in range(n):
            ret_slot[op_call[j]] = op_ret[j]
            if p.absorbable[j]:
                forced_at[op_ret[j]] = op_call[j]
        any_absorbable = any(p.absorbable)

        kind, va, vb, bit, absorbable, once = p.kind, p.a, p.b, p.bit, p.absorbable, p.once
        goal = p.mandatory
        base, rel, opt, state = 0, 0, 0, None
        cur: tuple = (base, rel, opt, state)
        # The linearization so far, as a persistent linked list of frames
        # (mover slot, state before, rest, forced, absorbed slots): recording
        # the longest one is O(1).
        stack: tuple | None = None
        depth = 0  # operations linearized
        cache: set[tuple] = set()
        best_len, best, best_state, stuck = -1, None, None, -1
        steps = 0
        slot = 0  # 0: at a node not scanned yet
        while base < goal:
            steps += 1
            if not steps & 0x3FF and deadline is not None and time.monotonic() > deadline:
                self.steps, self.cache_size = steps, len(cache)
                return  # ok stays None
            forced = False
            if slot == 0:
                # A new node: look for a forced move (a legal get, else a
                # legal once-cas), else scan the candidates in invoke order.
                mover = nxt[0]
                cas = 0
                while is_call[mover]:
                    j = slot_op[mover]
                    if kind[j] == _GET:
                        if va[j] == state:
                            break
                    elif not cas and once[j] and va[j] == state:
                        cas = mover
                    mover = nxt[mover]
                if not is_call[mover]:
                    mover = cas
                if not mover:
                    slot = nxt[0]
                    continue
                forced = True
            elif is_call[slot]:
                k = scan[slot]
                if k == _SKIP or (k == _CAS and state != va[slot_op[slot]]):
                    slot = nxt[slot]
                    continue
                mover = slot
            elif forced_at[slot]:
                mover, forced = forced_at[slot], True
            else:
                # The return of an op that had to be linearized by now: dead end.
                mover = 0
                if depth > best_len:
                    best_len, best, best_state, stuck = depth, stack, state, slot_op[slot]
            if mover:
                j = slot_op[mover]
                k = kind[j]
                new = va[j] if k == _PUT else vb[j] if k == _CAS else state
                r, o = rel, opt
                absorbed: tuple = ()
                if k == _PUT and any_absorbable:
                    s = nxt[0]
                    while is_call[s]:
                        if absorbable[slot_op[s]] and s != mover:
                            absorbed += (s,)
                            r |= 1 << (bit[slot_op[s]] - base)
                        s = nxt[s]
                i = bit[j]
                if i < 0:
                    o |= 1 << -i
                else:
                    r |= 1 << (i - base)
                b = base
                if r & 1:
                    t = (r ^ (r + 1)).bit_length() - 1  # trailing ones of r
                    b += t
                    r >>= t
                entry = (b, r, o, new)
                if entry not in cache:
                    cache.add(entry)
                    stack = (mover, cur, stack, forced, absorbed)
                    depth += 1 + len(absorbed)
                    cur = entry
                    base, rel, opt, state = entry
                    for s in absorbed:
                        _unlink(nxt, prv, s, ret_slot[s])
                    _unlink(nxt, prv, mover, ret_slot[mover])
                    slot = 0
                    continue
                if not forced:
                    slot = nxt[slot]  # explored before: try the next candidate
                    continue
                # A forced move explored before (and failed): so does this node.
            # Backtrack: undo the last move, and every forced move above it.
            while True:
                if stack is None:
                    self.ok, self.steps, self.cache_size = False, steps, len(cache)
                    self.best_state, self.stuck = best_state, stuck
                    while best is not None:
                        self.best.append(slot_op[best[0]])
                        self.best.extend(slot_op[s] for s in reversed(best[4]))
                        best = best[2]
                    self.best.reverse()
                    return
                slot, cur, stack, forced, absorbed = stack
                depth -= 1 + len(absorbed)
                _relink(nxt, prv, slot, ret_slot[slot])
                for s in reversed(absorbed):
                    _relink(nxt, prv, s, ret_slot[s])
                if not forced:
                    break
            base, rel, opt, state = cur
            slot = nxt[slot]
        self.ok, self.steps, self.cache_size = True, steps, len(cache)


def _unlink(nxt: list[int], prv: list[int], call: int, ret: int) -> None:
    """Remove a call slot and its return slot (``ret < 0``: none)."""
    nxt[prv[call]] = nxt[call]
    prv[nxt[call]] = prv[call]
    if ret >= 0:
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]


def _relink(nxt: list[int], prv: list[int], call: int, ret: int) -> None:
    """Undo :func:`_unlink` (links are restored in reverse order)."""
    if ret >= 0:
        nxt[prv[ret]] = ret
        prv[nxt[ret]] = ret
    nxt[prv[call]] = call
    prv[nxt[call]] = call


def _failure(key: str, p: _Problem, search: _Search) -> KeyFailure:
    """Build the :class:`KeyFailure` report (see its docstring for the window)."""
    best, x = search.best, search.stuck
    in_best = set(best)
    x_call, x_ret = p.call[x], p.ret[x]
    assert x_ret is not None, "the search stops at a return event, so stuck has one"
    chosen = {x}
    for j in range(len(p.ops)):
        ret = p.ret[j]
        overlaps = p.call[j] <= x_ret and (ret is None or ret >= x_call)
        if overlaps and (j not in in_best or ret is not None):
            chosen.add(j)
    chosen.update(best[-WINDOW_CONTEXT:])
    for j in reversed(best):
        if p.kind[j] != _GET:
            chosen.add(j)
            break
    window = sorted((p.ops[j] for j in chosen), key=lambda op: (op.start, op.index))
    return KeyFailure(
        key=key,
        linearized=[p.ops[j] for j in best],
        stuck=p.ops[x],
        state=search.best_state,
        window=window,
    )


def describe(result: CheckResult) -> str:
    """A human-readable multi-line report of ``result``."""
    total = sum(s.operations for s in result.stats.values())
    seconds = sum(s.seconds for s in result.stats.values())
    verdict = {True: "OK", False: "NOT LINEARIZABLE", None: "UNKNOWN (time limit)"}[result.ok]
    lines = [f"linearizability: {verdict}: {len(result.stats)} keys, {total} operations, {seconds:.3f} s"]
    undecided = [k for k, s in result.stats.items() if s.ok is None]
    if undecided:
        lines.append(f"  undecided (time limit): {', '.join(map(repr, undecided))}")
    for failure in result.failures:
        order = {id(op): i for i, op in enumerate(failure.linearized)}
        lines.append(f"key {failure.key!r}: not linearizable")
        lines.append(
            f"  longest linearizable prefix: {len(failure.linearized)} operations, "
            f"leaving the register at {failure.state!r}"
        )
        lines.append(f"  cannot linearize: {failure.stuck}")
        lines.append("  window (invoke order):")
        for op in failure.window:
            if op is failure.stuck:
                note = "<-- cannot be linearized"
            elif id(op) in order:
                note = f"linearized #{order[id(op)] + 1}"
            else:
                note = "not linearized"
            lines.append(f"    {op}  {note}")
    return "\n".join(lines)
