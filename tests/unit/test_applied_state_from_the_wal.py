"""LMDB's state is derivable from the WAL from its applied index on, whatever a power cut leaves.

LMDB runs with ``metasync=False, sync=True``: a commit flushes its data pages and, with them,
the meta page of the commit *before* it; its own meta page reaches the disk only at the next
commit or ``env.sync()``. So after commit ``k`` a power cut may leave LMDB at commit ``k - 1``
(never corrupt: the meta pages alternate and the older one is intact). That is safe because the
WAL, synced before every apply, replays from whatever applied index LMDB is left at, provided
the WAL still holds those entries. Two things could break the proviso: a compaction computed
from the applied index of LMDB's last commit, and an installed snapshot, whose WAL record
restarts the log at an index only LMDB's last commit holds. The node syncs LMDB before writing
either (node/round_executor.py).

Here a real node (RaftStore, WAL and LMDB on real files, one replica, no sockets) applies puts,
deletes and compare-and-sets in bursts, with compaction every few dozen entries:

* :class:`TrackedState` copies the LMDB environment after every commit and follows LMDB's
  model: which copy is the oldest a power cut may leave;
* :class:`WatchedWal` checks, at every WAL write that compacts, that the compaction point is at
  or below the applied index of that oldest copy, and takes a crash image: the WAL as written,
  with LMDB rolled back to the oldest copy and, separately, at its newest;
* each image restarts a node, which must replay to exactly the same data, versions and
  request-id results from either LMDB;
* at the end the node stops, LMDB is rolled back to the oldest copy the final WAL still covers,
  and the node must replay to exactly the state the run ended with.

And the must-fail twin: with ``StateStore.sync`` made a no-op, compactions outrun LMDB's
durable state and a node restarted from such an image cannot replay.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node.fs import OS_FILES
from node.raft import ConfState, SnapshotMeta
from node.raftstore import RaftStore
from node.round_executor import RoundExecutor
from node.round_plan import RoundPlan, SnapshotInstall
from node.settings import RaftSettings
from node.state.commands import Command, cas, delete, put
from node.state.snapshot_file import snapshot_stream
from node.state.store import OpResult, PartitionMeta, StateStore
from node.wal import WalBatch, WriteAheadLog
from node.wal.batch import Op
from support.lone_replica import NoPeers

PID = 1
KEYS = [b"k%d" % i for i in range(12)]
SETTINGS = RaftSettings(tick_s=0.005, compact_threshold=30, compact_keep=5)
IMAGES = 6  # crash images taken (around the first compactions), each restarted twice


@dataclass(frozen=True)
class Commit:
    path: str  # a copy of the environment as of this commit
    applied: int  # the partition's applied index in it


class TrackedState(StateStore):
    """A StateStore that copies the environment after every commit and knows, by LMDB's model
    of ``metasync=False``, the oldest commit a power cut may leave it at."""

    def __init__(self, path: str, copies: Path, *, real_sync: bool = True) -> None:
        super().__init__(path)
        self.copies_dir = copies
        self.commits: list[Commit] = []
        self.oldest_durable = -1  # index in commits; -1: none (an empty environment)
        self.real_sync = real_sync
        self.on_commit: Callable[[], None] = lambda: None

    def _committed(self) -> None:
        k = len(self.commits)
        path = self.copies_dir / f"{k:05d}"
        path.mkdir(parents=True)
        self.env.copy(str(path))
        meta = self.meta(PID)
        self.commits.append(Commit(str(path), meta.applied_index if meta else 0))
        self.oldest_durable = k - 1  # commit k flushed the meta page of k - 1, not its own
        self.on_commit()

    def durable_applied(self) -> int:
        return self.commits[self.oldest_durable].applied if self.oldest_durable >= 0 else 0

    def sync(self) -> None:
        if self.real_sync:
            super().sync()
            self.oldest_durable = len(self.commits) - 1

    def init_partition(self, pid: int, index: int, term: int, conf_state: ConfState) -> None:
        super().init_partition(pid, index, term, conf_state)
        self._committed()

    def save_descriptor(self, pid: int, replica_id: int, descriptor: Descriptor) -> None:
        super().save_descriptor(pid, replica_id, descriptor)
        self._committed()

    def install_snapshot(
        self,
        pid: int,
        start: bytes,
        end: bytes,
        items: Iterable[list[tuple[bytes, bytes]]],
        meta: PartitionMeta,
        descriptor: Descriptor | None = None,
    ) -> None:
        super().install_snapshot(pid, start, end, items, meta, descriptor)
        self._committed()

    def commit_open(self) -> None:  # every apply commits here, at once or later (D27)
        had = self.has_open
        super().commit_open()
        if had:
            self._committed()


@dataclass(frozen=True)
class Image:
    """What the disks may hold after a power cut: the WAL as written, and LMDB at the oldest
    commit the cut may leave (``oldest``) or at its newest (``newest``)."""

    wal: str
    oldest: Commit
    newest: Commit


class WatchedWal(WriteAheadLog):
    """A WAL that checks every compaction against LMDB's durable state and takes crash images
    around it: right after the WAL write that compacts, and right after the LMDB commit that
    follows (which a power cut may undo)."""

    lmdb: TrackedState
    images_dir: Path
    images: list[Image]
    outrun: list[str]  # compactions past what LMDB had durably applied
    compacted: bool  # since the last image after a commit

    def watch(self, lmdb: TrackedState, images_dir: Path) -> None:
        self.lmdb, self.images_dir, self.images, self.outrun, self.compacted = lmdb, images_dir, [], [], False
        lmdb.on_commit = self._after_commit

    def write(self, batch: WalBatch, sync: bool = True) -> None:
        compacts = [item[2] for item in batch.ops if item[0] is Op.COMPACT]
        restarts = [item[2].index for item in batch.ops if item[0] is Op.INSTALL_SNAPSHOT]
        for what, index in [("compaction", i) for i in compacts] + [("snapshot", i) for i in restarts]:
            if index > self.lmdb.durable_applied():
                self.outrun.append(f"{what} to {index}, LMDB durably applied {self.lmdb.durable_applied()}")
        super().write(batch, sync)
        if compacts:
            self.compacted = True
            self._image()

    def _after_commit(self) -> None:
        if self.compacted:
            self.compacted = False
            self._image()

    def _image(self) -> None:
        """In the I/O thread: no WAL write or LMDB commit runs meanwhile."""
        if len(self.images) >= IMAGES:
            return
        wal = self.images_dir / f"{len(self.images)}"
        shutil.copytree(self.directory, wal)
        st = self.lmdb
        self.images.append(Image(str(wal), st.commits[st.oldest_durable], st.commits[-1]))



DESC = Descriptor(PID, b"", b"", Epoch(1, 1), (ReplicaDesc(store_id=1, replica_id=1),))

# Everything a client could observe: every key's value and version, every request's result.
Observed = tuple[list[tuple[bytes, bytes, int]], dict[bytes, list[OpResult] | None]]


def _observe(state: StateStore, request_ids: Iterable[bytes]) -> Observed:
    return state.scan(b"", b"", 1 << 30), {rid: state.dedup_result(PID, rid) for rid in request_ids}


def _commands(rng: random.Random, first_rid: int, n: int, versions: dict[bytes, int]) -> list[Command]:
    cmds = []
    for i in range(first_rid, first_rid + n):
        key, rid, r = rng.choice(KEYS), b"r%d" % i, rng.random()
        if r < 0.6:
            cmds.append(put(key, b"v%d" % i, rid))
        elif r < 0.75:
            cmds.append(delete(key, rid))
        else:  # a compare-and-set that may or may not hold
            cmds.append(cas(key, versions.get(key, 0) if rng.random() < 0.6 else 1, b"c%d" % i, request_id=rid))
    return cmds


async def _write_history(root: Path, seed: int, *, real_sync: bool) -> tuple[WatchedWal, TrackedState, Observed]:
    """Run a node through bursts of writes (each burst one or two rounds); return its WAL and
    LMDB (closed) and what a client sees at the end."""
    state = TrackedState(str(root / "state"), root / "lmdb-copies", real_sync=real_sync)
    wal = WatchedWal(str(root / "wal"))
    wal.watch(state, root / "images")
    rs = RaftStore(1, wal, state, NoPeers(), SETTINGS)
    await rs.start()
    rng = random.Random(seed)
    versions: dict[bytes, int] = {}
    rids: list[bytes] = []
    try:
        await rs.create_replica(DESC, 1, bootstrap=True)
        rep = rs.replicas[PID]
        await eventually_async(rep.is_leader, 10, "the replica to lead its group")
        for _ in range(14):
            cmds = _commands(rng, len(rids), rng.randint(8, 24), versions)
            results = await asyncio.gather(*(rep.propose(c) for c in cmds))
            for c, res in zip(cmds, results):
                rids.append(c.request_id)
                assert res is not None
                for op, r in zip(c.ops, res):
                    if r.succeeded:
                        versions[op.key] = r.version
            # As a reader would: the burst's applies are committed now, not on LMDB's timer
            # (D27), so the applied index, and the compactions computed from it, move per burst.
            await asyncio.wait_for(rep.wait_applied(max(versions.values(), default=0)), 5)
        assert rs.failed is None
    finally:
        await rs.stop()
        wal.close()
    seen = _observe(state, rids)  # once stopped: writes are acknowledged before LMDB commits them
    state.close()
    return wal, state, seen


async def _replay(root: Path, wal_image: str, lmdb_copy: str, request_ids: Iterable[bytes]) -> Observed | str:
    """Start a node on a WAL image and an LMDB copy; once it applied its whole log, what a
    client sees. A node that cannot replay gives the reason as a string."""
    shutil.copytree(wal_image, root / "wal")
    shutil.copytree(lmdb_copy, root / "state")
    wal = WriteAheadLog.open(str(root / "wal"))
    state = StateStore(str(root / "state"))
    last = wal.state(PID).last_index()
    rs = RaftStore(1, wal, state, NoPeers(), SETTINGS)
    try:
        await rs.start()
        rep = rs.replicas[PID]
        # Leading again, it commits a no-op of its new term after everything the WAL held.
        await eventually_async(lambda: rs.failed is not None or (rep.is_leader() and rep.applied > last), 10,
                               "the node to replay its whole log")
        if rs.failed is not None:
            return str(rs.failed)
        return _observe(state, request_ids)
    except Exception as exc:
        return repr(exc)
    finally:
        await rs.stop()
        wal.close()
        state.close()


def _request_ids(seen: Observed) -> list[bytes]:
    return list(seen[1])


def test_lmdb_rolled_back_to_any_state_a_power_cut_leaves_replays_to_the_same_data(tmp_path: Path) -> None:
    async def main() -> None:
        wal, state, seen = await _write_history(tmp_path / "run", seed=7, real_sync=True)
        assert wal.outrun == []  # no compaction ever passed what LMDB had durably applied
        assert len(wal.images) == IMAGES
        rids = _request_ids(seen)
        assert sum(image.oldest.applied < image.newest.applied for image in wal.images) >= IMAGES // 2
        for k, image in enumerate(wal.images):
            from_oldest = await _replay(tmp_path / f"img{k}-oldest", image.wal, image.oldest.path, rids)
            from_newest = await _replay(tmp_path / f"img{k}-newest", image.wal, image.newest.path, rids)
            assert not isinstance(from_oldest, str), from_oldest
            assert from_oldest == from_newest
        # The end: the WAL as the run left it, LMDB rolled back as far as the WAL still covers.
        first = WriteAheadLog.open(wal.directory)
        covered = first.state(PID).first_index() - 1
        first.close()
        oldest = min((c for c in state.commits if c.applied >= max(covered, 5)), key=lambda c: c.applied)
        assert oldest.applied < state.commits[-1].applied - 20
        got = await _replay(tmp_path / "final", wal.directory, oldest.path, rids)
        assert got == seen  # every key, value, version and request result, exactly

    asyncio.run(main())


def test_without_the_lmdb_sync_compactions_outrun_lmdb_and_a_rolled_back_node_cannot_replay(tmp_path: Path) -> None:
    """The test above can tell: with StateStore.sync a no-op, a compaction is computed from a
    commit a power cut may still undo, and a node restarted on such an image finds entries in
    neither LMDB nor the WAL (and refuses to start rather than serve without them)."""

    async def main() -> None:
        wal, _, seen = await _write_history(tmp_path / "run", seed=7, real_sync=False)
        assert wal.outrun
        outcomes = [
            await _replay(tmp_path / f"img{k}", image.wal, image.oldest.path, _request_ids(seen))
            for k, image in enumerate(wal.images)
        ]
        refusals = [o for o in outcomes if isinstance(o, str)]
        assert refusals, "every rolled-back image replayed"
        assert all("in neither" in r for r in refusals), refusals

    asyncio.run(main())


class _NowLoop:
    """Stands in for the event loop the I/O thread hands results to: runs them at once."""

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        fn(*args)


@pytest.mark.parametrize("real_sync", [True, False])
def test_an_installed_snapshot_is_durable_in_lmdb_before_the_wal_restarts_its_log(
    tmp_path: Path, real_sync: bool
) -> None:
    """The WAL record of an installed snapshot drops the whole log below the snapshot's index,
    which only LMDB's install transaction holds: LMDB must be synced before that record is
    written. One disk trip of a round that installs a snapshot, checked against LMDB's model;
    with StateStore.sync a no-op the same trip is caught."""
    state = TrackedState(str(tmp_path / "state"), tmp_path / "copies", real_sync=real_sync)
    wal = WatchedWal(str(tmp_path / "wal"))
    wal.watch(state, tmp_path / "images")
    state.init_partition(PID, 0, 0, ConfState())
    spooled = tmp_path / "snap"
    spooled.write_bytes(b"".join(snapshot_stream([[(b"k", b"\0" * 8 + b"v")]])))
    meta = SnapshotMeta(40, 3, ConfState(voters=frozenset({1, 2, 3})))
    batch = WalBatch()
    batch.snapshot(PID, meta)
    plan = RoundPlan((), (), (), (SnapshotInstall(PID, meta, str(spooled), None),), batch, True, (), (), {})
    executor = RoundExecutor(
        _NowLoop(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        wal, state, None, None,  # type: ignore[arg-type]
        compact_threshold=30, compact_keep=5, on_leader=None, fail=print, files=OS_FILES,
    )
    executor._disk_trip(plan, {PID: (b"", b"")}, lambda: None, lambda jobs, results: None, lambda fn, *a: fn(*a), None)
    try:
        assert state.commits[-1].applied == 40
        assert (wal.outrun == []) is real_sync, wal.outrun
    finally:
        wal.close()
        state.close()
