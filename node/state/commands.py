"""The commands a partition's Raft log carries, and their binary encoding.

A :class:`Command` is what one client write becomes: a request id (for exactly-once
retries) and one or more operations applied atomically.  A :class:`SplitCommand` cuts the
partition in two (docs/decisions.md D21): every replica applies it at the same log index.
The encoding is a hand-rolled ``struct`` layout rather than protobuf because every entry is
encoded on the leader and decoded on every replica on the hot path.  The first byte tells
the two apart (:func:`decode_entry`).

Layout (little-endian)::

    u8 version=1 | u16 len(request_id) | request_id | u16 n_ops | op*
    op: u8 kind | u32 len(key) | key | kind-specific tail
        PUT:    u32 len(value) | value
        DELETE: (nothing)
        CAS:    u64 expected_version | u8 delete | u32 len(value) | value

    u8 tag=2 (split) | u64 expected conf_ver | u64 expected version | u64 new partition id
      | u64 left_bytes | u16 len(split_key) | split_key | u16 n | (u64 store id, u64 new replica id)*
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
_SPLIT_TAG = 2
_SPLIT_HEAD = struct.Struct("<BQQQQ")
_PAIR = struct.Struct("<QQ")


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


@dataclass(frozen=True, slots=True)
class SplitCommand:
    """Cut the partition at ``split_key``: it keeps [start, split_key), and a new partition
    ``new_partition_id`` takes [split_key, end) with a replica on each store that hosts one of
    ours, ``new_replicas`` (store id -> new replica id), in the same roles.

    Applied only if the partition's epoch at that log index is still ``expected`` (a stale
    request changes nothing); ``left_bytes`` is the leader's measure of the data below the key,
    how the partition's approximate size is shared between the halves.
    """

    expected_conf_ver: int
    expected_version: int
    split_key: bytes
    new_partition_id: int
    new_replicas: tuple[tuple[int, int], ...]  # (store id, new replica id), sorted by store
    left_bytes: int = 0

    def encode(self) -> bytes:
        parts = [
            _SPLIT_HEAD.pack(
                _SPLIT_TAG, self.expected_conf_ver, self.expected_version, self.new_partition_id, self.left_bytes
            ),
            _U16.pack(len(self.split_key)),
            self.split_key,
            _U16.pack(len(self.new_replicas)),
        ]
        parts.extend(_PAIR.pack(store, rid) for store, rid in self.new_replicas)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> SplitCommand:
        try:
            tag, conf_ver, version, new_pid, left = _SPLIT_HEAD.unpack_from(data, 0)
            if tag != _SPLIT_TAG:
                raise CommandError(f"not a split command (tag {tag})")
            off = _SPLIT_HEAD.size
            (klen,) = _U16.unpack_from(data, off)
            off += _U16.size
            key = bytes(data[off : off + klen])
            off += klen
            (n,) = _U16.unpack_from(data, off)
            off += _U16.size
            pairs = tuple(_PAIR.unpack_from(data, off + i * _PAIR.size) for i in range(n))
            off += n * _PAIR.size
            if off != len(data) or len(key) != klen:
                raise CommandError("split command has the wrong length")
            return cls(conf_ver, version, key, new_pid, pairs, left)
        except struct.error as exc:
            raise CommandError(f"truncated split command: {exc}") from None


def decode_entry(data: bytes) -> Command | SplitCommand:
    """The command a NORMAL entry's (non-empty) data holds."""
    if data[:1] == bytes((_SPLIT_TAG,)):
        return SplitCommand.decode(data)
    return Command.decode(data)
