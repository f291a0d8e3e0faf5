"""Socket settings shared by Tessera's own TCP wires (Raft batches, the KV wire)."""

from __future__ import annotations

import asyncio
import socket


def no_delay(transport: asyncio.BaseTransport) -> None:
    """Small frames leave at once (no Nagle): a frame held back for a delayed ack costs a
    round trip of latency per request."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
