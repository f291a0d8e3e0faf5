"""Prometheus metrics for every Tessera process: cheap counters, and a listener that exports them.

Why not ``prometheus_client``'s own Counter and Histogram on the request path: each
``inc()``/``observe()`` takes a lock, and a node serves ~10k writes/s on one core where every
microsecond per write counts. So the processes keep plain ints and :class:`Buckets` (one
``bisect`` and two additions per observation, no lock: everything that updates them runs on
the event loop, or is a counter of the node's one disk thread) and a custom collector turns
them into metric families when Prometheus scrapes (``node/metrics.py``,
``router/metrics.py``).

The scrape itself is served by :class:`MetricsServer`, a tiny HTTP/1.0 server on the event
loop, so collectors read the process's state on the loop that changes it: no dict changes
size under a collector's feet, and no lock is needed anywhere. See docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

import grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("tessera.metrics")

# Request latency buckets (seconds): from a lease read answered at once (~100 us) to a write
# that waited out its deadline (5 s and more).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Disk latency buckets (seconds): an fsync of a healthy SSD (~50 us) to a stalling disk.
DISK_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

# gRPC status code number -> name, for the ``outcome`` label ("OK", "UNAVAILABLE", ...).
CODE_NAMES: dict[int, str] = {c.value[0]: c.name for c in grpc.StatusCode}

MAX_REQUEST_LINE = 8192  # a scrape request longer than this is refused


class Buckets:
    """A fixed-bucket histogram that costs one bisect and two additions to observe.

    ``counts[i]`` holds the observations in ``(bounds[i-1], bounds[i]]``, the last one those
    above every bound; :meth:`cumulative` gives Prometheus's ``le`` buckets.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ..., ("+Inf", count)]``, as HistogramMetricFamily takes them."""
        counts = list(self.counts)  # one copy: another thread may be adding
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class RpcStats:
    """Requests by (rpc, outcome): one :class:`Buckets` of latencies each, the count included.

    The outcome is the gRPC status code's number (0 is OK); a structured routing error
    (NotLeader, EpochNotMatch) is its status code like any other. Labels are bounded: the rpc
    names are the service's methods and the codes are gRPC's 17.
    """

    __slots__ = ("bounds", "calls")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self.calls: dict[tuple[str, int], Buckets] = {}

    def note(self, rpc: str, code: int, took_s: float) -> None:
        b = self.calls.get((rpc, code))
        if b is None:
            b = self.calls[(rpc, code)] = Buckets(self.bounds)
        b.observe(took_s)

    def families(self, prefix: str, what: str) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        """``PREFIX_requests_total`` and ``PREFIX_request_duration_seconds`` by rpc and outcome."""
        total = CounterMetricFamily(f"{prefix}_requests", f"{what} answered, by rpc and outcome (gRPC status)",
                                    labels=("rpc", "outcome"))
        hist = HistogramMetricFamily(f"{prefix}_request_duration_seconds",
                                     f"time to answer {what}, by rpc and outcome (gRPC status)",
                                     labels=("rpc", "outcome"))
        for (rpc, code), b in sorted(self.calls.items()):
            labels = [rpc, CODE_NAMES.get(code, str(code))]
            buckets = b.cumulative()
            total.add_metric(labels, buckets[-1][1])
            hist.add_metric(labels, buckets, b.total)
        yield total
        yield hist


def histogram(name: str, doc: str, b: Buckets) -> HistogramMetricFamily:
    """One unlabelled histogram family from ``b``."""
    fam = HistogramMetricFamily(name, doc)
    fam.add_metric([], b.cumulative(), b.total)
    return fam


def counter(name: str, doc: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> CounterMetricFamily:
    """One counter family with one sample (``name`` without ``_total``; the family adds it)."""
    pairs = list(labels)
    fam = CounterMetricFamily(name, doc, labels=[k for k, _ in pairs])
    fam.add_metric([v for _, v in pairs], value)
    return fam


def parse_listen(text: str) -> tuple[str, int]:
    """``--metrics-listen HOST:PORT`` -> (host, port); ValueError naming the flag."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics-listen must be HOST:PORT (port 0-65535, 0 picks a free one), got {text!r}")
    return host.strip("[]"), int(port)


class MetricsServer:
    """Serves ``GET /metrics`` (and ``/``) from ``registry`` on the event loop.

    HTTP/1.0, one request per connection, which is all Prometheus and curl need. Collecting
    runs on the loop (see the module's docstring); a scrape of a node with a thousand
    replicas takes about a millisecond.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0
        self.scrapes = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self, listen: str) -> None:
        """Listen on ``listen`` (HOST:PORT; port 0 picks one: see :attr:`port`). Raises
        ValueError for a malformed address, OSError when it cannot listen."""
        host, port = parse_listen(listen)
        self._server = await asyncio.start_server(self._serve, host, port)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # the headers: read and ignored
                h = await asyncio.wait_for(reader.readline(), 10)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.split()
            if len(line) > MAX_REQUEST_LINE or len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                self._answer(writer, b"405 Method Not Allowed", b"text/plain", b"GET /metrics\n")
            elif parts[1].split(b"?")[0] not in (b"/metrics", b"/"):
                self._answer(writer, b"404 Not Found", b"text/plain", b"metrics are at /metrics\n")
            else:
                started = time.perf_counter()
                body = generate_latest(self.registry)
                self.scrapes += 1
                log.debug("scrape took %.1f ms", (time.perf_counter() - started) * 1000)
                self._answer(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), b"" if parts[0] == b"HEAD" else body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except Exception:
            log.exception("serving a metrics scrape failed")
        finally:
            writer.close()

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: bytes, ctype: bytes, body: bytes) -> None:
        writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                     + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def new_registry() -> CollectorRegistry:
    """A registry of one process's metrics, with the process's own (CPU, memory, open files,
    garbage collection) already in it. One per node or router object, not the global one: the
    in-process tests run several in one interpreter."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
