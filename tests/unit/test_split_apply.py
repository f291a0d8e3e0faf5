"""A partition split applied to LMDB state (docs/decisions.md D21): the split entry as every
replica decides it (node.round_plan) and applies it (node.state.store), on a real LMDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from common.keyspace import MAX_SPLIT_KEY_BYTES
from node.raft import ConfState, Entry, HardState, Ready
from node.round_plan import PartitionWork, plan_round, split_outcome
from node.state import layout
from node.state.commands import CommandError, SplitCommand, decode_entry, put
from node.state.store import REJECTED, StateStore

VOTERS = ConfState(voters=frozenset({1, 2, 3}))
PARENT = Descriptor(7, b"a", b"z", Epoch(4, 2), tuple(ReplicaDesc(s, s, Role.VOTER) for s in (1, 2, 3)))
# New replica ids of partition 9, by store.
NEW = ((1, 11), (2, 12), (3, 13))


def split(key: bytes = b"m", epoch: Epoch = PARENT.epoch, left: int = 0) -> SplitCommand:
    return SplitCommand(epoch.conf_ver, epoch.version, key, 9, NEW, left)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = fresh(tmp_path / "state")
    yield s
    s.close()


def fresh(path: Path) -> StateStore:
    s = StateStore(str(path), map_size=1 << 26)
    s.init_partition(7, 5, 5, VOTERS)
    s.save_descriptor(7, 1, PARENT)
    return s


def entries(*datas: bytes, first: int = 6, term: int = 5) -> tuple[Entry, ...]:
    return tuple(Entry(term, first + i, d) for i, d in enumerate(datas))


def apply(store: StateStore, es: tuple[Entry, ...], desc: Descriptor = PARENT, replica_id: int = 1):
    """One round that commits ``es`` on our replica of partition 7, carried out on ``store``."""
    ready = Ready(hard_state=HardState(5, 1, es[-1].index), committed_entries=es)
    plan = plan_round([PartitionWork(7, replica_id, ready, desc, VOTERS)], {})
    (job,) = plan.applies
    results = store.apply(7, job.entries, job.conf_state)
    return plan, job, results


def test_split_command_round_trips_and_is_told_apart_from_writes() -> None:
    cmd = split(b"key", left=123)
    assert decode_entry(cmd.encode()) == cmd
    assert decode_entry(put(b"k", b"v").encode()) == put(b"k", b"v")
    with pytest.raises(CommandError):
        SplitCommand.decode(cmd.encode()[:-1])


def test_the_outcome_is_the_shrunk_parent_and_a_child_on_the_same_stores() -> None:
    outcome = split_outcome(PARENT, VOTERS, split(), replica_id=2)
    assert not isinstance(outcome, str)
    left, sp = outcome
    assert (left.id, left.start, left.end, left.epoch) == (7, b"a", b"m", Epoch(4, 3))
    assert (sp.child.id, sp.child.start, sp.child.end, sp.child.epoch) == (9, b"m", b"z", Epoch(4, 3))
    assert [(r.store_id, r.replica_id) for r in sp.child.replicas] == list(NEW)
    assert sp.replica_id == 12 and sp.conf_state == ConfState(voters=frozenset({11, 12, 13}))


@pytest.mark.parametrize(
    ("cmd", "why"),
    [
        (split(epoch=Epoch(4, 1)), "epoch"),
        (split(key=b"a"), "boundary"),
        (split(key=b"zz"), "boundary"),
        (split(key=b"m" * (MAX_SPLIT_KEY_BYTES + 1)), "boundary"),
        (SplitCommand(4, 2, b"m", 9, ((1, 11), (2, 12)), 0), "no new replica"),
    ],
)
def test_a_stale_or_bad_split_changes_nothing(cmd: SplitCommand, why: str) -> None:
    outcome = split_outcome(PARENT, VOTERS, cmd, 1)
    assert isinstance(outcome, str) and why in outcome


def test_a_split_refuses_while_a_learner_is_being_added() -> None:
    cs = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    assert "membership" in str(split_outcome(PARENT, cs, split(), 1))


def test_applying_a_split_keeps_both_halves_and_moves_no_data(store: StateStore) -> None:
    _, _, _ = apply(store, entries(put(b"b", b"1", b"rid-b").encode(), put(b"q", b"2").encode()))
    before = store.size(7, b"a", b"z")
    assert before == layout.record_size(b"b", b"\0" * 8 + b"1") + layout.record_size(b"q", b"\0" * 8 + b"2")
    left_bytes = store.size_below(b"a", b"m")
    plan, job, results = apply(store, entries(split(left=left_bytes).encode(), first=8))
    assert results == [None]
    ((parent, sp),) = plan.splits
    assert parent == 7 and job.descriptor is not None and job.descriptor.end == b"m"
    descs = store.descriptors()
    assert descs[7] == (1, job.descriptor)
    assert descs[9] == (11, sp.child)
    meta = store.meta(9)
    assert meta is not None and (meta.applied_index, meta.applied_term) == (8, 5)
    assert meta.conf_state == ConfState(voters=frozenset({11, 12, 13}))
    # Both halves' data stays where it was; the sizes are shared out.
    assert store.get(b"b") == (b"1", 6) and store.get(b"q") == (b"2", 7)
    assert store.size(7, b"a", b"m") == left_bytes and store.size(9, b"m", b"z") == before - left_bytes
    # A retried write finds its first result in either half.
    assert store.dedup_result(9, b"rid-b") == store.dedup_result(7, b"rid-b") is not None


def test_writes_after_the_split_apply_only_inside_the_range(store: StateStore) -> None:
    es = entries(split().encode(), put(b"b", b"left").encode(), put(b"q", b"right").encode())
    _, _, results = apply(store, es)
    assert results[0] is None
    assert results[1] is not None and results[1][0].succeeded
    assert results[2] is REJECTED
    assert store.get(b"b") == (b"left", 7) and store.get(b"q") is None


def test_a_second_copy_of_the_split_changes_nothing(store: StateStore) -> None:
    apply(store, entries(split().encode()))
    shrunk = store.descriptors()[7][1]
    plan, job, _ = apply(store, entries(split().encode(), first=7), desc=shrunk)
    assert plan.splits == () and job.descriptor is None
    assert store.descriptors()[7][1] == shrunk and set(store.descriptors()) == {7, 9}


def test_a_split_replayed_after_a_restart_gives_the_same_state(tmp_path: Path) -> None:
    """The log replayed from the applied index (LMDB lost its last commits) decides the split
    the same way: same descriptors, same applied states, same data, same sizes."""
    log = entries(
        put(b"c", b"1").encode(), put(b"r", b"2").encode(), split(b"m", left=10).encode(),
        put(b"d", b"3").encode(), put(b"s", b"4").encode(),
    )
    once = fresh(tmp_path / "once")
    apply(once, log)
    twice = fresh(tmp_path / "twice")
    apply(twice, log[:2])
    twice.close()
    twice = StateStore(str(tmp_path / "twice"), map_size=1 << 26)  # restart: replay from the applied index
    meta = twice.meta(7)
    assert meta is not None and meta.applied_index == 7
    apply(twice, log[2:], desc=twice.descriptors()[7][1])
    try:
        for s in (once, twice):
            assert s.get(b"s") is None  # rejected by the left half, in both
        assert once.descriptors() == twice.descriptors()
        assert once.meta(7) == twice.meta(7) and once.meta(9) == twice.meta(9)
        assert once.scan(b"", b"", 100) == twice.scan(b"", b"", 100)
        assert once.size(9, b"m", b"z") == twice.size(9, b"m", b"z")
    finally:
        once.close()
        twice.close()


def test_the_middle_key_is_a_boundary_no_longer_than_the_inline_limit(store: StateStore) -> None:
    long_keys = [b"k" + b"x" * 600 + bytes([i]) for i in range(4)]  # one bucket: they share 496 bytes
    writes = [put(bytes([ord("b") + i]), b"v" * 50).encode() for i in range(6)]
    writes += [put(k, b"v" * 50).encode() for k in long_keys]
    apply(store, entries(*writes))
    point = store.split_point(7, b"a", b"z")
    assert point is not None
    key, below = point
    assert len(key) <= MAX_SPLIT_KEY_BYTES and b"a" < key < b"z"
    total = store.size(7, b"a", b"z")
    assert 0 < below < total and below == store.size_below(b"a", key)
    # A bucket is never cut in two: all of its keys land on one side.
    assert len({k >= key for k in long_keys}) == 1


def test_no_split_point_in_an_empty_partition(store: StateStore) -> None:
    assert store.split_point(7, b"a", b"z") is None
