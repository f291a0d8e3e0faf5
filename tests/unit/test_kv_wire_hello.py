"""A KV wire connection that never says hello is closed (node/kv_wire.py): holding one must
not be free. A real listener on loopback; the KV service is never reached before a hello."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from common.wire import kv_frames as kf
from node import kv_wire
from tesserapb import kv_pb2


def test_a_connection_without_a_hello_is_ended_after_the_hello_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_wire, "HELLO_TIMEOUT_S", 0.3)

    async def main() -> tuple[list[tuple[int, bytes]], float]:
        nothing: Any = object()  # the service: not touched before a hello
        listener = await kv_wire.serve("127.0.0.1", 0, nothing)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            started = time.monotonic()
            data = await asyncio.wait_for(reader.read(), 5)  # until the node closes
            took = time.monotonic() - started
            writer.close()
            assert not listener.live
            return list(kf.FrameReader().feed(data)), took
        finally:
            listener.close()

    frames, took = asyncio.run(main())
    assert 0.25 < took < 3, took
    assert [k for k, _ in frames] == [kf.END]
    end = kv_pb2.WireEnd.FromString(frames[0][1])
    assert end.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "no hello within 0.3 s" in end.message
