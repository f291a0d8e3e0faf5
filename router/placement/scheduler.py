"""The placement scheduler: what placement should do next, as a pure function of the table.

:func:`plan` reads a :class:`~router.placement.table.PlacementTable` at one instant and returns
the operations to submit now (``SubmitOperation`` commands, each with the epoch it was decided
against). It keeps no state between rounds and stores no multi-step plans: every step of a
replica move (add a learner on the target; the partition's leader promotes it once caught up;
remove the replica that is to go) is derived afresh from the table each round, so a placement
leader that fails over mid-move leaves nothing behind that its successor must know: the new
leader reads the same replicated table and derives the same next step. See docs/decisions.md
D20 for the priorities and the argument.

In priority order (each round takes the slots the earlier ones left):

1. **finish and clean up**: a partition with more voters than ``replicas`` loses the worst one
   (on a dead, removed, draining or down store, else one that shares a zone, else the fullest
   store); a learner on a store that is not up is removed (the move it began cannot finish);
2. **repair**: a partition with fewer than ``replicas`` voters outside dead, removed and
   draining stores gets a new replica on an up store (a store is dead once silent for
   ``max_down_ms``); the leaders of draining stores are handed to other voters;
3. **zones**: a partition with two voters in one zone gets one in a zone it lacks, when an up
   store there can take it;
4. **replica balance**: while the replica counts of the up stores differ by more than one, a
   replica moves from the fullest to the emptiest store that the zone rule allows;
5. **leader balance**, only when no replica moves are in flight: leadership transfers along
   shortest chains of partitions, from the stores with the most leaders to the ones with at
   least two fewer, until the counts are within one.

Never two operations on one partition at once: a partition with any pending operation, a
learner or a joint configuration is left alone (but for 1.), and each round touches a
partition at most once. Moves (adds) are rate-limited cluster-wide by ``max_moves`` (each one
is a snapshot to a new replica), leader transfers by ``max_transfers``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from common.descriptor import Descriptor, ReplicaDesc, Role
from router.placement.commands import SubmitOperation
from router.placement.model import (
    AddReplica,
    CreateReplica,
    PartitionInfo,
    RemoveReplica,
    StoreInfo,
    StoreState,
    TransferLeader,
)
from router.placement.table import PlacementTable


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    replicas: int = 3  # voters every partition should have (--replicas)
    down_after_ms: int = 5_000  # silent this long: down, takes nothing new (--store-down-after)
    max_down_ms: int = 30_000  # silent this long: dead, its replicas are re-created elsewhere (--max-down)
    max_moves: int = 4  # replica moves in flight at once, cluster-wide (--max-moves)
    max_transfers: int = 4  # leader transfers in flight at once
    # Silence is counted from no earlier than this (unix ms): the time this router became the
    # placement leader. The heartbeat times in the table are replicated, but the weeks-old
    # heartbeat of a store is as old for a new leader as for the old one, while a store that
    # heartbeated the old leader a moment before the failover and has not yet found the new one
    # is not dead: it gets max_down_ms from the new leader's start, like everyone else.
    since_ms: int = 0


class Liveness(IntEnum):
    """A store as the scheduler sees it; higher is worse for a replica to be on."""

    UP = 0
    DRAINING = 1  # up, but everything is to leave
    DOWN = 2  # silent for down_after_ms: takes nothing new; may come back
    DEAD = 3  # silent for max_down_ms: its replicas are re-created elsewhere
    REMOVED = 4


# Replicas on these stores are to be replaced (they do not count toward a partition's set).
_DOOMED = (Liveness.DRAINING, Liveness.DEAD, Liveness.REMOVED)
_JOINT = (Role.INCOMING_VOTER, Role.DEMOTING_VOTER)


@dataclass(frozen=True, slots=True)
class Step:
    """One operation to submit, and why (for the log)."""

    command: SubmitOperation
    reason: str


def liveness(store: StoreInfo, now_ms: int, cfg: SchedulerConfig) -> Liveness:
    if store.state == StoreState.REMOVED:
        return Liveness.REMOVED
    silent = now_ms - max(store.last_heartbeat_ms, cfg.since_ms)
    if silent > max(cfg.max_down_ms, cfg.down_after_ms):
        return Liveness.DEAD
    if silent > cfg.down_after_ms:
        return Liveness.DOWN
    return Liveness.DRAINING if store.state == StoreState.DRAINING else Liveness.UP


def drain_refusal(table: PlacementTable, store_id: int, now_ms: int, cfg: SchedulerConfig) -> str | None:
    """Why ``store_id`` cannot be drained now (None: it can): the other up stores must be able
    to hold ``replicas`` replicas of every partition it has a replica of."""
    store = table.stores.get(store_id)
    if store is None:
        return f"unknown store {store_id}"
    if store.state == StoreState.REMOVED:
        return f"store {store_id} is removed"
    if not any(p.descriptor.replica_on(store_id) is not None for p in table.partitions.values()):
        return None  # nothing to move
    others = [s for s in table.stores.values() if s.id != store_id and liveness(s, now_ms, cfg) == Liveness.UP]
    if len(others) < cfg.replicas:
        return (f"draining store {store_id} would leave {len(others)} up store(s) to hold {cfg.replicas} "
                "replicas of every partition; add a node first")
    return None


# How long leader balance leaves a partition alone after an operator steered it (an admin
# transfer would otherwise be undone within a round, before the admin even saw it done).
STEERED_HOLD_MS = 60_000


def plan(table: PlacementTable, now_ms: int, cfg: SchedulerConfig) -> list[Step]:
    """The operations to submit now (see the module docstring for what and in which order)."""
    return _Round(table, now_ms, cfg).run()


class _Round:
    """One scheduling round over a snapshot of the table (nothing here mutates the table)."""

    def __init__(self, table: PlacementTable, now_ms: int, cfg: SchedulerConfig) -> None:
        self.t = table
        self.now = now_ms
        self.cfg = cfg
        self.live = {s.id: liveness(s, now_ms, cfg) for s in table.stores.values()}
        self.zone = {s.id: s.zone_key for s in table.stores.values()}
        self.steps: list[Step] = []
        self.touched: set[int] = set()
        # Pending operations: who is busy, which adds and transfers are in flight.
        self.busy: set[int] = set()
        self.changing: set[int] = set()  # partitions with an AddReplica or RemoveReplica pending
        self.adding: dict[int, int] = {}  # partition -> target store of a pending AddReplica
        self.transfer_to: dict[int, int] = {}  # partition -> target of a pending TransferLeader
        self.creating = {  # replicas a store is still to create
            (op.partition_id, op.action.replica_id) for op in table.operations.values()
            if isinstance(op.action, CreateReplica)
        }
        for op in table.operations.values():
            a = op.action
            if isinstance(a, CreateReplica) and self.live.get(a.store_id) != Liveness.UP:
                continue  # cannot finish while its store is away; must not pin the partition
            if isinstance(a, TransferLeader) and self.live.get(a.to_store_id) != Liveness.UP:
                # Its target went away after it was decided: it cannot finish (the node skips
                # it), and the next change of the partition's epoch drops it from the table.
                continue
            self.busy.add(op.partition_id)
            if isinstance(a, (AddReplica, RemoveReplica)):
                self.changing.add(op.partition_id)
            if isinstance(a, AddReplica):
                self.adding[op.partition_id] = a.replica.store_id
            elif isinstance(a, TransferLeader):
                self.transfer_to[op.partition_id] = a.to_store_id
        # Replicas per store as placement will have them: descriptors plus adds in flight.
        self.count = dict.fromkeys(table.stores, 0)
        for p in table.partitions.values():
            for r in p.descriptor.replicas:
                if r.store_id in self.count:
                    self.count[r.store_id] += 1
        for pid, target in self.adding.items():
            info = table.partitions.get(pid)
            if info is not None and info.descriptor.replica_on(target) is None and target in self.count:
                self.count[target] += 1
        # ... and without the replicas on their way out: a removal pending, or the voter that
        # will go once a move's learner is promoted (else the next round sees the source still
        # full and moves one more than needed).
        # The victims are chosen here, greedily in partition order, each from the fullest
        # store as the earlier ones leave it (so concurrent moves take from different stores),
        # and _finish removes exactly these: the plan and the counts agree, round after round.
        self.leaving: dict[int, int] = {}  # partition -> store whose replica is counted as gone
        for op in table.operations.values():
            a = op.action
            info = table.partitions.get(op.partition_id)
            if isinstance(a, RemoveReplica) and info is not None and info.descriptor.replica_on(a.replica.store_id):
                self.leaving[op.partition_id] = a.replica.store_id
                if a.replica.store_id in self.count:
                    self.count[a.replica.store_id] -= 1
        for p in sorted(table.partitions.values(), key=lambda p: p.id):
            if p.id not in self.leaving and len(p.descriptor.replicas) > self.cfg.replicas:
                stranded = self._stranded(p)
                victim = stranded or self._victim(p)  # _finish removes the same
                if victim is not None:
                    self.leaving[p.id] = victim.store_id
                    if victim.store_id in self.count:
                        self.count[victim.store_id] -= 1
        self.moves = sum(1 for p in table.partitions.values() if self._moving(p))
        self.transfers = len(self.transfer_to)

    # -- helpers ------------------------------------------------------------------------------

    def _moving(self, p: PartitionInfo) -> bool:
        """A replica move is under way: an add or removal pending, a learner, extra voters."""
        d = p.descriptor
        return (
            p.id in self.changing
            or any(r.role != Role.VOTER for r in d.replicas)
            or len(d.replicas) > self.cfg.replicas
        )

    def _stranded(self, p: PartitionInfo) -> ReplicaDesc | None:
        """A learner that cannot catch up: its store is not up, or does not host it and is no
        longer asked to (its CreateReplica expired, e.g. while the leader was busy)."""
        for r in p.descriptor.replicas:
            if r.role != Role.LEARNER:
                continue
            if self.live.get(r.store_id) != Liveness.UP:
                return r
            store = self.t.stores[r.store_id]
            hosting = p.id in store.hosted and store.hosted_replicas.get(p.id, 0) in (0, r.replica_id)
            if not hosting and (p.id, r.replica_id) not in self.creating:
                return r
        return None

    def _healthy(self, p: PartitionInfo) -> bool:
        """Nothing for finish, repair or zones to do: ``replicas`` voters, each on an up
        store, in distinct zones (the common case, checked first to keep rounds cheap)."""
        d = p.descriptor
        if len(d.replicas) != self.cfg.replicas:
            return False
        zones = set()
        for r in d.replicas:
            if r.role != Role.VOTER or self.live.get(r.store_id) != Liveness.UP:
                return False
            zones.add(self.zone[r.store_id])
        return len(zones) == len(d.replicas)

    def _state(self, store_id: int) -> Liveness:
        return self.live.get(store_id, Liveness.REMOVED)

    def _actionable(self, p: PartitionInfo) -> bool:
        """Free for a new operation: nothing pending, not touched this round, and a leader that
        can act on it (an operation goes to the leader's store)."""
        return (
            p.id not in self.busy
            and p.id not in self.touched
            and p.leader_store_id != 0
            and self._state(p.leader_store_id) in (Liveness.UP, Liveness.DRAINING)
            and p.descriptor.replica_on(p.leader_store_id) is not None
        )

    def _submit(self, p: PartitionInfo, action: TransferLeader | AddReplica | RemoveReplica, reason: str) -> None:
        cmd = SubmitOperation(p.id, action, p.descriptor.epoch, self.now)
        self.steps.append(Step(cmd, reason))
        self.touched.add(p.id)

    def _up_zones(self) -> set[str]:
        return {self.zone[s] for s, st in self.live.items() if st == Liveness.UP}

    def _target(self, d: Descriptor, staying: list[ReplicaDesc], *, allow_shared_zone: bool) -> int | None:
        """The up store to add a replica of ``d`` to: one holding none of its replicas, in a
        zone none of ``staying`` is in (or, only with ``allow_shared_zone`` and when too few
        zones are up for the rule, the zone with the fewest of them), the emptiest first."""
        taken = {self.zone[r.store_id] for r in staying if r.store_id in self.zone}
        candidates = [
            s for s, st in self.live.items() if st == Liveness.UP and d.replica_on(s) is None
        ]
        fresh = [s for s in candidates if self.zone[s] not in taken]
        if not fresh:
            if not allow_shared_zone or len(self._up_zones()) >= self.cfg.replicas:
                return None
            shared = [self.zone[r.store_id] for r in staying if r.store_id in self.zone]
            return min(candidates, key=lambda s: (shared.count(self.zone[s]), self.count[s], s), default=None)
        return min(fresh, key=lambda s: (self.count[s], s))

    def _add(self, p: PartitionInfo, target: int, reason: str) -> None:
        self._submit(p, AddReplica(ReplicaDesc(target, 0, Role.LEARNER)), reason)
        self.count[target] += 1
        self.moves += 1

    # -- the round ------------------------------------------------------------------------------

    def run(self) -> list[Step]:
        parts = sorted(self.t.partitions.values(), key=lambda p: p.id)
        sick = [p for p in parts if not self._healthy(p)]
        for p in sick:
            self._finish(p)
        self._drain_leaders(parts)
        for p in sick:
            self._repair(p)
        for p in sick:
            self._fix_zones(p)
        self._balance_replicas(parts)
        if self.moves == 0:
            self._balance_leaders(parts)
        return self.steps

    def _finish(self, p: PartitionInfo) -> None:
        """Remove an extra voter, or a learner whose store went away."""
        if not self._actionable(p):
            return
        d = p.descriptor
        if any(r.role in _JOINT for r in d.replicas):
            return  # the leader leaves a joint configuration by itself
        stranded = self._stranded(p)
        if stranded is not None:
            why = self._state(stranded.store_id).name.lower()
            why = why if why != "up" else "not hosted there, and no longer being created"
            self._submit(p, RemoveReplica(stranded), f"learner on store {stranded.store_id} ({why})")
            return
        if any(r.role == Role.LEARNER for r in d.replicas):
            return  # catching up: its leader promotes it
        voters = _voters(d)
        if len(voters) <= self.cfg.replicas:
            return
        victim = d.replica_on(self.leaving.get(p.id, 0))  # chosen (and counted) in __init__
        if victim is None or victim.role != Role.VOTER:
            return
        why = self._state(victim.store_id).name.lower()
        self._submit(p, RemoveReplica(victim), f"{len(voters)} voters: remove store {victim.store_id} ({why})")

    def _victim(self, p: PartitionInfo) -> ReplicaDesc | None:
        """The voter to remove from a partition with more replicas than wanted: on the worst
        store (dead, removed, draining, down), else one sharing a zone, else not the replica
        a move just added (the newest), else on the fullest store, else not the leader; and
        only one whose removal leaves a live majority."""
        d = p.descriptor
        voters = _voters(d)
        if not voters:
            return None
        zones = [self.zone.get(r.store_id, "") for r in voters]
        newest = max(r.replica_id for r in d.replicas)

        def badness(r: ReplicaDesc) -> tuple[int, int, int, int, int, int]:
            return (
                int(self._state(r.store_id)),
                int(zones.count(self.zone.get(r.store_id, "")) > 1),
                int(r.replica_id != newest),
                self.count.get(r.store_id, 0),
                int(r.store_id != p.leader_store_id),
                r.store_id,
            )

        for victim in sorted(voters, key=badness, reverse=True):
            rest = [r for r in voters if r is not victim]
            live = sum(1 for r in rest if self._state(r.store_id) in (Liveness.UP, Liveness.DRAINING))
            if 2 * live > len(rest):  # what stays can still elect and commit
                return victim
        return None

    def _drain_leaders(self, parts: list[PartitionInfo]) -> None:
        if Liveness.DRAINING not in self.live.values():
            return
        leaders = self._leader_counts(parts)
        for p in parts:
            if self.transfers >= self.cfg.max_transfers:
                return
            if not self._actionable(p) or self._state(p.leader_store_id) != Liveness.DRAINING:
                continue
            to = [r.store_id for r in _voters(p.descriptor) if self._state(r.store_id) == Liveness.UP]
            if to:
                best = min(to, key=lambda s: (leaders.get(s, 0), s))
                self._submit(p, TransferLeader(best), f"drain: leader off store {p.leader_store_id}")
                leaders[best] = leaders.get(best, 0) + 1
                self.transfers += 1

    def _repair(self, p: PartitionInfo) -> None:
        """Fewer voters than wanted outside dead, removed and draining stores: add one."""
        if self.moves >= self.cfg.max_moves or not self._actionable(p) or self._moving(p):
            return
        d = p.descriptor
        if any(r.role != Role.VOTER for r in d.replicas):
            return
        staying = [r for r in _voters(d) if self._state(r.store_id) not in _DOOMED]
        if len(staying) >= self.cfg.replicas:
            return
        target = self._target(d, staying, allow_shared_zone=True)
        if target is None:
            return
        going = [f"{r.store_id} ({self._state(r.store_id).name.lower()})" for r in _voters(d) if r not in staying]
        why = f"replace store {', '.join(going)}" if going else f"{len(staying)} of {self.cfg.replicas} voters"
        self._add(p, target, f"repair: {why}")

    def _fix_zones(self, p: PartitionInfo) -> None:
        if self.moves >= self.cfg.max_moves or not self._actionable(p) or self._moving(p):
            return
        d = p.descriptor
        voters = _voters(d)
        if any(r.role != Role.VOTER for r in d.replicas) or any(self._state(r.store_id) in _DOOMED for r in voters):
            return
        zones = [self.zone.get(r.store_id, "") for r in voters]
        if len(set(zones)) == len(zones):
            return
        target = self._target(d, voters, allow_shared_zone=False)
        if target is not None:
            self._add(p, target, f"zones: two voters share {zones[0] if zones.count(zones[0]) > 1 else zones[1]}")

    def _balance_replicas(self, parts: list[PartitionInfo]) -> None:
        """Move replicas from the fullest up store to the emptiest until within one. Paused
        while a store is down but not yet dead: it may come back, and moving data around for a
        blip costs snapshots twice."""
        if any(st == Liveness.DOWN for st in self.live.values()):
            return
        up = [s for s, st in self.live.items() if st == Liveness.UP]
        tried: set[tuple[int, int]] = set()
        while self.moves < self.cfg.max_moves and len(up) > 1:
            moved = False
            for src in sorted(up, key=lambda s: (-self.count[s], s)):
                for dst in sorted(up, key=lambda s: (self.count[s], s)):
                    if self.count[src] - self.count[dst] <= 1:
                        break
                    if (src, dst) in tried:
                        continue
                    tried.add((src, dst))
                    p = self._movable(parts, src, dst)
                    if p is not None:
                        self._add(p, dst, f"balance: store {src} has {self.count[src]} replicas, "
                                          f"store {dst} {self.count[dst]}")
                        self.count[src] -= 1  # as it will be once the extra voter goes
                        tried.clear()
                        moved = True
                        break
                if moved:
                    break
            if not moved:
                return

    def _movable(self, parts: list[PartitionInfo], src: int, dst: int) -> PartitionInfo | None:
        """A partition with a voter on ``src`` whose replica may move to ``dst``: free, whole,
        nothing on ``dst``, and ``dst``'s zone not held by its other voters."""
        for p in parts:
            d = p.descriptor
            if (
                d.replica_on(src) is None
                or d.replica_on(dst) is not None
                or not self._actionable(p)
                or self._moving(p)
                or any(r.role != Role.VOTER for r in d.replicas)
                or any(self._state(r.store_id) != Liveness.UP for r in d.replicas)
            ):
                continue
            others = {self.zone.get(r.store_id, "") for r in d.replicas if r.store_id != src}
            if self.zone[dst] not in others:
                return p
        return None

    # -- leaders --------------------------------------------------------------------------------

    def _leader_of(self, p: PartitionInfo) -> int:
        return self.transfer_to.get(p.id, p.leader_store_id)

    def _leader_counts(self, parts: list[PartitionInfo]) -> dict[int, int]:
        counts = {s: 0 for s, st in self.live.items() if st == Liveness.UP}
        for p in parts:
            lead = self._leader_of(p)
            if lead in counts:
                counts[lead] += 1
        return counts

    def _balance_leaders(self, parts: list[PartitionInfo]) -> None:
        """Leaders within one of even over the up stores, by as few transfers as the
        replicas allow: a transfer goes from a store with the most leaders along the shortest
        chain of partitions (each led by one store, with a voter on the next) to a store with
        at least two fewer; each chain moves one leader's worth and strictly lowers the sum of
        squares of the counts, so rounds converge."""
        counts = self._leader_counts(parts)
        if len(counts) < 2:
            return
        while self.transfers < self.cfg.max_transfers:
            hi, lo = max(counts.values()), min(counts.values())
            if hi - lo <= 1:
                return
            path = self._chain(parts, counts, hi)
            if path is None or self.transfers + len(path) > self.cfg.max_transfers:
                return
            for p, src, dst in path:
                why = f"leaders: store {src} has {counts[src]}, store {dst} {counts[dst]}"
                self._submit(p, TransferLeader(dst), why)
                self.transfer_to[p.id] = dst
                self.transfers += 1
            counts[path[0][1]] -= 1
            counts[path[-1][2]] += 1

    def _chain(
        self, parts: list[PartitionInfo], counts: dict[int, int], hi: int
    ) -> list[tuple[PartitionInfo, int, int]] | None:
        """Breadth-first from every store with ``hi`` leaders to the nearest store with at most
        ``hi - 2`` (the emptiest at that distance): the transfers along the way."""
        edges: dict[int, list[tuple[int, PartitionInfo]]] = {}
        for p in parts:
            lead = self._leader_of(p)
            if lead not in counts or not self._actionable(p) or self._moving(p):
                continue
            if p.steered_ms and self.now - p.steered_ms < STEERED_HOLD_MS:
                continue  # an operator just put this leader there: balance with the others

            for r in _voters(p.descriptor):
                if r.store_id != lead and r.store_id in counts:
                    edges.setdefault(lead, []).append((r.store_id, p))
        came: dict[int, tuple[int, PartitionInfo] | None] = {s: None for s, c in counts.items() if c == hi}
        frontier = deque(sorted(came))
        while frontier:
            level = sorted(frontier)
            frontier.clear()
            ends = []
            for s in level:
                for t, p in edges.get(s, []):
                    if t in came:
                        continue
                    came[t] = (s, p)
                    if counts[t] <= hi - 2:
                        ends.append(t)
                    frontier.append(t)
            if ends:
                end = min(ends, key=lambda s: (counts[s], s))
                path = []
                while (step := came[end]) is not None:
                    src, p = step
                    path.append((p, src, end))
                    end = src
                return path[::-1]
        return None


def _voters(d: Descriptor) -> list[ReplicaDesc]:
    return [r for r in d.replicas if r.role == Role.VOTER]
