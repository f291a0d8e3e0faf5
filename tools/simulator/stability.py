"""The ``stability`` invariant: a leader connected to an untouched quorum is never deposed.

With PreVote and CheckQuorum a replica only starts a real election (a new term) after a
quorum granted its pre-vote, and a voter grants one only when it has not heard from a
leader for an election timeout.  So while a leader and a quorum of its voters are healthy
and talk to each other, no new term can be born, and the leader never steps down: a replica
that lost contact and comes back, or a transfer target that is behind, cannot depose it.

**Touched.**  :class:`FaultLedger` records, per replica, the intervals in which a fault
touched it:

* crashed (from the crash to the restart), paused (to the resume), removed (for good);
* a partition that blocks any of its links (while in force);
* a message on one of its links dropped (at that moment), delayed beyond the normal
  range (from the send to the arrival), or delivered as a late copy (at the arrival);
* a disk write slower than the profile's normal range (while in flight);
* a transfer: when the leader sends TimeoutNow to a target that holds the leader's whole
  log, both are touched (a transfer the leader was asked to make; a target that is behind
  is *not* a legitimate reason for an election);
* a membership change naming it (from the proposal until a configuration with it is
  applied), and every replica whose role a newly applied configuration changes.

**Judged.**  When a leader of term T stops leading (:meth:`Stability.deposed`):

* into a higher term T': let b be the moment term T' was born (the first replica to reach
  it).  The new term is illegitimate if the leader had led since at least ``WINDOW`` before
  b, and the leader and a quorum of its voters (both halves of a joint configuration) were
  untouched throughout [b - ``WINDOW``, b]: somebody won a pre-vote (or was told to campaign)
  although a quorum was hearing from a live leader;
* in its own term (CheckQuorum, or removal): illegitimate if the leader and a quorum were
  untouched throughout the last ``WINDOW``.

``WINDOW`` is two election timeouts: a voter grants a pre-vote only after an election
timeout without hearing from the leader, and a candidacy that began before the leader was
elected (the competing candidate of its own election) is born within one election timeout of
it.  Only seeds with PreVote on are judged (the check is about PreVote + CheckQuorum).
"""

from __future__ import annotations

from collections.abc import Iterable

from .invariants import STABILITY, InvariantViolation


class FaultLedger:
    """When each replica was touched by a fault.

    Faults with a known end are merged into closed [start, end] spans per replica; a fault
    whose end is not known yet (a crash, a pause, a partition) stays open under a key until
    :meth:`end` closes it.
    """

    def __init__(self) -> None:
        self._spans: dict[int, list[list[int]]] = {}
        self._open: dict[object, tuple[frozenset[int], int]] = {}  # key -> (replicas, start)

    def touch(self, nodes: Iterable[int], start: int, end: int) -> None:
        for n in nodes:
            spans = self._spans.setdefault(n, [])
            last = spans[-1] if spans else None
            if last is not None and last[0] <= start <= last[1]:
                last[1] = max(last[1], end)  # most touches overlap the previous one: merge
            else:
                spans.append([start, end])

    def begin(self, key: object, nodes: Iterable[int], now: int) -> None:
        """A fault with no known end starts touching ``nodes``."""
        self.end(key, now)
        self._open[key] = (frozenset(nodes), now)

    def end(self, key: object, now: int) -> None:
        opened = self._open.pop(key, None)
        if opened is not None:
            nodes, start = opened
            self.touch(sorted(nodes), start, now)

    def end_all(self, kind: str, now: int) -> None:
        """End every open fault whose key is a tuple starting with ``kind``."""
        for key in [k for k in self._open if isinstance(k, tuple) and k[0] == kind]:
            self.end(key, now)

    def clean(self, node: int, lo: int, hi: int) -> bool:
        """Was ``node`` untouched throughout [lo, hi]?"""
        for nodes, start in self._open.values():
            if node in nodes and start <= hi:
                return False
        # Judgments are rare (one per lost leadership): a full scan is cheap enough.
        return not any(start <= hi and end >= lo for start, end in self._spans.get(node, ()))


class Stability:
    """Judges every loss of leadership (see the module docstring)."""

    def __init__(self, window: int, enabled: bool) -> None:
        self.window = window
        self.enabled = enabled
        self.ledger = FaultLedger()
        self.max_term = 0
        self.born: dict[int, int] = {}  # term -> when the first replica reached it

    def saw_term(self, term: int, now: int) -> None:
        while self.max_term < term:
            self.max_term += 1
            self.born[self.max_term] = now

    def deposed(
        self,
        node_id: int,
        term: int,
        elected_at: int,
        new_term: int,
        now: int,
        voters: frozenset[int],
        outgoing: frozenset[int],
    ) -> None:
        """``node_id`` led ``term`` since ``elected_at`` and stopped leading at ``now``, in ``new_term``."""
        if not self.enabled:
            return
        at = self.born.get(new_term, now) if new_term > term else now
        lo = at - self.window
        if elected_at > lo:
            return  # not established yet: the election it won may still have rivals
        ledger = self.ledger
        if not ledger.clean(node_id, lo, at):
            return
        clean = {v for v in voters | outgoing if ledger.clean(v, lo, at)}
        if not _quorum(voters, clean) or not _quorum(outgoing, clean):
            return
        what = f"term {new_term} was born at {at}" if new_term > term else "it stepped down in its own term"
        raise InvariantViolation(
            STABILITY,
            f"node {node_id}, leader of term {term} since {elected_at}, lost leadership at {now} ({what}) "
            f"while it and voters {sorted(clean)} had been untouched by any fault since {lo}",
        )


def _quorum(voters: frozenset[int], present: set[int]) -> bool:
    if not voters:
        return True
    return len(voters & present) > len(voters) // 2
