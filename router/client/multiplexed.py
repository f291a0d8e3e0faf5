"""Which carrier takes a node's requests: the KV wire (D28), KV.Stream, or unary calls."""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.message import Message

from router.client.channels import ChannelPool
from router.client.errors import RpcFailure
from router.client.stream import NodeStream, Tagged
from router.client.transport import UnaryTransport
from router.client.wire import NodeWire

log = logging.getLogger("tessera.client.stream")


class StreamTransport:
    """Sends over each node's KV wire (``wire``, D28) or KV.Stream; falls back to unary calls
    for a node that implements neither."""

    def __init__(self, pool: ChannelPool, unary: UnaryTransport | None = None, *, wire: bool = True) -> None:
        self._pool = pool
        self._unary = unary or UnaryTransport(pool)
        self._wire = wire
        self._streams: dict[str, Tagged] = {}
        self._unary_only: set[str] = set()

    def stream(self, address: str) -> Tagged:
        s = self._streams.get(address)
        if s is None:
            if self._wire:
                s = NodeWire(address, self._pool)
            else:
                s = NodeStream(address, self._pool.get(address), self._pool.metadata)
            self._streams[address] = s
        return s

    async def send(self, address: str, kind: str, request: Message, timeout: float) -> Message:
        if address in self._unary_only:
            return await self._unary.send(address, kind, request, timeout)
        try:
            return await self.stream(address).send(kind, request, timeout)
        except RpcFailure as failure:
            if failure.source == "stream" and failure.code == grpc.StatusCode.UNIMPLEMENTED:
                log.info("%s does not implement KV.Stream; using unary calls", address)
                self._unary_only.add(address)
                return await self._unary.send(address, kind, request, timeout)
            raise

    async def close(self) -> None:
        streams, self._streams = self._streams, {}
        await asyncio.gather(*(s.close() for s in streams.values()), return_exceptions=True)
        await self._unary.close()
