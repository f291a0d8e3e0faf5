"""How `tessera admin` shows keys, ranges and tables (the JSON shapes are tested against a real
cluster in tests/process/test_admin.py)."""

from __future__ import annotations

from tesserapb import meta_pb2
from tools.admin import key_json, key_text, partition_json, range_text, store_json, table


def test_keys_are_text_when_printable_utf8_else_hex() -> None:
    assert key_json(b"user:42") == "user:42"
    assert key_json("café".encode()) == "café"
    assert key_json(b"\x80") == {"hex": "80"}  # not UTF-8
    assert key_json(b"a\nb") == {"hex": "610a62"}  # UTF-8 but not printable
    assert key_json(b"") == ""
    assert key_text(b"\xff\x00") == "0xff00"
    assert range_text(b"", b"m") == "[-inf, m)" and range_text(b"\x80", b"") == "[0x80, +inf)"


def test_tables_align_columns_and_leave_the_last_one_ragged() -> None:
    got = table(("ID", "NAME", "NOTE"), [(1, "a", "x"), (22, "bbb", "long note")])
    assert got.splitlines() == ["ID  NAME  NOTE", "1   a     x", "22  bbb   long note"]


def test_partition_and_store_shapes() -> None:
    d = meta_pb2.PartitionDescriptor(
        id=3, start=b"a", end=b"\x80", epoch=meta_pb2.Epoch(conf_ver=2, version=1), leader_store_id=0, term=4,
        replicas=[meta_pb2.Replica(store_id=1, replica_id=7, role=meta_pb2.VOTER),
                  meta_pb2.Replica(store_id=4, replica_id=9, role=meta_pb2.LEARNER)],
    )
    status = meta_pb2.PartitionStatus(partition_id=3, size_bytes=123, replicas=[
        meta_pb2.ReplicaStatus(replica_id=7, store_id=1, match=10, applied=9)])
    assert partition_json(d, status) == {
        "id": 3, "start": "a", "end": {"hex": "80"}, "epoch": {"conf_ver": 2, "version": 1},
        "leader": None, "term": 4, "size_bytes": 123,
        "replicas": [{"store": 1, "role": "voter", "match": 10, "applied": 9},
                     {"store": 4, "role": "learner", "match": 0, "applied": 0}],
    }
    s = meta_pb2.Store(id=2, address="h:1", state=meta_pb2.STORE_DRAINING, replica_count=5, leader_count=1)
    assert store_json(s) == {"id": 2, "address": "h:1", "zone": None, "state": "draining", "replicas": 5,
                             "leaders": 1}


def test_routers_shape_leaves_unknown_progress_null() -> None:
    from tools.admin import routers_json

    resp = meta_pb2.GetRoutersResponse(leader=2, term=7, served_by=3, members=[
        meta_pb2.RouterMember(id=2, address="h:2", role="leader"),
        meta_pb2.RouterMember(id=3, address="h:3", role="follower", applied=0),
    ])
    assert routers_json(resp) == {
        "leader": 2, "term": 7, "served_by": 3,
        "members": [{"id": 2, "address": "h:2", "role": "leader", "applied": None},
                    {"id": 3, "address": "h:3", "role": "follower", "applied": 0}],
    }
    assert routers_json(meta_pb2.GetRoutersResponse())["leader"] is None
