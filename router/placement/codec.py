"""JSON encoding of placement records, commands and whole tables.

One self-describing scheme for everything: a dataclass becomes {"_t": name, field: value...},
bytes become {"_b": hex}, enums {"_e": name, "v": int}, dicts {"_d": [[k, v], ...]}, frozensets
{"_s": [...]}, tuples and lists JSON arrays (decoded as tuples). The registry below is the
closed set of types that may appear, so decoding never instantiates anything else. The same
encoding serves the table file today and the placement group's Raft log later.
"""

from __future__ import annotations

import dataclasses
import json
from enum import IntEnum
from typing import Any

from common import descriptor
from router.placement import commands, model, tokens
from router.placement.table import PlacementTable

FORMAT = 1

# Keyed by class name because the name is what the file stores: a record may move to another
# module (the descriptor records live in common/descriptor.py) but renaming one changes the
# format. tests/unit/test_placement_file.py decodes a file written before that move.
_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        descriptor.Epoch,
        descriptor.ReplicaDesc,
        descriptor.Descriptor,
        model.ReplicaProgress,
        model.PartitionInfo,
        model.StoreInfo,
        model.TransferLeader,
        model.AddReplica,
        model.RemoveReplica,
        model.Split,
        model.CreateReplica,
        model.DestroyReplica,
        model.PendingOperation,
        model.ReplicaReport,
        model.PartitionReport,
        commands.RegisterStore,
        commands.StoreHeartbeat,
        commands.RecordLeader,
        commands.UpdateDescriptor,
        commands.Bootstrap,
        commands.SubmitOperation,
        commands.SetStoreState,
        commands.CreateToken,
        commands.RevokeToken,
        tokens.TokenInfo,
    )
}
_COMMANDS = (
    commands.RegisterStore,
    commands.StoreHeartbeat,
    commands.RecordLeader,
    commands.UpdateDescriptor,
    commands.Bootstrap,
    commands.SubmitOperation,
    commands.SetStoreState,
    commands.CreateToken,
    commands.RevokeToken,
)
_ENUMS: dict[str, type[IntEnum]] = {e.__name__: e for e in (model.StoreState, descriptor.Role)}
# Fields added after format 1, written only when they differ from their default, so a table
# or command that does not use them encodes exactly as before (old files re-encode byte for
# byte; tests/unit/test_placement_file.py) and a missing one decodes to its default.
_LATER_FIELDS = frozenset({("StoreInfo", "zone"), ("RegisterStore", "zone"), ("StoreHeartbeat", "zone"),
                           ("PartitionInfo", "steered_ms"), ("SubmitOperation", "by_admin")})


class CodecError(ValueError):
    """The encoded data is not something this version wrote."""


def to_json_value(value: Any) -> Any:
    if isinstance(value, IntEnum):
        return {"_e": type(value).__name__, "v": int(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"_t": type(value).__name__}
        name = type(value).__name__
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if (name, f.name) in _LATER_FIELDS and v == f.default:
                continue
            out[f.name] = to_json_value(v)
        return out
    if isinstance(value, bytes):
        return {"_b": value.hex()}
    if isinstance(value, (tuple, list)):
        return [to_json_value(v) for v in value]
    if isinstance(value, frozenset):
        return {"_s": [to_json_value(v) for v in sorted(value)]}
    if isinstance(value, dict):
        return {"_d": [[to_json_value(k), to_json_value(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__}")


def from_json_value(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(from_json_value(v) for v in value)
    if not isinstance(value, dict):
        return value
    if "_b" in value:
        return bytes.fromhex(value["_b"])
    if "_e" in value:
        enum = _ENUMS.get(value["_e"])
        if enum is None:
            raise CodecError(f"unknown enum {value['_e']!r}")
        return enum(value["v"])
    if "_s" in value:
        return frozenset(from_json_value(v) for v in value["_s"])
    if "_d" in value:
        return {from_json_value(k): from_json_value(v) for k, v in value["_d"]}
    if "_t" in value:
        cls = _TYPES.get(value["_t"])
        if cls is None:
            raise CodecError(f"unknown record type {value['_t']!r}")
        kwargs = {k: from_json_value(v) for k, v in value.items() if k != "_t"}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise CodecError(f"bad {value['_t']}: {exc}") from None
    raise CodecError(f"unrecognised object with keys {sorted(value)}")


def encode_command(cmd: commands.Command) -> bytes:
    return json.dumps(to_json_value(cmd), separators=(",", ":")).encode()


def decode_command(data: bytes) -> commands.Command:
    try:
        cmd = from_json_value(json.loads(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if not isinstance(cmd, _COMMANDS):
        raise CodecError(f"not a placement command: {type(cmd).__name__}")
    return cmd


def table_to_json(table: PlacementTable) -> bytes:
    return json.dumps(table_to_doc(table), indent=1, sort_keys=False).encode()


def table_to_doc(table: PlacementTable) -> dict[str, Any]:
    """The whole table as a JSON-ready document (a placement.json of format 1). The token
    book is written only once it holds something, so a table without tokens encodes exactly
    as before tokens existed."""
    doc = {
        "format": FORMAT,
        "next_store_id": table.next_store_id,
        "next_partition_id": table.next_partition_id,
        "next_replica_id": table.next_replica_id,
        "next_operation_id": table.next_operation_id,
        "bootstrapped": table.bootstrapped,
        "stores": [to_json_value(s) for s in table.stores.values()],
        "partitions": [to_json_value(p) for p in table.partitions.values()],
        "operations": [to_json_value(op) for op in table.operations.values()],
    }
    if not table.tokens.is_default():
        doc["tokens"] = table.tokens.to_doc(to_json_value)
    return doc


def table_from_json(data: bytes, **table_kwargs: Any) -> PlacementTable:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    return table_from_doc(doc, **table_kwargs)


def table_from_doc(doc: Any, **table_kwargs: Any) -> PlacementTable:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CodecError(f"unknown placement file format {doc.get('format') if isinstance(doc, dict) else doc!r}")
    table = PlacementTable(**table_kwargs)
    try:
        table.next_store_id = int(doc["next_store_id"])
        table.next_partition_id = int(doc["next_partition_id"])
        table.next_replica_id = int(doc["next_replica_id"])
        table.next_operation_id = int(doc["next_operation_id"])
        table.bootstrapped = bool(doc["bootstrapped"])
        for raw in doc["stores"]:
            store = _expect(from_json_value(raw), model.StoreInfo)
            table.stores[store.id] = store
        for raw in doc["partitions"]:
            info = _expect(from_json_value(raw), model.PartitionInfo)
            table.partitions[info.id] = info
        for raw in doc["operations"]:
            op = _expect(from_json_value(raw), model.PendingOperation)
            op.last_sent_ms = 0  # delivery bookkeeping is not state worth keeping
            op.last_sent_to = 0
            table.operations[op.id] = op
        if "tokens" in doc:
            table.tokens.load_doc(doc["tokens"], from_json_value)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed placement file: {exc!r}") from None
    table.rebuild_index()
    return table


def _expect(value: Any, cls: type) -> Any:
    if not isinstance(value, cls):
        raise CodecError(f"expected {cls.__name__}, got {type(value).__name__}")
    return value
