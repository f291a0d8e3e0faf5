"""protos/tesserapb/etcd_rpc.proto against etcd's own: the same wire numbers and types.

The table below was copied by hand from etcd v3.4.23's etcdserver/etcdserverpb/rpc.proto and
mvcc/mvccpb/kv.proto (github.com/etcd-io/etcd, tag v3.4.23), not generated from our proto, so a
typo in either place fails here rather than as a silently misread field against a real etcd.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tesserapb import etcd_rpc_pb2

_T = FieldDescriptor
U64, I64, BYTES, BOOL, STR, MSG, ENUM = (_T.TYPE_UINT64, _T.TYPE_INT64, _T.TYPE_BYTES, _T.TYPE_BOOL,
                                         _T.TYPE_STRING, _T.TYPE_MESSAGE, _T.TYPE_ENUM)

# message -> field -> (number, type); every field our file keeps (it may keep fewer than etcd).
ETCD = {
    "KeyValue": {"key": (1, BYTES), "create_revision": (2, I64), "mod_revision": (3, I64), "version": (4, I64),
                 "value": (5, BYTES), "lease": (6, I64)},
    "ResponseHeader": {"cluster_id": (1, U64), "member_id": (2, U64), "revision": (3, I64), "raft_term": (4, U64)},
    "RangeRequest": {"key": (1, BYTES), "range_end": (2, BYTES), "limit": (3, I64), "revision": (4, I64),
                     "sort_order": (5, ENUM), "sort_target": (6, ENUM), "serializable": (7, BOOL),
                     "keys_only": (8, BOOL), "count_only": (9, BOOL), "min_mod_revision": (10, I64),
                     "max_mod_revision": (11, I64), "min_create_revision": (12, I64),
                     "max_create_revision": (13, I64)},
    "RangeResponse": {"header": (1, MSG), "kvs": (2, MSG), "more": (3, BOOL), "count": (4, I64)},
    "PutRequest": {"key": (1, BYTES), "value": (2, BYTES), "lease": (3, I64), "prev_kv": (4, BOOL),
                   "ignore_value": (5, BOOL), "ignore_lease": (6, BOOL)},
    "PutResponse": {"header": (1, MSG), "prev_kv": (2, MSG)},
    "RequestOp": {"request_range": (1, MSG), "request_put": (2, MSG), "request_delete_range": (3, MSG),
                  "request_txn": (4, MSG)},
    "ResponseOp": {"response_range": (1, MSG), "response_put": (2, MSG), "response_delete_range": (3, MSG),
                   "response_txn": (4, MSG)},
    "Compare": {"result": (1, ENUM), "target": (2, ENUM), "key": (3, BYTES), "version": (4, I64),
                "create_revision": (5, I64), "mod_revision": (6, I64), "value": (7, BYTES), "lease": (8, I64),
                "range_end": (64, BYTES)},
    "TxnRequest": {"compare": (1, MSG), "success": (2, MSG), "failure": (3, MSG)},
    "TxnResponse": {"header": (1, MSG), "succeeded": (2, BOOL), "responses": (3, MSG)},
    "StatusRequest": {},
    "StatusResponse": {"header": (1, MSG), "version": (2, STR), "dbSize": (3, I64), "leader": (4, U64),
                       "raftIndex": (5, U64), "raftTerm": (6, U64), "raftAppliedIndex": (7, U64),
                       "errors": (8, STR), "dbSizeInUse": (9, I64), "isLearner": (10, BOOL)},
    "MoveLeaderRequest": {"targetID": (1, U64)},
    "MoveLeaderResponse": {"header": (1, MSG)},
}

# Enum values the driver sends.
ETCD_ENUMS = {
    ("Compare", "CompareResult"): {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3},
    ("Compare", "CompareTarget"): {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4},
}

# The methods the driver calls, as etcd serves them.
ETCD_METHODS = {
    "KV": {"Range": ("RangeRequest", "RangeResponse"), "Put": ("PutRequest", "PutResponse"),
           "Txn": ("TxnRequest", "TxnResponse")},
    "Maintenance": {"Status": ("StatusRequest", "StatusResponse"),
                    "MoveLeader": ("MoveLeaderRequest", "MoveLeaderResponse")},
}


def test_package_is_etcds() -> None:
    assert etcd_rpc_pb2.DESCRIPTOR.package == "etcdserverpb"


def test_every_kept_field_has_etcds_number_and_type() -> None:
    wrong = []
    messages = etcd_rpc_pb2.DESCRIPTOR.message_types_by_name
    assert set(messages) <= set(ETCD), f"messages not in the table: {set(messages) - set(ETCD)}"
    for name, desc in messages.items():
        for f in desc.fields:
            want = ETCD[name].get(f.name)
            if want != (f.number, f.type):
                wrong.append(f"{name}.{f.name}: ours ({f.number}, type {f.type}), etcd {want}")
    assert not wrong, "\n".join(wrong)


def test_no_field_is_left_out_without_reserving_its_number() -> None:
    """A field of etcd's we do not keep must be reserved, so nobody reuses its number."""
    missing = []
    for name, desc in etcd_rpc_pb2.DESCRIPTOR.message_types_by_name.items():
        ours = {f.name for f in desc.fields}
        reserved = {n for start, end in _reserved_ranges(desc) for n in range(start, end)}
        for field, (number, _) in ETCD[name].items():
            if field not in ours and number not in reserved:
                missing.append(f"{name}.{field} = {number}")
    assert not missing, missing


def _reserved_ranges(desc: Descriptor) -> list[tuple[int, int]]:
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    return [(r.start, r.end) for r in proto.reserved_range]


def test_enums_match() -> None:
    for (msg, enum), values in ETCD_ENUMS.items():
        got = {v.name: v.number for v in etcd_rpc_pb2.DESCRIPTOR.message_types_by_name[msg].enum_types_by_name[
            enum].values}
        assert got == values, (msg, enum)


def test_methods_have_etcds_paths_and_types() -> None:
    services = etcd_rpc_pb2.DESCRIPTOR.services_by_name
    for service, methods in ETCD_METHODS.items():
        got = {m.name: (m.input_type.name, m.output_type.name) for m in services[service].methods}
        assert got == methods, service
        assert services[service].full_name == f"etcdserverpb.{service}"
