"""Drives the placement table inside the router process: apply, persist, bootstrap.

This is the seam where replication goes later: today ``apply`` runs a command on the local
table and persists it; with a placement Raft group it will propose the encoded command, wait
for it to commit, and apply it in log order on every member. Callers already speak in
commands, so they will not change.

Durability: commands whose result is ``durable`` (new ids, descriptors, operations, store
states) are on disk before ``apply`` returns; ``dirty``-only changes (leader hints, heartbeat
times, progress) are flushed by ``run_flusher`` every ``flush_interval_s`` and on close.

See docs/decisions.md D15.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from router.placement import codec, persist
from router.placement.commands import Applied, Bootstrap, Command
from router.placement.config import PlacementConfig
from router.placement.model import StoreInfo, StoreState
from router.placement.table import PlacementTable
from router.placement.watchers import OperationWatchers

log = logging.getLogger("tessera.router.placement")


class Placement:
    def __init__(
        self,
        table: PlacementTable,
        data_dir: Path,
        config: PlacementConfig,
        *,
        clock: Callable[[], float] = time.time,
        lock: persist.DataDirLock | None = None,
    ) -> None:
        self.table = table
        self.config = config
        self._path = data_dir / persist.TABLE_FILE
        self._clock = clock
        self._lock = lock
        self._save_lock = asyncio.Lock()
        self._generation = 0  # bumped by every change
        self._saved_generation = 0
        self.watchers = OperationWatchers()

    @classmethod
    def open(
        cls, data_dir: str | Path, config: PlacementConfig, *, clock: Callable[[], float] = time.time
    ) -> Placement:
        """Load DATA_DIR/placement.json, or start empty on a fresh data dir. Raises
        RuntimeError if another router holds the dir, codec.CodecError if the file is bad."""
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        lock = persist.DataDirLock(directory)
        lock.acquire()
        try:
            data = persist.read_if_exists(directory / persist.TABLE_FILE)
            table = codec.table_from_json(data) if data is not None else PlacementTable()
        except BaseException:
            lock.release()
            raise
        return cls(table, directory, config, clock=clock, lock=lock)

    # -- time and derived state -----------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def down_after_ms(self) -> int:
        return int(self.config.store_down_after_s * 1000)

    def store_state(self, store: StoreInfo, now_ms: int | None = None) -> StoreState:
        return self.table.effective_state(store, self.now_ms() if now_ms is None else now_ms, self.down_after_ms)

    # -- mutation ---------------------------------------------------------------------------

    async def apply(self, cmd: Command) -> Applied:
        """Apply one command; durable results are on disk when this returns. Raises
        PlacementError (table unchanged) for a rejected command."""
        result = self.table.apply(cmd)
        if result.durable or result.dirty:
            self._generation += 1
        if result.durable:
            await self.flush()
        if result.operation_id or isinstance(cmd, Bootstrap):
            # Work was queued: the stores it is for heartbeat at once instead of at their next turn.
            self.watchers.wake(self.table.stores_with_operations_due(self.now_ms()))
        return result

    async def maybe_bootstrap(self) -> Applied | None:
        """Create the pre-split partitions once enough stores are up on a fresh table."""
        t = self.table
        if t.bootstrapped or t.partitions:
            return None
        now = self.now_ms()
        up = t.up_stores(now, self.down_after_ms)
        if len(up) < self.config.replicas:
            return None
        result = await self.apply(Bootstrap(self.config.partitions, self.config.replicas, tuple(up), now))
        log.info("bootstrapped %d partitions x %d replicas on stores %s",
                 self.config.partitions, self.config.replicas, up)
        return result

    def bootstrap_status(self) -> str:
        """Why there are no partitions yet, for error messages."""
        if self.table.partitions:
            return "bootstrapped"
        up = self.table.up_stores(self.now_ms(), self.down_after_ms)
        return f"cluster not bootstrapped yet: waiting for {self.config.replicas} stores, {len(up)} up"

    # -- persistence ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the table if anything changed since the last write. Concurrent callers
        coalesce: whoever gets the lock writes the newest state for everyone."""
        if self._saved_generation >= self._generation:
            return
        async with self._save_lock:
            generation = self._generation
            if self._saved_generation >= generation:
                return
            data = codec.table_to_json(self.table)
            await asyncio.to_thread(persist.write_atomic, self._path, data)
            self._saved_generation = max(self._saved_generation, generation)

    async def run_flusher(self) -> None:
        """Background task: flush lazily-persisted changes periodically."""
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self.flush()
            except OSError:
                log.exception("flushing the placement table failed; will retry")

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
