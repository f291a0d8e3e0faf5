"""Real clusters whose nodes lose what they did not sync when SIGKILLed, as in a power cut.

SIGKILL alone proves little: the kernel keeps what a killed process wrote but never synced. The
nodes here run with ``--testing-unsynced-is-lost`` (node/fs/unsynced_lost.py): the WAL's and the
snapshot spool's unsynced bytes live in the node's memory until fsync, so SIGKILL drops them.
(LMDB still writes through the kernel; what a power cut does to it is
tests/unit/test_applied_state_from_the_wal.py.)

Writers put unique keys with random values under load and record what was acknowledged. The
nodes are SIGKILLed:

* all at once, right after an acknowledgement the followers have not applied yet, so that the
  write is applied on the leader alone and held elsewhere only in the followers' WALs; the
  followers restart first and elect a leader among themselves while the old leader stays
  down. Only the followers' WALs can save that write;
* all at once right after an acknowledgement, all restarted together;
* one at a time, each time the leader, under load.

After each, every acknowledged write must read back, linearizably, with its value and version.
The must-fail twin runs the first with ``--testing-fsync-is-noop`` as well: it must lose
acknowledged writes, which proves the test can tell a WAL that syncs from one that does not.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import shutil
import signal
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator

import grpc
import lmdb
import pytest

from conftest import eventually
from router.client import AsyncClient, Client
from tesserapb import kv_pb2, kv_pb2_grpc
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

LOSSY = ["--testing-unsynced-is-lost"]
PARTITIONS = 1  # one leader for the whole key space, and two followers


class Writers:
    """Concurrent writers (tasks on one event loop in a thread, one client) that put unique keys
    until stopped; ``acked`` maps each key whose put returned to (value, version). A put that
    raised has an unknown outcome and is not recorded."""

    def __init__(self, router: str, n: int = 12) -> None:
        self.router = router
        self.n = n
        self.acked: dict[bytes, tuple[bytes, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_ack: Callable[[int], bool] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="writers", daemon=True)

    def __enter__(self) -> Writers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def so_far(self) -> dict[bytes, tuple[bytes, int]]:
        """The writes acknowledged so far (writers may be running: a copy taken under the lock)."""
        with self._lock:
            return dict(self.acked)

    def wait_for(self, more: int, what: str) -> None:
        """Until ``more`` writes beyond the current count are acknowledged."""
        target = self.count() + more
        eventually(lambda: self.count() >= target, 60, what)

    def right_after_an_ack(self, action: Callable[[int], bool]) -> None:
        """Call ``action(version)`` as soon as each acknowledgement arrives, before any other
        writer goes on (the node that acknowledged it is still finishing that round: committing
        it to LMDB, telling its followers it is committed), until it returns True."""
        done = threading.Event()

        def run(version: int) -> bool:
            if not action(version):
                return False
            done.set()
            return True

        with self._lock:
            self._on_ack = run
        assert done.wait(60), "the action never took"

    async def _run(self) -> None:
        async with AsyncClient(self.router) as cl:
            await asyncio.gather(*(self._write(cl, w) for w in range(self.n)))

    async def _write(self, cl: AsyncClient, w: int) -> None:
        rng = random.Random(w)
        i = 0
        while not self._stop.is_set():
            # A first byte spread over the key space, as keys of real clients are.
            key = bytes([rng.randrange(256)]) + b"w%02d-%06d" % (w, i)
            value = b"%x" % rng.getrandbits(64)
            i += 1
            try:
                version = await cl.put(key, value, timeout=10)
            except Exception:
                continue  # outcome unknown: not acknowledged
            with self._lock:
                self.acked[key] = (value, version)
                action = self._on_ack
            if action is not None and action(version):  # blocks this loop: no writer goes on
                with self._lock:
                    self._on_ack = None


def lost_writes(router: str, acked: dict[bytes, tuple[bytes, int]]) -> list[tuple[bytes, tuple[bytes, int], object]]:
    """Every write in ``acked`` that does not read back, linearizably, with its value and version
    (``acked`` must not grow meanwhile: a write acknowledged after the scan read its key is not
    lost)."""
    with Client(router) as cl:
        found = {kv.key: (kv.value, kv.version) for kv in cl.scan(limit=None, consistency="linearizable", timeout=30)}
    return [(k, v, found.get(k)) for k, v in sorted(acked.items()) if found.get(k) != v]


def kill_all(c: Cluster) -> None:
    """SIGKILL every node at once (all signals sent before any is reaped)."""
    procs = [p.popen for p in c.node_procs.values() if p.popen is not None]
    for popen in procs:
        popen.kill()
    for popen in procs:
        popen.wait()


def leader(c: Cluster) -> int:
    """The node that leads the partition now: the only one that answers a linearizable read
    (the router's record of the leader can lag behind an election)."""

    def answers(i: int) -> bool:
        with grpc.insecure_channel(c.node_address(i)) as ch:
            try:
                kv_pb2_grpc.KVStub(ch).Get(
                    kv_pb2.GetRequest(
                        context=kv_pb2.RequestContext(partition_id=1),
                        key=b"",
                        read_options=kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE),
                    ),
                    timeout=2,
                )
                return True
            except grpc.RpcError:
                return False

    def the_one() -> int | None:
        leaders = [i for i, p in c.node_procs.items() if p.alive and answers(i)]
        return leaders[0] if len(leaders) == 1 else None

    found = eventually(the_one, 30, "one node to lead the partition")
    assert found is not None
    return found


def first(action: Callable[[], None]) -> Callable[[int], bool]:
    """For :meth:`Writers.right_after_an_ack`: ``action`` at the first acknowledgement."""

    def run(version: int) -> bool:
        action()
        return True

    return run


def applied_index(c: Cluster, i: int) -> int:
    """Node ``i``'s applied index of the partition, read from its LMDB (which may be open in the
    node: LMDB serves readers of other processes). The meta record is node/state/store.py's:
    key u64 big-endian partition id, value starting with u64 applied index."""
    env = lmdb.open(os.path.join(c.root, f"node{i}", "state"), readonly=True, max_dbs=8)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            raw = txn.get(struct.pack(">Q", 1))
        return struct.unpack_from("<Q", raw)[0] if raw is not None else 0
    finally:
        env.close()


def kill_all_while_followers_lag(c: Cluster, writers: Writers) -> int:
    """SIGKILL every node right after an acknowledgement that the followers have not applied
    yet, then restart the followers alone and wait until they serve; returns the old leader,
    still down.

    At the kill the acknowledged write is applied on the leader alone and, elsewhere, held only
    in the followers' WALs (a quorum of which had to persist it for the leader to commit it).
    Restarted first, one of the followers becomes leader: the write survives only if their WALs
    made it durable. To know that the followers have not applied it, they are frozen (SIGSTOP)
    and their LMDB read before the kill; if one has, they resume and the next acknowledgement
    is tried."""
    old = leader(c)
    followers = [p.popen for i, p in c.node_procs.items() if i != old and p.popen is not None]

    def kill_if_they_lag(version: int) -> bool:
        for p in followers:
            p.send_signal(signal.SIGSTOP)
        lag = False
        try:
            lag = max(applied_index(c, i) for i in c.node_procs if i != old) < version
        finally:
            if not lag:
                for p in followers:
                    p.send_signal(signal.SIGCONT)
        if lag:
            kill_all(c)  # SIGKILL ends stopped processes too
        return lag

    writers.right_after_an_ack(kill_if_they_lag)
    for i in c.node_procs:
        if i != old:
            c.restart(i)
    c.wait_ready(60)
    return old


def lossy_cluster(root: str, *extra: str) -> Cluster:
    c = Cluster(root=root, partitions=PARTITIONS, extra_node_args=[*LOSSY, *extra])
    c.start()
    c.wait_ready(60)
    return c


@pytest.fixture()
def root() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="tessera-powercut-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sigkill_as_a_power_cut_loses_no_acknowledged_write(root: str) -> None:
    c = lossy_cluster(root)
    try:
        assert c.router is not None
        router = c.router.address
        with Writers(router) as writers:
            writers.wait_for(200, "writes to flow")
            old = kill_all_while_followers_lag(c, writers)
            acked = writers.so_far()
            lost = lost_writes(router, acked)  # with the old leader still down
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. {lost[:3]}"
            c.restart(old)
            writers.wait_for(100, "writes to flow with every node back")
            writers.right_after_an_ack(first(functools.partial(kill_all, c)))
            for i in c.node_procs:
                c.restart(i)
            c.wait_ready(60)
            for _ in range(3):  # one at a time, each time the leader
                victim = leader(c)
                writers.wait_for(100, "writes to flow")
                writers.right_after_an_ack(first(functools.partial(c.kill, victim)))
                writers.wait_for(50, f"writes to flow without node {victim}")
                c.restart(victim)
            writers.wait_for(100, "writes to flow with every node back")
        lost = lost_writes(router, writers.acked)
        assert not lost, f"{len(lost)} of {len(writers.acked)} acknowledged writes lost, e.g. {lost[:3]}"
        assert len(writers.acked) > 700
    finally:
        c.stop()


def test_with_fsync_a_noop_the_same_kill_loses_acknowledged_writes(root: str) -> None:
    """The test above can tell: with the WAL's (and spool's) fsync doing nothing, the same kill
    loses the writes the followers held only in their WALs."""
    c = lossy_cluster(root, "--testing-fsync-is-noop")
    try:
        assert c.router is not None
        with Writers(c.router.address) as writers:
            writers.wait_for(200, "writes to flow")
            kill_all_while_followers_lag(c, writers)
        lost = lost_writes(c.router.address, writers.acked)
        assert lost, f"all {len(writers.acked)} acknowledged writes survived a WAL that never syncs"
    finally:
        c.stop()
