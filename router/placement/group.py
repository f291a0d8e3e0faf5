"""The placement group: the placement table replicated by a Raft group of routers.

Every change to the placement table is a command (router/placement/commands.py); the leader
router proposes the encoded command to a Raft group made of the routers, and every member
applies the committed commands, in log order, to its own copy of the table, which is why the
table must be a pure function of its command log (time travels inside the commands). The
group is built from the node's parts: the consensus core through ``RawNode`` only, the node's
write-ahead log (one partition, :data:`GROUP`), and the node's Raft transport (one stream per
peer router). One router is a group of one: the same code, no peers.

Only the leader answers placement calls: :meth:`PlacementGroup.propose` and
:meth:`PlacementGroup.read_barrier` raise :class:`NotLeaderError` (naming the leader) on a
follower, which the Meta service turns into a NotLeader answer that clients and nodes follow.
Reads are linearizable: the leader's lease, or a ReadIndex round when the lease has lapsed.

State on disk (``--data-dir``): the WAL under ``wal/``, and a checkpoint of the table
(router/placement/checkpoint.py) written every :attr:`GroupSettings.checkpoint_every` applied
commands, after which the log before it is compacted; a restart loads the checkpoint and
replays the rest of the log; a member too far behind is sent the checkpoint as its snapshot.

Membership is static: the routers named at start (``--id`` and ``--peers``) are the voters,
and a data dir refuses to start with another set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.log_limit import LogLimiter
from common.tls import TlsConfig
from node.raft import (
    Config,
    ConfState,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from node.raft import (
    NotLeaderError as CoreNotLeader,
)
from node.raft_codec import message_from_pb, message_to_pb
from node.transport import RaftTransport, RaftTransportService
from node.wal.batch import WalBatch
from node.wal.storage import WalLogStorage
from node.wal.wal import WriteAheadLog
from router.placement import checkpoint, codec, persist
from router.placement.checkpoint import Checkpoint
from router.placement.commands import Applied, Command, PlacementError
from router.placement.config import GroupSettings
from router.placement.table import PlacementTable
from tesserapb import raft_pb2

log = logging.getLogger("tessera.router.group")
limited_log = LogLimiter(log)  # what any caller of the Raft port can trigger (docs/hostile-input.md)

GROUP = 1
"""The placement log's partition id, in the router's WAL and on the Raft transport."""
BOOTSTRAP_INDEX = 5
BOOTSTRAP_TERM = 5
_EPOCH = (0, 0)  # the placement group has no partition epoch


class NotLeaderError(Exception):
    """This router is not the placement leader; ``leader_address`` is who is ("" unknown)."""

    def __init__(self, leader_id: int, leader_address: str) -> None:
        where = f"router {leader_id} at {leader_address}" if leader_address else "no leader is known yet"
        super().__init__(f"this router is not the placement leader ({where})")
        self.leader_id = leader_id
        self.leader_address = leader_address


class GroupFailed(Exception):
    """The group's log failed (an fsync error, an internal error): this router stepped out."""


@dataclass(frozen=True, slots=True)
class Member:
    """One router of the group, as ``tessera admin routers`` shows it."""

    id: int
    address: str
    role: str  # "leader" | "follower" | "learner"
    applied: int | None  # None: the answering router does not know (it does not lead)


def _not_the_group(first: raft_pb2.RaftMessage) -> str | None:
    """A snapshot for anything but the placement group is refused at its first chunk."""
    return None if first.partition_id == GROUP else f"not the placement group ({first.partition_id})"


class PlacementGroup:
    def __init__(
        self,
        router_id: int,
        addresses: Mapping[int, str],
        directory: Path,
        cp: Checkpoint,
        wal: WriteAheadLog,
        lock: persist.DataDirLock,
        settings: GroupSettings,
        *,
        clock: Callable[[], float] = time.time,
        tls: TlsConfig | None = None,
    ) -> None:
        self.id = router_id
        self.addresses = dict(addresses)
        self.voters = frozenset(addresses)
        self.directory = directory
        self.settings = settings
        self.wal = wal
        self._lock = lock
        self._clock = clock
        self.table = cp.table
        self._checkpoint = cp  # the last one on disk
        storage = WalLogStorage(wal, GROUP, self._snapshot_meta)
        cfg = Config(
            id=router_id,
            election_tick=settings.election_tick,
            heartbeat_tick=settings.heartbeat_tick,
            applied=cp.index,
        )
        self.raw = RawNode(cfg, storage, random.Random())
        self.applied = cp.index
        self.failed: GroupFailed | None = None
        self.transport = RaftTransport(
            router_id, self.addresses.get, on_unreachable=self.raw.report_unreachable, tls=tls
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, tuple[int, asyncio.Future[Applied]]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_seq = 0
        self._applied_waits: list[tuple[int, asyncio.Future[None]]] = []
        self._staged: tuple[str, asyncio.Future[tuple[bool, str]]] | None = None
        self._last_tick = 0.0
        self._was_leader = False
        self._leadership: list[Callable[[bool], None]] = []

    # -- opening --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        router_id: int,
        addresses: Mapping[int, str],
        directory: str | Path,
        settings: GroupSettings = GroupSettings(),
        *,
        clock: Callable[[], float] = time.time,
        tls: TlsConfig | None = None,
    ) -> PlacementGroup:
        """Open (or create) this router's share of the group in ``directory``.

        Raises RuntimeError when another router holds the directory or the members differ
        from the ones the data dir was created with, codec.CodecError for an unreadable
        checkpoint, WalError for a damaged log.
        """
        voters = frozenset(addresses)
        if router_id not in voters:
            raise ValueError(f"router {router_id} is not among the group's members {sorted(voters)}")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        lock = persist.DataDirLock(path)
        lock.acquire()
        try:
            cp = await asyncio.to_thread(checkpoint.load, path)
            wal = await asyncio.to_thread(WriteAheadLog.open, str(path / "wal"))
            cp = await asyncio.to_thread(_initial_state, path, cp, voters, wal)
        except BaseException:
            lock.release()
            raise
        return cls(router_id, addresses, path, cp, wal, lock, settings, clock=clock, tls=tls)

    # -- running --------------------------------------------------------------------------

    def service(self) -> RaftTransportService:
        """The RaftTransport servicer to add to the router's gRPC server."""
        return RaftTransportService(self.id, self._on_messages, self._on_snapshot, str(self.directory / "snapshots"),
                                    snapshot_refusal=_not_the_group)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last_tick = self._loop.time()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="placement-ticks"),
            asyncio.create_task(self._ready_loop(), name="placement-rounds"),
        ]
        if len(self.voters) == 1:
            self.raw.campaign()  # a group of one need not wait an election timeout
        self._wake.set()

    async def stop(self) -> None:
        for t in [*self._tasks, *self._bg]:
            t.cancel()
        for t in [*self._tasks, *self._bg]:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.transport.close()
        self._fail_waiting(GroupFailed("router stopping"))
        await asyncio.to_thread(self.wal.close)
        self._lock.release()

    def on_leadership(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(is_leader)`` whenever this router becomes or stops being leader."""
        self._leadership.append(callback)

    # -- who leads --------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.failed is None and self.raw.is_leader

    @property
    def leader_id(self) -> int:
        return self.raw.leader

    @property
    def term(self) -> int:
        return self.raw.term

    def not_leader(self) -> NotLeaderError:
        lead = self.raw.leader if self.raw.leader != self.id else 0
        return NotLeaderError(lead, self.addresses.get(lead, "") if lead else "")

    def members(self) -> list[Member]:
        progress = self.raw.status().progress
        out = []
        for rid in sorted(self.voters):
            role = "leader" if rid == self.raw.leader else "follower"
            if rid == self.id:
                applied: int | None = self.applied
            else:
                applied = progress[rid].match if rid in progress else None
            out.append(Member(rid, self.addresses.get(rid, ""), role, applied))
        return out

    # -- proposing and reading --------------------------------------------------------------

    async def propose(self, cmd: Command) -> Applied:
        """Replicate and apply ``cmd``; its result once applied here.  Raises NotLeaderError on
        a follower (or when leadership is lost before the command is applied: its outcome is
        then unknown), PlacementError when the table refuses it."""
        if self.failed is not None:
            raise self.failed
        if not self.raw.is_leader:
            raise self.not_leader()
        assert self._loop is not None
        try:
            index = self.raw.propose(codec.encode_command(cmd))
        except (CoreNotLeader, ProposalDroppedError):
            raise self.not_leader() from None
        fut: asyncio.Future[Applied] = self._loop.create_future()
        self._waiting[index] = (self.raw.term, fut)
        self._wake.set()
        return await fut

    async def read_barrier(self) -> None:
        """Return once this router may answer a read linearizably (it leads, and has applied
        everything committed before the read); NotLeaderError otherwise."""
        if self.failed is not None:
            raise self.failed
        self._catch_up()  # a paused process must see its lease expire first
        if not self.raw.is_leader:
            raise self.not_leader()
        assert self._loop is not None
        index = self.raw.lease_read_index()
        if index is None:
            self._read_seq += 1
            ctx = self._read_seq.to_bytes(8, "big")
            read: asyncio.Future[int] = self._loop.create_future()
            self._reads[ctx] = read
            try:
                self.raw.read_index(ctx)
            except CoreNotLeader:
                del self._reads[ctx]
                raise self.not_leader() from None
            self._wake.set()
            index = await read
        if self.applied < index:
            applied: asyncio.Future[None] = self._loop.create_future()
            self._applied_waits.append((index, applied))
            await applied

    # -- time -------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        assert self._loop is not None
        tick = self.settings.tick_s
        while True:
            delay = self._last_tick + tick - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._catch_up()

    def _catch_up(self) -> None:
        """Deliver the ticks elapsed since the last delivery (all of them after a pause)."""
        assert self._loop is not None
        n = int((self._loop.time() - self._last_tick) / self.settings.tick_s)
        if n <= 0 or self.failed is not None:
            return
        self._last_tick += n * self.settings.tick_s
        for _ in range(min(n, 2 * self.settings.election_tick + 1)):
            self.raw.tick()
        self._wake.set()

    # -- the Ready cycle --------------------------------------------------------------------

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.failed is not None:
                continue
            try:
                while self.raw.has_ready():
                    await self._handle(self.raw.ready())
                await self._maybe_checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("the placement group failed")
                self._fail(f"{exc!r}")

    async def _handle(self, rd: Ready) -> None:
        self._send(rd.messages_before_persist)
        batch = WalBatch()
        if rd.snapshot is not None:
            await self._install(rd.snapshot.meta)
            batch.snapshot(GROUP, rd.snapshot.meta)
        if rd.entries:
            batch.entries(GROUP, rd.entries)
        if rd.hard_state is not None:
            batch.hard_state(GROUP, rd.hard_state)
        if not batch.empty:
            await asyncio.to_thread(self.wal.write, batch, sync=rd.must_sync)
        self._send(rd.messages_after_persist)
        for e in rd.committed_entries:
            self._apply(e.index, e.term, e.data if e.type == EntryType.NORMAL else b"")
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        self.raw.advance(rd)
        self._release_applied()
        if rd.soft_state is not None and (rd.soft_state.role == Role.LEADER) != self._was_leader:
            self._was_leader = rd.soft_state.role == Role.LEADER
            self._leadership_changed(self._was_leader)

    def _apply(self, index: int, term: int, data: bytes) -> None:
        result: Applied | PlacementError | None = None
        if data:
            cmd = codec.decode_command(data)
            try:
                result = self.table.apply(cmd)
            except PlacementError as exc:  # refused the same way on every member
                result = exc
        self.applied = max(self.applied, index)
        waiter = self._waiting.pop(index, None)
        if waiter is None or waiter[1].done():
            return
        proposed_term, fut = waiter
        if proposed_term != term:
            fut.set_exception(self.not_leader())  # another leader's entry took the index
        elif isinstance(result, PlacementError):
            fut.set_exception(result)
        else:
            fut.set_result(result if result is not None else Applied())

    def _release_applied(self) -> None:
        keep = []
        for index, fut in self._applied_waits:
            if index <= self.applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        self._applied_waits = keep

    def _leadership_changed(self, leader: bool) -> None:
        log.info("router %d %s the placement leader (term %d)", self.id, "is now" if leader else "is no longer",
                 self.raw.term)
        if not leader:
            # Reads waiting for this leader's confirmation, and proposals it will not see
            # through, end here; their callers retry at the new leader.
            self._fail_waiting(self.not_leader())
        for callback in self._leadership:
            callback(leader)

    def _fail_waiting(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        reads, self._reads = self._reads, {}
        applied, self._applied_waits = self._applied_waits, []
        for fut in [f for _, f in waiting.values()] + list(reads.values()) + [f for _, f in applied]:
            if not fut.done():
                fut.set_exception(exc)

    def _fail(self, why: str) -> None:
        if self.failed is not None:
            return
        self.failed = GroupFailed(f"the placement group failed on router {self.id}: {why}")
        log.error("%s", self.failed)
        self._fail_waiting(self.failed)
        for callback in self._leadership:
            callback(False)

    # -- checkpoints and snapshots --------------------------------------------------------

    def _snapshot_meta(self) -> Snapshot:
        cp = self._checkpoint
        return Snapshot(SnapshotMeta(cp.index, cp.term, ConfState(voters=self.voters)))

    async def _maybe_checkpoint(self) -> None:
        if self.applied - self._checkpoint.index < self.settings.checkpoint_every:
            return
        term = self.raw.log_view().term(self.applied)
        cp = Checkpoint(self.applied, term, self.voters, self.table)
        data = checkpoint.encode(cp)  # encode now: the table changes as soon as we yield
        await asyncio.to_thread(persist.write_atomic, self.directory / persist.TABLE_FILE, data)
        self._checkpoint = cp
        upto = cp.index - self.settings.keep
        if upto > 0:
            batch = WalBatch()
            batch.compact(GROUP, upto)
            await asyncio.to_thread(self.wal.write, batch, sync=False)
        log.info("placement checkpoint at index %d", cp.index)

    async def _install(self, meta: SnapshotMeta) -> None:
        """Take the checkpoint a leader sent as this router's table (then the log restarts)."""
        staged = self._staged
        if staged is None:
            raise RuntimeError(f"placement snapshot at {meta.index} to install but none received")
        path, done = staged
        data = await asyncio.to_thread(Path(path).read_bytes)
        cp = checkpoint.decode(data)
        if cp.index != meta.index or cp.voters != self.voters:
            raise RuntimeError(f"the snapshot holds index {cp.index} of {sorted(cp.voters)}, expected {meta.index}")
        await asyncio.to_thread(persist.write_atomic, self.directory / persist.TABLE_FILE, data)
        self.table = cp.table
        self._checkpoint = cp
        self.applied = cp.index
        self._staged = None
        done.set_result((True, ""))
        log.info("installed the placement checkpoint at index %d", cp.index)

    async def _on_snapshot(self, first: raft_pb2.RaftMessage, path: str, descriptor: object = None) -> tuple[bool, str]:
        if first.partition_id != GROUP:
            return False, f"not the placement group ({first.partition_id})"
        if self.failed is not None:
            return False, str(self.failed)
        assert self._loop is not None
        _, _, m = message_from_pb(first)
        done: asyncio.Future[tuple[bool, str]] = self._loop.create_future()
        self._staged = (path, done)
        self.raw.step(m)
        pending = self.raw.pending_snapshot
        if pending is None or m.snapshot is None or pending.index != m.snapshot.meta.index:
            self._staged = None
            return True, "not needed"
        self._wake.set()
        return await done

    # -- the network ------------------------------------------------------------------------

    def _on_messages(self, from_router: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        if self.failed is not None:
            return
        for pb in msgs:
            if pb.partition_id != GROUP:
                continue
            try:
                _, _, m = message_from_pb(pb)
            except ValueError as exc:
                limited_log.warning("undecodable", "dropping an undecodable placement message: %s", exc)
                continue
            self.raw.step(m)
        self._wake.set()

    def _send(self, msgs: Iterable[Message]) -> None:
        by_router: dict[int, list[raft_pb2.RaftMessage]] = {}
        for m in msgs:
            if m.type == MessageType.SNAP:
                self._spawn(self._send_snapshot(m))
            else:
                by_router.setdefault(m.dst, []).append(message_to_pb(GROUP, _EPOCH, m))
        for router, pbs in by_router.items():
            self.transport.send(router, pbs)

    async def _send_snapshot(self, m: Message) -> None:
        cp = self._checkpoint
        ok = False
        try:
            data = await asyncio.to_thread((self.directory / persist.TABLE_FILE).read_bytes)
            sent = checkpoint.decode(data)
            meta = SnapshotMeta(sent.index, sent.term, ConfState(voters=self.voters))
            m = dataclasses.replace(m, snapshot=Snapshot(meta))
            ok, reason = await self.transport.send_snapshot(m.dst, message_to_pb(GROUP, _EPOCH, m), [data])
            if not ok:
                log.warning("placement snapshot to router %d refused: %s", m.dst, reason)
        except Exception as exc:
            log.warning("placement snapshot (index %d) to router %d failed: %s", cp.index, m.dst, exc)
        self.raw.report_snapshot(m.dst, ok)
        self._wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)


def _initial_state(directory: Path, cp: Checkpoint | None, voters: frozenset[int], wal: WriteAheadLog) -> Checkpoint:
    """The checkpoint to start from, creating the group's first one when there is none.

    Every member of a new group starts from the same state (index 5, term 5, the voters, an
    empty table), as a node's partitions do. A table written before placement was replicated
    (a format-1 file) is adopted as the initial state, by a group of one only: other members
    would start from a different table.
    """
    if cp is None or cp.index == 0:
        if cp is not None and len(voters) > 1:
            raise RuntimeError(
                f"{directory / persist.TABLE_FILE} was written by a router that was not replicated; only a "
                "group of one router can adopt it (start it alone, then add routers to a new group)"
            )
        table = cp.table if cp is not None else PlacementTable()
        cp = Checkpoint(BOOTSTRAP_INDEX, BOOTSTRAP_TERM, voters, table)
        checkpoint.save(directory, cp)
    elif cp.voters != voters:
        raise RuntimeError(
            f"the placement group of {directory} is routers {sorted(cp.voters)}, not {sorted(voters)} "
            "(the members are fixed when the group is created)"
        )
    # Bring the log in line with the checkpoint (a crash may have come between the two
    # writes), as a node does with a partition's applied state.
    st = wal.state(GROUP)
    hs = st.hard_state
    batch = WalBatch()
    if st.last_index() < cp.index:
        batch.snapshot(GROUP, SnapshotMeta(cp.index, cp.term, ConfState(voters=voters)))
        batch.hard_state(GROUP, HardState(max(hs.term, cp.term), hs.vote if hs.term >= cp.term else 0, cp.index))
    elif hs.commit < cp.index:
        batch.hard_state(GROUP, HardState(hs.term, hs.vote, cp.index))
    if not batch.empty:
        wal.write(batch)
    return cp
