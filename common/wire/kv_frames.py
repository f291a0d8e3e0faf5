"""The KV wire's framing (docs/kv-wire.md, D28), shared by the node and the client.

A frame is a 4-byte big-endian payload length, a 1-byte kind, then the payload, a serialized
protobuf message:

- ``H`` WireHello: client to node, the first frame, once (version, token);
- ``R`` StreamRequest: client to node, tagged requests as on KV.Stream;
- ``A`` StreamResponse: node to client, tagged answers as on KV.Stream;
- ``E`` WireEnd: node to client, the last frame, why the node closes the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

HEADER = struct.Struct(">IB")
HELLO = ord("H")
REQUEST = ord("R")
ANSWER = ord("A")
END = ord("E")
VERSION = 1
MAX_FRAME_BYTES = 64 << 20  # as gRPC's message limit on the node (node.transport.MAX_MESSAGE_BYTES)
# What one message packs at most (requests by the client, answers by the node, on the wire and
# on KV.Stream alike): items queued together beyond this go in further messages, so that no
# message nears the limit however many large values are asked for at once. An item larger
# than this goes alone (a key and a value within the node's limits are far below the limit).
PACK_BYTES = 4 << 20


def packed(sized: list[tuple[T, int]], limit: int = PACK_BYTES) -> Iterator[tuple[list[T], int]]:
    """``sized`` (item, its bytes) cut, in order, into runs of at most ``limit`` bytes (one
    larger item alone), each with its bytes. The list is emptied as runs are made, so an item
    is let go once its run is (many large answers at once are not held twice)."""
    sized.reverse()  # taken from the end, oldest first
    while sized:
        run: list[T] = []
        size = 0
        while sized and (not run or size + sized[-1][1] <= limit):
            item, n = sized.pop()
            run.append(item)
            size += n
        yield run, size


class FrameTooLarge(ValueError):
    """A frame's length is over the limit: the connection cannot go on (nothing is buffered)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a frame of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


class FrameReader:
    """Cuts frames out of the bytes a connection receives, in order."""

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """The (kind, payload) of every frame complete once ``data`` is added. Raises
        :class:`FrameTooLarge` at a length over the limit, before its payload is buffered."""
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        size = HEADER.size
        try:
            while end - pos >= size:
                n, kind = HEADER.unpack_from(buf, pos)
                if n > self.limit:
                    raise FrameTooLarge(n, self.limit)
                if end - pos - size < n:
                    break
                start = pos + size
                pos = start + n
                yield kind, bytes(buf[start:pos])
        finally:
            del buf[:pos]
