"""A Raft round decided without threads, disks or sockets (node.round_plan.plan_round).

The Readies are built by hand (they are plain frozen data), so each test says exactly which
decision it pins: what leaves before the write, what the one WAL batch holds, what is carried
to a later round, what each partition applies and with which descriptor.
"""

from __future__ import annotations

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from node import membership
from node.raft import (
    ConfChange,
    ConfChangeResult,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from node.round_plan import (
    NOTHING_CARRIED,
    Carried,
    PartitionWork,
    PlanError,
    RoundPlan,
    StagedSnapshot,
    compaction_point,
    plan_round,
)
from node.state.commands import put
from node.wal.batch import Op

VOTERS = ConfState(voters=frozenset({1, 2, 3}))


def desc(pid: int = 7, replicas: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 3))) -> Descriptor:
    return Descriptor(pid, b"a", b"m", Epoch(4, 2), tuple(ReplicaDesc(s, r, Role.VOTER) for s, r in replicas))


def work(ready: Ready, pid: int = 7, replica_id: int = 1, staged: StagedSnapshot | None = None) -> PartitionWork:
    return PartitionWork(pid, replica_id, ready, desc(pid), VOTERS, staged)


def wal_ops(plan: RoundPlan) -> list[tuple[str, int]]:
    return [(Op(op).name, pid) for op, pid, *_ in plan.wal.ops]


def app(dst: int) -> Message:
    return Message(MessageType.APP, 1, dst, term=3)


def test_a_leaders_appends_leave_before_the_write_and_acknowledgements_after() -> None:
    entry = Entry(3, 11, put(b"b", b"v", b"rid").encode())
    leader = Ready(
        hard_state=HardState(3, 1, 10),
        entries=(entry,),
        messages_before_persist=(app(2), app(3)),
        must_sync=True,
    )
    follower = Ready(
        entries=(Entry(3, 11, b""),),
        messages_after_persist=(Message(MessageType.APP_RESP, 2, 1, term=3, index=11),),
        must_sync=True,
    )
    plan = plan_round([work(leader, pid=7), work(follower, pid=8, replica_id=2)], {})
    assert plan.send_now == ((7, leader.messages_before_persist),)
    assert plan.send_after_persist == ((8, follower.messages_after_persist),)
    assert wal_ops(plan) == [("ENTRIES", 7), ("HARD_STATE", 7), ("ENTRIES", 8)]
    assert plan.sync and not plan.applies and not plan.installs and not plan.leaving
    assert plan.readies == ((7, leader), (8, follower))
    assert plan.carry == {}


def test_a_commit_only_hard_state_is_carried_until_a_round_writes_anyway() -> None:
    commit_only = Ready(hard_state=HardState(3, 1, 12))  # must_sync False: only commit moved
    plan = plan_round([work(commit_only)], {})
    assert wal_ops(plan) == [] and not plan.sync
    assert plan.carry == {7: Carried(hard_state=HardState(3, 1, 12))}

    # Another partition's synced write takes it along (and a newer one replaces it first).
    other = Ready(entries=(Entry(3, 5, b""),), must_sync=True)
    plan = plan_round([work(other, pid=8)], plan.carry)
    assert wal_ops(plan) == [("ENTRIES", 8), ("HARD_STATE", 7)] and plan.sync
    assert plan.carry == {7: NOTHING_CARRIED}  # written: partition 7 carries nothing any more


def test_a_synced_hard_state_supersedes_the_carried_one() -> None:
    carried = {7: Carried(hard_state=HardState(3, 1, 12))}
    vote = Ready(hard_state=HardState(4, 2, 12), must_sync=True)
    plan = plan_round([work(vote)], carried)
    assert wal_ops(plan) == [("HARD_STATE", 7)]
    assert plan.wal.ops[0][2] == HardState(4, 2, 12)


def test_due_compactions_are_written_with_the_carried_state_even_without_a_sync() -> None:
    carried = {7: Carried(compact_to=900), 9: Carried(hard_state=HardState(2, 2, 40))}
    plan = plan_round([work(Ready(hard_state=HardState(3, 1, 13)))], carried)
    assert sorted(wal_ops(plan)) == [("COMPACT", 7), ("HARD_STATE", 7), ("HARD_STATE", 9)]
    assert not plan.sync and plan.carry == {7: NOTHING_CARRIED, 9: NOTHING_CARRIED}


def test_only_entries_on_disk_before_the_round_may_be_applied_before_its_write() -> None:
    # D31: what the round itself appends (a follower's append that also commits it) or a
    # snapshot restarts is applied after the round's WAL write; what earlier rounds wrote may
    # be applied before it.
    def e(index: int) -> Entry:
        return Entry(3, index, put(b"b", b"v").encode())

    earlier = Ready(entries=(e(12),), committed_entries=(e(10), e(11)), must_sync=True)
    same_round = Ready(entries=(e(11), e(12)), committed_entries=(e(10), e(11)), must_sync=True)
    nothing_new = Ready(committed_entries=(e(10),))
    plan = plan_round([work(earlier, pid=7), work(same_round, pid=8), work(nothing_new, pid=9)], {})
    assert [(job.pid, job.on_disk) for job in plan.applies] == [(7, True), (8, False), (9, True)]
    meta = SnapshotMeta(9, 3, VOTERS)
    after_snapshot = Ready(snapshot=Snapshot(meta), committed_entries=(e(10),), must_sync=True)
    plan = plan_round([work(after_snapshot, staged=StagedSnapshot("/spool/snap-1", None))], {})
    assert [(job.pid, job.on_disk) for job in plan.applies] == [(7, False)]


def test_a_snapshot_needs_its_data_staged_and_is_installed_before_the_log_restarts() -> None:
    meta = SnapshotMeta(50, 3, VOTERS)
    ready = Ready(snapshot=Snapshot(meta), hard_state=HardState(3, 0, 50), must_sync=True)
    with pytest.raises(PlanError, match="no data staged"):
        plan_round([work(ready)], {})
    staged = StagedSnapshot("/spool/snap-1", desc())
    plan = plan_round([work(ready, staged=staged)], {})
    (install,) = plan.installs
    assert (install.pid, install.meta, install.path, install.descriptor) == (7, meta, "/spool/snap-1", desc())
    assert wal_ops(plan) == [("INSTALL_SNAPSHOT", 7), ("HARD_STATE", 7)]


def _conf_entry(index: int, cc: ConfChange) -> Entry:
    return Entry(3, index, cc.encode(), EntryType.CONF_CHANGE)


def test_applied_conf_changes_yield_the_next_descriptor_in_log_order() -> None:
    add = membership.add_learner(4, 9)
    promote = membership.promote(4)
    with_learner = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    with_voter = ConfState(voters=frozenset({1, 2, 3, 4}))
    ready = Ready(
        committed_entries=(
            Entry(3, 20, put(b"b", b"x", b"r1").encode()),
            _conf_entry(21, add),
            Entry(3, 22, b""),
            _conf_entry(23, promote),
        ),
        conf_changes=(ConfChangeResult(21, add, with_learner), ConfChangeResult(23, promote, with_voter)),
    )
    (job,) = plan_round([work(ready)], {}).applies
    assert [e.index for e in job.entries] == [20, 21, 22, 23]
    assert job.entries[0].command is not None and job.entries[2].command is None
    after_add, after_promote = job.entries[1].descriptor, job.entries[3].descriptor
    assert after_add is not None and after_promote is not None
    assert after_add.epoch == Epoch(5, 2) and after_promote.epoch == Epoch(6, 2)
    assert after_add.replica_by_id(4) == ReplicaDesc(9, 4, Role.LEARNER)
    assert after_promote.replica_by_id(4) == ReplicaDesc(9, 4, Role.VOTER)
    assert job.conf_state == with_voter and job.descriptor == after_promote
    assert (after_promote.start, after_promote.end) == (b"a", b"m")


def test_a_rejected_conf_change_is_applied_as_a_no_op() -> None:
    bogus = membership.remove(42)
    ready = Ready(committed_entries=(_conf_entry(30, bogus),), conf_changes=(ConfChangeResult(30, bogus, None),))
    (job,) = plan_round([work(ready)], {}).applies
    assert job.entries[0].descriptor is None and job.entries[0].command is None
    assert job.descriptor is None and job.conf_state == VOTERS


def test_a_replica_applying_its_own_removal_leaves_after_the_round() -> None:
    gone = membership.remove(3)
    rest = ConfState(voters=frozenset({1, 2}))
    ready = Ready(committed_entries=(_conf_entry(40, gone),), conf_changes=(ConfChangeResult(40, gone, rest),))
    assert plan_round([work(ready, replica_id=3)], {}).leaving == (7,)
    assert plan_round([work(ready, replica_id=1)], {}).leaving == ()


def test_compaction_keeps_a_tail_and_waits_for_enough_to_pile_up() -> None:
    assert compaction_point(applied=10_500, first_index=1, threshold=10_000, keep=1_000) == 9_500
    assert compaction_point(applied=10_000, first_index=1, threshold=10_000, keep=1_000) is None
