"""The multi-raft loop of one node: its replicas, their inputs, and the rounds that serve them.

One round serves every replica that has work, so costs are paid per round, not per
partition or per request: each replica's queued proposals become one batch, every Ready is
taken, :func:`node.round_plan.plan_round` decides the whole round (ONE WAL write with ONE
fsync and ONE LMDB transaction for all partitions), and
:class:`node.round_executor.RoundExecutor` carries it out in a worker thread while requests
and Raft messages keep flowing.  Rounds run one at a time; they own the replicas' storage,
so creating and deleting a replica happens between rounds.

The pieces around it: :mod:`node.replica_set` (the replicas hosted and their life on disk),
:mod:`node.replica` (what each partition keeps), :mod:`node.ticker` (time and idle groups),
:mod:`node.outbox` (what leaves), :mod:`node.membership` (what a conf change means for the
descriptor).

See docs/architecture.md ("Rounds: plan, then act") and docs/decisions.md D9, D14 (fail-stop).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

import lmdb

from common.descriptor import Descriptor
from common.trace import mark
from node.admission import Admission
from node.answer_flush import AnswerFlush
from node.disk_full import DiskFull, DiskStatus, RetryClock, hold, needs_disk
from node.fs import OS_FILES, Files
from node.io_thread import IoThread
from node.outbox import Outbox, Transport
from node.raft import Config, MessageType, Ready
from node.raft_codec import message_from_pb
from node.replica import Replica
from node.replica_set import ReplicaSet
from node.round_executor import RoundExecutor
from node.round_plan import NOTHING_CARRIED, Carried, PartitionWork, RoundPlan, StagedSnapshot, plan_round
from node.settings import RaftSettings
from node.state.store import SplitApply, StateStore
from node.ticker import Ticker
from node.wal.errors import WalError
from node.wal.wal import WriteAheadLog
from tesserapb import raft_pb2

log = logging.getLogger("tessera.raftstore")

# Messages for a partition this store does not host yet are kept this long, this many per
# partition, for this many partitions: enough for the vote requests of a split's new partition.
HELD_S = 2.0
HELD_MESSAGES = 16
HELD_PARTITIONS = 256


class NodeFailed(Exception):
    """The WAL failed (an fsync or I/O error; a full disk is not this, see node.disk_full): this
    node no longer acknowledges writes."""


class RaftStore:
    def __init__(
        self,
        store_id: int,
        wal: WriteAheadLog,
        state: StateStore,
        transport: Transport,
        settings: RaftSettings = RaftSettings(),
        *,
        on_leader_change: Callable[[Replica], None] | None = None,
        on_descriptor_change: Callable[[Replica], None] | None = None,
        raft_mutation: str | None = None,
        files: Files = OS_FILES,
        admission: Admission | None = None,
    ) -> None:
        self.store_id = store_id
        self.wal = wal
        self.state = state
        self.settings = settings
        self.failed: NodeFailed | None = None
        self.on_fail: Callable[[NodeFailed], None] | None = None  # told once, when the node fails stop
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # One dedicated I/O thread: rounds are sequential anyway (node.io_thread says why not
        # an executor).
        self._io = IoThread(self.loop, "raft-io")
        self.replicas = ReplicaSet(
            self.loop,
            self._io,
            wal,
            state,
            self._config_for,
            kick=self.kick,
            wake=self.wake,
            apply_wanted=self._apply_wanted,
            raft_mutation=raft_mutation,
        )
        self.admission = admission or Admission()  # the node's bounds (node.admission)
        self.outbox = Outbox(store_id, transport, state, self.kick, admission=self.admission)
        self.ticker = Ticker(
            self.loop,
            self.replicas,
            self.outbox,
            store_id=store_id,
            tick_s=settings.tick_s,
            election_tick=settings.election_tick,
            kick=self.kick,
            failed=lambda: self.failed is not None,
        )
        def descriptor_changed(rep: Replica) -> None:
            self.ticker.descriptors_changed()  # the peer stores to heartbeat may have changed
            if on_descriptor_change is not None:
                on_descriptor_change(rep)

        self.answers = AnswerFlush(self.loop)  # client connections' answer writes (node.kv_wire)
        # A full disk (node.disk_full): the state health and metrics read, when to try again,
        # and a round whose LMDB apply found no room (advanced, to be applied first).
        self.disk = DiskStatus()
        self.executor = RoundExecutor(
            self.loop,
            self._io,
            wal,
            state,
            self.outbox,
            self.answers,
            compact_threshold=settings.compact_threshold,
            compact_keep=settings.compact_keep,
            on_leader=on_leader_change,
            on_descriptor=descriptor_changed,
            fail=self._fail,
            files=files,
            hold_budget=self.disk.hold_budget,
        )
        self.executor.on_lost_applies = self._applies_lost
        self.rounds = 0
        self._disk_retry = RetryClock()
        self._disk_kick_at = 0.0  # loop time of the round kick scheduled for the next retry
        # Rounds whose LMDB apply found no room, oldest first: advanced, to be applied first.
        self._pending_applies: list[tuple[RoundPlan, dict[int, Replica]]] = []
        self._disk_failing = False  # the last write found no room (rounds hold until a retry)
        # Messages for partitions not hosted here, kept a moment (see _hold_for_split).
        self._held: dict[int, list[tuple[float, int, raft_pb2.RaftMessage]]] = {}

    # -- lifecycle ----------------------------------------------------------------

    def _config_for(self, replica_id: int, applied: int) -> Config:
        s = self.settings
        return Config(
            id=replica_id,
            election_tick=s.election_tick,
            heartbeat_tick=s.heartbeat_tick,
            applied=applied,
            max_inflight_msgs=s.max_inflight_msgs,
            max_size_per_msg=s.max_size_per_msg,
        )

    async def start(self) -> None:
        await self.replicas.open_all()
        self.ticker.restart_clock()
        self._tasks = [
            asyncio.create_task(self.ticker.run(), name="raft-ticks"),
            asyncio.create_task(self._round_loop(), name="raft-rounds"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.outbox.close()
        await self.executor.commit_all()  # applies held in LMDB's open transaction (D27): a clean stop keeps them
        self.replicas.close_all()
        self._io.shutdown()

    def kick(self) -> None:
        """There is work for a round."""
        self._wake.set()

    def _apply_wanted(self) -> None:
        """A read waits for an apply: commit what LMDB's open transaction holds now (D27)."""
        self.executor.commit_now()

    # -- time (see node.ticker) -----------------------------------------------------

    def catch_up(self) -> None:
        """Deliver the ticks the loop missed (call before trusting a lease)."""
        self.ticker.catch_up()

    def wake(self, rep: Replica) -> None:
        self.ticker.wake(rep)

    # -- replicas (see node.replica_set) ---------------------------------------------

    async def create_replica(self, desc: Descriptor, replica_id: int, bootstrap: bool) -> bool:
        """Host a replica of ``desc`` (idempotent); True if it was created now."""
        return await self.replicas.create(desc, replica_id, bootstrap)

    async def destroy_replica(self, pid: int, replica_id: int) -> bool:
        """Delete our replica ``replica_id`` of ``pid`` (it left the group).  False if not hosted."""
        rep = self.replicas.get(pid)
        if rep is None or rep.replica_id != replica_id:
            return False
        await asyncio.shield(rep.doom())
        return True

    def destroy_if_removed(self, desc: Descriptor, replica_id: int) -> bool:
        """Placement says ``desc`` (committed by the group) no longer has our ``replica_id``.

        Trust it only if our own descriptor is older and the replica really is not in it;
        then delete the replica at the next round.  True if a deletion was scheduled.
        """
        rep = self.replicas.get(desc.id)
        if rep is None or rep.replica_id != replica_id:
            return False
        if desc.replica_by_id(replica_id) is not None:
            return False
        if rep.descriptor.epoch.conf_ver >= desc.epoch.conf_ver:
            return False
        log.info("partition %d: replica %d was removed from the group, deleting it", desc.id, replica_id,
                 extra={"partition": desc.id})
        rep.doom()
        return True

    # -- membership changes (leader side) ------------------------------------------------

    def request_add(self, pid: int, replica_id: int, store_id: int) -> None:
        """Placement asks this leader to add a replica: as a learner, promoted once caught up."""
        rep = self.replicas.get(pid)
        if rep is not None and rep.is_leader():
            # One replica per store: a newer request for the store (placement re-decided after
            # an earlier one expired) replaces the older one.
            rep.want_add = {rid: s for rid, s in rep.want_add.items() if s != store_id}
            rep.want_add[replica_id] = store_id
            self._drive_membership(rep)

    def request_remove(self, pid: int, replica_id: int) -> None:
        rep = self.replicas.get(pid)
        if rep is not None and rep.is_leader():
            rep.want_remove.add(replica_id)
            self._drive_membership(rep)

    def _drive_membership(self, rep: Replica) -> None:
        done = rep.drive_membership()
        if done is not None:
            log.info("partition %d: %s", rep.pid, done, extra={"partition": rep.pid})

    # -- inbound --------------------------------------------------------------------

    def on_messages(self, from_store: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        """Step every message of a transport batch into its replica (called in order)."""
        if self.failed is not None:
            return
        self.ticker.heard_from(from_store)
        stepped = False
        for pb in msgs:
            if pb.partition_id == 0:
                continue  # store-level heartbeat: liveness only (no round: D26)
            rep = self.replicas.get(pb.partition_id)
            if rep is None:
                # Not hosted (yet): the sender retries; placement creates it.  A split's new
                # partition may be asked for its vote before this store applied the split:
                # kept a moment, such messages are stepped once it opens.
                self._hold_for_split(from_store, pb)
                continue
            if pb.dst != rep.replica_id:
                continue  # meant for an earlier replica of the partition on this store
            try:
                _, _, m = message_from_pb(pb)
            except ValueError as exc:  # a newer peer's message type: skip it, keep the stream
                log.warning("dropping undecodable message for partition %d: %s", pb.partition_id, exc,
                            extra={"partition": pb.partition_id})
                continue
            if m.type in (MessageType.APP, MessageType.HEARTBEAT):
                rep.leader_contact = self.loop.time()
                rep.leader_commit = max(rep.leader_commit, m.commit)
                if self._disk_failing and m.entries:
                    # node.disk_full: they could not be persisted, and kept in memory they would
                    # pile up for as long as the disk stays full; lost, the leader sends them again.
                    continue
            elif m.type in (MessageType.PRE_VOTE, MessageType.VOTE) and rep.raw.quiesced:
                # A peer campaigns: its leader (maybe restarted faster than an election
                # timeout, so its store never fell silent) is gone.  An idle follower ignores
                # candidates while it thinks its leader leads, and it does not tick: wake it,
                # so it times its leader out and the group can elect again (D8).
                self.ticker.wake(rep)
            was_quiet = rep.raw.quiesced
            try:
                rep.raw.step(m)
            except Exception as exc:
                log.exception("partition %d: stepping %s failed", rep.pid, m.type.name, extra={"partition": rep.pid})
                self._fail(f"internal error stepping a Raft message: {exc!r}")
                return
            self.ticker.stepped(rep, was_quiet)
            stepped = True
        if stepped:
            self.kick()

    def snapshot_refusal(self, first: raft_pb2.RaftMessage) -> str | None:
        """Why a snapshot that starts with ``first`` cannot be installed here (None: it may be).
        Asked again when the image has arrived, and at its first chunk, so an image no replica
        here could take is refused before any of it is spooled to disk."""
        rep = self.replicas.get(first.partition_id)
        if rep is None:
            return f"partition {first.partition_id} is not hosted here"
        if first.dst != rep.replica_id:
            return f"snapshot for replica {first.dst}, this store hosts replica {rep.replica_id}"
        return None

    async def on_snapshot(
        self, first: raft_pb2.RaftMessage, path: str, descriptor: Descriptor | None = None
    ) -> tuple[bool, str]:
        """A verified snapshot image arrived: step its message and, if the core takes it, wait
        for the round that installs it."""
        why = self.snapshot_refusal(first)
        if why is not None:
            return False, why
        rep = self.replicas[first.partition_id]
        if descriptor is not None and descriptor.id != rep.pid:
            return False, f"descriptor of partition {descriptor.id} sent with a snapshot of {rep.pid}"
        _, _, m = message_from_pb(first)
        done = rep.stage_snapshot(StagedSnapshot(path, descriptor))
        was_quiet = rep.raw.quiesced
        rep.raw.step(m)
        self.ticker.stepped(rep, was_quiet)
        pending = rep.raw.pending_snapshot
        self.kick()
        if pending is None or m.snapshot is None or pending.index != m.snapshot.meta.index:
            rep.finish_snapshot(True, "not needed")
        try:
            return await done
        finally:
            rep.finish_snapshot(False, "the sender went away")  # no-op once installed

    # -- splits (docs/decisions.md D21) ------------------------------------------------

    def _hold_for_split(self, from_store: int, pb: raft_pb2.RaftMessage) -> None:
        now = self.loop.time()
        held = self._held.get(pb.partition_id)
        if held is None:
            if len(self._held) >= HELD_PARTITIONS:
                self._held = {pid: h for pid, h in self._held.items() if now - h[-1][0] < HELD_S}
                if len(self._held) >= HELD_PARTITIONS:
                    return
            held = self._held[pb.partition_id] = []
        if len(held) < HELD_MESSAGES:
            held.append((now, from_store, pb))

    async def _open_split_child(self, parent_pid: int, sp: SplitApply) -> None:
        """The round applied a split: serve the new partition it wrote beside its parent.

        The replica on the parent leader's store campaigns at once (its peers apply the same
        entry within a round trip), so the new partition has a leader in about one round
        trip rather than an election timeout.
        """
        child = sp.child
        log.info("partition %d split at %r: partition %d takes [%r, %r)", parent_pid, child.start, child.id,
                 child.start, child.end, extra={"partition": parent_pid})
        if not sp.replica_id or child.id in self.replicas:
            return
        await self.replicas.open_split_child(child.id)
        rep = self.replicas.get(child.id)
        parent = self.replicas.get(parent_pid)
        if rep is None:
            return
        if self.executor.on_descriptor is not None:
            self.executor.on_descriptor(rep)
        now = self.loop.time()
        held = [(store, pb) for t, store, pb in self._held.pop(child.id, []) if now - t < HELD_S]
        for store, pb in held:
            self.on_messages(store, [pb])
        self.ticker.touch(rep)
        if parent is not None and parent.is_leader():
            try:
                rep.raw.campaign()
            except Exception as exc:  # a campaign refused is no harm: the election timeout follows
                log.info("partition %d: campaign after split refused: %s", child.id, exc, extra={"partition": child.id})
        self.kick()

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
        self.replicas.close_all()
        if self.on_fail is not None:
            self.on_fail(self.failed)

    async def _round(self) -> None:
        mark("round.start")
        self.rounds += 1
        # While the disk is full (node.disk_full) only a retry round, once a second, writes.
        held_back = self.disk.full and not await self._disk_retry_due()
        if not held_back:
            for rep in [r for r in self.replicas.values() if r.doomed is not None]:
                await self.replicas.destroy(rep)
        # Only the replicas that can have work: the awake ones and those touched since the
        # last round. A quiet replica nobody touched has no Ready (node.ticker; D26).
        candidates = self.ticker.take_candidates()
        works: list[PartitionWork] = []
        for rep in candidates:
            work = rep.take_work()
            if work is not None:
                works.append(work)
        if held_back:
            works = self._hold_disk_work(works)
            going = {w.pid for w in works}
            candidates = [rep for rep in candidates if rep.pid in going]  # the held wait for the retry
        if not works:
            if self.disk.full and not held_back:
                self._disk_writes()  # the retry found nothing left to write
            return
        carried = {pid: rep.carried for pid, rep in self.replicas.items()
                   if rep.carried is not NOTHING_CARRIED and self._carry_is_live(rep)}
        if held_back:  # no compaction record either: nothing is written until the retry
            plan = plan_round(works, {pid: Carried(c.hard_state) for pid, c in carried.items() if c.hard_state})
            old = carried.get
            keep = {pid: Carried(c.hard_state, old(pid, NOTHING_CARRIED).compact_to) for pid, c in plan.carry.items()}
            plan = dataclasses.replace(plan, carry=keep)
        else:
            plan = plan_round(works, carried)
        self.replicas.splitting.update(sp.child.id for _, sp in plan.splits)
        try:
            await self.executor.execute(plan, self.replicas)
        except DiskFull as exc:
            self._disk_full(exc, plan, carried)
            return
        if self.disk.full and not held_back:
            self._disk_writes()
        await self._after_round(plan, candidates)

    @staticmethod
    def _carry_is_live(rep: Replica) -> bool:
        """Drop from what ``rep`` carries a compaction the log has already made (and say if
        anything is left). One can be scheduled twice: a commit of the disk thread notes its
        rounds' applies (and schedules compactions) on the loop while a later round's trip,
        which writes the first one, is still in the thread (D27)."""
        c = rep.carried
        if c.compact_to is not None and c.compact_to < rep.storage.first_index():
            rep.carried = c = Carried(c.hard_state) if c.hard_state is not None else NOTHING_CARRIED
        return c is not NOTHING_CARRIED

    async def _after_round(self, plan: RoundPlan, candidates: list[Replica]) -> None:
        """What a round does once its applies are done: replicas leave, splits open."""
        for pid in plan.leaving:
            rep = self.replicas[pid]
            log.info("partition %d: replica %d left the group", pid, rep.replica_id, extra={"partition": pid})
            await self.replicas.destroy(rep)
        for parent_pid, sp in plan.splits:
            try:
                await self._open_split_child(parent_pid, sp)
            finally:
                self.replicas.splitting.discard(sp.child.id)
        again = False
        for rep in candidates:
            if not rep.closed and rep.has_work():
                self.ticker.touch(rep)
                again = True
        if again:
            self.kick()

    # -- a full disk (node.disk_full, docs/limits.md) ------------------------------------

    async def _disk_retry_due(self) -> bool:
        """While the disk is full, whether this round may write. Between retries (once a
        second) a round writes nothing while writes are failing; a retry first applies a round
        whose LMDB apply found no room (in order: nothing later is applied before it). Once
        writes succeed again, rounds write as usual, and the episode ends (proposals are taken
        again) when the file system has room for the reserve and as much again."""
        now = self.loop.time()
        due = self._disk_retry.due(now)
        if due:
            self._disk_retry.tried(now)
            self.disk.retries += 1
        self._kick_at_retry()
        if not self._disk_failing:
            if due and self.disk.room_to_resume():
                self.disk.set_ok()
            return True
        if not due:
            return False
        while self._pending_applies:
            plan, reps = self._pending_applies[0]
            try:
                await self.executor.retry_applies(plan, reps)
            except DiskFull as exc:
                self.disk.set_full(str(exc))
                return False
            self._pending_applies.pop(0)
            await self._after_round(plan, [])
        return True

    def _disk_writes(self) -> None:
        """A round wrote while the disk was full: writes succeed again."""
        if self._disk_failing:
            self._disk_failing = False
            log.warning("disk: writes succeed again; new writes wait for room to resume")
        if self.disk.room_to_resume():
            self.disk.set_ok()

    def _hold_disk_work(self, works: list[PartitionWork]) -> list[PartitionWork]:
        """Between retries: the works that need no disk go ahead; the others are held (early
        messages sent, read states served, late messages dropped, not advanced)."""
        go: list[PartitionWork] = []
        held: list[PartitionWork] = []
        for w in works:
            (held if needs_disk(w.ready) else go).append(w)
        if held:
            for w in held:
                rep = self.replicas[w.pid]
                if w.ready.messages_before_persist:
                    self.outbox.send(rep, w.ready.messages_before_persist)
            self._held_back([(w.pid, w.ready) for w in held])
        return go

    def _held_back(self, readies: Sequence[tuple[int, Ready]]) -> None:
        def resolve_read(pid: int, ctx: bytes, index: int) -> None:
            self.replicas[pid].resolve_read(ctx, index)

        for pid, msgs in hold(readies, resolve_read):
            self.outbox.send(self.replicas[pid], msgs)
        self.outbox.flush()
        for pid, _ in readies:
            rep = self.replicas.get(pid)
            if rep is not None:
                self.ticker.touch(rep)  # offered again at the next round (or the retry)
        self._kick_at_retry()

    def _disk_full(self, exc: DiskFull, plan: RoundPlan, carried: dict[int, Carried]) -> None:
        """A round's disk trip found the disk full (node.disk_full says what each case means)."""
        if exc.persisted:  # the splits open once their entries are applied
            self._pending_applies.append((plan, {pid: self.replicas[pid] for pid, _ in plan.readies}))
        else:
            self.replicas.splitting.difference_update(sp.child.id for _, sp in plan.splits)
            for pid in plan.carry:  # the carried records were not written: carry them on
                rep = self.replicas.get(pid)
                if rep is not None:
                    rep.carried = carried.get(pid, NOTHING_CARRIED)
            self._held_back(plan.readies)
        self._found_full(str(exc))

    def _applies_lost(self, kept: list[tuple[RoundPlan, dict[int, Replica]]], why: str) -> None:
        """LMDB found the disk full while committing the applies of rounds that had answered
        their writes already (D27): they are applied again first, in order, as a round's
        apply that found no room is."""
        self._pending_applies.extend(kept)
        self._found_full(why)

    def _found_full(self, why: str) -> None:
        """A write found no room. The first of an episode gives the reserve back, and the retry
        comes at once, so that what is in flight lands in that room before anything else (the
        next round's proposals, another node on the same file system) takes it; after that, once
        a second. A retry already due is not put off (an open transaction's loss and the round
        that met it report the same episode)."""
        now = self.loop.time()
        began = self.disk.set_full(why)
        if began or not self._disk_retry.due(now):
            self._disk_retry.tried(now, again_now=began)
        self._disk_failing = True
        self._kick_at_retry()

    def _kick_at_retry(self) -> None:
        """One round at the next retry time, work or not (one timer per retry time, kept here:
        uvloop's call_at answers a plain Handle, without ``when()``, for a time passed)."""
        at = self._disk_retry.next_at
        if self._disk_kick_at < at:
            self._disk_kick_at = at
            # A little after: a loop whose clock ticks in milliseconds (uvloop) may run a timer
            # a hair before the time asked, and the round would find the retry not yet due.
            self.loop.call_at(at + 0.005, self.kick)
