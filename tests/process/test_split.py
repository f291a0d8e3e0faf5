"""Partition splits on real processes (docs/decisions.md D21): by admin while a client writes,
by size past a tiny --split-size, and a node restarted after a split serving both halves.

Every acknowledged write must be readable afterwards with its last acknowledged value, read
through a client whose partition map predates the split (it learns the new map from the
routing errors alone).
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import REPO, eventually
from router.client import DeadlineExceeded
from router.client.sync_client import Client
from support.running import running_cluster
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

KEYS = 400


def key(i: int) -> bytes:
    return b"w%04d" % (i % KEYS)


def admin(cluster: Cluster, *args: str, ok: bool = True) -> Any:
    got = subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", cluster.router_addresses, "--json", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    if not ok:
        return got
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


class Writer:
    """One client writing steadily in a thread: every key's last acknowledged value, and the
    values of writes whose outcome is unknown (they may or may not have applied)."""

    def __init__(self, routers: str) -> None:
        self.client = Client(routers)
        self.acked: dict[bytes, bytes] = {}
        self.unknown: dict[bytes, set[bytes]] = {}
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            k, v = key(i), b"v%d" % i
            try:
                self.client.put(k, v, timeout=10)
            except DeadlineExceeded:
                self.unknown.setdefault(k, set()).add(v)
            else:
                self.acked[k] = v
                self.unknown.pop(k, None)
                self.count += 1
            i += 1

    def wait_for(self, n: int) -> None:
        start = self.count
        eventually(lambda: self.count >= start + n, 30, f"{n} more acknowledged writes")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()

    def check(self, reader: Client) -> None:
        for k, v in sorted(self.acked.items()):
            got = reader.get(k, "linearizable")
            assert got is not None, f"acknowledged write of {k!r} lost"
            assert got.value == v or got.value in self.unknown.get(k, ()), (k, got.value, v)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("tessera-split-", lambda root: Cluster(
        root=root, nodes=3, partitions=1
    )) as c:
        yield c


def test_admin_split_under_writes_loses_nothing_and_a_stale_client_follows(cluster: Cluster) -> None:
    stale = Client(cluster.router_addresses)
    try:
        stale.get(b"w0000")  # loads the map: one partition
        with Writer(cluster.router_addresses) as writer:
            writer.wait_for(200)
            got = admin(cluster, "split", "1", "w0200")
            assert got["done"] and got["split_key"] == "w0200" and got["seconds"] < 5
            right = got["new_partition"]
            writer.wait_for(100)  # both halves take writes
            # The report that brought the split may have measured before it applied, so the
            # left half's size reaches placement with a later heartbeat (up to an interval on);
            # a keyless split before then is refused, as the CLI says.
            eventually(lambda: admin(cluster, "partition", "1")["size_bytes"] > 0, 15,
                       "the left half's size to reach placement", interval=0.2)
            # The middle of the left half, chosen by the leader from the data's sizes.
            got = admin(cluster, "split", "1")
            assert got["done"] and "" < got["split_key"] < "w0200"
            writer.wait_for(100)
        parts = admin(cluster, "partitions")
        assert [(p["start"], p["end"]) for p in parts] == [
            ("", got["split_key"]), (got["split_key"], "w0200"), ("w0200", ""),
        ]
        assert all(p["leader"] for p in parts) and right in {p["id"] for p in parts}
        assert len({p["epoch"]["version"] for p in parts}) <= 2
        assert len(writer.acked) == KEYS
        writer.check(stale)  # the stale map is corrected by routing errors alone
        assert len(stale.scan(b"w", b"x", limit=KEYS + 1)) == KEYS
    finally:
        stale.close()


def test_admin_split_refusals_exit_1_and_change_nothing(cluster: Cluster) -> None:
    before = admin(cluster, "partitions")
    first = before[0]
    for args, why in (
        (("split", "999", "k"), "no partition with id 999"),
        (("split", str(first["id"]), first["end"] + "x"), "outside"),
        (("split", str(first["id"]), first["start"]), "first key"),
    ):
        got = admin(cluster, *args, ok=False)
        assert got.returncode == 1 and why in got.stderr, (args, got.stderr)
    def shapes(parts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(p["id"], p["start"], p["end"], p["epoch"]["version"]) for p in parts]

    assert shapes(admin(cluster, "partitions")) == shapes(before)


def test_a_node_restarted_after_a_split_serves_both_halves(cluster: Cluster) -> None:
    parts = admin(cluster, "partitions")
    assert len(parts) >= 2
    for p in parts:  # node 2 leads every half, and comes back faster than an election timeout
        if p["leader"] != 2:
            assert admin(cluster, "transfer-leader", str(p["id"]), "2")["done"]
    cluster.kill(2)
    cluster.restart(2)
    # With node 3 down, every write needs node 2: it must serve each half's group again.
    cluster.kill(3)
    try:
        with Client(cluster.router_addresses) as client:
            for p in parts:
                k = (p["start"] or "a").encode() + b"-after-restart"
                client.put(k, b"x", timeout=30)
                assert client.get(k, "linearizable").value == b"x"  # type: ignore[union-attr]
    finally:
        cluster.restart(3)


def test_a_partition_past_the_split_size_splits_by_itself() -> None:
    root = tempfile.mkdtemp(prefix="tessera-split-size-")
    c = Cluster(root=root, nodes=3, partitions=1, split_size=16 << 10)
    try:
        c.start()
        c.wait_ready(60)
        with Client(c.router_addresses) as client:
            for i in range(120):  # about 48 KiB in all
                client.put(b"s%04d" % i, b"x" * 400)
            eventually(lambda: len(admin(c, "partitions")) >= 2, 30, "a split by size")
            def led() -> list[dict[str, Any]] | None:
                parts = admin(c, "partitions")
                return parts if all(x["leader"] for x in parts) else None

            parts = eventually(led, 30, "a leader for every partition")
            assert parts is not None
            assert parts[0]["start"] == "" and parts[-1]["end"] == ""
            assert all(a["end"] == b["start"] for a, b in itertools.pairwise(parts))
            for i in range(120):
                assert client.get(b"s%04d" % i) is not None
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_node_down_during_the_split_catches_up_past_it() -> None:
    """Node 3 misses the split and the log behind it is compacted, so it catches up on the left
    half from a snapshot taken after the split: placement has it create the right half, whose
    leader fills it. With node 1 then down, both halves need node 3."""
    root = tempfile.mkdtemp(prefix="tessera-split-late-")
    c = Cluster(root=root, nodes=3, partitions=1, extra_node_args=["--compact-threshold", "20", "--compact-keep", "5"])
    try:
        c.start()
        c.wait_ready(60)
        with Client(c.router_addresses) as client:
            for i in range(40):
                client.put(key(i * 10), b"before")
            c.kill(3)
            got = admin(c, "split", "1", "w0200")
            assert got["done"]
            for i in range(40):  # far more than the compaction threshold, in both halves
                client.put(key(i * 10), b"after")
            c.restart(3)

            def caught_up() -> bool:
                parts = admin(c, "partitions")
                for p in parts:
                    lead = max(r["applied"] for r in p["replicas"])
                    if next(r["applied"] for r in p["replicas"] if r["store"] == 3) < lead:
                        return False
                return len(parts) == 2

            eventually(caught_up, 60, "node 3 caught up on both halves")
            c.kill(1)
            try:
                for i in range(40):
                    assert client.get(key(i * 10), "linearizable").value == b"after"  # type: ignore[union-attr]
                client.put(b"w0100", b"last", timeout=30)
                client.put(b"w0300", b"last", timeout=30)
            finally:
                c.restart(1)
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_split_in_flight_when_the_placement_leader_dies_completes_once() -> None:
    """The split is queued while the partition's leader is paused (so it cannot be carried
    out), then the placement leader is killed: the new placement leader has the operation and
    hands it out; the partition splits once, and asking again splits nothing twice."""
    root = tempfile.mkdtemp(prefix="tessera-split-failover-")
    c = Cluster(root=root, routers=3, nodes=3, partitions=1)
    try:
        c.start()
        c.wait_ready(60)
        with Client(c.router_addresses) as client:
            for i in range(0, KEYS, 10):
                client.put(key(i), b"before")
            part = admin(c, "partition", "1")
            paused = c.node_procs[part["leader"]].running
            assert paused is not None
            leader = admin(c, "routers")["leader"]
            paused.send_signal(signal.SIGSTOP)
            try:
                queued = admin(c, "split", "1", "w0200", "--no-wait")
                assert not queued["done"]
                c.kill_router(leader)
            finally:
                paused.send_signal(signal.SIGCONT)

            def split() -> list[dict[str, Any]] | None:
                parts = admin(c, "partitions")
                return parts if len(parts) == 2 and all(p["leader"] for p in parts) else None

            parts = eventually(split, 60, "the split, after the placement failover")
            assert parts is not None and [(p["start"], p["end"]) for p in parts] == [("", "w0200"), ("w0200", "")]
            again = admin(c, "split", "1", "w0200", ok=False)  # a retry of the same request
            assert again.returncode == 1 and "outside" in again.stderr
            # The balancer may queue a leader transfer between the two halves; no split is left.
            left = [op for op in admin(c, "operations") if op["kind"] == "split"]
            assert len(admin(c, "partitions")) == 2 and left == []
            for i in range(0, KEYS, 10):
                assert client.get(key(i)).value == b"before"  # type: ignore[union-attr]
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
