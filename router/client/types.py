"""Result and operation types of the client API (named tuples, so they unpack like the
plain tuples the API promises: ``value, version = await client.get(k)``)."""

from __future__ import annotations

from typing import NamedTuple

from router.client.errors import InvalidArgumentError
from tesserapb import kv_pb2


class Versioned(NamedTuple):
    value: bytes
    version: int


class CasResult(NamedTuple):
    succeeded: bool
    # The key's state after the call: the new version/value on success, the conflicting
    # ones on failure; 0/b"" when the key is absent.
    current_version: int
    current_value: bytes


class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    version: int


class ScanPage(NamedTuple):
    kvs: list[KeyValue]
    # True when [start, end) holds more than was returned; continue from resume_key.
    more: bool
    resume_key: bytes


class WriteResult(NamedTuple):
    # For a put: the key's new version. For a delete: 0. For a cas: the version after it, or
    # the key's current version when its compare failed.
    version: int
    # For a delete: whether the key existed.
    deleted: bool
    # False for every op when a cas of the batch failed (then nothing was applied).
    succeeded: bool = True


class Put(NamedTuple):
    key: bytes
    value: bytes


class Delete(NamedTuple):
    key: bytes


class Cas(NamedTuple):
    """Inside a batch: apply the batch only if ``key`` is at ``expected_version`` (0: absent)."""

    key: bytes
    expected_version: int
    value: bytes = b""
    delete: bool = False


CONSISTENCY = {
    "lease": kv_pb2.LEASE,
    "linearizable": kv_pb2.LINEARIZABLE,
    "stale": kv_pb2.STALE,
}


def as_bytes(value: object, field: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentError(field, 0, f"must be bytes, got {type(value).__name__}")


def read_options(consistency: str, max_staleness_ms: int) -> kv_pb2.ReadOptions:
    level = CONSISTENCY.get(consistency)
    if level is None:
        raise InvalidArgumentError("consistency", 0, f"must be one of {', '.join(CONSISTENCY)}, got {consistency!r}")
    if max_staleness_ms < 0:
        raise InvalidArgumentError("max_staleness_ms", 0, f"must be >= 0, got {max_staleness_ms}")
    return kv_pb2.ReadOptions(consistency=level, max_staleness_ms=max_staleness_ms)


def write_op(op: object) -> kv_pb2.WriteOp:
    """Put(key, value) / Delete(key), or the tuples ("put", key, value) / ("delete", key)."""
    if isinstance(op, Put):
        return kv_pb2.WriteOp(put=kv_pb2.PutOp(key=as_bytes(op.key, "ops.key"), value=as_bytes(op.value, "ops.value")))
    if isinstance(op, Delete):
        return kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=as_bytes(op.key, "ops.key")))
    if isinstance(op, kv_pb2.WriteOp):
        if op.WhichOneof("op") is None:  # e.g. the router's proxy forwarding a thin client's empty op
            raise InvalidArgumentError("ops", 0, "every operation must be a put, a delete or a cas")
        return op
    if isinstance(op, Cas):
        return kv_pb2.WriteOp(
            cas=kv_pb2.CasOp(
                key=as_bytes(op.key, "ops.key"),
                expected_version=op.expected_version,
                value=as_bytes(op.value, "ops.value"),
                delete=op.delete,
            )
        )
    if isinstance(op, tuple) and op and op[0] == "put" and len(op) == 3:
        return write_op(Put(op[1], op[2]))
    if isinstance(op, tuple) and op and op[0] == "delete" and len(op) == 2:
        return write_op(Delete(op[1]))
    raise InvalidArgumentError("ops", 0, f"not a write operation: {op!r} (use Put(key, value) or Delete(key))")


def op_key(op: kv_pb2.WriteOp) -> bytes:
    return getattr(op, op.WhichOneof("op")).key
