"""The Driver for Tessera: router.client.AsyncClient, one per client process.

AsyncClient multiplexes every in-flight request of the process onto one connection per node
(the node's KV wire, D28, or with ``use_wire=False`` its KV.Stream)
and retries routing errors, busy and unreachable nodes itself until the call's deadline; what
reaches the bench is what a real application would see. Its errors become DriverError kinds
so the report counts Tessera's and etcd's failures under the same names.
"""

from __future__ import annotations

from common.tls import TlsConfig
from common.trace import mark
from router.client import (
    AsyncClient,
    ClientClosedError,
    DeadlineExceeded,
    InvalidArgumentError,
    RouterUnavailableError,
    ServerError,
    TesseraError,
)
from tools.bench.driver import DriverError, Read


def error_kind(exc: TesseraError) -> str:
    """The DriverError kind for a client error (most specific class first)."""
    if isinstance(exc, RouterUnavailableError):
        return "unavailable"
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, InvalidArgumentError):
        return "invalid_argument"
    if isinstance(exc, ServerError):
        return exc.code.name.lower() if exc.code is not None else "server_error"
    if isinstance(exc, ClientClosedError):
        return "closed"
    return "error"


class TesseraDriver:
    """Driver over AsyncClient for the routers at ``routers`` (host:port each)."""

    def __init__(
        self,
        routers: list[str],
        deadline_s: float = 10.0,
        tls: TlsConfig | None = None,
        token: str | None = None,
        use_wire: bool = True,
    ) -> None:
        if not routers:
            raise ValueError("a Tessera target needs at least one router address")
        self._client = AsyncClient(routers, deadline_s=deadline_s, tls=tls, token=token, use_wire=use_wire)

    async def put(self, key: bytes, value: bytes, timeout: float) -> None:
        mark("put.start")
        try:
            await self._client.put(key, value, timeout=timeout)
        except TesseraError as exc:
            raise DriverError(error_kind(exc), str(exc)) from exc
        finally:
            mark("put.end")

    async def get(self, key: bytes, consistency: str, timeout: float) -> Read | None:
        try:
            got = await self._client.get(key, consistency, timeout=timeout)
        except TesseraError as exc:
            raise DriverError(error_kind(exc), str(exc)) from exc
        return None if got is None else Read(got.value, got.version)

    async def scan(self, start: bytes, limit: int, consistency: str, timeout: float) -> int:
        try:
            page = await self._client.scan_page(start, b"", limit, consistency=consistency, timeout=timeout)
        except TesseraError as exc:
            raise DriverError(error_kind(exc), str(exc)) from exc
        return len(page.kvs)

    async def cas(self, key: bytes, expected_version: int, value: bytes, timeout: float) -> bool:
        try:
            res = await self._client.cas(key, expected_version, value, timeout=timeout)
        except TesseraError as exc:
            raise DriverError(error_kind(exc), str(exc)) from exc
        return res.succeeded

    async def close(self) -> None:
        await self._client.close()
