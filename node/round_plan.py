"""A Raft round, decided: what every partition's Ready asks the node to write, send and apply.

The multi-raft loop (:mod:`node.raftstore`) runs in rounds.  Each round takes the Ready of
every replica that has one and turns all of them into ONE plan, computed here by a pure
function with no I/O, no event loop and no threads, so that a unit test can check every
decision (``tests/unit/test_round_plan.py``); :mod:`node.round_executor` then carries the plan
out.  The decisions:

* **Send**: a leader's appends and heartbeats may leave at once; everything else (votes,
  acknowledgements) only after the write is durable.  The core says which is which.
* **Write**: one WAL batch for all partitions: installed snapshots' marks, entries, hard
  states.  A hard state whose only change is the commit index is not worth a write of its
  own (the applied state re-establishes it after a crash): it is carried to the next round
  that writes anyway, as are compactions that became due after the last apply.
* **Apply**: one job per partition with committed entries, decoded, in log order.  A conf
  change's resulting membership comes from the core (:class:`~node.raft.ConfChangeResult`);
  from it and the stores named in the change's context the partition's next descriptor is
  derived here, in log order, and stored in the same LMDB transaction as the entry.
* **Split**: a split entry (docs/decisions.md D21) shrinks the partition's descriptor and
  names the new partition to create beside it, if its expected epoch still holds; a write
  entry after it whose keys the split moved out of the range is applied as nothing (its
  client retries against the new partition).  Every replica decides both from the entry and
  the descriptor in force at its index, so all decide alike.
* **Leave**: a replica that applies its own removal is to be destroyed after the round.

Why a round is planned as data: docs/decisions.md D9; the decisions themselves: D5 (carried
hard states), D6 (early sends), D11 (descriptors from conf changes).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from common.keyspace import MAX_SPLIT_KEY_BYTES, strictly_inside
from node import membership
from node.raft import ConfState, EntryType, HardState, Message, Ready, SnapshotMeta
from node.state.commands import SplitCommand, decode_entry
from node.state.store import ApplyEntry, SplitApply
from node.wal.batch import WalBatch

log = logging.getLogger("tessera.round")

_PAGE = 4096  # LMDB's page


class PlanError(RuntimeError):
    """The Readies cannot be carried out (e.g. a snapshot to install but no data received)."""


@dataclass(frozen=True, slots=True)
class StagedSnapshot:
    """A snapshot's data, received from the leader and spooled to ``path``, waiting for the core."""

    path: str
    descriptor: Descriptor | None


@dataclass(frozen=True, slots=True)
class Carried:
    """What a partition carries from round to round until some round writes to the WAL."""

    hard_state: HardState | None = None  # commit index moved; not yet written
    compact_to: int | None = None  # entries up to here are applied and may be dropped


NOTHING_CARRIED = Carried()


@dataclass(frozen=True, slots=True)
class PartitionWork:
    """One partition's input to a round: its Ready and what the planner must know beside it."""

    pid: int
    replica_id: int
    ready: Ready
    descriptor: Descriptor  # in force before this Ready's conf changes
    conf_state: ConfState  # likewise
    staged: StagedSnapshot | None = None


@dataclass(frozen=True, slots=True)
class SnapshotInstall:
    pid: int
    meta: SnapshotMeta
    path: str
    descriptor: Descriptor | None


@dataclass(frozen=True, slots=True)
class ApplyJob:
    """One partition's share of the round's apply transaction."""

    pid: int
    entries: tuple[ApplyEntry, ...]
    conf_state: ConfState  # after this job's conf changes
    descriptor: Descriptor | None  # after them and its splits; None: unchanged
    splits: tuple[SplitApply, ...] = ()  # partitions this job's split entries create
    # Every entry was in the log before this round (none is among the Ready's own entries, and
    # no snapshot comes with them): they may be applied before the round's WAL write (D31).
    on_disk: bool = False
    # What applying it may add to LMDB, roughly: the entries' bytes and a page each (a write
    # to a random key dirties a leaf of its own). Bounds what an open transaction holds (D27).
    nbytes: int = 0

    @property
    def last(self) -> ApplyEntry:
        return self.entries[-1]


@dataclass(frozen=True, slots=True)
class RoundPlan:
    readies: tuple[tuple[int, Ready], ...]  # to advance once persisted, in this order
    send_now: tuple[tuple[int, tuple[Message, ...]], ...]
    send_after_persist: tuple[tuple[int, tuple[Message, ...]], ...]
    installs: tuple[SnapshotInstall, ...]
    wal: WalBatch
    sync: bool  # fsync the WAL write (anything but carried commit indexes and compactions)
    applies: tuple[ApplyJob, ...]
    leaving: tuple[int, ...]  # partitions whose replica applies its own removal
    # What each partition in ``carried`` (the planner's input) or with new carried state
    # carries to the next round; a partition absent here keeps carrying nothing.
    carry: Mapping[int, Carried]
    splits: tuple[tuple[int, SplitApply], ...] = ()  # (parent, new partition) to open after the round


def plan_round(works: Sequence[PartitionWork], carried: Mapping[int, Carried]) -> RoundPlan:
    """Decide a whole round.  ``carried`` holds what any partition, with or without work this
    round, carries (partitions that carry nothing may be left out).  Raises
    :class:`PlanError` when a Ready cannot be met."""
    batch = WalBatch()
    deferred = {pid: c.hard_state for pid, c in carried.items() if c.hard_state is not None}
    compactions = {pid: c.compact_to for pid, c in carried.items() if c.compact_to is not None}
    send_now, send_later, installs, applies, leaving = [], [], [], [], []
    splits: list[tuple[int, SplitApply]] = []
    for w in works:
        rd = w.ready
        if rd.messages_before_persist:
            send_now.append((w.pid, rd.messages_before_persist))
        if rd.messages_after_persist:
            send_later.append((w.pid, rd.messages_after_persist))
        if rd.snapshot is not None:
            if w.staged is None:
                raise PlanError(f"partition {w.pid}: snapshot to install but no data staged")
            installs.append(SnapshotInstall(w.pid, rd.snapshot.meta, w.staged.path, w.staged.descriptor))
            batch.snapshot(w.pid, rd.snapshot.meta)
        if rd.entries:
            batch.entries(w.pid, rd.entries)
        if rd.hard_state is not None:
            if rd.must_sync:
                batch.hard_state(w.pid, rd.hard_state)
                deferred.pop(w.pid, None)
            else:
                deferred[w.pid] = rd.hard_state
        job = _apply_job(w)
        if job is not None:
            applies.append(job)
            splits.extend((w.pid, sp) for sp in job.splits)
            if job.descriptor is not None and w.replica_id not in job.conf_state.all_nodes():
                leaving.append(w.pid)
    sync = any(w.ready.must_sync for w in works)
    if sync or compactions:
        for pid, index in compactions.items():
            batch.compact(pid, index)
        for pid, hs in deferred.items():
            batch.hard_state(pid, hs)
        deferred, compactions = {}, {}
    carry = dict.fromkeys(carried, NOTHING_CARRIED)
    for pid in deferred.keys() | compactions.keys():
        carry[pid] = Carried(deferred.get(pid), compactions.get(pid))
    return RoundPlan(
        readies=tuple((w.pid, w.ready) for w in works),
        send_now=tuple(send_now),
        send_after_persist=tuple(send_later),
        installs=tuple(installs),
        wal=batch,
        sync=sync,
        applies=tuple(applies),
        leaving=tuple(leaving),
        carry=carry,
        splits=tuple(splits),
    )


def split_outcome(
    desc: Descriptor, conf_state: ConfState, cmd: SplitCommand, replica_id: int
) -> tuple[Descriptor, SplitApply] | str:
    """What applying ``cmd`` to a partition at ``desc`` does: the shrunk descriptor and the new
    partition (for our replica ``replica_id``), or why it changes nothing."""
    if (desc.epoch.conf_ver, desc.epoch.version) != (cmd.expected_conf_ver, cmd.expected_version):
        return (
            f"epoch is ({desc.epoch.conf_ver}, {desc.epoch.version}), the split expected "
            f"({cmd.expected_conf_ver}, {cmd.expected_version})"
        )
    key = cmd.split_key
    if len(key) > MAX_SPLIT_KEY_BYTES or not strictly_inside(desc.start, desc.end, key):
        return f"split key {key[:40]!r} is not a boundary inside [{desc.start!r}, {desc.end!r})"
    if conf_state.voters_outgoing or conf_state.learners or any(r.role != Role.VOTER for r in desc.replicas):
        return "a membership change is under way"
    ids = dict(cmd.new_replicas)
    if any(r.store_id not in ids for r in desc.replicas) or len(set(ids.values())) != len(ids):
        return "the split names no new replica for some store"
    epoch = Epoch(desc.epoch.conf_ver, desc.epoch.version + 1)
    left = dataclasses.replace(desc, end=key, epoch=epoch)
    child = Descriptor(
        id=cmd.new_partition_id,
        start=key,
        end=desc.end,
        epoch=epoch,
        replicas=tuple(ReplicaDesc(r.store_id, ids[r.store_id], Role.VOTER) for r in desc.replicas),
    )
    mine = desc.replica_by_id(replica_id)
    child_rid = ids.get(mine.store_id, 0) if mine is not None else 0
    cs = ConfState(voters=frozenset(r.replica_id for r in child.replicas))
    return left, SplitApply(cmd, child, child_rid, cs)


def _apply_job(w: PartitionWork) -> ApplyJob | None:
    rd = w.ready
    if not rd.committed_entries:
        return None
    conf_state = w.conf_state
    descriptor: Descriptor | None = None
    base = w.descriptor
    if rd.snapshot is not None and w.staged is not None and w.staged.descriptor is not None:
        base = w.staged.descriptor  # the entries after the snapshot see its range
    results = {c.index: c for c in rd.conf_changes}
    entries = []
    splits = []
    for e in rd.committed_entries:
        if e.type != EntryType.CONF_CHANGE:
            if not e.data:
                entries.append(ApplyEntry(e.index, e.term, None))
                continue
            cmd = decode_entry(e.data)
            current = descriptor or base
            if isinstance(cmd, SplitCommand):
                outcome = split_outcome(current, conf_state, cmd, w.replica_id)
                if isinstance(outcome, str):
                    log.info("partition %d: split at entry %d changes nothing: %s", w.pid, e.index, outcome,
                             extra={"partition": w.pid})
                    entries.append(ApplyEntry(e.index, e.term, None))
                    continue
                descriptor, sp = outcome
                splits.append(sp)
                entries.append(ApplyEntry(e.index, e.term, None, descriptor, split=sp))
                continue
            rejected = any(not current.contains(op.key) for op in cmd.ops)
            entries.append(ApplyEntry(e.index, e.term, None if rejected else cmd, rejected=rejected))
            continue
        result = results[e.index]
        if result.conf_state is None:  # rejected the same way by every replica
            entries.append(ApplyEntry(e.index, e.term, None))
            continue
        conf_state = result.conf_state
        try:
            added = membership.decode_stores(result.change.context)
        except ValueError as exc:
            log.error("partition %d: entry %d: %s", w.pid, e.index, exc, extra={"partition": w.pid})
            added = {}
        descriptor = membership.descriptor_after(descriptor or w.descriptor, conf_state, added)
        entries.append(ApplyEntry(e.index, e.term, None, descriptor))
    last = rd.committed_entries[-1].index
    on_disk = rd.snapshot is None and (not rd.entries or rd.entries[0].index > last)
    nbytes = sum(len(e.data) for e in rd.committed_entries) + _PAGE * len(entries)
    return ApplyJob(w.pid, tuple(entries), conf_state, descriptor, tuple(splits), on_disk, nbytes)


def compaction_point(applied: int, first_index: int, threshold: int, keep: int) -> int | None:
    """Where to compact a log once ``applied`` moved: keep ``keep`` applied entries for slow
    followers, and only bother once more than ``threshold`` have piled up."""
    if applied - first_index > threshold:
        return applied - keep
    return None
