"""Tessera's client library.

``AsyncClient`` (asyncio) and ``Client`` (blocking, the same client on a background loop)
cache the partition map from the router, send each request straight to the partition
leader's node — multiplexed over one KV.Stream per node — and retry routing errors, busy and
unreachable nodes by themselves under one deadline per call.

    from router.client import Client
    with Client("127.0.0.1:7100") as c:
        version = c.put(b"k", b"v")
        value, version = c.get(b"k")

See docs/decisions.md D13.
"""

from common.backoff import BackoffPolicy
from router.client.async_client import AsyncClient
from router.client.errors import (
    AccessDeniedError,
    ClientClosedError,
    CrossPartitionBatchError,
    DeadlineExceeded,
    InvalidArgumentError,
    RouterUnavailableError,
    ServerError,
    TesseraError,
)
from router.client.sync_client import Client
from router.client.types import Cas, CasResult, Delete, KeyValue, Put, ScanPage, Versioned, WriteResult

__all__ = [
    "AccessDeniedError",
    "AsyncClient",
    "BackoffPolicy",
    "Cas",
    "CasResult",
    "Client",
    "ClientClosedError",
    "CrossPartitionBatchError",
    "DeadlineExceeded",
    "Delete",
    "InvalidArgumentError",
    "KeyValue",
    "Put",
    "RouterUnavailableError",
    "ScanPage",
    "ServerError",
    "TesseraError",
    "Versioned",
    "WriteResult",
]
