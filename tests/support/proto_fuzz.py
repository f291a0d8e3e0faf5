"""Hypothesis strategies for hostile gRPC input: the methods a server serves, and for each
method random bytes, well-formed requests with nonsense values, and half-valid ones.

- :func:`methods` lists every RPC of the given services (from the generated descriptors, so
  a new RPC is fuzzed without touching the test), with its request type and streaming shape.
- :func:`messages` builds any protobuf message field by field from its descriptor, with the
  values that break careless code: 0, 1, the largest uint32/uint64, unknown and negative enum
  numbers, empty and oversized bytes, empty repeated fields and a few elements, nesting up to
  a small depth.
- :func:`mutated` turns a serialized message into a half-valid one: truncated, a byte
  changed, random bytes or an unknown field appended, a field duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as pbd
from google.protobuf import message as pbm
from google.protobuf import message_factory
from hypothesis import strategies as st

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Method:
    """One RPC: ``/pkg.Service/Name``, its request class, and its streaming shape."""

    path: str
    request: type[pbm.Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def kind(self) -> str:
        return {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}[
            (self.client_streaming, self.server_streaming)]


def methods(*services: Any) -> list[Method]:
    """Every RPC of ``services`` (``ServiceDescriptor``s)."""
    out = []
    for svc in services:
        for m in svc.methods:
            cls = message_factory.GetMessageClass(m.input_type)
            out.append(Method(f"/{svc.full_name}/{m.name}", cls, m.client_streaming, m.server_streaming))
    return out


def _ints(limit: int, signed: bool) -> st.SearchStrategy[int]:
    edges = [0, 1, 2, 3, 999, 1000, 1 << 31, limit]
    if signed:
        edges += [-1, -(1 << 31)]
    lo = -(1 << 31) if signed else 0
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= limit]), st.integers(lo, limit))


_BYTES = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([b"", b"\x00", b"\xff" * 8]),
    # Around the node's default limits (tessera node --max-key-bytes 4096): one under, one over.
    st.integers(4095, 4097).map(lambda n: b"k" * n),
)


def _scalar(field: pbd.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == pbd.FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=12), st.sampled_from(["", "127.0.0.1:1", "x" * 300]))
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return _BYTES
    if t == pbd.FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 7, 99, (1 << 31) - 1]))
    if t in (pbd.FieldDescriptor.TYPE_DOUBLE, pbd.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    signed = t in (pbd.FieldDescriptor.TYPE_INT32, pbd.FieldDescriptor.TYPE_INT64, pbd.FieldDescriptor.TYPE_SINT32,
                   pbd.FieldDescriptor.TYPE_SINT64, pbd.FieldDescriptor.TYPE_SFIXED32,
                   pbd.FieldDescriptor.TYPE_SFIXED64)
    wide = t in (pbd.FieldDescriptor.TYPE_INT64, pbd.FieldDescriptor.TYPE_UINT64, pbd.FieldDescriptor.TYPE_SINT64,
                 pbd.FieldDescriptor.TYPE_FIXED64, pbd.FieldDescriptor.TYPE_SFIXED64)
    return _ints(((1 << 63) - 1 if signed else U64) if wide else ((1 << 31) - 1 if signed else U32), signed)


def messages(cls: type[pbm.Message], depth: int = 3) -> st.SearchStrategy[pbm.Message]:
    """Any ``cls`` message: each field set or not, with the values described above."""
    desc = cls.DESCRIPTOR
    fields: list[Any] = list(desc.fields)

    @st.composite
    def build(draw: st.DrawFn) -> pbm.Message:
        msg = cls()
        for f in fields:
            if not draw(st.booleans()):
                continue
            if f.message_type is not None:
                if depth <= 0 or f.message_type.GetOptions().map_entry:
                    continue
                sub_cls = message_factory.GetMessageClass(f.message_type)
                if f.is_repeated:
                    for sub in draw(st.lists(messages(sub_cls, depth - 1), max_size=3)):
                        getattr(msg, f.name).add().CopyFrom(sub)
                else:
                    getattr(msg, f.name).CopyFrom(draw(messages(sub_cls, depth - 1)))
            elif f.is_repeated:
                getattr(msg, f.name).extend(draw(st.lists(_scalar(f), max_size=3)))
            else:
                value = draw(_scalar(f))
                try:
                    setattr(msg, f.name, value)
                except (ValueError, TypeError):
                    pass  # a float that does not fit a float field's width: leave it unset
        return msg

    return build()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (a serialized message) made half-valid in one of several ways."""
    how = draw(st.sampled_from(["truncate", "flip", "append", "unknown_field", "duplicate", "as_is"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=12))
    if how == "unknown_field":
        return data + b"\xa0\x9c\x01" + draw(st.binary(max_size=4))  # field 2500, varint, maybe cut short
    if how == "duplicate":
        return data + data
    return data
