"""One gRPC channel per address, shared by everything the client sends there.

The reconnect backoff is shortened from gRPC's default (1 s growing to 120 s): a store that
restarts should be usable again within a fraction of a second, and the client has its own
backoff on top.

With a :class:`common.tls.TlsConfig` every channel is mutual TLS (docs/security.md).
"""

from __future__ import annotations

import grpc

from common.auth import call_metadata
from common.tls import TlsConfig, aio_channel

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class ChannelPool:
    """Lazily created grpc.aio channels; must be used from the client's event loop."""

    def __init__(self, tls: TlsConfig | None = None, token: str | None = None) -> None:
        """``token``: sent on every call as ``authorization: Bearer TOKEN`` (docs/auth.md): the
        callers pass :attr:`metadata` to each call (per-call metadata costs nothing measurable;
        gRPC's access-token call credentials would run a Python plugin on a gRPC thread per
        call, 4x slower unary calls). It needs ``tls``: a token is never sent in plaintext."""
        if token and tls is None:
            raise ValueError("a token needs TLS: give --ca, --cert and --key (or $TESSERA_CA, $TESSERA_CERT, "
                             "$TESSERA_KEY) too")
        self.tls = tls
        self.token = token or None
        self.metadata = call_metadata(self.token) or None  # for every call's metadata=
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = aio_channel(address, self.tls, CHANNEL_OPTIONS)
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace=None)
