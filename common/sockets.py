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


KEEPALIVE_IDLE_S = 10  # as the gRPC servers' keepalive (node.transport.SERVER_OPTIONS)
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3


def keep_alive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive on a long-lived client connection: a peer that vanished without a word (a
    machine off, a cable out) is noticed in about 25 s, and what rode on it fails and is
    retried, instead of waiting forever (gRPC's own keepalive does this for its channels)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's defaults
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except OSError:
        pass
