"""Fault-injecting TCP proxies on loopback: the network between nodes, made breakable.

Why proxies: a node's Raft traffic to a peer store is one connection per *directed* pair (the
sender dials the receiver; the receiver's transport acks come back on that connection, its
own Raft messages travel on the connection it dialled itself). ``tessera node
--peer-addresses FILE`` tells a node where to dial each peer, both its gRPC server (snapshots,
and the question where its batch listener is) and its plain-TCP batch listener (docs/decisions.md
D23), so putting one proxy per wire on every directed pair A->B puts a switch on exactly the
path of A's messages to B and nothing else:
cutting it drops A->B while B->A still flows (an asymmetric partition), cutting both
directions isolates, and clients (which dial nodes directly) are never affected. This needs
no root, no network namespaces, and leaves nothing behind when the process exits.

Modes, settable at any time:

- ``pass``:  forward both ways.
- ``drop``:  a black hole. Existing connections are cut (aborted) so the stream notices at
  once; new connections are accepted and read, but nothing is forwarded and no upstream
  connection is made, so the dialer sees a connect that never completes (as with a
  partition, not a refused port). Healing cuts those half-open connections so the dialer
  reconnects immediately instead of waiting out its connect timeout.
- ``delay``: forward, each chunk held back ``delay_s`` (a delay line per direction that keeps
  the byte order).

:class:`LinkProxy` is one proxy on whatever event loop runs it (the unit tests drive it
directly); :class:`ProxyNet` is the whole mesh for a cluster on a private event-loop thread,
so Raft traffic keeps flowing while the nemesis's own loop is busy (running clients, or
blocked for a moment starting a process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

PASS = "pass"
DROP = "drop"
DELAY = "delay"
MODES = (PASS, DROP, DELAY)

_CHUNK = 1 << 16
T = TypeVar("T")
_CONNECT_TIMEOUT_S = 3.0


@dataclass
class ProxyStats:
    accepted: int = 0
    forwarded_bytes: int = 0
    dropped_bytes: int = 0
    cut: int = 0


@dataclass(eq=False)
class _Conn:
    """One proxied connection: the accepted side and, when forwarding, the upstream side."""

    down: asyncio.StreamWriter
    up: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)

    def abort(self) -> None:
        for w in (self.down, self.up):
            if w is not None:
                w.transport.abort()


class LinkProxy:
    """A TCP proxy for one directed link, listening on 127.0.0.1 (port 0: any free port).

    ``target`` is called for every new connection and returns the ``host:port`` to forward
    to, or None when it is not known (the connection is then closed): a restarted node may
    come back on another port, and the proxy follows it.
    """

    def __init__(self, name: str, target: Callable[[], str | None]) -> None:
        self.name = name
        self._target = target
        self.mode = PASS
        self.delay_s = 0.0
        self.port = 0
        self.stats = ProxyStats()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task] = set()
        self._closed = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        """Switch mode now (call on the proxy's event loop); see the module docstring."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        if mode == DELAY and delay_s <= 0:
            raise ValueError("delay mode needs delay_s > 0")
        before = self.mode
        self.mode = mode
        self.delay_s = delay_s if mode == DELAY else 0.0
        if mode == DROP or (before == DROP and mode != DROP):
            # Entering drop: cut live streams so the sender notices now. Leaving it: cut the
            # black-holed connections so the dialer reconnects now.
            self._cut_all()

    def _cut_all(self) -> None:
        for conn in list(self._conns):
            self.stats.cut += 1
            conn.abort()

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        self._cut_all()
        for t in list(self._handlers):
            t.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- connections -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Conn(writer)
        self._conns.add(conn)
        self.stats.accepted += 1
        try:
            if self._closed:
                return
            if self.mode == DROP:
                await self._blackhole(reader)
                return
            target = self._target()
            if not target:
                return
            host, port = target.rsplit(":", 1)
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), _CONNECT_TIMEOUT_S
                )
            except (TimeoutError, OSError):
                return
            conn.up = up_writer
            if self.mode == DROP or self._closed:  # cut while we were connecting
                return
            conn.tasks = [
                asyncio.ensure_future(self._pump(reader, up_writer, conn)),
                asyncio.ensure_future(self._pump(up_reader, writer, conn)),
            ]
            # Both directions until both ended (a half-close passes on); an error in either
            # cuts the connection.
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            conn.abort()
            for t in conn.tasks:
                t.cancel()
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            self._conns.discard(conn)
            self._handlers.discard(task)

    async def _blackhole(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            self.stats.dropped_bytes += len(data)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        """Copy src to dst through a delay line; EOF is passed on, errors cut both sides."""
        loop = asyncio.get_running_loop()
        # Unbounded: a loopback peer drains fast, and a bounded put could block forever
        # once the deliverer died with the connection.
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            try:
                while True:
                    due, data = await line.get()
                    if not data:
                        if dst.can_write_eof() and not dst.is_closing():
                            dst.write_eof()
                        return
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    dst.write(data)
                    self.stats.forwarded_bytes += len(data)
                    await dst.drain()
            except OSError:
                conn.abort()  # the reading side then fails too and the connection ends

        deliverer = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await src.read(_CHUNK)  # an error cuts the whole connection
                if self.mode == DROP:  # raced with a cut: forward nothing more
                    self.stats.dropped_bytes += len(data)
                    data = b""
                line.put_nowait((loop.time() + self.delay_s, data))
                if not data:
                    break
            await deliverer
        finally:
            if not deliverer.done():
                deliverer.cancel()
                with contextlib.suppress(BaseException):
                    await deliverer


class ProxyNet:
    """A :class:`LinkProxy` for every ordered pair of stores, on a private event-loop thread.

    ``target_of(store)`` gives the store's current gRPC ``host:port`` (None while unknown), and
    ``peer_target_of(store)``, when given, its Raft batch listener's; each is called on the
    proxy thread for each new connection. A link ``A->B`` is then a pair of proxies switched
    together. All methods are thread-safe and block only for the moment the proxy thread needs
    to apply them.
    """

    def __init__(
        self,
        stores: Iterable[int],
        target_of: Callable[[int], str | None],
        peer_target_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.stores = sorted(stores)
        self._target_of = target_of
        self._peer_target_of = peer_target_of
        self.links: dict[tuple[int, int], LinkProxy] = {}
        self.peer_links: dict[tuple[int, int], LinkProxy] = {}  # the TCP batch wire, if proxied
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        ready: Future[None] = Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_all())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close_all())
                loop.close()

        self._thread = threading.Thread(target=main, name="nemesis-proxies", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    async def _start_all(self) -> None:
        for a in self.stores:
            for b in self.stores:
                if a != b:
                    proxy = LinkProxy(f"{a}->{b}", functools.partial(self._target_of, b))
                    await proxy.start()
                    self.links[(a, b)] = proxy
                    if self._peer_target_of is not None:
                        peer = LinkProxy(f"{a}->{b} tcp", functools.partial(self._peer_target_of, b))
                        await peer.start()
                        self.peer_links[(a, b)] = peer

    def _all(self) -> list[LinkProxy]:
        return [*self.links.values(), *self.peer_links.values()]

    async def _close_all(self) -> None:
        await asyncio.gather(*(p.close() for p in self._all()), return_exceptions=True)

    def close(self) -> None:
        """Stop every proxy and the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def __enter__(self) -> ProxyNet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addressing ----------------------------------------------------------------------

    def address(self, sender: int, receiver: int) -> str:
        """Where ``sender`` must dial to reach ``receiver`` through the proxy."""
        return self.links[(sender, receiver)].address

    def peer_map(self, sender: int) -> dict[str, str | dict[str, str]]:
        """The JSON body of ``sender``'s --peer-addresses file."""
        out: dict[str, str | dict[str, str]] = {}
        for b in self.stores:
            if b == sender:
                continue
            peer = self.peer_links.get((sender, b))
            out[str(b)] = (
                self.address(sender, b) if peer is None
                else {"address": self.address(sender, b), "peer_address": peer.address}
            )
        return out

    # -- faults --------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy thread and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("proxy net is not running")
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def set(self, pairs: Iterable[tuple[int, int]], mode: str, delay_s: float = 0.0) -> None:
        """Set the mode of the links ``sender -> receiver`` in ``pairs``."""
        pairs = list(pairs)
        chosen = [self.links[p] for p in pairs] + [self.peer_links[p] for p in pairs if p in self.peer_links]
        self._call(functools.partial(_set_modes, chosen, mode, delay_s))

    def heal(self) -> None:
        """Every link back to pass."""
        self._call(functools.partial(_set_modes, self._all(), PASS))

    def modes(self) -> dict[tuple[int, int], str]:
        return {k: p.mode for k, p in self.links.items()}

    def stats(self) -> dict[str, ProxyStats]:
        return {p.name: p.stats for p in self._all()}


def _set_modes(proxies: Iterable[LinkProxy], mode: str, delay_s: float = 0.0) -> None:
    """Switch ``proxies`` to ``mode`` (on their event loop)."""
    for p in proxies:
        p.set_mode(mode, delay_s)
