"""common/wire/guard.py's pure parts: the guarded deserializer answers a Malformed marker (one
line, naming the type) instead of raising, and passes good bytes through untouched. The
interceptor itself is tested on a real server in tests/process/test_request_guard.py."""

from __future__ import annotations

from common.wire.errors import MAX_MESSAGE_CHARS, WireError, clip, invalid_argument
from common.wire.guard import MAX_DETAIL_CHARS, Malformed, guard_deserializer, message_name, one_line
from tesserapb import kv_pb2


def test_good_bytes_parse_as_before() -> None:
    parse = guard_deserializer(kv_pb2.PutRequest.FromString)
    req = kv_pb2.PutRequest(key=b"k", value=b"v")
    assert parse(req.SerializeToString()) == req
    assert parse(b"") == kv_pb2.PutRequest()


def test_bad_bytes_become_a_one_line_marker_naming_the_type() -> None:
    parse = guard_deserializer(kv_pb2.PutRequest.FromString)
    for garbage in (b"\xff\xff\xff\xff", b"\x12\x05ab", b"\x0a" + b"\xff" * 11):
        got = parse(garbage)
        assert isinstance(got, Malformed), garbage
        assert got.message.startswith(f"request is not a valid tessera.v1.PutRequest ({len(garbage)} bytes): ")
        assert "\n" not in got.message and len(got.message) <= MAX_DETAIL_CHARS


def test_any_exception_of_a_deserializer_is_a_marker() -> None:
    def explodes(raw: bytes) -> object:
        raise RecursionError("nested\ntoo deep")

    got = guard_deserializer(explodes)(b"x")
    assert isinstance(got, Malformed) and got.message.endswith("nested too deep")
    assert "explodes" in got.message  # no protobuf type to name: the function's own name


def test_message_name_and_one_line() -> None:
    assert message_name(kv_pb2.ScanRequest.FromString) == "tessera.v1.ScanRequest"
    assert one_line("a\n  b\tc") == "a b c"
    long = one_line("x" * 1000)
    assert len(long) == MAX_DETAIL_CHARS and long.endswith("...")


def test_a_status_message_is_clipped_to_fit_grpc_trailers() -> None:
    short = "key b'k' is outside partition 3"
    assert clip(short) == short
    key = b"\xfe" * 4096
    long = f"key {key!r} is outside partition 3"
    assert len(long) > 16_000
    clipped = clip(long)
    assert len(clipped) == MAX_MESSAGE_CHARS and clipped.endswith(f"... ({len(long)} characters)")
    assert WireError.of(invalid_argument("key", long), long).message == clipped
