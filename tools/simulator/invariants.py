"""Raft's safety properties, checked incrementally while the simulation runs.

The simulator reports facts as they happen; each method either records them
or raises :class:`InvariantViolation` naming the broken property:

``election-safety``
    At most one leader per term, ever (``became_leader``).
``log-matching``
    Every entry any replica persists is recorded as
    ``(index, term) -> (type, data, term of the previous entry)``; a second
    replica persisting a different entry or predecessor under the same
    (index, term) breaks the Log Matching property (``on_persist``).
``leader-completeness``
    A replica that becomes leader of term L holds every entry that was known
    committed (by any replica's commit index) in a term below L
    (``became_leader``).
``state-machine-safety``
    Every replica applies the same (term, type, data) at each index, in
    order, never past the commit index it knew, and reaches the same state
    (``chain`` hash) at each index, snapshots included (``on_apply``,
    ``on_install``).
``committed-lost``
    An index, once committed, keeps its term on every replica whose commit
    covers it; commit indexes never go backwards; a persisted commit index
    never exceeds the persisted log and the persisted prefix it covers is the
    committed one (``on_commit``, ``on_persist``, ``on_restart``).
``stale-read``
    A ReadIndex or lease read is answered at an index at least the highest
    commit index any replica had when the request reached the replica that
    serves it (``on_read``): a read point below it may miss a write that was
    already acknowledged.
``lease-overlap``
    No leader's lease is valid once a leader of a higher term has been
    elected (``check_lease``): under the core's stated clock-drift bound the
    followers' promise outlives every lease.
``stability``
    See :mod:`tools.simulator.stability` (a leader connected to an untouched
    quorum is never deposed); it raises through :class:`InvariantViolation`
    like the rest.
``api-contract``
    The promises of ``RawNode`` the driver builds on: a Ready hands out for
    persistence only entries that are not on the disk already (``on_ready``;
    a core that forgets what it persisted writes them again and again, and as
    a leader does not count its own copy); a leader's ``status()`` describes
    its configuration, a progress entry per member with the right role and a
    match within its log (``on_status``); a change no configuration allows
    is refused, and so is a campaign by a replica that may not stand
    (``refusal_expected``).

Logs are read through anything with ``first_index()``, ``last_index()`` and
``term(i)`` (the core's ``RaftLog`` or a ``MemoryStorage``); ``term`` may raise
``RaftError`` for compacted or missing indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from node.raft import Entry, RaftError, Status

ELECTION_SAFETY = "election-safety"
LOG_MATCHING = "log-matching"
LEADER_COMPLETENESS = "leader-completeness"
STATE_MACHINE_SAFETY = "state-machine-safety"
COMMITTED_LOST = "committed-lost"
LINEARIZABILITY = "linearizability"
LIVENESS = "liveness"
CORE_EXCEPTION = "core-exception"
STALE_READ = "stale-read"
LEASE_OVERLAP = "lease-overlap"
STABILITY = "stability"
API_CONTRACT = "api-contract"

SAFETY_INVARIANTS = (
    ELECTION_SAFETY,
    LOG_MATCHING,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
    COMMITTED_LOST,
    STALE_READ,
    LEASE_OVERLAP,
    STABILITY,
    API_CONTRACT,
)


class InvariantViolation(Exception):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class LogView(Protocol):
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def term(self, index: int) -> int: ...


def _term_or_none(log: LogView, index: int) -> int | None:
    try:
        return log.term(index)
    except RaftError:
        return None


class Invariants:
    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, int] = {}  # index -> term
        self.commit_term: dict[int, int] = {}  # index -> lowest term in which it was seen committed
        self.max_committed = 0
        self.applied: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.chains: dict[int, str] = {}  # index -> state-machine chain after applying it
        self.max_leader_term = 0  # the highest term anyone was elected leader in

    # -- elections -----------------------------------------------------------

    def became_leader(self, node_id: int, term: int, log: LogView) -> None:
        prev = self.leaders.get(term)
        if prev is not None and prev != node_id:
            raise InvariantViolation(
                ELECTION_SAFETY, f"two leaders in term {term}: node {prev} and node {node_id}"
            )
        self.leaders[term] = node_id
        if term > self.max_leader_term:
            self.max_leader_term = term
        self._leader_completeness(node_id, term, log)

    # -- reads -------------------------------------------------------------------

    def check_lease(self, node_id: int, term: int, lease_index: int | None) -> None:
        """``node_id`` leads ``term`` and its lease gives ``lease_index`` (None: no valid lease).

        Call it only on a replica that has processed every tick due to it (a paused one
        after its missed ticks were replayed): a lease is judged on the holder's own clock.
        """
        if lease_index is not None and self.max_leader_term > term:
            raise InvariantViolation(
                LEASE_OVERLAP,
                f"node {node_id}, leader of term {term}, holds a valid lease (read index {lease_index}) "
                f"although node {self.leaders[self.max_leader_term]} was elected in term {self.max_leader_term}",
            )

    def on_read(self, node_id: int, index: int, floor: int, how: str) -> None:
        """A ``how`` read served by ``node_id`` got read point ``index``; ``floor`` was the highest
        commit index of any replica when the request reached it."""
        if index < floor:
            raise InvariantViolation(
                STALE_READ,
                f"node {node_id} answered a {how} read at index {index}, below commit index {floor} "
                f"that a replica held when the request arrived",
            )

    def _leader_completeness(self, node_id: int, term: int, log: LogView) -> None:
        if not self.max_committed:
            return
        first = log.first_index()
        last = log.last_index()
        committed, commit_term = self.committed, self.commit_term
        for i in range(max(first - 1, 1), self.max_committed + 1):
            t = committed.get(i)
            if t is None or commit_term[i] >= term:
                continue
            if i > last:
                raise InvariantViolation(
                    LEADER_COMPLETENESS,
                    f"node {node_id} became leader of term {term} with last index {last}, "
                    f"missing committed entry {i} (term {t}, committed in term {commit_term[i]})",
                )
            lt = _term_or_none(log, i)
            if lt is not None and lt != t:
                raise InvariantViolation(
                    LEADER_COMPLETENESS,
                    f"node {node_id} became leader of term {term} with entry {i} of term {lt}, "
                    f"but entry {i} of term {t} was committed in term {commit_term[i]}",
                )

    def on_status(self, node_id: int, status: Status, last_index: int) -> None:
        """``status`` is what leader ``node_id`` (log ending at ``last_index``) reports."""
        cs = status.conf_state
        members = cs.all_nodes()
        if set(status.progress) != members:
            raise InvariantViolation(
                API_CONTRACT,
                f"leader {node_id} reports progress for {sorted(status.progress)}, "
                f"but its configuration has {sorted(members)}",
            )
        learners = cs.learners | cs.learners_next
        for n, pr in sorted(status.progress.items()):
            if pr.learner != (n in learners) or not 0 <= pr.match <= last_index or pr.next < 1:
                raise InvariantViolation(
                    API_CONTRACT,
                    f"leader {node_id} reports for {n}: {pr} (learners {sorted(learners)}, last index {last_index})",
                )

    def refusal_expected(self, what: str, refused: bool) -> None:
        """The driver asked for ``what``, which the core must refuse."""
        if not refused:
            raise InvariantViolation(API_CONTRACT, f"the core did not refuse {what}")

    # -- logs --------------------------------------------------------------------

    def on_ready(self, node_id: int, storage: LogView, entries: Sequence[Entry]) -> None:
        """A Ready asks ``node_id`` to persist ``entries``; ``storage`` is its disk before the write."""
        first, last = storage.first_index(), storage.last_index()
        for e in entries:
            if e.index > last:
                break
            if e.index >= first and _term_or_none(storage, e.index) == e.term:
                raise InvariantViolation(
                    API_CONTRACT,
                    f"node {node_id} was handed entry {e.index} (term {e.term}) to persist, "
                    f"but it is on its disk already",
                )

    def on_persist(
        self, node_id: int, storage: LogView, entries: Sequence[Entry], old_commit: int, new_commit: int
    ) -> None:
        """``entries`` were just appended to ``storage`` and the hard state's commit moved old->new."""
        first = storage.first_index()
        table = self.entries
        for e in entries:
            if e.index < first:
                continue
            prev = _term_or_none(storage, e.index - 1)
            val = (int(e.type), e.data, -1 if prev is None else prev)
            key = (e.index, e.term)
            seen = table.get(key)
            if seen is None:
                table[key] = val
            elif seen != val and not (seen[:2] == val[:2] and (seen[2] == -1 or val[2] == -1)):
                raise InvariantViolation(
                    LOG_MATCHING,
                    f"node {node_id} persisted entry {e.index} term {e.term} as "
                    f"(type {val[0]}, prev term {val[2]}, {val[1][:60]!r}) but another replica has "
                    f"(type {seen[0]}, prev term {seen[2]}, {seen[1][:60]!r})",
                )
        last = storage.last_index()
        if new_commit > last:
            raise InvariantViolation(
                COMMITTED_LOST, f"node {node_id} persisted commit {new_commit} beyond its persisted log (last {last})"
            )
        # The persisted prefix covered by the persisted commit must be the committed one.
        lo = min(old_commit + 1, entries[0].index if entries else old_commit + 1)
        self._check_prefix(node_id, storage, max(lo, first), new_commit, "persisted")

    def on_restart(self, node_id: int, storage: LogView, commit: int) -> None:
        last = storage.last_index()
        if commit > last:
            raise InvariantViolation(
                COMMITTED_LOST, f"node {node_id} restarted with commit {commit} beyond its log (last {last})"
            )
        self._check_prefix(node_id, storage, storage.first_index(), commit, "restarted with")

    def _check_prefix(self, node_id: int, log: LogView, lo: int, hi: int, what: str) -> None:
        committed = self.committed
        for i in range(lo, hi + 1):
            t = committed.get(i)
            if t is None:
                continue
            lt = _term_or_none(log, i)
            if lt is not None and lt != t:
                raise InvariantViolation(
                    COMMITTED_LOST,
                    f"node {node_id} {what} entry {i} of term {lt} under its commit index {hi}, "
                    f"but entry {i} of term {t} was committed",
                )

    def on_commit(self, node_id: int, log: LogView, old: int, new: int, term: int) -> None:
        """A replica's in-memory commit index moved from ``old`` to ``new`` while at ``term``."""
        if new < old:
            raise InvariantViolation(COMMITTED_LOST, f"node {node_id} commit index went back from {old} to {new}")
        last = log.last_index()
        if new > last:
            raise InvariantViolation(
                COMMITTED_LOST, f"node {node_id} commit index {new} is beyond its last log index {last}"
            )
        committed, commit_term = self.committed, self.commit_term
        for i in range(max(old + 1, log.first_index()), new + 1):
            t = _term_or_none(log, i)
            if t is None:
                continue
            ct = committed.get(i)
            if ct is None:
                committed[i] = t
                commit_term[i] = term
                seen = self.applied.get(i)
                if seen is not None and seen[0] != t:
                    # Applied somewhere before anyone knew it committed, and it is not what committed.
                    raise InvariantViolation(
                        STATE_MACHINE_SAFETY,
                        f"entry {i} of term {seen[0]} was applied, but node {node_id} (term {term}) "
                        f"committed entry {i} of term {t}",
                    )
            elif ct != t:
                raise InvariantViolation(
                    COMMITTED_LOST,
                    f"node {node_id} (term {term}) committed entry {i} of term {t}, "
                    f"but entry {i} of term {ct} was committed before (in term {commit_term[i]})",
                )
            elif term < commit_term[i]:
                commit_term[i] = term
        if new > self.max_committed:
            self.max_committed = new

    # -- state machines -----------------------------------------------------------

    def on_apply(self, node_id: int, entry: Entry, known_commit: int, prev_applied: int, chain: str) -> None:
        i = entry.index
        if i > known_commit:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id} applied entry {i} (term {entry.term}) beyond its commit index {known_commit}",
            )
        if i != prev_applied + 1:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY, f"node {node_id} applied entry {i} right after {prev_applied} (out of order)"
            )
        cur = (entry.term, int(entry.type), entry.data)
        seen = self.applied.get(i)
        if seen is None:
            self.applied[i] = cur
        elif seen != cur:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id} applied entry {i} as (term {cur[0]}, {cur[2][:60]!r}) but another replica "
                f"applied (term {seen[0]}, {seen[2][:60]!r})",
            )
        ct = self.committed.get(i)
        if ct is not None and ct != entry.term:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY, f"node {node_id} applied entry {i} of term {entry.term}; term {ct} was committed"
            )
        self._chain(node_id, i, chain, "after applying")

    def on_install(self, node_id: int, index: int, term: int, chain: str) -> None:
        ct = self.committed.get(index)
        if ct is not None and ct != term:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id} installed a snapshot at {index} term {term}; entry {index} of term {ct} was committed",
            )
        self._chain(node_id, index, chain, "after installing a snapshot at")

    def _chain(self, node_id: int, index: int, chain: str, how: str) -> None:
        seen = self.chains.get(index)
        if seen is None:
            self.chains[index] = chain
        elif seen != chain:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id} state {how} {index} differs from another replica's at that index",
            )
