"""The scheduler's plan() on hand-made tables, driven round by round against a simulated cluster.

``World`` plays the nodes: every round it applies what placement planned, then does what a
partition leader would with each pending operation (a learner added, a caught-up learner
promoted, a replica removed, leadership handed over), and heartbeats the table from every
living store with what it hosts. plan() must converge (no more steps), keep every invariant
on the way (never two operations on one partition, ``replicas`` voters at rest, no two voters
in one zone while enough zones are up), and move no more than needed.
"""

from __future__ import annotations

import dataclasses

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from router.placement.commands import PlacementError, RegisterStore, StoreHeartbeat, SubmitOperation
from router.placement.model import (
    AddReplica,
    CreateReplica,
    PartitionReport,
    RemoveReplica,
    StoreState,
    TransferLeader,
)
from router.placement.scheduler import STEERED_HOLD_MS, SchedulerConfig, Step, drain_refusal, plan
from router.placement.table import PlacementTable

T0 = 1_000_000
CFG = SchedulerConfig(replicas=3, down_after_ms=5_000, max_down_ms=30_000, max_moves=4, max_transfers=4)


class World:
    """A placement table and the cluster it describes (the truth the nodes would report)."""

    def __init__(self, zones: list[str], n_partitions: int, cfg: SchedulerConfig = CFG,
                 on: list[int] | None = None) -> None:
        self.cfg = cfg
        self.now = T0
        self.t = PlacementTable()
        self.zones: dict[int, str] = {}
        self.dead: set[int] = set()
        for i, z in enumerate(zones, 1):
            self.add_store(z, register_only=True)
            assert i in self.t.stores
        self.t.bootstrap(n_partitions, cfg.replicas, on or sorted(self.t.stores), now_ms=self.now)
        self.truth: dict[int, Descriptor] = {pid: p.descriptor for pid, p in self.t.partitions.items()}
        # Leaders spread as elections would leave them: the first replica of each.
        self.leader: dict[int, tuple[int, int]] = {pid: (d.replicas[0].store_id, 2) for pid, d in self.truth.items()}
        self.submitted: list[Step] = []
        self.heartbeat_all()

    def add_store(self, zone: str = "", *, register_only: bool = False) -> int:
        sid = self.t.apply(RegisterStore(f"127.0.0.1:{7200 + len(self.t.stores)}", 0, self.now, zone)).store_id
        self.zones[sid] = zone
        if not register_only:
            self.heartbeat_all()
        return sid

    def heartbeat_all(self) -> None:
        for sid, store in self.t.stores.items():
            if sid in self.dead or store.state == StoreState.REMOVED:
                continue
            reports = []
            for pid, d in self.truth.items():
                mine = d.replica_on(sid)
                if mine is None:
                    continue
                lead, term = self.leader[pid]
                reports.append(PartitionReport(
                    pid, leader=lead == sid, term=term, replica_id=mine.replica_id, epoch=d.epoch,
                    descriptor=d if lead == sid else None,
                ))
            self.t.apply(StoreHeartbeat(sid, store.address, self.now, tuple(reports), zone=self.zones[sid]))

    def nodes_act(self) -> None:
        """What partition leaders do with their operations, one membership step at a time."""
        stepped: set[int] = set()
        for pid, d in self.truth.items():  # a dead leader's partition elects another voter
            lead, term = self.leader[pid]
            live = [r.store_id for r in d.replicas if r.role == Role.VOTER and r.store_id not in self.dead]
            if lead in self.dead and 2 * len(live) > sum(r.role == Role.VOTER for r in d.replicas):
                self.leader[pid] = (min(live), term + 1)
        for pid, d in list(self.truth.items()):  # caught-up learners become voters
            if any(r.role == Role.LEARNER for r in d.replicas) and self.leader[pid][0] not in self.dead:
                self._change(pid, tuple(dataclasses.replace(r, role=Role.VOTER) for r in d.replicas))
                stepped.add(pid)
        for op in list(self.t.operations.values()):
            pid, a = op.partition_id, op.action
            d = self.truth[pid]
            lead, term = self.leader[pid]
            if pid in stepped or lead in self.dead or d.epoch != op.epoch:
                continue
            if isinstance(a, AddReplica) and d.replica_on(a.replica.store_id) is None:
                self._change(pid, (*d.replicas, a.replica))
            elif isinstance(a, RemoveReplica) and d.replica_on(a.replica.store_id) is not None:
                if a.replica.store_id == lead:  # hands over first; placement re-sends
                    other = next(r.store_id for r in d.replicas if r.store_id != lead and r.role == Role.VOTER
                                 and r.store_id not in self.dead)
                    self.leader[pid] = (other, term + 1)
                else:
                    self._change(pid, tuple(r for r in d.replicas if r.store_id != a.replica.store_id))
            elif isinstance(a, TransferLeader) and a.to_store_id not in self.dead:
                self.leader[pid] = (a.to_store_id, term + 1)

    def _change(self, pid: int, replicas: tuple[ReplicaDesc, ...]) -> None:
        d = self.truth[pid]
        self.truth[pid] = dataclasses.replace(d, replicas=replicas, epoch=Epoch(d.epoch.conf_ver + 1, d.epoch.version))

    def round(self) -> list[Step]:
        """One scheduling round, then the nodes act and heartbeat; one simulated second."""
        steps = plan(self.t, self.now, self.cfg)
        pids = [s.command.partition_id for s in steps]
        assert len(pids) == len(set(pids)), f"two operations on one partition in one round: {steps}"
        busy = {op.partition_id for op in self.t.operations.values() if not self._stuck(op.action)}
        assert not busy & set(pids), f"an operation on a partition with one in flight: {steps}"
        for s in steps:
            self.t.apply(s.command)
        self.submitted += steps
        self.nodes_act()
        self.now += 1000
        self.heartbeat_all()
        return steps

    def _stuck(self, a: object) -> bool:
        """An operation whose store died: it cannot finish and must not pin its partition."""
        return (isinstance(a, CreateReplica) and a.store_id in self.dead) or (
            isinstance(a, TransferLeader) and a.to_store_id in self.dead)

    def settle(self, max_rounds: int = 200) -> int:
        """Rounds until two rounds in a row plan nothing and nothing is in flight (a round
        in which learners were promoted plans nothing, and the next removes the extra voters)."""
        quiet = 0
        for n in range(max_rounds):
            steps = self.round()
            in_flight = [op for op in self.t.operations.values() if not self._stuck(op.action)]
            quiet = quiet + 1 if not steps and not in_flight else 0
            if quiet == 2:
                return n
        raise AssertionError(f"no rest after {max_rounds} rounds; last steps {steps}")

    # -- what the tests look at ----------------------------------------------------------

    def replicas_on(self, sid: int) -> int:
        return sum(1 for d in self.truth.values() if d.replica_on(sid) is not None)

    def leaders_on(self, sid: int) -> int:
        return sum(1 for lead, _ in self.leader.values() if lead == sid)

    def live(self) -> list[int]:
        return [s for s, info in self.t.stores.items() if s not in self.dead and info.state == StoreState.UP]

    def count(self, kind: type) -> int:
        return sum(1 for s in self.submitted if isinstance(s.command.action, kind))

    def assert_whole(self) -> None:
        for pid, d in self.truth.items():
            voters = [r.store_id for r in d.replicas if r.role == Role.VOTER]
            assert len(voters) == len(d.replicas) == self.cfg.replicas, d
            assert not set(voters) & self.dead, d
            assert self.t.partitions[pid].descriptor == d  # placement knows what is there
            assert self.leader[pid][0] in voters

    def assert_zones_spread(self) -> None:
        for d in self.truth.values():
            zones = [self.zones[r.store_id] for r in d.replicas]
            assert len(set(zones)) == len(zones), (d, zones)

    def assert_balanced(self) -> None:
        up = self.live()
        reps = [self.replicas_on(s) for s in up]
        leads = [self.leaders_on(s) for s in up]
        assert max(reps) - min(reps) <= 1, dict(zip(up, reps))
        assert max(leads) - min(leads) <= 1, dict(zip(up, leads))


def test_a_fresh_balanced_cluster_plans_nothing() -> None:
    w = World(["", "", ""], 9)
    w.settle()
    assert w.submitted == [] or all(isinstance(s.command.action, TransferLeader) for s in w.submitted)
    w.assert_whole()
    w.assert_balanced()


def test_leaders_balance_within_one_with_the_fewest_transfers() -> None:
    w = World(["", "", ""], 9)
    for pid in w.leader:  # every leader on store 1
        w.leader[pid] = (1, 3)
    w.heartbeat_all()
    w.settle()
    w.assert_balanced()
    assert [w.leaders_on(s) for s in (1, 2, 3)] == [3, 3, 3]
    assert w.count(TransferLeader) == 6  # exactly the six leaders store 1 had too many
    assert w.count(AddReplica) == 0


def test_a_leader_an_operator_moved_stays_and_balance_moves_others() -> None:
    w = World(["", "", ""], 6)
    w.settle()
    w.assert_balanced()
    # The operator moves partition 1's leader to a store that already leads two.
    crowded = next(s for s in (1, 2, 3) if s != w.leader[1][0] and w.t.partitions[1].descriptor.replica_on(s))
    w.t.apply(SubmitOperation(1, TransferLeader(crowded), None, w.now, by_admin=True))
    w.nodes_act()
    w.heartbeat_all()
    assert w.leader[1][0] == crowded
    before = len(w.submitted)
    w.settle()
    w.assert_balanced()
    assert w.leader[1][0] == crowded  # balance went through the other partitions
    assert all(s.command.partition_id != 1 for s in w.submitted[before:])
    assert w.now - w.t.partitions[1].steered_ms < STEERED_HOLD_MS  # (the hold was in force throughout)


def test_leaders_balance_when_a_chain_of_transfers_is_needed() -> None:
    # Store 4 holds no replica of the partitions store 1 leads: a leader can only reach it
    # through another store (1 -> 2 on one partition, 2 -> 4 on another).
    w = World(["", "", "", ""], 8, on=[1, 2, 3, 4])
    for pid, d in w.truth.items():
        w.leader[pid] = (d.replicas[0].store_id, 3)
    w.heartbeat_all()
    w.settle()
    w.assert_balanced()


def test_an_empty_store_is_filled_to_within_one_moving_no_more_than_needed() -> None:
    w = World(["", "", ""], 12)
    w.settle()
    new = w.add_store()
    w.settle()
    w.assert_whole()
    w.assert_balanced()
    assert w.replicas_on(new) == 9  # 36 replicas over 4 stores
    assert w.count(AddReplica) == 9 and w.count(RemoveReplica) == 9


def test_a_dead_store_is_repaired_only_after_max_down() -> None:
    w = World(["", "", "", ""], 8, on=[1, 2, 3])
    w.settle()
    held = [pid for pid, d in w.truth.items() if d.replica_on(3) is not None]
    before = len(w.submitted)
    w.dead.add(3)
    for _ in range(20):  # down, not yet dead: no replica moves (leaders may rebalance)
        w.round()
    assert all(isinstance(s.command.action, TransferLeader) for s in w.submitted[before:])
    w.now += CFG.max_down_ms
    w.settle()
    w.assert_whole()
    for pid in held:
        assert w.truth[pid].replica_on(4) is not None
    assert w.replicas_on(3) == 0
    w.t.set_store_state(3, StoreState.REMOVED)  # nothing left on it: it may go


def test_repair_picks_an_up_store_in_the_zone_the_partition_lost() -> None:
    w = World(["a", "b", "c", "a", "b", "c"], 6)
    w.settle()
    w.assert_zones_spread()
    victim = 1
    held = [pid for pid, d in w.truth.items() if d.replica_on(victim) is not None]
    assert held
    w.dead.add(victim)
    w.now += CFG.max_down_ms + 1000
    w.heartbeat_all()
    steps = w.round()
    adds = [s.command for s in steps if isinstance(s.command.action, AddReplica)]
    assert adds and {a.partition_id for a in adds} <= set(held)
    for cmd in adds:
        assert isinstance(cmd.action, AddReplica)
        assert w.zones[cmd.action.replica.store_id] == "a"
    w.settle()
    w.assert_whole()
    w.assert_zones_spread()


def test_no_two_replicas_in_one_zone_while_enough_zones_are_up_through_balance() -> None:
    w = World(["a", "b", "c"], 6)
    w.settle()
    w.add_store("c")
    w.add_store("c")  # zone c now has three stores; a and b one each
    w.settle()
    w.assert_whole()
    w.assert_zones_spread()  # so every partition keeps one replica on store 1 and on store 2


def test_too_few_zones_up_repair_shares_a_zone_then_spreads_again() -> None:
    w = World(["a", "b", "c", "a"], 4, on=[1, 2, 3])
    w.settle()
    w.dead.add(3)  # zone c's only store
    w.now += CFG.max_down_ms + 1000
    w.settle()
    w.assert_whole()  # three replicas again, zone a twice: better than two replicas
    assert all(w.truth[p].replica_on(4) is not None or w.truth[p].replica_on(1) is not None for p in w.truth)
    c2 = w.add_store("c")
    w.settle()
    w.assert_whole()
    w.assert_zones_spread()
    assert w.replicas_on(c2) == 4


def test_two_voters_in_one_zone_move_when_another_zone_has_room() -> None:
    w = World(["a", "a", "b"], 3)  # bootstrap had to double zone a
    w.settle()
    w.add_store("c")
    w.settle()
    w.assert_whole()
    w.assert_zones_spread()


def test_drain_empties_the_store_of_replicas_and_leaders_then_it_can_be_removed() -> None:
    w = World(["", "", "", ""], 8)
    w.settle()
    assert w.replicas_on(2) > 0
    assert drain_refusal(w.t, 2, w.now, CFG) is None
    w.t.set_store_state(2, StoreState.DRAINING)
    w.settle()
    w.assert_whole()
    assert w.replicas_on(2) == 0 and w.leaders_on(2) == 0
    w.t.set_store_state(2, StoreState.REMOVED)
    assert w.t.stores[2].state == StoreState.REMOVED


def test_drain_is_refused_when_too_few_stores_would_be_left_and_for_unknown_stores() -> None:
    w = World(["", "", ""], 3)
    assert drain_refusal(w.t, 1, w.now, CFG) == (
        "draining store 1 would leave 2 up store(s) to hold 3 replicas of every partition; add a node first")
    assert drain_refusal(w.t, 9, w.now, CFG) == "unknown store 9"


def test_a_store_holding_replicas_cannot_be_removed() -> None:
    w = World(["", "", "", ""], 4)
    with pytest.raises(PlacementError, match="still holds"):
        w.t.set_store_state(1, StoreState.REMOVED)


def test_replanning_the_same_table_is_deterministic_and_adds_no_duplicates() -> None:
    w = World(["", "", ""], 12)
    w.settle()
    w.add_store()
    first = plan(w.t, w.now, CFG)
    assert first
    assert plan(w.t, w.now, CFG) == first  # a new leader reading the same table decides the same
    for s in first:
        w.t.apply(s.command)
    again = plan(w.t, w.now, CFG)  # the same table with the operations in flight
    assert not {s.command.partition_id for s in again} & {s.command.partition_id for s in first}
    # Nothing more to move onto the new store while the first moves run: the counts already
    # include the adds in flight.
    assert not [s for s in again if isinstance(s.command.action, AddReplica)]


def test_moves_are_rate_limited_cluster_wide() -> None:
    w = World(["", "", ""], 24)
    w.settle()
    w.add_store()
    steps = plan(w.t, w.now, CFG)
    assert sum(isinstance(s.command.action, AddReplica) for s in steps) == CFG.max_moves


def test_a_learner_on_a_dead_store_is_removed_and_the_move_retried_elsewhere() -> None:
    w = World(["", "", ""], 6)
    w.settle()
    w.add_store()
    w.add_store()
    w.round()  # moves onto stores 4 and 5 begin: learners there
    learners = [pid for pid, d in w.truth.items()
                if any(r.role == Role.LEARNER and r.store_id == 4 for r in d.replicas)]
    assert learners
    w.dead.add(4)  # store 4 dies before they are promoted
    w.now += CFG.max_down_ms + 1000
    w.settle()
    w.assert_whole()
    assert w.replicas_on(4) == 0
    w.assert_balanced()


def test_plan_on_a_thousand_partitions_is_cheap() -> None:
    import time

    w = World(["", "", ""], 1000)
    w.settle()
    started = time.perf_counter()
    for _ in range(5):
        assert plan(w.t, w.now, CFG) == []
    assert (time.perf_counter() - started) / 5 < 0.05  # about 10 ms here: 1% of a core at one round a second


def test_a_learner_its_store_will_never_create_is_removed() -> None:
    w = World(["", "", "", ""], 4, on=[1, 2, 3])
    w.settle()
    new = w.add_store()  # empty: balance moves onto it
    w.round()  # the leaders add learners on it
    pid, learner = next((pid, r) for pid, d in w.truth.items() for r in d.replicas
                        if r.role == Role.LEARNER and r.store_id == new)
    assert plan(w.t, w.now, CFG) == [] or all(s.command.partition_id != pid for s in plan(w.t, w.now, CFG))
    # Its store does not host it, and nothing asks it to any more (the CreateReplica expired
    # while the leader was busy, say): the learner can never catch up.
    assert not [op for op in w.t.operations.values() if op.partition_id == pid]
    store = w.t.stores[new]
    store.hosted = frozenset(store.hosted - {pid})
    removal = [s for s in plan(w.t, w.now, CFG) if s.command.partition_id == pid]
    assert [s.command.action for s in removal] == [RemoveReplica(learner)]
