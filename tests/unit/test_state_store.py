"""The LMDB applied-state store, on a real LMDB environment in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.raft import ConfState
from node.state.commands import Command, CommandError, Op, OpKind, cas, delete, put
from node.state.store import ApplyEntry, PartitionMeta, StateStore

CS = ConfState(voters=frozenset({1, 2, 3}))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(str(tmp_path / "state"), map_size=1 << 26)
    yield s
    s.close()


def test_command_round_trip_and_rejects_garbage() -> None:
    cmd = Command(b"rid-1", (Op(OpKind.PUT, b"k", b"v"), Op(OpKind.DELETE, b"d"), Op(OpKind.CAS, b"c", b"x", 7, False)))
    assert Command.decode(cmd.encode()) == cmd
    with pytest.raises(CommandError):
        Command.decode(cmd.encode()[:-1])
    with pytest.raises(CommandError):
        Command.decode(b"\x09garbage")


def test_apply_sets_versions_and_applied_index_atomically(tmp_path) -> None:
    store = StateStore(str(tmp_path / "state"), map_size=1 << 26)
    first, empty, second = store.apply(
        1, [ApplyEntry(5, 2, put(b"a", b"1")), ApplyEntry(6, 2, None), ApplyEntry(7, 2, put(b"a", b"2"))], CS
    )
    assert first is not None and first[0].version == 5
    assert empty is None
    assert second is not None and second[0].version == 7 and second[0].existed
    assert store.get(b"a") == (b"2", 7)
    assert store.meta(1) == PartitionMeta(7, 2, CS)
    store.close()
    reopened = StateStore(str(tmp_path / "state"), map_size=1 << 26)
    try:
        assert reopened.get(b"a") == (b"2", 7) and reopened.meta(1) == PartitionMeta(7, 2, CS)
        assert reopened.partitions() == [1]
    finally:
        reopened.close()


def test_cas_semantics(store) -> None:
    (r,) = store.apply(1, [ApplyEntry(3, 1, cas(b"k", 0, b"first"))], CS)[0]
    assert r.succeeded and r.version == 3
    (r,) = store.apply(1, [ApplyEntry(4, 1, cas(b"k", 0, b"again"))], CS)[0]
    assert not r.succeeded and r.version == 3 and r.value == b"first"
    (r,) = store.apply(1, [ApplyEntry(5, 1, cas(b"k", 3, b"second"))], CS)[0]
    assert r.succeeded and store.get(b"k") == (b"second", 5)
    (r,) = store.apply(1, [ApplyEntry(6, 1, cas(b"k", 5, delete=True))], CS)[0]
    assert r.succeeded and store.get(b"k") is None


def test_batch_with_failing_cas_applies_nothing(store) -> None:
    cmd = Command(b"", (Op(OpKind.PUT, b"x", b"1"), Op(OpKind.CAS, b"y", b"2", 99)))
    results = store.apply(1, [ApplyEntry(2, 1, cmd)], CS)[0]
    assert [r.succeeded for r in results] == [False, False]
    assert store.get(b"x") is None and store.meta(1).applied_index == 2


def test_retried_request_id_applies_once(store) -> None:
    store.apply(1, [ApplyEntry(2, 1, put(b"n", b"1", request_id=b"r1"))], CS)
    store.apply(1, [ApplyEntry(3, 1, put(b"n", b"other"))], CS)
    (again,) = store.apply(1, [ApplyEntry(4, 1, put(b"n", b"1", request_id=b"r1"))], CS)[0]
    assert again.version == 2  # the first result, not a new write
    assert store.get(b"n") == (b"other", 3)
    assert store.dedup_result(1, b"r1")[0].version == 2


def test_dedup_records_are_collected_after_window(tmp_path) -> None:
    s = StateStore(str(tmp_path / "s"), map_size=1 << 26, dedup_window=10)
    try:
        s.apply(1, [ApplyEntry(2, 1, put(b"k", b"v", request_id=b"old"))], CS)
        s.apply(1, [ApplyEntry(i, 1, None) for i in range(3, 20)], CS)
        assert s.dedup_result(1, b"old") is None
    finally:
        s.close()


def test_scan_bounds_and_limit(store) -> None:
    store.apply(1, [ApplyEntry(i + 2, 1, put(b"k%02d" % i, b"v%d" % i)) for i in range(20)], CS)
    rows = store.scan(b"k05", b"k10", 100)
    assert [k for k, _, _ in rows] == [b"k%02d" % i for i in range(5, 10)]
    assert len(store.scan(b"", b"", 7)) == 7
    assert [k for k, _, _ in store.scan(b"k18", b"", 100)] == [b"k18", b"k19"]


def test_snapshot_items_install_replaces_range(store, tmp_path) -> None:
    store.apply(1, [ApplyEntry(i + 2, 1, put(b"a%02d" % i, b"v")) for i in range(10)], CS)
    chunks = list(store.snapshot_items(b"a", b"b", chunk=3))
    assert sum(len(c) for c in chunks) == 10 and len(chunks) == 4
    other = StateStore(str(tmp_path / "other"), map_size=1 << 26)
    try:
        other.apply(1, [ApplyEntry(2, 1, put(b"a99", b"stale")), ApplyEntry(3, 1, put(b"zz", b"outside"))], CS)
        other.install_snapshot(1, b"a", b"b", chunks, PartitionMeta(11, 1, CS))
        assert other.get(b"a99") is None and other.get(b"zz") == (b"outside", 3)
        assert other.get(b"a03") == (b"v", 5) and other.meta(1) == PartitionMeta(11, 1, CS)
    finally:
        other.close()


def test_long_keys_keep_order_and_survive_snapshots(store, tmp_path) -> None:
    from node.state.layout import INLINE

    base = b"p" * INLINE
    keys = [base[:-1] + b"o", base, base + b"\x00", base + b"a", base + b"b" * 3000, base[:-1] + b"q", b"z" * 4096]
    store.apply(1, [ApplyEntry(i + 2, 1, put(k, b"v%d" % i)) for i, k in enumerate(keys)], CS)
    assert [k for k, _, _ in store.scan(b"", b"", 100)] == sorted(keys)
    assert [k for k, _, _ in store.scan(base + b"\x00", base + b"b", 100)] == [base + b"\x00", base + b"a"]
    assert store.get(base + b"a") == (b"v3", 5) and store.get(base + b"c") is None
    (r,) = store.apply(1, [ApplyEntry(20, 1, delete(base + b"a"))], CS)[0]
    assert r.existed and store.get(base + b"a") is None and store.get(base + b"\x00") is not None
    (r,) = store.apply(1, [ApplyEntry(21, 1, cas(base + b"\x00", 4, b"new"))], CS)[0]
    assert r.succeeded and store.get(base + b"\x00") == (b"new", 21)
    assert store.get(b"") is None and store.scan(b"", b"", 1)
    other = StateStore(str(tmp_path / "other2"), map_size=1 << 26)
    try:
        other.install_snapshot(1, b"", b"", list(store.snapshot_items(b"", b"")), PartitionMeta(21, 1, CS))
        assert other.scan(b"", b"", 100) == store.scan(b"", b"", 100)
    finally:
        other.close()
