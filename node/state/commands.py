"""The write commands a partition's Raft log carries, and their binary encoding.

A command is what one client write becomes: a request id (for exactly-once
retries) and one or more operations applied atomically.  The encoding is a
hand-rolled ``struct`` layout rather than protobuf because every entry is
encoded on the leader and decoded on every replica on the hot path.

Layout (little-endian)::

    u8 version=1 | u16 len(request_id) | request_id | u16 n_ops | op*
    op: u8 kind | u32 len(key) | key | kind-specific tail
        PUT:    u32 len(value) | value
        DELETE: (nothing)
        CAS:    u64 expected_version | u8 delete | u32 len(value) | value
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

_HEAD = struct.Struct("<BH")
_U16 = struct.Struct("<H")
_OP = struct.Struct("<BI")
_U32 = struct.Struct("<I")
_CAS = struct.Struct("<QBI")
_VERSION = 1


class CommandError(ValueError):
    """An entry's payload is not a command this version understands."""


class OpKind(IntEnum):
    PUT = 1
    DELETE = 2
    CAS = 3


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    key: bytes
    value: bytes = b""
    expected_version: int = 0  # CAS only; 0 means "the key must be absent"
    delete: bool = False  # CAS only: delete instead of writing value


@dataclass(frozen=True, slots=True)
class Command:
    request_id: bytes
    ops: tuple[Op, ...]

    def encode(self) -> bytes:
        parts = [_HEAD.pack(_VERSION, len(self.request_id)), self.request_id, _U16.pack(len(self.ops))]
        for op in self.ops:
            parts.append(_OP.pack(op.kind, len(op.key)))
            parts.append(op.key)
            if op.kind == OpKind.PUT:
                parts.append(_U32.pack(len(op.value)))
                parts.append(op.value)
            elif op.kind == OpKind.CAS:
                parts.append(_CAS.pack(op.expected_version, int(op.delete), len(op.value)))
                parts.append(op.value)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Command:
        try:
            version, rid_len = _HEAD.unpack_from(data, 0)
            if version != _VERSION:
                raise CommandError(f"unknown command version {version}")
            off = _HEAD.size
            rid = bytes(data[off : off + rid_len])
            off += rid_len
            (n,) = _U16.unpack_from(data, off)
            off += _U16.size
            ops = []
            for _ in range(n):
                kind, klen = _OP.unpack_from(data, off)
                off += _OP.size
                key = bytes(data[off : off + klen])
                off += klen
                if kind == OpKind.PUT:
                    (vlen,) = _U32.unpack_from(data, off)
                    off += _U32.size
                    ops.append(Op(OpKind.PUT, key, bytes(data[off : off + vlen])))
                    off += vlen
                elif kind == OpKind.DELETE:
                    ops.append(Op(OpKind.DELETE, key))
                elif kind == OpKind.CAS:
                    expected, delete, vlen = _CAS.unpack_from(data, off)
                    off += _CAS.size
                    ops.append(Op(OpKind.CAS, key, bytes(data[off : off + vlen]), expected, bool(delete)))
                    off += vlen
                else:
                    raise CommandError(f"unknown op kind {kind}")
            if off != len(data):
                raise CommandError("trailing bytes after command")
            return cls(rid, tuple(ops))
        except struct.error as exc:
            raise CommandError(f"truncated command: {exc}") from None


def put(key: bytes, value: bytes, request_id: bytes = b"") -> Command:
    return Command(request_id, (Op(OpKind.PUT, key, value),))


def delete(key: bytes, request_id: bytes = b"") -> Command:
    return Command(request_id, (Op(OpKind.DELETE, key),))


def cas(
    key: bytes, expected_version: int, value: bytes = b"", *, delete: bool = False, request_id: bytes = b""
) -> Command:
    return Command(request_id, (Op(OpKind.CAS, key, value, expected_version, delete),))
