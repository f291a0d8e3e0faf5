"""The client's fallback from the KV wire to KV.Stream (router/client/wire.py): a node whose
wire port cannot be reached is served over KV.Stream, and the wire is tried again after
WIRE_RETRY_S, not never. A real gRPC server on loopback that serves KV.Stream and names a
wire port nobody listens on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import pytest

from router.client import wire
from router.client.channels import ChannelPool
from router.client.multiplexed import StreamTransport
from tesserapb import kv_pb2, kv_pb2_grpc


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nobody listens there now
    return port


class _NoWireHere(kv_pb2_grpc.KVServicer):
    def __init__(self, port: int) -> None:
        self.port = port
        self.asked = 0

    async def WireEndpoint(self, request: kv_pb2.WireEndpointRequest, context: object) -> kv_pb2.WireEndpointResponse:
        self.asked += 1
        return kv_pb2.WireEndpointResponse(address=f"127.0.0.1:{self.port}")

    async def Stream(self, requests: AsyncIterator[kv_pb2.StreamRequest], context: object
                     ) -> AsyncIterator[kv_pb2.StreamResponse]:
        async for req in requests:
            yield kv_pb2.StreamResponse(responses=[
                kv_pb2.StreamResponseItem(request_id=i.request_id, scan=kv_pb2.ScanResponse()) for i in req.requests])


def test_an_unreachable_wire_falls_back_to_the_stream_and_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "WIRE_RETRY_S", 0.3)

    async def main() -> None:
        servicer = _NoWireHere(_closed_port())
        server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(servicer, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        pool = ChannelPool()
        transport = StreamTransport(pool)
        try:
            for _ in range(3):  # answered over the stream; the wire was asked for once
                assert isinstance(await transport.send(address, "scan", kv_pb2.ScanRequest(), 5), kv_pb2.ScanResponse)
            node = transport.stream(address)
            assert isinstance(node, wire.NodeWire) and not node.uses_wire
            assert servicer.asked == 1
            await asyncio.sleep(0.35)
            assert isinstance(await transport.send(address, "scan", kv_pb2.ScanRequest(), 5), kv_pb2.ScanResponse)
            assert servicer.asked == 2  # tried again (and fell back again)
        finally:
            await transport.close()
            await pool.close()
            await server.stop(None)

    asyncio.run(main())
