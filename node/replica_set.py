"""The replicas a node hosts, and their life on disk: bootstrap, join, reopen, delete.

A replica is two things on disk: its applied state and descriptor in LMDB, and its log in
the WAL.  Every change here writes LMDB first, because the LMDB descriptor is what says "this
store hosts the partition" after a restart: a WAL that lags LMDB is repaired on open (the
applied state already holds everything before it), while a WAL without an LMDB descriptor
is ignored and cleared when the partition comes back.

Deleting happens between Raft rounds (rounds own the replicas' storage), on the same I/O
thread, so :meth:`ReplicaSet.doom` only marks a replica and the round loop calls
:meth:`ReplicaSet.destroy`.

See docs/decisions.md D3 (LMDB beside the WAL) and D5 (the commit index repaired on open).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import TypeVar, overload

from common.descriptor import Descriptor
from node.io_thread import IoThread
from node.membership import conf_state_of
from node.raft import Config, ConfState, HardState, RawNode, Snapshot, SnapshotMeta
from node.replica import Replica, ReplicaStorage
from node.state.store import StateStore
from node.wal.batch import WalBatch
from node.wal.wal import WriteAheadLog

log = logging.getLogger("tessera.replicas")

T = TypeVar("T")

BOOTSTRAP_INDEX = 5
BOOTSTRAP_TERM = 5


class ReplicaSet(Mapping[int, Replica]):
    """Partition id -> the replica hosted here (a read-only mapping; changes go through methods)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        io: IoThread,
        wal: WriteAheadLog,
        state: StateStore,
        config_for: Callable[[int, int], Config],
        *,
        kick: Callable[[], None],
        wake: Callable[[Replica], None],
        apply_wanted: Callable[[], None],
        raft_mutation: str | None,
    ) -> None:
        self.loop = loop
        self._io = io
        self.wal = wal
        self.state = state
        # (replica id, applied index) -> the core's Config for a replica opened here.
        self._config_for = config_for
        self._kick = kick
        self._wake = wake
        self._apply_wanted = apply_wanted  # commits applies held in LMDB's open transaction (D27)
        # Only the test suite (tessera nemesis --raft-mutation) runs a known-buggy core.
        self.raft_mutation = raft_mutation
        self._replicas: dict[int, Replica] = {}
        # Changes whenever a replica is opened or deleted (node.ticker resyncs on it).
        self.generation = 0
        # New partitions of splits a round is applying, until they are open (node.raftstore).
        self.splitting: set[int] = set()

    # The mapping's reads go straight to the dict's own (C) methods: the Mapping ABC's generic
    # keys/values/items/get, built on __iter__ and __getitem__ in Python, cost about 150 us
    # per write (profiled), since every round walks every replica.
    def __getitem__(self, pid: int) -> Replica:
        return self._replicas[pid]

    def __iter__(self) -> Iterator[int]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __contains__(self, pid: object) -> bool:
        return pid in self._replicas

    @overload
    def get(self, pid: int, /) -> Replica | None: ...
    @overload
    def get(self, pid: int, /, default: Replica | T) -> Replica | T: ...
    def get(self, pid: int, /, default: object = None) -> object:
        return self._replicas.get(pid, default)

    def keys(self) -> KeysView[int]:
        return self._replicas.keys()

    def values(self) -> ValuesView[Replica]:
        return self._replicas.values()

    def items(self) -> ItemsView[int, Replica]:
        return self._replicas.items()

    async def open_all(self) -> None:
        """Reopen every replica this store hosted before (a restart)."""
        for pid, (replica_id, desc) in sorted(self.state.descriptors().items()):
            await self._open(pid, replica_id, desc)

    async def create(self, desc: Descriptor, replica_id: int, bootstrap: bool) -> bool:
        """Host a replica of ``desc`` (idempotent).  Returns True if it was created now.

        With ``bootstrap`` every initial member starts from the same state (index 5, term 5,
        membership = the descriptor's).  Without it the replica starts empty, with no
        membership (it never campaigns), and waits for the leader's snapshot: the target of
        an add-replica.
        """
        pid = desc.id
        if desc.replica_by_id(replica_id) is None:
            raise ValueError(f"replica {replica_id} is not a member of partition {pid}")
        old = self._replicas.get(pid)
        if old is None and (pid in self.splitting or (not bootstrap and self.state.descriptor(pid) is not None)):
            return False  # a split creates it here: the round that applies it opens it
        if old is not None:
            if old.replica_id == replica_id:
                return False
            if desc.replica_by_id(old.replica_id) is not None:
                raise ValueError(f"partition {pid} already has replica {old.replica_id} here, still a member")
            # Placement gives a store a new replica of a partition only after the group
            # removed the old one, which never learned it (it was cut off): retire it first.
            await asyncio.shield(old.doom())
        if bootstrap:
            await asyncio.to_thread(self._init_bootstrapped, pid, replica_id, desc, conf_state_of(desc))
        else:
            await asyncio.to_thread(self._init_empty, pid, replica_id, desc)
        await self._open(pid, replica_id, desc)
        self._kick()
        return True

    async def open_split_child(self, pid: int) -> None:
        """Serve a partition a split just wrote into LMDB (its applied state at the split's
        index; node.state.store): its log starts there, as a bootstrapped one starts at 5."""
        found = self.state.descriptor(pid)
        if found is None:
            raise RuntimeError(f"partition {pid} was split off but has no descriptor")
        fresh = self.wal.state(pid).hard_state == HardState()
        await self._open(pid, *found)
        if fresh:
            # A replica restarted from a hard state ignores candidates for an election timeout
            # (it may have granted a leader a lease before it went down).  A brand-new group
            # never had a leader: its replicas may vote at once, so the first campaign wins
            # in a round trip instead of after a timeout.
            rep = self._replicas[pid]
            rep.raw.wake(self._config_for(rep.replica_id, 0).election_tick)

    def _init_bootstrapped(self, pid: int, replica_id: int, desc: Descriptor, cs: ConfState) -> None:
        self.state.init_partition(pid, BOOTSTRAP_INDEX, BOOTSTRAP_TERM, cs)
        self.state.save_descriptor(pid, replica_id, desc)

    def _init_empty(self, pid: int, replica_id: int, desc: Descriptor) -> None:
        # A replica this store hosted before and lost track of may have left log records.
        self.wal.remove_partition(pid)
        self.state.init_partition(pid, 0, 0, ConfState())
        self.state.save_descriptor(pid, replica_id, desc)

    async def destroy(self, rep: Replica) -> None:
        """Delete a replica and everything it stored (call between rounds)."""
        rep.close()
        if self._replicas.get(rep.pid) is rep:
            del self._replicas[rep.pid]
            self.generation += 1
        await self._io.run(self._destroy_io, rep.pid, rep.start, rep.end)
        log.info("partition %d: replica %d deleted", rep.pid, rep.replica_id, extra={"partition": rep.pid})
        if rep.doomed is not None and not rep.doomed.done():
            rep.doomed.set_result(None)

    def _destroy_io(self, pid: int, start: bytes, end: bytes) -> None:
        self.state.destroy_partition(pid, start, end)
        self.wal.remove_partition(pid)

    async def _open(self, pid: int, replica_id: int, desc: Descriptor) -> None:
        meta = self.state.meta(pid)
        if meta is None:
            raise RuntimeError(f"partition {pid} has a descriptor but no applied state")
        await asyncio.to_thread(self._repair_wal, pid, meta.applied_index, meta.applied_term, meta.conf_state)
        await asyncio.to_thread(self.state.ensure_size, pid, desc.start, desc.end)
        storage = ReplicaStorage(self.wal, pid, meta.conf_state, self._snapshot_provider(pid))
        cfg = self._config_for(replica_id, meta.applied_index)
        raw = RawNode(cfg, storage, random.Random(), mutation=self.raft_mutation)
        rep = Replica(pid, replica_id, desc, raw, storage, self.loop, self._kick, self._wake,
                      on_apply_wanted=self._apply_wanted)
        rep.applied_term = meta.applied_term
        self._replicas[pid] = rep
        self.generation += 1

    def _repair_wal(self, pid: int, applied: int, applied_term: int, conf_state: ConfState) -> None:
        """Bring a partition's log in line with its applied state before the core reads it.

        Refuses (RuntimeError) when the log starts above the applied index: the entries
        between are in neither, and the core would silently skip them.
        """
        st = self.wal.state(pid)
        hs = st.hard_state
        if applied < st.offset:
            # LMDB lost a commit the WAL had already compacted past (or restarted its log
            # after). The node syncs LMDB before the WAL may drop entries (node.round_executor),
            # so only a disk that lied can get here; serving on would diverge the replicas.
            raise RuntimeError(
                f"partition {pid}: entries {applied + 1}..{st.offset} are in neither LMDB (applied index "
                f"{applied}) nor the WAL (first index {st.offset + 1}); refusing to start"
            )
        batch = WalBatch()
        if st.last_index() < applied:
            # The WAL is behind the applied state (crash between the LMDB and WAL writes of
            # a bootstrap or a snapshot install): restart the log at the applied state,
            # which already holds everything before it.
            batch.snapshot(pid, SnapshotMeta(applied, applied_term, conf_state))
            vote = hs.vote if hs.term >= applied_term else 0
            batch.hard_state(pid, HardState(max(hs.term, applied_term), vote, applied))
        elif hs.commit < applied:
            # The commit index is written without fsync (it only moves forward and is
            # implied by what was applied): re-establish it.
            batch.hard_state(pid, HardState(hs.term, hs.vote, applied))
        if not batch.empty:
            self.wal.write(batch)

    def _snapshot_provider(self, pid: int) -> Callable[[], Snapshot]:
        """What the core may name when a follower needs a snapshot: the applied state's meta
        (the image itself is read when it is sent, see node.outbox)."""

        def provide() -> Snapshot:
            meta = self.state.meta(pid)
            assert meta is not None
            return Snapshot(SnapshotMeta(meta.applied_index, meta.applied_term, meta.conf_state))

        return provide

    def close_all(self) -> None:
        for rep in self._replicas.values():
            rep.close()
