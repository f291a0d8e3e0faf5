"""The multi-raft loop of one node: every replica's ticks, Ready rounds, WAL and apply.

One round serves every replica that has work, so costs are paid per round,
not per partition or per request:

1. queued proposals of each replica are appended as one batch;
2. every replica's Ready is collected; a leader's messages go out at once
   (etcd allows a leader to replicate while its own fsync runs);
3. received snapshots are installed into LMDB, then ONE WAL write with ONE
   fsync persists all replicas' entries, hard states and snapshot marks —
   in a worker thread, so requests and Raft messages keep flowing;
4. the remaining messages are sent, all committed entries of all replicas
   are applied in ONE LMDB transaction (another worker-thread call), and
   waiting proposals and reads are resolved;
5. every Ready is advanced.

Time: ticks come from the event loop's monotonic clock.  When the loop was
held up (a long GC, SIGSTOP), the missed ticks are delivered before anything
else, and :meth:`catch_up` lets a read path do the same first: a paused
leader must see its lease expire rather than serve a stale read.
"""

from __future__ import annotations

import asyncio
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from node import membership
from node.membership import conf_state_of
from node.raft import (
    Config,
    ConfChange,
    ConfState,
    EntryType,
    HardState,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from node.raft.confchange import ConfChangeError, apply_conf_change
from node.raft.raft import Raft
from node.raft_codec import message_from_pb, message_to_pb
from node.replica import Replica, ReplicaStorage
from node.settings import RaftSettings
from node.state.commands import Command
from node.state.snapshot_file import read_snapshot_file, snapshot_stream
from node.state.store import ApplyEntry, PartitionMeta, StateStore
from node.wal.batch import WalBatch
from node.wal.errors import WalError
from node.wal.wal import WriteAheadLog
from tesserapb import meta_pb2, raft_pb2

log = logging.getLogger("tessera.raftstore")

BOOTSTRAP_INDEX = 5
BOOTSTRAP_TERM = 5
_EARLY = frozenset({MessageType.APP, MessageType.HEARTBEAT, MessageType.TIMEOUT_NOW, MessageType.READ_INDEX_RESP})


@dataclass(slots=True)
class _Apply:
    """One replica's share of a round's apply transaction."""

    rep: Replica
    entries: list[ApplyEntry]
    conf_state: ConfState
    # The descriptor after this round's conf changes (None: membership unchanged).
    descriptor: meta_pb2.PartitionDescriptor | None = None


class NodeFailed(Exception):
    """The WAL failed (fsync error, full disk): this node no longer acknowledges writes."""


class RaftStore:
    def __init__(
        self,
        store_id: int,
        wal: WriteAheadLog,
        state: StateStore,
        transport,  # node.transport.RaftTransport
        settings: RaftSettings = RaftSettings(),
        *,
        on_leader_change: Callable[[Replica], None] | None = None,
        raft_class: type[Raft] = Raft,
    ) -> None:
        self.store_id = store_id
        self.wal = wal
        self.state = state
        self.transport = transport
        self.settings = settings
        self.on_leader_change = on_leader_change
        # Only tests of the test suite (tessera nemesis --raft-mutation) pass a buggy core.
        self.raft_class = raft_class
        self.replicas: dict[int, Replica] = {}
        # Replicas to delete at the start of the next round (rounds own the replicas' storage).
        self._doomed: dict[int, tuple[int, asyncio.Future]] = {}
        self.failed: NodeFailed | None = None
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._last_tick = self.loop.time()
        self._pending_compactions: dict[int, int] = {}
        self._deferred_hs: dict[int, HardState] = {}
        # One dedicated I/O thread: rounds are sequential anyway, and a warm
        # single worker hands work over faster than the shared default pool.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-io")
        self._staged_snapshots: dict[int, tuple[str, asyncio.Future, meta_pb2.PartitionDescriptor | None]] = {}
        self._bg: set[asyncio.Task] = set()
        self.rounds = 0
        self.raft_msgs_sent = 0
        # When each peer store was last heard from (any transport batch).
        self.last_seen: dict[int, float] = {}

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        for pid, (replica_id, raw_desc) in sorted(self.state.descriptors().items()):
            desc = meta_pb2.PartitionDescriptor.FromString(raw_desc)
            await self._open_replica(pid, replica_id, desc)
        self._last_tick = self.loop.time()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="raft-ticks"),
            asyncio.create_task(self._round_loop(), name="raft-rounds"),
        ]

    async def stop(self) -> None:
        for t in self._tasks + list(self._bg):
            t.cancel()
        for t in self._tasks + list(self._bg):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for rep in self.replicas.values():
            rep.close()
        self._io.shutdown(wait=True)

    def kick(self) -> None:
        self._wake.set()

    # -- replicas -------------------------------------------------------------------

    async def create_replica(self, desc: meta_pb2.PartitionDescriptor, replica_id: int, bootstrap: bool) -> bool:
        """Host a replica of ``desc`` (idempotent).  Returns True if it was created now.

        With ``bootstrap`` every initial member starts from the same state (index 5, term 5,
        membership = the descriptor's).  Without it the replica starts empty, with no
        membership (it never campaigns), and waits for the leader's snapshot: the target of
        an add-replica.
        """
        pid = desc.id
        if replica_id not in {r.replica_id for r in desc.replicas}:
            raise ValueError(f"replica {replica_id} is not a member of partition {pid}")
        old = self.replicas.get(pid)
        if old is not None:
            if old.replica_id == replica_id:
                return False
            if any(r.replica_id == old.replica_id for r in desc.replicas):
                raise ValueError(f"partition {pid} already has replica {old.replica_id} here, still a member")
            # Placement gives a store a new replica of a partition only after the group
            # removed the old one, which never learned it (it was cut off): retire it first.
            await self.destroy_replica(pid, old.replica_id)
        if bootstrap:
            # LMDB first: on restart the descriptor says we host it, and a WAL
            # that lags the applied state is repaired from it (see _open_replica).
            await asyncio.to_thread(self._init_partition, pid, replica_id, desc, conf_state_of(desc))
        else:
            await asyncio.to_thread(self._init_empty_partition, pid, replica_id, desc)
        await self._open_replica(pid, replica_id, desc)
        self.kick()
        return True

    def _init_partition(self, pid: int, replica_id: int, desc: meta_pb2.PartitionDescriptor, cs: ConfState) -> None:
        self.state.init_partition(pid, BOOTSTRAP_INDEX, BOOTSTRAP_TERM, cs)
        self.state.save_descriptor(pid, replica_id, desc.SerializeToString())

    def _init_empty_partition(self, pid: int, replica_id: int, desc: meta_pb2.PartitionDescriptor) -> None:
        # A replica this store hosted before and lost track of may have left log records.
        self.wal.remove_partition(pid)
        self.state.init_partition(pid, 0, 0, ConfState())
        self.state.save_descriptor(pid, replica_id, desc.SerializeToString())

    async def destroy_replica(self, pid: int, replica_id: int) -> bool:
        """Delete our replica ``replica_id`` of ``pid`` (it left the group).  False if not hosted."""
        rep = self.replicas.get(pid)
        if rep is None or rep.replica_id != replica_id:
            return False
        await asyncio.shield(self._doom(pid, replica_id))
        return True

    def _doom(self, pid: int, replica_id: int) -> asyncio.Future:
        """Schedule the deletion for the start of the next round (rounds own the storage)."""
        pending = self._doomed.get(pid)
        if pending is None:
            pending = self._doomed[pid] = (replica_id, self.loop.create_future())
            self.kick()
        return pending[1]

    def destroy_if_removed(self, desc: meta_pb2.PartitionDescriptor, replica_id: int) -> bool:
        """Placement says ``desc`` (committed by the group) no longer has our ``replica_id``.

        Trust it only if our own descriptor is older and the replica really is not in it;
        then delete the replica at the next round.  True if a deletion was scheduled.
        """
        rep = self.replicas.get(desc.id)
        if rep is None or rep.replica_id != replica_id:
            return False
        if any(r.replica_id == replica_id for r in desc.replicas):
            return False
        if rep.descriptor.epoch.conf_ver >= desc.epoch.conf_ver:
            return False
        log.info("partition %d: replica %d was removed from the group, deleting it", desc.id, replica_id)
        self._doom(desc.id, replica_id)
        return True

    async def _destroy(self, rep: Replica) -> None:
        """Runs inside a round.  LMDB first: without a descriptor the replica is gone after a
        restart whatever the WAL still holds, and a later re-creation clears the WAL."""
        pid = rep.pid
        rep.close()
        if self.replicas.get(pid) is rep:
            del self.replicas[pid]
        self._deferred_hs.pop(pid, None)
        self._pending_compactions.pop(pid, None)
        staged = self._staged_snapshots.pop(pid, None)
        if staged is not None and not staged[1].done():
            staged[1].set_result((False, "replica removed"))
        await self.loop.run_in_executor(self._io, self._destroy_io, pid, rep.start, rep.end)
        log.info("partition %d: replica %d deleted", pid, rep.replica_id)

    def _destroy_io(self, pid: int, start: bytes, end: bytes) -> None:
        self.state.destroy_partition(pid, start, end)
        self.wal.remove_partition(pid)

    async def _destroy_doomed(self) -> None:
        doomed, self._doomed = self._doomed, {}
        for pid, (replica_id, fut) in doomed.items():
            rep = self.replicas.get(pid)
            try:
                if rep is not None and rep.replica_id == replica_id:
                    await self._destroy(rep)
            finally:
                if not fut.done():
                    fut.set_result(None)

    # -- membership changes (leader side) ------------------------------------------------

    def request_add(self, pid: int, replica_id: int, store_id: int) -> None:
        """Placement asks this leader to add a replica: as a learner, promoted once caught up."""
        rep = self.replicas.get(pid)
        if rep is not None and rep.is_leader():
            rep.want_add[replica_id] = store_id
            self.drive_membership(rep)

    def request_remove(self, pid: int, replica_id: int) -> None:
        rep = self.replicas.get(pid)
        if rep is not None and rep.is_leader():
            rep.want_remove.add(replica_id)
            self.drive_membership(rep)

    def drive_membership(self, rep: Replica) -> None:
        """Take the leader's next membership step (:func:`node.membership.next_step`)."""
        r = rep.raw.raft
        if r.role != Role.LEADER:
            return
        members = r.trk.conf.all_nodes()
        rep.want_add = {rid: store for rid, store in rep.want_add.items() if rid not in members}
        rep.want_remove &= members
        step = membership.next_step(r, rep.want_add, rep.want_remove)
        if step is None:
            return
        # An idle group is not ticked: it must tick again to probe and promote the newcomer.
        rep.ensure_awake()
        try:
            if isinstance(step, membership.HandOver):
                log.info("partition %d: asked to remove the leader; transferring to %d first", rep.pid, step.target)
                rep.raw.transfer_leader(step.target)
                rep.want_remove.discard(r.id)
            else:
                rep.raw.propose_conf_change(step)
                log.info("partition %d: proposed %s", rep.pid, [(c.type.name, c.node_id) for c in step.changes])
        except (ProposalDroppedError, NotLeaderError) as exc:
            log.info("partition %d: membership step %s not taken yet: %s", rep.pid, step, exc)
            return
        self.kick()

    async def _open_replica(self, pid: int, replica_id: int, desc: meta_pb2.PartitionDescriptor) -> None:
        meta = self.state.meta(pid)
        if meta is None:
            raise RuntimeError(f"partition {pid} has a descriptor but no applied state")
        st = self.wal.state(pid)
        if st.last_index() < meta.applied_index:
            # The WAL is behind the applied state (crash between the LMDB and
            # WAL writes of a bootstrap or a snapshot install): restart the log
            # at the applied state, which already holds everything before it.
            batch = WalBatch()
            batch.snapshot(pid, SnapshotMeta(meta.applied_index, meta.applied_term, meta.conf_state))
            hs = st.hard_state
            batch.hard_state(
                pid, HardState(max(hs.term, meta.applied_term), hs.vote if hs.term >= meta.applied_term else 0, meta.applied_index)
            )
            await asyncio.to_thread(self.wal.write, batch)
        elif st.hard_state.commit < meta.applied_index:
            # The commit index is written without fsync (it only moves forward
            # and is implied by what was applied): re-establish it.
            hs = st.hard_state
            batch = WalBatch()
            batch.hard_state(pid, HardState(hs.term, hs.vote, meta.applied_index))
            await asyncio.to_thread(self.wal.write, batch)
        storage = ReplicaStorage(self.wal, pid, meta.conf_state, self._snapshot_provider(pid))
        s = self.settings
        cfg = Config(
            id=replica_id,
            election_tick=s.election_tick,
            heartbeat_tick=s.heartbeat_tick,
            applied=meta.applied_index,
            max_inflight_msgs=s.max_inflight_msgs,
            max_size_per_msg=s.max_size_per_msg,
        )
        raw = RawNode(cfg, storage, random.Random(), raft_class=self.raft_class)
        rep = Replica(pid, replica_id, desc, raw, storage, self.loop, self.kick, self.wake)
        rep.applied_term = meta.applied_term
        self.replicas[pid] = rep

    def _snapshot_provider(self, pid: int) -> Callable[[], Snapshot]:
        def provide() -> Snapshot:
            meta = self.state.meta(pid)
            assert meta is not None
            return Snapshot(SnapshotMeta(meta.applied_index, meta.applied_term, meta.conf_state))

        return provide

    # -- inbound --------------------------------------------------------------------

    def on_messages(self, from_store: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        """Step every message of a transport batch into its replica (called in order)."""
        if self.failed is not None:
            return
        self.last_seen[from_store] = self.loop.time()
        for pb in msgs:
            if pb.partition_id == 0:
                continue  # store-level heartbeat: liveness only
            rep = self.replicas.get(pb.partition_id)
            if rep is None:
                continue  # not hosted (yet): the sender retries; placement creates it
            if pb.dst != rep.replica_id:
                continue  # meant for an earlier replica of the partition on this store
            try:
                _, _, m = message_from_pb(pb)
            except ValueError as exc:  # a newer peer's message type: skip it, keep the stream
                log.warning("dropping undecodable message for partition %d: %s", pb.partition_id, exc)
                continue
            if m.type in (MessageType.APP, MessageType.HEARTBEAT):
                rep.leader_contact = self.loop.time()
                rep.leader_commit = max(rep.leader_commit, m.commit)
            try:
                rep.raw.step(m)
            except Exception as exc:
                log.exception("partition %d: stepping %s failed", rep.pid, m.type.name)
                self._fail(f"internal error stepping a Raft message: {exc!r}")
                return
        self.kick()

    async def on_snapshot(
        self, first: raft_pb2.RaftMessage, path: str, descriptor: meta_pb2.PartitionDescriptor | None = None
    ) -> tuple[bool, str]:
        rep = self.replicas.get(first.partition_id)
        if rep is None:
            return False, f"partition {first.partition_id} is not hosted here"
        if first.dst != rep.replica_id:
            return False, f"snapshot for replica {first.dst}, this store hosts replica {rep.replica_id}"
        if descriptor is not None and descriptor.id != rep.pid:
            return False, f"descriptor of partition {descriptor.id} sent with a snapshot of {rep.pid}"
        _, _, m = message_from_pb(first)
        fut = self.loop.create_future()
        self._staged_snapshots[rep.pid] = (path, fut, descriptor)
        rep.raw.step(m)
        pending = rep.raw.raft.log.unstable_snapshot
        if pending is None or pending.meta.index != m.snapshot.meta.index:
            self._staged_snapshots.pop(rep.pid, None)
            self.kick()
            return True, "not needed"
        self.kick()
        try:
            return await fut
        finally:
            self._staged_snapshots.pop(rep.pid, None)

    # -- time -----------------------------------------------------------------------

    def catch_up(self) -> None:
        """Deliver ticks the loop missed (call before trusting a lease).

        Idle (quiesced) replicas are not ticked: they count the ticks they
        skip and get them back as a clock jump when woken.  An idle leader
        goes quiet after an election timeout of idleness; an idle follower
        wakes when its leader's store falls silent (store-level heartbeats).
        """
        now = self.loop.time()
        tick = self.settings.tick_s
        n = int((now - self._last_tick) / tick)
        if n <= 0:
            return
        self._last_tick += n * tick
        # More than two election timeouts of ticks changes nothing further.
        n = min(n, 2 * self.settings.election_tick + 1)
        self._send_store_heartbeats()
        silent_after = self.settings.election_tick * tick
        for rep in self.replicas.values():
            raw = rep.raw
            if raw.quiesced:
                rep.quiet_ticks += n
                if not rep.is_leader():
                    leader = rep.leader_store()
                    seen = self.last_seen.get(leader, 0.0)
                    if leader == 0 or now - seen > silent_after:
                        self.wake(rep)  # the leader's store went silent: time it out normally
                continue
            for _ in range(n):
                raw.tick()
            if rep.want_add or rep.want_remove or (rep.is_leader() and raw.raft.trk.conf.learners):
                self.drive_membership(rep)
            if rep.is_leader() and not rep.queued and raw.raft.can_quiesce():
                rep.idle_ticks += n
                if rep.idle_ticks >= self.settings.election_tick and raw.quiesce():
                    rep.quiet_ticks = 0
            else:
                rep.idle_ticks = 0
        self.kick()

    def wake(self, rep: Replica) -> None:
        """Bring an idle replica back to ticking before it serves anything."""
        if rep.raw.quiesced:
            rep.raw.wake(rep.quiet_ticks)
        rep.quiet_ticks = 0
        rep.idle_ticks = 0
        self.kick()

    def _send_store_heartbeats(self) -> None:
        if self.failed is not None:
            # A failed node leads nothing any more: going silent is what makes the
            # followers of its idle (quiesced) groups wake up and elect a new leader.
            return
        peers = {r.store_id for rep in self.replicas.values() for r in rep.descriptor.replicas}
        peers.discard(self.store_id)
        for store in peers:
            self.transport.send(
                store,
                [raft_pb2.RaftMessage(partition_id=0, type=MessageType.HEARTBEAT, src=self.store_id, dst=store)],
            )

    async def _tick_loop(self) -> None:
        tick = self.settings.tick_s
        while True:
            delay = self._last_tick + tick - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.catch_up()

    # -- rounds ---------------------------------------------------------------------

    async def _round_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.failed is not None:
                continue
            try:
                await self._round()
            except (WalError, lmdb.Error) as exc:
                self._fail(f"write-ahead log failed: {exc}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("raft round failed")
                self._fail(f"internal error in a Raft round: {exc!r}")

    def _fail(self, why: str) -> None:
        """Fail-stop: stop acknowledging anything and go silent, so peers elect around us.

        A half-processed Ready (an exception between persisting and advancing) leaves the
        core's view and the disk's apart; carrying on could acknowledge what is not durable.
        """
        if self.failed is not None:
            return
        self.failed = NodeFailed(f"{why}; no longer acknowledging writes")
        log.error("%s", self.failed)
        for rep in self.replicas.values():
            rep.close()

    async def _round(self) -> None:
        self.rounds += 1
        if self._doomed:
            await self._destroy_doomed()
        for rep in self.replicas.values():
            rep.flush_proposals()
        work: list[tuple[Replica, Ready]] = []
        for rep in self.replicas.values():
            if rep.raw.has_ready():
                work.append((rep, rep.raw.ready()))
        if not work:
            return
        batch = WalBatch()
        late: list[tuple[Replica, list]] = []
        installs: list[tuple[Replica, Snapshot, str, asyncio.Future, meta_pb2.PartitionDescriptor | None]] = []
        for rep, rd in work:
            prev = rep.storage.initial_state()[0]
            early_ok = rep.raw.raft.role == Role.LEADER and (
                rd.hard_state is None or (rd.hard_state.term == prev.term and rd.hard_state.vote == prev.vote)
            )
            if early_ok:
                self._send(rep, rd.messages)
            else:
                late.append((rep, rd.messages))
            if rd.snapshot is not None:
                staged = self._staged_snapshots.get(rep.pid)
                if staged is None:
                    raise RuntimeError(f"partition {rep.pid}: snapshot to install but no data staged")
                installs.append((rep, rd.snapshot, staged[0], staged[1], staged[2]))
                batch.snapshot(rep.pid, rd.snapshot.meta)
            if rd.entries:
                batch.entries(rep.pid, rd.entries)
            hs = rd.hard_state
            if hs is not None:
                if rd.must_sync or hs.term != prev.term or hs.vote != prev.vote:
                    batch.hard_state(rep.pid, hs)
                    self._deferred_hs.pop(rep.pid, None)
                else:
                    # Only the commit index moved: not worth a write of its own (the
                    # applied state re-establishes it after a crash); it rides along
                    # with the next write that has to happen anyway.
                    self._deferred_hs[rep.pid] = hs
        must_sync = any(rd.must_sync for _, rd in work)
        if must_sync or self._pending_compactions:
            for pid, index in self._pending_compactions.items():
                batch.compact(pid, index)
            self._pending_compactions = {}
            for pid, hs in self._deferred_hs.items():
                batch.hard_state(pid, hs)
            self._deferred_hs = {}
        jobs = self._apply_jobs(work)

        def persisted() -> None:
            try:
                advance()
            except Exception as exc:
                log.exception("advancing the Raft state failed")
                self._fail(f"internal error advancing the Raft state: {exc!r}")

        def advance() -> None:
            # Followers answer as soon as their log is durable, not after applying.
            for rep, msgs in late:
                self._send(rep, msgs)
            # Advance now: a leader counts its own log for commit from here on,
            # while the state machine applies in the worker thread.  The next
            # round's entries are applied only after this round's, so order holds.
            # The core switched membership in advance(): the stores of new members must be
            # known before anything is sent to them.
            for job in jobs:
                if job.descriptor is not None:
                    job.rep.set_descriptor(job.descriptor)
            for rep, rd in work:
                for rs in rd.read_states:
                    rep.resolve_read(rs.context, rs.index)
                rep.raw.advance(rd)
                if rd.soft_state is not None:
                    rep.on_role_change(rd.soft_state.role)
                    if self.on_leader_change is not None and rd.soft_state.role == Role.LEADER:
                        self.on_leader_change(rep)

        def applied(results: list) -> None:  # type: ignore[type-arg]
            # Acknowledge writes as soon as their results are known: they are
            # committed (durable on a quorum); LMDB's own commit may still be
            # in flight, and reads wait for note_applied below, after it.
            for job, res in zip(jobs, results):
                for e, r in zip(job.entries, res):
                    job.rep.resolve_applied(e.index, e.term, r)

        # One worker-thread trip: install snapshots, persist, then apply.
        await self.loop.run_in_executor(
            self._io, self._persist_and_apply, installs, batch, must_sync, jobs, persisted, applied
        )
        for rep, snap, _, fut, desc in installs:
            log.info("installed snapshot of partition %d at index %d", rep.pid, snap.meta.index)
            if desc is not None:
                rep.set_descriptor(desc)
            rep.note_applied(snap.meta.index, snap.meta.term)
            if not fut.done():
                fut.set_result((True, ""))
        for job in jobs:
            job.rep.note_applied(job.entries[-1].index, job.entries[-1].term)
        for rep, _ in work:
            self._maybe_compact(rep)
        for job in jobs:
            if job.descriptor is not None and job.rep.replica_id not in job.conf_state.all_nodes():
                log.info("partition %d: replica %d left the group", job.rep.pid, job.rep.replica_id)
                await self._destroy(job.rep)
        if any(rep.raw.has_ready() or rep.queued for rep in self.replicas.values()):
            self.kick()

    def _persist_and_apply(self, installs, batch: WalBatch, must_sync: bool, jobs, persisted, applied) -> None:  # type: ignore[no-untyped-def]
        """Runs in a worker thread.  Order matters for crash safety:

        snapshot data into LMDB first (a WAL that lags LMDB is repaired on
        restart, the reverse would lose data), then the WAL (entries durable
        before anything acknowledges them), then the state machine.  The
        event loop is told at once when the WAL is durable (``persisted``)
        and when the results are known (``applied``, before LMDB's commit).
        """
        for rep, snap, path, _, desc in installs:
            meta = snap.meta
            self.state.install_snapshot(
                rep.pid,
                rep.start,
                rep.end,
                read_snapshot_file(path),
                PartitionMeta(meta.index, meta.term, meta.conf_state),
                desc.SerializeToString() if desc is not None else None,
            )
        if not batch.empty:
            self.wal.write(batch, sync=must_sync)
        self.loop.call_soon_threadsafe(persisted)
        if jobs:
            self.state.apply_many(
                [(job.rep.pid, job.entries, job.conf_state) for job in jobs],
                before_commit=lambda results: self.loop.call_soon_threadsafe(applied, results),
            )

    def _apply_jobs(self, work: list[tuple[Replica, Ready]]) -> list[_Apply]:
        jobs = []
        for rep, rd in work:
            if not rd.committed_entries:
                continue
            job = _Apply(rep, [], rep.raw.conf_state)
            for e in rd.committed_entries:
                if e.type != EntryType.CONF_CHANGE:
                    job.entries.append(ApplyEntry(e.index, e.term, Command.decode(e.data) if e.data else None))
                    continue
                # Mirror the core (which applies it in advance()), and derive the descriptor.
                cc = ConfChange.decode(e.data)
                try:
                    job.conf_state = apply_conf_change(job.conf_state, cc)
                except ConfChangeError:
                    job.entries.append(ApplyEntry(e.index, e.term, None))
                    continue
                try:
                    added = membership.decode_stores(cc.context)
                except ValueError as exc:
                    log.error("partition %d: entry %d: %s", rep.pid, e.index, exc)
                    added = {}
                job.descriptor = membership.descriptor_after(job.descriptor or rep.descriptor, job.conf_state, added)
                job.entries.append(ApplyEntry(e.index, e.term, None, job.descriptor.SerializeToString()))
            jobs.append(job)
        return jobs

    def _maybe_compact(self, rep: Replica) -> None:
        s = self.settings
        first = rep.storage.first_index()
        if rep.applied - first > s.compact_threshold:
            # LMDB commits are durable (sync=True), so the applied state
            # already covers everything up to rep.applied.
            self._pending_compactions[rep.pid] = rep.applied - s.compact_keep

    # -- outbound -------------------------------------------------------------------

    def _send(self, rep: Replica, msgs: list) -> None:
        if not msgs:
            return
        epoch = (rep.descriptor.epoch.conf_ver, rep.descriptor.epoch.version)
        by_store: dict[int, list[raft_pb2.RaftMessage]] = {}
        for m in msgs:
            if m.type == MessageType.SNAP:
                self._spawn(self._send_snapshot(rep, m))
                continue
            store = rep.store_of(m.dst)
            if store is None:
                continue
            by_store.setdefault(store, []).append(message_to_pb(rep.pid, epoch, m))
        for store, pbs in by_store.items():
            self.raft_msgs_sent += len(pbs)
            self.transport.send(store, pbs)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = self.loop.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _send_snapshot(self, rep: Replica, m) -> None:  # type: ignore[no-untyped-def]
        store = rep.store_of(m.dst)
        ok = False
        if store is not None:
            reader = self.state.open_snapshot(rep.pid, rep.start, rep.end)
            try:
                meta = reader.meta
                m.snapshot = Snapshot(SnapshotMeta(meta.applied_index, meta.applied_term, meta.conf_state))
                first = message_to_pb(rep.pid, (rep.descriptor.epoch.conf_ver, rep.descriptor.epoch.version), m)
                desc = meta_pb2.PartitionDescriptor.FromString(reader.descriptor) if reader.descriptor else None
                ok, reason = await self.transport.send_snapshot(
                    store, first, snapshot_stream(reader.chunks()), descriptor=desc
                )
                if ok:
                    log.info("sent snapshot of partition %d at index %d to store %d", rep.pid, meta.applied_index, store)
                else:
                    log.warning("snapshot of partition %d to store %d refused: %s", rep.pid, store, reason)
            except Exception as exc:  # transport failure: the core probes again later
                log.warning("snapshot of partition %d to store %s failed: %s", rep.pid, store, exc)
            finally:
                reader.close()
        rep.raw.report_snapshot(m.dst, ok)
        self.kick()
