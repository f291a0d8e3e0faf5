"""What the core's Config and MemoryStorage refuse: argument checks no simulator run reaches.

The simulator builds only valid configurations and its driver never asks storage for an old
snapshot or a compaction out of range, so these refusals are tested here, at the lowest tier
(``python -m tools.mutate --with-unit`` runs this folder before the simulator).
"""

from __future__ import annotations

import pytest

from node.raft import (
    CompactedError,
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
    SnapshotOutOfDateError,
    UnavailableError,
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 0},
        {"id": 1, "heartbeat_tick": 0},
        {"id": 1, "election_tick": 3, "heartbeat_tick": 3},  # not above the heartbeat
        {"id": 1, "election_tick": 2, "heartbeat_tick": 1},  # below 3
        {"id": 1, "lease_ticks": 0},
        {"id": 1, "election_tick": 10, "lease_ticks": 9},  # must stay below election_tick - 1
        {"id": 1, "max_inflight_msgs": 0},
    ],
)
def test_invalid_config_refused(kwargs):
    with pytest.raises(ValueError):
        Config(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 1},
        {"id": 1, "election_tick": 3, "heartbeat_tick": 2},  # the smallest election timeout
        {"id": 1, "election_tick": 10, "lease_ticks": 8},  # the longest lease
        {"id": 1, "lease_ticks": 1, "max_inflight_msgs": 1},
    ],
)
def test_boundary_configs_accepted(kwargs):
    Config(**kwargs)


def test_default_lease_is_two_ticks_short_of_the_election_timeout():
    assert Config(id=1, election_tick=10).effective_lease_ticks == 8
    assert Config(id=1, election_tick=10, lease_ticks=3).effective_lease_ticks == 3


def _storage(last: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append([Entry(1, i) for i in range(1, last + 1)])
    return st


def test_snapshots_must_be_newer():
    st = _storage(5)
    cs = ConfState(voters=frozenset({1}))
    st.create_snapshot(3, cs, b"s3")
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(3, cs, b"again")  # not newer than the one held
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(2, cs, b"older")
    with pytest.raises(UnavailableError):
        st.create_snapshot(6, cs, b"beyond")
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(Snapshot(SnapshotMeta(3, 1, cs), b"same index"))
    st.apply_snapshot(Snapshot(SnapshotMeta(4, 1, cs), b"s4"))
    assert st.first_index() == 5 and st.last_index() == 4


def test_compaction_and_reads_outside_the_log_refused():
    st = _storage(5)
    with pytest.raises(UnavailableError):
        st.compact(6)
    st.compact(2)
    assert st.first_index() == 3 and st.term(2) == 1
    with pytest.raises(CompactedError):
        st.compact(2)
    with pytest.raises(CompactedError):
        st.entries(2, 4)
    with pytest.raises(UnavailableError):
        st.entries(3, 7)
    with pytest.raises(CompactedError):
        st.term(1)
    with pytest.raises(UnavailableError):
        st.term(6)
    assert [e.index for e in st.entries(3, 6)] == [3, 4, 5]


def test_entries_trimmed_to_max_size_but_never_below_one():
    st = MemoryStorage()
    st.append([Entry(1, i, b"x" * 100) for i in range(1, 5)])
    assert len(st.entries(1, 5, max_size=1)) == 1  # the first alone is over: still one
    assert len(st.entries(1, 5, max_size=250)) == 2  # 116 bytes each with the overhead
    assert len(st.entries(1, 5)) == 4
