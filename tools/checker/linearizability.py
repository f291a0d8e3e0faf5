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
* **Dancing links**: the call and return events of the operations that must
  be linearized live in one time-ordered doubly linked list (arrays of
  indices; nothing is copied per step).  Linearizing an operation unlinks its
  two events; backtracking relinks them in LIFO order.  The candidates at any
  point are exactly the calls before the first remaining return: that
  return's operation must be linearized before anything that starts after
  it.  Operations that may be left out (unknown outcomes) have no return and
  are kept apart, by effect (see :meth:`_Search.run`).

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

Before that, a pre-pass (:mod:`tools.checker.prepass`) rejects at once, with
no search, a key whose completed get or cas observes a value that no
operation could have written by then (never written, written only later, or
surely overwritten since).

During the search more rules (greedy reads, once-cas, absorbed puts, twins,
tight unknown writes, mandatory first, and a memo that prunes states another
dominates; see :meth:`_Search.run`) cut branching without losing any
linearization.  When written values are unique per key, as Jepsen-style
clients make them, the cost stays near-linear up to ~20 concurrent clients
per key.  Few values and many unknown writes (Jepsen's etcd register test:
values 0-4, timeouts everywhere) are the classic pathological case; for it:

Stated bound.  (1) A history with an observation the pre-pass rejects is
decided in ``O(n log n)`` and 0 search steps however many of its operations
are unknown: 100,000 operations, half of them unknown writes of three
values, in about half a second here.  (2) A linearizable history of one
register shaped like Jepsen's etcd test at its worst (values 0-4, up to 20
clients, up to 2,000 operations, reads, writes and cas alike, up to 90% of the
writes unknown, each of those taking effect or not, half of them anywhere
later) is decided within 500,000 search steps (``KeyStats.steps``; about a
second here).  Measured: of 1,800 such generated histories (600 linearizable,
1,200 with one read changed, all decided), the worst took 180,000 steps
(0.3 s); the published etcd histories take at most 1,301.
tests/unit/test_linearizability.py holds the checker to both bounds.
Outside them the search stays exponential in the worst case: many
concurrent definite writes of repeated values; unknown writes over many
values (10 instead of 5 can take minutes); and a violation the pre-pass
cannot see that comes after hundreds of unknown writes whose values stay
observed (every way of having used them must be ruled out).  Pass
``time_limit_s`` to bound those: the verdict is then ``None``, undecided.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from tools.checker.history import Op, Operation, pair_ops
from tools.checker.prepass import Impossible, impossible_observation, observed, written

_GET, _PUT, _CAS = 0, 1, 2
_SKIP = -1  # a call the plain scan never tries on its own
_KINDS = {"get": _GET, "put": _PUT, "cas": _CAS}

_REDUCE = True  # tests turn off the reductions and the rules that need them, to cross-check them
_PREPASS = True  # tests turn off the pre-pass to see the search's own report

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

    ``reason``: set when the pre-pass (:mod:`tools.checker.prepass`) decided:
    ``stuck`` observes a value no operation could have written, ``reason``
    says why in one line, ``linearized`` is empty and ``state`` None, and
    ``window`` holds ``stuck``, the value's last writers and the definite
    write that surely overwrote them.
    """

    key: str
    linearized: list[Operation]
    stuck: Operation
    state: object
    window: list[Operation]
    reason: str = ""


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
        impossible = impossible_observation(key_ops) if _PREPASS else None
        if impossible is not None:
            # Rejected before any search: nothing was reduced or searched.
            result.stats[key] = KeyStats(key, False, len(key_ops), 0, 0, 0, 0, time.monotonic() - started)
            result.failures.append(_impossible(key, impossible))
            result.ok = False
            continue
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
    get or cas observes; ``once[j]``: a completed cas from a value the
    register can hold only once (see :meth:`_Search.run`).

    Optional operations are grouped into *classes* of the same effect (kind,
    a, b), each in invoke order: ``classes[c]`` lists class ``c``'s
    operations, ``twin[j]`` is the one after ``j`` in its class (-1: none).
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
        self.twin: list[int] = []
        self.cls: list[int] = []
        self.classes: list[list[int]] = []
        self.mandatory = 0
        self.optional = 0
        class_of: dict[tuple[int, object, object], int] = {}
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
            j = len(self.ops)
            self.twin.append(-1)
            self.cls.append(-1)
            if ret is None:
                self.optional += 1
                self.bit.append(-self.optional)
                # Without the reductions every optional operation is a class of its own.
                c = class_of.setdefault((kind, a, b), len(self.classes)) if _REDUCE else len(self.classes)
                if c == len(self.classes):
                    self.classes.append([])
                else:
                    self.twin[self.classes[c][-1]] = j
                self.classes[c].append(j)
                self.cls[j] = c
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
    """Porcupine's ``checkSingle`` over a :class:`_Problem`, plus rules that
    cut the branching without losing linearizations (see :meth:`run`)."""

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
        value, tight)``: every mandatory operation numbered below ``base`` is
        linearized and ``base`` itself is not; ``rel`` has bit ``i`` set when
        mandatory operation ``base + i`` is; ``opt`` is the bitset of
        linearized optional operations; ``value`` is the register; ``tight``
        says the last move was an optional write (see below).  Since
        mandatory operations are numbered in invoke order and are all
        linearized by their completion, ``rel`` stays about as wide as the
        concurrency: cache memory and big-int work stay linear in the
        history's length.

        Memo with dominance.  Two states with the same ``(base, rel, value,
        tight)`` have the same candidates (they depend on the mandatory
        operations left) and the same model state; the one with fewer
        optional operations used can do everything the other can (an
        optional operation may be linearized at any time after its invoke,
        or never).  So a state is explored only if no state visited before
        has a subset of its ``opt``: the cache keeps, per ``(base, rel,
        value, tight)``, the minimal ``opt`` sets seen.  This is complete: a
        successful continuation of the pruned state, of some length, is one
        of the visiting state too, of the same length; so a visited good
        state with the shortest successful continuation would have had its
        next state visited (or pruned by one with a shorter continuation
        still), a contradiction.

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
        * Mandatory first.  The mandatory candidates are tried before the
          optional ones, so the first paths explored use the fewest unknown
          writes, and their states dominate the later ones.
        * Twins.  Optional operations of one class (the same effect) are
          interchangeable, and one invoked earlier is a candidate whenever a
          later one is: so each class is linearized in invoke order, and
          only its first operation not yet linearized is a candidate.  The
          optional candidates are found per class, not per operation: few
          values mean few classes, however many unknown writes there are.
          Only the classes that can move from the register's value are
          looked at (puts, and the cas from that value), newest class first:
          any order is sound, and on Jepsen-like histories this one found
          the dominating states far sooner than oldest first (one 400-operation
          history: 814 steps instead of 3.6 million).
        * Tight unknown writes.  An optional write must be followed at once
          by an operation that observes its value (a get of it, or a cas
          from it): followed by a put, or by nothing, it can be dropped, and
          a shortest linearization drops it.  So after an optional write
          (``tight``) no put is tried, and no absorbed put forced; nor is an
          optional write of the value the register already holds.
        """
        p = self.problem
        mandatory = [j for j, i in enumerate(p.bit) if i >= 0]
        events = [(p.call[j], 0, j) for j in mandatory]
        events += [(ret, 1, j) for j in mandatory if (ret := p.ret[j]) is not None]  # all: mandatory
        events.sort()  # a call and a return at the same time: the call first (concurrent)
        # Linked list over slots 0 (head), 1..m (the mandatory operations' events), m + 1 (tail).
        m = len(events)
        tail = m + 1
        nxt = list(range(1, m + 2)) + [tail]
        prv = [0] + list(range(m + 1))
        slot_op = [-1] * (m + 2)
        when = [0] * (m + 2)  # slot -> its event's time
        is_call = [False] * (m + 2)  # the tail reads as a return: a dead end
        ret_slot = [-1] * (m + 2)  # call slot -> its return slot
        scan = [_SKIP] * (m + 2)  # call slot -> how the plain scan treats it
        forced_at = [0] * (m + 2)  # return slot of an absorbable put -> its call slot
        op_call, op_ret = {}, {}
        for s, (t, is_ret, j) in enumerate(events, 1):
            slot_op[s] = j
            when[s] = t
            if is_ret:
                op_ret[j] = s
            else:
                op_call[j] = s
                is_call[s] = True
                scan[s] = _SKIP if p.kind[j] == _GET or p.absorbable[j] else p.kind[j]
        for j in mandatory:
            ret_slot[op_call[j]] = op_ret[j]
            if p.absorbable[j]:
                forced_at[op_ret[j]] = op_call[j]
        any_absorbable = any(p.absorbable)
        head = [ops[0] for ops in p.classes]  # class -> its first operation not linearized (-1: none)
        # The classes that may move from each register value (puts, and the cas from that
        # value; when tight, the cas only), newest first (see "Twins" above).
        firsts = [(c, ops[0]) for c, ops in reversed(list(enumerate(p.classes)))]
        puts = [c for c, j in firsts if p.kind[j] == _PUT]
        legal: dict[object, list[int]] = {}
        cas_only: dict[object, list[int]] = {}
        for c, j in firsts:
            if p.kind[j] == _CAS:
                cas_only.setdefault(p.a[j], []).append(c)
        for expected, movers in cas_only.items():
            legal[expected] = sorted([*puts, *movers], reverse=True)
        nothing: list[int] = []

        kind, va, vb, bit, absorbable, once, call = p.kind, p.a, p.b, p.bit, p.absorbable, p.once, p.call
        twin, cls = p.twin, p.cls
        goal = p.mandatory
        base, rel, opt, state, tight = 0, 0, 0, None, False
        cur: tuple = (base, rel, opt, state, tight)
        # The linearization so far, as a persistent linked list of frames
        # (slot, class, op, state before, rest, forced, absorbed slots):
        # recording the longest one is O(1).  A mandatory move's frame has
        # its call slot and class -1; an optional move's, the return slot
        # where the scan of the classes began and its class.
        stack: tuple | None = None
        depth = 0  # operations linearized
        # (base, rel, value, tight) -> the minimal opt sets visited with it.
        cache: dict[tuple, list[int]] = {}
        cache_size = 0
        best_len, best, best_state, stuck = -1, None, None, -1
        steps = 0
        slot = 0  # 0: at a node not scanned yet
        c = -1  # the class being tried (-1: still scanning the mandatory candidates)
        while base < goal:
            steps += 1
            if not steps & 0x3FF and deadline is not None and time.monotonic() > deadline:
                self.steps, self.cache_size = steps, cache_size
                return  # ok stays None
            forced = False
            mover = 0  # the call slot of a mandatory move
            j = -1  # the operation to linearize
            if slot == 0:
                # A new node: look for a forced move (a legal get, else a
                # legal once-cas), else scan the candidates in invoke order.
                s = nxt[0]
                cas = 0
                while is_call[s]:
                    i = slot_op[s]
                    if kind[i] == _GET:
                        if va[i] == state:
                            break
                    elif not cas and once[i] and va[i] == state:
                        cas = s
                    s = nxt[s]
                mover = s if is_call[s] else cas
                if not mover:
                    slot, c = nxt[0], -1
                    continue
                forced = True
                j = slot_op[mover]
            elif c < 0:
                if not is_call[slot]:
                    c = 0  # the first remaining return: now the optional candidates
                    continue
                k = scan[slot]
                if k == _SKIP or (k == _PUT and tight) or (k == _CAS and state != va[slot_op[slot]]):
                    slot = nxt[slot]
                    continue
                mover, j = slot, slot_op[slot]
            elif c < len(lst := cas_only.get(state, nothing) if tight else legal.get(state, puts)):
                j = head[lst[c]]
                if j < 0 or call[j] > when[slot] or (vb[j] if kind[j] == _CAS else va[j]) == state:
                    c += 1  # none left, not invoked yet, or a write that changes nothing
                    continue
            elif forced_at[slot] and not tight:
                mover, forced = forced_at[slot], True
                j = slot_op[mover]
            elif depth > best_len:
                # The return of an op that had to be linearized by now: dead end.
                best_len, best, best_state, stuck = depth, stack, state, slot_op[slot]
            if j >= 0:
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
                after = i < 0 and _REDUCE  # tight
                seen = cache.get((b, r, new, after))
                if seen is None:
                    cache[b, r, new, after] = seen = []
                    dominated = False
                else:
                    dominated = o in seen or any(x | o == o for x in seen)
                if not dominated:
                    seen[:] = [x for x in seen if x | o != x]
                    seen.append(o)
                    cache_size += 1
                    stack = (mover or slot, -1 if mover else c, j, cur, stack, forced, absorbed)
                    depth += 1 + len(absorbed)
                    cur = base, rel, opt, state, tight = b, r, o, new, after
                    for s in absorbed:
                        _unlink(nxt, prv, s, ret_slot[s])
                    if mover:
                        _unlink(nxt, prv, mover, ret_slot[mover])
                    else:
                        head[cls[j]] = twin[j]
                    slot = 0
                    continue
                if not forced:
                    # Explored before: try the next candidate.
                    if mover:
                        slot = nxt[slot]
                    else:
                        c += 1
                    continue
                # A forced move explored before (and failed): so does this node.
            # Backtrack: undo the last move, and every forced move above it.
            while True:
                if stack is None:
                    self.ok, self.steps, self.cache_size = False, steps, cache_size
                    self.best_state, self.stuck = best_state, stuck
                    while best is not None:
                        self.best.append(best[2])
                        self.best.extend(slot_op[s] for s in reversed(best[6]))
                        best = best[4]
                    self.best.reverse()
                    return
                slot, c, j, cur, stack, forced, absorbed = stack
                depth -= 1 + len(absorbed)
                if c < 0:
                    _relink(nxt, prv, slot, ret_slot[slot])
                else:
                    head[cls[j]] = j
                for s in reversed(absorbed):
                    _relink(nxt, prv, s, ret_slot[s])
                if not forced:
                    break
            base, rel, opt, state, tight = cur
            if c < 0:
                slot = nxt[slot]
            else:
                c += 1
        self.ok, self.steps, self.cache_size = True, steps, cache_size


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


def _impossible(key: str, found: Impossible) -> KeyFailure:
    """The :class:`KeyFailure` report of the pre-pass (see its docstring)."""
    window = {op.index: op for op in (found.observer, *found.writers[-WINDOW_CONTEXT:])}
    if found.overwrite is not None:
        window[found.overwrite.index] = found.overwrite
    return KeyFailure(
        key=key,
        linearized=[],
        stuck=found.observer,
        state=None,
        window=sorted(window.values(), key=lambda op: (op.start, op.index)),
        reason=found.reason(),
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
        if failure.reason:  # the pre-pass's: the observation, its value's writers, the overwrite
            lines.append(f"  {failure.stuck}: {failure.reason}")
        else:
            lines.append(
                f"  longest linearizable prefix: {len(failure.linearized)} operations, "
                f"leaving the register at {failure.state!r}"
            )
            lines.append(f"  cannot linearize: {failure.stuck}")
        lines.append("  window (invoke order):")
        for op in failure.window:
            if op is failure.stuck:
                note = "<-- cannot be linearized"
            elif failure.reason:
                note = "writes it" if written(op) == observed(failure.stuck) else "overwrites it"
            elif id(op) in order:
                note = f"linearized #{order[id(op)] + 1}"
            else:
                note = "not linearized"
            lines.append(f"    {op}  {note}")
    return "\n".join(lines)
