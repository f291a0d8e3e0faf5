"""The placement service inside a router: the replicated table, time, bootstrap, wake-ups.

Callers speak in commands (router/placement/commands.py): :meth:`Placement.apply` proposes one
to the placement group (router/placement/group.py), which replicates it to the other routers,
applies it to every member's table in log order, and returns its result once applied here.
Reads go through :meth:`Placement.read_barrier` first, so they are linearizable. On a router
that is not the placement leader both raise ``NotLeaderError`` naming the leader.

Only the placement leader schedules (:meth:`Placement.schedule_once`, run every
``schedule_interval_s`` and as soon as a partition's descriptor or leader changes): it plans
from the replicated table (router/placement/scheduler.py) and proposes the operations like any
admin would, so a new leader simply plans again from the same table.

See docs/decisions.md D15, D19 and D20.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from common.tls import TlsConfig
from router.placement.commands import Applied, Bootstrap, Command, CreateToken, PlacementError, SubmitOperation
from router.placement.config import GroupSettings, PlacementConfig
from router.placement.group import GroupFailed, NotLeaderError, PlacementGroup
from router.placement.model import AddReplica, RemoveReplica, Split, StoreInfo, StoreState, TransferLeader
from router.placement.scheduler import SchedulerConfig, Step, drain_refusal, plan
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
        self._leader_since_ms = 0  # when this router last became the placement leader
        self._schedule_now = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self.scheduled = 0  # operations the scheduler submitted (tests, logs)
        # Operations submitted here (by the scheduler, a split or an admin), by kind and result
        # ("queued", "refused", "not_leader", "failed"): router/metrics.py exports them.
        self.submitted: dict[tuple[str, str], int] = {}
        # --admin-token-hash: the bootstrap admin token's sha256, added once per cluster (docs/auth.md).
        self.bootstrap_token_hash: str | None = None

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
        tls: TlsConfig | None = None,
    ) -> Placement:
        """This router's share of the placement group in ``data_dir``; ``addresses`` names every
        router of the group, this one included (default: a group of one). Raises RuntimeError
        when another router holds the dir or the members differ from the dir's, CodecError for
        an unreadable checkpoint. ``tls``: the group's Raft traffic is mutual TLS (docs/security.md)."""
        group = await PlacementGroup.open(
            router_id, addresses or {router_id: ""}, data_dir, settings, clock=clock, tls=tls
        )
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
        try:
            result = await self.group.propose(cmd)
        except PlacementError:
            self._count(cmd, "refused")
            raise
        except NotLeaderError:
            self._count(cmd, "not_leader")
            raise
        except Exception:
            self._count(cmd, "failed")
            raise
        self._count(cmd, "queued")
        if result.operation_id or isinstance(cmd, Bootstrap):
            # Work was queued: the stores it is for heartbeat at once instead of at their next turn.
            self.watchers.wake(self.table.stores_with_operations_due(self.now_ms()))
        if result.partition_ids and not isinstance(cmd, SubmitOperation):
            # A descriptor or leader changed (a learner promoted, a transfer done): the next
            # step of a move need not wait for the next period.
            self._schedule_now.set()
        return result

    def _count(self, cmd: Command, result: str) -> None:
        if isinstance(cmd, SubmitOperation):
            key = (operation_kind(cmd.action), result)
            self.submitted[key] = self.submitted.get(key, 0) + 1

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

    async def maybe_bootstrap_token(self) -> Applied | None:
        """Add the bootstrap admin token (--admin-token-hash) if this cluster never had one
        (leader; called with every heartbeat, so it is there once the nodes are)."""
        digest = self.bootstrap_token_hash
        if digest is None or self.table.tokens.bootstrapped or not self.group.is_leader:
            return None
        try:
            result = await self.apply(CreateToken(digest, "admin", self.now_ms(), "bootstrap", bootstrap=True))
        except PlacementError as exc:  # another call added it meanwhile
            log.info("bootstrap admin token not added: %s", exc)
            return None
        log.info("bootstrap admin token added (token %d)", result.token_id)
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

    # -- the scheduler (placement leader only; docs/decisions.md D20) -----------------------

    def scheduler_config(self) -> SchedulerConfig:
        c = self.config
        return SchedulerConfig(
            replicas=c.replicas,
            down_after_ms=self.down_after_ms,
            max_down_ms=int(c.max_down_s * 1000),
            max_moves=c.max_moves,
            max_transfers=c.max_transfers,
            since_ms=self._leader_since_ms,
        )

    def drain_refusal(self, store_id: int) -> str | None:
        """Why ``store_id`` cannot start draining now (None: it can)."""
        store = self.table.stores.get(store_id)
        if store is not None and store.state == StoreState.DRAINING:
            return None  # asking again is fine (idempotent)
        return drain_refusal(self.table, store_id, self.now_ms(), self.scheduler_config())

    def _leadership_changed(self, leader: bool) -> None:
        if not leader:
            # A router that stops leading ends its nodes' watch streams: they find the new leader.
            self.watchers.close_all()
            return
        now = self.now_ms()
        # Silence is counted from now for every store (SchedulerConfig.since_ms): a store
        # that was talking to the old leader gets its full --max-down from this one.
        self._leader_since_ms = now
        self._schedule_now.set()
        # Whatever the old leader handed out may never have arrived: hand every pending
        # operation out again now, instead of after the redelivery period.
        self.table.deliveries_valid_from_ms = now
        self.watchers.wake(self.table.stores_with_operations_due(now))

    async def schedule_once(self) -> list[Step]:
        """Plan from the table and submit what the plan says (leader only): the steps
        submitted. A step the table refuses (its partition moved on meanwhile) is skipped; the
        next round plans again from what is there."""
        await self.read_barrier()  # a new leader first applies everything its term committed
        if not self.table.partitions:
            return []
        now = self.now_ms()
        done = []
        for step in plan(self.table, now, self.scheduler_config()):
            try:
                await self.apply(step.command)
            except PlacementError as exc:
                log.info("scheduler: partition %d: %s not submitted: %s", step.command.partition_id,
                         type(step.command.action).__name__, exc.message)
                continue
            done.append(step)
            self.scheduled += 1
            log.info("scheduler: partition %d: %s (%s)", step.command.partition_id,
                     _describe(step.command), step.reason)
        return done

    async def _schedule_loop(self) -> None:
        interval = self.config.schedule_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._schedule_now.wait(), interval)
            self._schedule_now.clear()
            if not self.group.is_leader:
                continue
            try:
                await self.schedule_once()
            except (NotLeaderError, GroupFailed):
                pass  # no longer leading: the new leader schedules
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling round failed")
            await asyncio.sleep(min(0.05, interval))  # wake-ups come in bursts: one round per burst

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.group.start()
        if self.config.schedule_interval_s > 0:
            self._scheduler = asyncio.create_task(self._schedule_loop(), name="placement-scheduler")

    async def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduler
        self.watchers.close_all()
        await self.group.stop()


def _describe(cmd: SubmitOperation) -> str:
    a = cmd.action
    name = type(a).__name__
    if isinstance(a, TransferLeader):
        return f"{name} to store {a.to_store_id}"
    if isinstance(a, (AddReplica, RemoveReplica)):
        return f"{name} on store {a.replica.store_id}"
    return name


def operation_kind(action: object) -> str:
    """An operation's kind as the metrics label it: "transfer_leader", "add_replica", ..."""
    name = type(action).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
