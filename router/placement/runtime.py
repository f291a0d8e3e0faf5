"""The placement service inside a router: the replicated table, time, bootstrap, wake-ups.

Callers speak in commands (router/placement/commands.py): :meth:`Placement.apply` proposes one
to the placement group (router/placement/group.py), which replicates it to the other routers,
applies it to every member's table in log order, and returns its result once applied here.
Reads go through :meth:`Placement.read_barrier` first, so they are linearizable. On a router
that is not the placement leader both raise ``NotLeaderError`` naming the leader.

See docs/decisions.md D15 and D19.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from router.placement.commands import Applied, Bootstrap, Command, PlacementError, SubmitOperation
from router.placement.config import GroupSettings, PlacementConfig
from router.placement.group import NotLeaderError, PlacementGroup
from router.placement.model import Split, StoreInfo, StoreState
from router.placement.table import PlacementTable
from router.placement.watchers import OperationWatchers

log = logging.getLogger("tessera.router.placement")


class Placement:
    def __init__(
        self, group: PlacementGroup, config: PlacementConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.group = group
        self.config = config
        self._clock = clock
        self.watchers = OperationWatchers()
        group.on_leadership(self._leadership_changed)

    def _leadership_changed(self, leading: bool) -> None:
        if not leading:
            # A router that stops leading ends its nodes' watch streams: they find the new leader.
            self.watchers.close_all()
            return
        # Whatever the old leader handed out may never have arrived: hand every pending
        # operation out again now, instead of after the redelivery period.
        now = self.now_ms()
        self.table.deliveries_valid_from_ms = now
        self.watchers.wake(self.table.stores_with_operations_due(now))

    @classmethod
    async def open(
        cls,
        data_dir: str | Path,
        config: PlacementConfig,
        *,
        router_id: int = 1,
        addresses: Mapping[int, str] | None = None,
        settings: GroupSettings = GroupSettings(),
        clock: Callable[[], float] = time.time,
    ) -> Placement:
        """This router's share of the placement group in ``data_dir``; ``addresses`` names every
        router of the group, this one included (default: a group of one). Raises RuntimeError
        when another router holds the dir or the members differ from the dir's, CodecError for
        an unreadable checkpoint."""
        group = await PlacementGroup.open(router_id, addresses or {router_id: ""}, data_dir, settings, clock=clock)
        return cls(group, config, clock=clock)

    @property
    def table(self) -> PlacementTable:
        """This router's copy of the table (the leader's is current; a follower's may lag)."""
        return self.group.table

    # -- time and derived state -----------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def down_after_ms(self) -> int:
        return int(self.config.store_down_after_s * 1000)

    def store_state(self, store: StoreInfo, now_ms: int | None = None) -> StoreState:
        return self.table.effective_state(store, self.now_ms() if now_ms is None else now_ms, self.down_after_ms)

    # -- reads and changes ----------------------------------------------------------------

    async def read_barrier(self) -> None:
        """Wait until this router may answer a read linearizably; NotLeaderError otherwise."""
        await self.group.read_barrier()

    async def apply(self, cmd: Command) -> Applied:
        """Replicate and apply one command; its result once applied here. Raises
        PlacementError (the table refused it, on every router alike) or NotLeaderError."""
        result = await self.group.propose(cmd)
        if result.operation_id or isinstance(cmd, Bootstrap):
            # Work was queued: the stores it is for heartbeat at once instead of at their next turn.
            self.watchers.wake(self.table.stores_with_operations_due(self.now_ms()))
        return result

    async def maybe_bootstrap(self) -> Applied | None:
        """Create the pre-split partitions once enough stores are up on a fresh table (leader)."""
        t = self.table
        if t.bootstrapped or t.partitions or not self.group.is_leader:
            return None
        now = self.now_ms()
        up = t.up_stores(now, self.down_after_ms)
        if len(up) < self.config.replicas:
            return None
        result = await self.apply(Bootstrap(self.config.partitions, self.config.replicas, tuple(up), now))
        log.info("bootstrapped %d partitions x %d replicas on stores %s",
                 self.config.partitions, self.config.replicas, up)
        return result

    async def maybe_split(self) -> list[int]:
        """Queue a split (at the middle key, which the leader picks) of every partition past
        ``split_size`` with nothing else in flight (leader only); the operations they got."""
        if not self.group.is_leader:
            return []
        queued = []
        for pid in self.table.split_candidates(self.config.split_size):
            try:
                result = await self.apply(SubmitOperation(pid, Split(b"", 0, ()), None, self.now_ms()))
            except PlacementError as exc:  # the table moved on meanwhile: decide again next time
                log.info("size split of partition %d not queued: %s", pid, exc)
                continue
            except NotLeaderError:  # no longer the leader: the next one decides
                break
            log.info("partition %d is past --split-size (%d bytes): split queued (operation %d)",
                     pid, self.config.split_size, result.operation_id)
            queued.append(result.operation_id)
        return queued

    def bootstrap_status(self) -> str:
        """Why there are no partitions yet, for error messages."""
        if self.table.partitions:
            return "bootstrapped"
        up = self.table.up_stores(self.now_ms(), self.down_after_ms)
        return f"cluster not bootstrapped yet: waiting for {self.config.replicas} stores, {len(up)} up"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.group.start()

    async def close(self) -> None:
        self.watchers.close_all()
        await self.group.stop()
