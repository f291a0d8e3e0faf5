"""The scheduler on a real cluster, under a steady client write load with no acknowledged write lost.

- zones: four nodes in three zones (z1, z2, z3, z1); no partition has two replicas in one zone;
  leaders end within one of even; a node killed for longer than ``--max-down`` has its
  replicas re-created on the fourth node (the only up store in the zone they lost), and once
  emptied it can be removed;
- an empty node added to three is filled until replica and leader counts are within one; a
  node drained with ``tessera admin drain`` ends with nothing on it and is removed with
  ``tessera admin remove-store``; the refusals exit 1 naming why.

Timings (printed with -s): the repair, counted from the kill, and the fill.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import REPO, eventually
from support.writer import Writer
from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(240)

DOWN_AFTER_S = 3.0
MAX_DOWN_S = 5.0


def state(c: Cluster) -> tuple[dict[int, meta_pb2.Store], list[meta_pb2.PartitionDescriptor]]:
    """The stores and partitions as the placement leader has them (whichever router leads)."""
    failed: grpc.RpcError | None = None
    for address in c.router_addresses.split(","):
        try:
            with grpc.insecure_channel(address) as ch:
                meta = meta_pb2_grpc.MetaStub(ch)
                stores = {s.id: s for s in meta.GetStores(meta_pb2.GetStoresRequest(), timeout=5).stores}
                parts = list(meta.ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions)
            return stores, parts
        except grpc.RpcError as exc:  # a follower, or a router that is down
            failed = exc
    assert failed is not None
    raise failed


def whole(parts: list[meta_pb2.PartitionDescriptor], gone: set[int] = frozenset()) -> bool:  # type: ignore[assignment]
    """Every partition: three voters, none on a store in ``gone``, a leader among them."""
    for p in parts:
        stores = {r.store_id for r in p.replicas}
        if len(p.replicas) != 3 or any(r.role != meta_pb2.VOTER for r in p.replicas) or stores & gone:
            return False
        if p.leader_store_id not in stores:
            return False
    return True


def counts(parts: list[meta_pb2.PartitionDescriptor], stores: list[int]) -> tuple[list[int], list[int]]:
    reps = Counter(r.store_id for p in parts for r in p.replicas)
    leads = Counter(p.leader_store_id for p in parts)
    return [reps[s] for s in stores], [leads[s] for s in stores]


def within_one(values: list[int]) -> bool:
    return max(values) - min(values) <= 1


def admin(c: Cluster, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    got = subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", c.router_addresses, *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    if ok:
        assert got.returncode == 0, got.stderr
    return got


@pytest.fixture
def make_cluster() -> Iterator[Any]:
    made: list[tuple[Cluster, str]] = []

    def make(**kwargs: Any) -> Cluster:
        root = tempfile.mkdtemp(prefix="tessera-sched-")
        c = Cluster(root=root, max_down=MAX_DOWN_S, extra_router_args=["--store-down-after", str(DOWN_AFTER_S)],
                    **kwargs)
        made.append((c, root))
        c.start()
        c.wait_ready(60)
        return c

    yield make
    for c, root in made:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_zones_kept_through_balance_and_a_dead_node_repaired_onto_the_fourth(make_cluster: Any) -> None:
    c = make_cluster(nodes=4, partitions=4, zones=3)
    zone = {i: c.zone_of(i) for i in range(1, 5)}
    assert [zone[i] for i in range(1, 5)] == ["z1", "z2", "z3", "z1"]

    def spread(parts: list[meta_pb2.PartitionDescriptor]) -> bool:
        return all(len({zone[r.store_id] for r in p.replicas}) == len(p.replicas) for p in parts)

    def settled() -> bool:
        _, parts = state(c)
        return whole(parts) and spread(parts) and within_one(counts(parts, [1, 2, 3, 4])[1])

    with Writer(c.router_addresses) as w:
        eventually(settled, 60, "zones spread and leaders balanced")
        stores, _ = state(c)
        assert {s.id: s.zone for s in stores.values()} == zone
        got = json.loads(admin(c, "stores", "--json").stdout)
        assert [(s["id"], s["zone"], s["state"]) for s in got] == [(i, zone[i], "up") for i in range(1, 5)]

        _, parts = state(c)
        lost = {p.id for p in parts if any(r.store_id == 1 for r in p.replicas)}
        assert lost and all(not any(r.store_id == 4 for r in p.replicas) for p in parts if p.id in lost)
        c.kill(1)
        killed = time.monotonic()

        def repaired() -> bool:
            _, parts = state(c)
            return whole(parts, {1}) and spread(parts) and within_one(counts(parts, [2, 3, 4])[1])

        eventually(repaired, 60, "store 1's replicas re-created on store 4")
        took = time.monotonic() - killed
        print(f"\nrepair: store 1 killed -> {len(lost)} partitions whole again on store 4 in {took:.1f}s "
              f"(--max-down {MAX_DOWN_S:g}, --store-down-after {DOWN_AFTER_S:g})")
        _, parts = state(c)
        assert all(any(r.store_id == 4 for r in p.replicas) for p in parts if p.id in lost)
        # Not before --max-down (counted from its last heartbeat, up to a second before the kill).
        assert took > MAX_DOWN_S - 1.5
        time.sleep(1)  # writes go on after the repair too
    w.check()

    # A dead store's replicas are gone from every partition: it may be removed.
    got = json.loads(admin(c, "remove-store", "1", "--json").stdout)
    assert got["id"] == 1 and got["state"] == "removed"


def test_a_node_added_is_filled_then_a_drained_node_is_removed(make_cluster: Any) -> None:
    c = make_cluster(nodes=3, partitions=6)
    with Writer(c.router_addresses) as w:
        started = time.monotonic()
        assert c.add_node() == 4

        def filled() -> bool:
            _, parts = state(c)
            reps, leads = counts(parts, [1, 2, 3, 4])
            return whole(parts) and within_one(reps) and within_one(leads)

        eventually(filled, 90, "store 4 filled and leaders balanced")
        _, parts = state(c)
        moved = counts(parts, [4])[0][0]
        print(f"\nfill: an empty fourth node took {moved} replicas in {time.monotonic() - started:.1f}s "
              f"(leaders balanced too)")
        assert moved == 4  # 18 replicas over four stores: 4 or 5 each; moving more is waste

        # Refusals: nothing changes, exit 1, a message naming why.
        got = admin(c, "remove-store", "2", ok=False)
        assert got.returncode == 1 and "still holds" in got.stderr and "drain it first" in got.stderr, got.stderr
        got = admin(c, "drain", "99", ok=False)
        assert got.returncode == 1 and "unknown store 99" in got.stderr, got.stderr

        started = time.monotonic()
        got = json.loads(admin(c, "drain", "2", "--json", "--timeout", "90").stdout)
        assert got["done"] and got["store"] == 2
        print(f"drain: store 2 emptied in {time.monotonic() - started:.1f}s")
        stores, parts = state(c)
        assert stores[2].state == meta_pb2.STORE_DRAINING
        assert whole(parts, {2})
        got = admin(c, "drain", "3", ok=False)  # three up stores left for three replicas
        assert got.returncode == 1 and "add a node first" in got.stderr, got.stderr

        eventually(lambda: state(c)[0][2].replica_count == 0, 30, "store 2 to delete its replicas")
        shown = {s["id"]: s for s in json.loads(admin(c, "stores", "--json").stdout)}
        assert shown[2]["state"] == "draining" and shown[2]["replicas"] == 0 and shown[2]["leaders"] == 0
        admin(c, "remove-store", "2")
        shown = {s["id"]: s for s in json.loads(admin(c, "stores", "--json").stdout)}
        assert shown[2]["state"] == "removed"

        def balanced() -> bool:
            _, parts = state(c)
            reps, leads = counts(parts, [1, 3, 4])
            return whole(parts, {2}) and reps == [6, 6, 6] and within_one(leads)

        eventually(balanced, 60, "the three stores left balanced")
    w.check()


def test_a_leader_transferred_by_admin_under_writes(make_cluster: Any) -> None:
    c = make_cluster(nodes=3, partitions=4)
    with Writer(c.router_addresses) as w:
        _, parts = state(c)
        p = parts[0]
        target = next(r.store_id for r in p.replicas if r.store_id != p.leader_store_id)
        got = json.loads(admin(c, "--json", "transfer-leader", str(p.id), str(target)).stdout)
        assert got["done"] and got["seconds"] < 5
        assert next(d for d in state(c)[1] if d.id == p.id).leader_store_id == target

        def settled() -> bool:  # the scheduler may even the leaders out again afterwards
            _, now = state(c)
            return whole(now) and within_one(counts(now, [1, 2, 3])[1])

        eventually(settled, 30, "every partition whole with leaders balanced")
        written = len(w.acked)
        eventually(lambda: len(w.acked) > written + 100, 30, "writes to go on after the transfer")
    w.check()


def test_a_fill_in_flight_completes_after_the_placement_leader_is_killed(make_cluster: Any) -> None:
    c = make_cluster(nodes=3, partitions=6, routers=3)

    def leader_router() -> int:
        got = json.loads(admin(c, "routers", "--json").stdout)
        return int(got["leader"] or 0)

    old = eventually(leader_router, 30, "a placement leader")
    with Writer(c.router_addresses) as w:
        assert c.add_node() == 4

        def moving() -> bool:  # a move is under way: placement decided, the new leader must go on
            _, parts = state(c)
            return any(r.store_id == 4 for p in parts for r in p.replicas)

        eventually(moving, 30, "a move onto store 4 to start")
        c.kill_router(old)
        killed = time.monotonic()

        def filled() -> bool:
            _, parts = state(c)
            reps, leads = counts(parts, [1, 2, 3, 4])
            return whole(parts) and within_one(reps) and within_one(leads)

        eventually(filled, 90, "store 4 filled by the new placement leader")
        assert leader_router() not in (0, old)
        print(f"\nfailover: the fill finished {time.monotonic() - killed:.1f}s after the placement leader was killed")
    w.check()


def test_a_transfer_to_a_node_that_just_died_does_not_block_the_partition(make_cluster: Any) -> None:
    """A transfer decided just before its target died (the scheduler balances leaders; the
    node dies a moment later) must not keep the partition's leader from taking membership
    steps: the leader wakes its quiet group, the transfer times out, the add goes through."""
    c = make_cluster(nodes=4, partitions=2, schedule_interval=0)
    _, parts = state(c)
    p = parts[0]
    holders = [r.store_id for r in p.replicas]
    victim = next(s for s in holders if s != p.leader_store_id)
    spare = next(s for s in (1, 2, 3, 4) if s not in holders)
    time.sleep(2)  # the group goes quiet (idle groups stop ticking)
    c.kill(victim)
    admin(c, "transfer-leader", str(p.id), str(victim), "--no-wait")
    started = time.monotonic()
    got = admin(c, "add-replica", str(p.id), str(spare), "--timeout", "20", ok=False)
    assert got.returncode == 0, got.stderr
    print(f"\nadd after a transfer to a dead node: done in {time.monotonic() - started:.1f}s")
