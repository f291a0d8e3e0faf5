"""Client: the blocking twin of AsyncClient, for plain scripts, the CLI and tests.

It runs one AsyncClient on a private event loop in a background thread and hands each call
to it, so the two clients can never diverge in behaviour. Safe to call from several threads
at once (the calls are multiplexed like concurrent coroutines).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from router.client.async_client import AsyncClient
from router.client.errors import ClientClosedError
from router.client.routes import Route
from router.client.types import CasResult, KeyValue, ScanPage, Versioned, WriteResult

T = TypeVar("T")


class Client:
    """Blocking Tessera client; takes the same arguments as AsyncClient."""

    def __init__(self, router_addr: str | Sequence[str] | None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tessera-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> AsyncClient:
            # grpc.aio objects bind to the loop that creates them: build it on ours.
            return AsyncClient(router_addr, **kwargs)

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientClosedError("client closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def async_client(self) -> AsyncClient:
        return self._client

    def get(self, key: bytes, consistency: str = "lease", max_staleness_ms: int = 0, *,
            timeout: float | None = None) -> Versioned | None:
        return self._run(self._client.get(key, consistency, max_staleness_ms, timeout=timeout))

    def put(self, key: bytes, value: bytes, *, timeout: float | None = None) -> int:
        return self._run(self._client.put(key, value, timeout=timeout))

    def delete(self, key: bytes, *, timeout: float | None = None) -> bool:
        return self._run(self._client.delete(key, timeout=timeout))

    def cas(self, key: bytes, expected_version: int, value: bytes = b"", delete: bool = False, *,
            timeout: float | None = None) -> CasResult:
        return self._run(self._client.cas(key, expected_version, value, delete, timeout=timeout))

    def scan(self, start: bytes = b"", end: bytes = b"", limit: int | None = 1000, *,
             consistency: str = "lease", max_staleness_ms: int = 0, timeout: float | None = None) -> list[KeyValue]:
        return self._run(self._client.scan(start, end, limit, consistency=consistency,
                                           max_staleness_ms=max_staleness_ms, timeout=timeout))

    def scan_page(self, start: bytes, end: bytes, limit: int, *, consistency: str = "lease",
                  max_staleness_ms: int = 0, timeout: float | None = None) -> ScanPage:
        return self._run(self._client.scan_page(start, end, limit, consistency=consistency,
                                                max_staleness_ms=max_staleness_ms, timeout=timeout))

    def batch(self, ops: Iterable[object], *, timeout: float | None = None) -> list[WriteResult]:
        return self._run(self._client.batch(list(ops), timeout=timeout))

    def locate(self, key: bytes, *, timeout: float | None = None) -> Route:
        return self._run(self._client.locate(key, timeout=timeout))

    def refresh(self, *, timeout: float | None = None) -> None:
        self._run(self._client.refresh(timeout=timeout))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._closed = True
            self._stop_loop()

    async def _shutdown(self) -> None:
        await self._client.close()
        # grpc.aio leaves bookkeeping tasks behind closed calls; finish them before the loop
        # stops so nothing is destroyed while pending.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
