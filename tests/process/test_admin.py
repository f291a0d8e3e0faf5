"""`tessera admin` against a real cluster: the tables and JSON shapes of docs/cli.md, a leader
transfer, a replica moved onto an empty store and off another, refusals, operations in flight.

Four node processes, two partitions bootstrapped on stores 1-3, so store 4 starts empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import REPO, eventually
from support.running import running_cluster
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("tessera-admin-", lambda root: Cluster(
        root=root, nodes=4, partitions=2, schedule_interval=0
    )) as c:
        yield c


def admin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    assert cluster.router is not None
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", cluster.router.address, *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )


def admin_json(cluster: Cluster, *args: str) -> Any:
    got = admin(cluster, *args, "--json")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def partition(cluster: Cluster, pid: int) -> dict[str, Any]:
    got = admin_json(cluster, "partition", str(pid))
    assert isinstance(got, dict)
    return got


def test_stores_and_partitions_in_the_contract_shapes(cluster: Cluster) -> None:
    def four_stores() -> list[dict[str, Any]] | None:
        stores = admin_json(cluster, "stores")
        return stores if len(stores) == 4 else None

    stores = eventually(four_stores, 30, "four stores registered")
    assert stores is not None and [s["id"] for s in stores] == [1, 2, 3, 4]
    for s in stores:
        assert set(s) == {"id", "address", "zone", "state", "replicas", "leaders"}
        assert s["state"] == "up" and s["address"].startswith("127.0.0.1:")
    assert stores[3]["replicas"] == 0  # the empty fourth store
    parts = admin_json(cluster, "partitions")
    assert [p["id"] for p in parts] == [1, 2]
    assert parts[0]["start"] == "" and parts[1]["end"] == ""
    assert parts[0]["end"] == {"hex": "80"}  # not printable UTF-8: shown as hex
    for p in parts:
        assert set(p) == {"id", "start", "end", "epoch", "leader", "term", "size_bytes", "replicas"}
        assert set(p["epoch"]) == {"conf_ver", "version"}
        assert p["leader"] in {r["store"] for r in p["replicas"]}
        for r in p["replicas"]:
            assert set(r) == {"store", "role", "match", "applied"} and r["role"] == "voter"
    table = admin(cluster, "partitions").stdout
    assert table.splitlines()[0].split()[:5] == ["ID", "RANGE", "EPOCH", "LEADER", "TERM"]
    assert "[-inf, 0x80)" in table and "[0x80, +inf)" in table
    assert admin_json(cluster, "partition", "--key", "zebra")["id"] == 1  # "z" is 0x7a
    assert admin_json(cluster, "partition", "--key", "\udcff")["id"] == 2  # the byte 0xff


def test_transfer_leader_waits_until_the_target_leads(cluster: Cluster) -> None:
    before = partition(cluster, 1)
    target = next(r["store"] for r in before["replicas"] if r["store"] != before["leader"])
    got = admin_json(cluster, "transfer-leader", "1", str(target))
    assert got["done"] and got["seconds"] < 5
    assert partition(cluster, 1)["leader"] == target


def test_a_replica_moves_onto_the_empty_store_and_off_another(cluster: Cluster) -> None:
    got = admin_json(cluster, "add-replica", "2", "4")
    assert got["done"]
    after = partition(cluster, 2)
    assert {r["store"]: r["role"] for r in after["replicas"]}.get(4) == "voter"
    assert after["epoch"]["conf_ver"] > 1
    leaving = next(r["store"] for r in after["replicas"] if r["store"] not in (4, after["leader"]))
    assert admin_json(cluster, "remove-replica", "2", str(leaving))["done"]
    assert leaving not in {r["store"] for r in partition(cluster, 2)["replicas"]}
    assert len(partition(cluster, 2)["replicas"]) == 3


def test_refusals_exit_1_naming_why_and_change_nothing(cluster: Cluster) -> None:
    before = partition(cluster, 1)
    outsider = next(s for s in (1, 2, 3, 4) if s not in {r["store"] for r in before["replicas"]})
    got = admin(cluster, "transfer-leader", "1", str(outsider))
    assert got.returncode == 1 and f"store {outsider} holds no voter of partition 1" in got.stderr
    got = admin(cluster, "remove-replica", "1", str(outsider))
    assert got.returncode == 1 and "holds no replica" in got.stderr
    got = admin(cluster, "partition", "99")
    assert got.returncode == 1 and "no partition with id 99" in got.stderr
    got = admin(cluster, "partition")
    assert got.returncode == 1 and "give a partition ID or --key KEY" in got.stderr
    after = partition(cluster, 1)
    assert (after["epoch"], after["leader"]) == (before["epoch"], before["leader"])
    assert not [o for o in admin_json(cluster, "operations") if o["partition"] == 1]


def test_operations_in_flight_are_listed_until_done(cluster: Cluster) -> None:
    before = partition(cluster, 1)
    target = next(r["store"] for r in before["replicas"] if r["store"] != before["leader"])
    queued = admin_json(cluster, "transfer-leader", "1", str(target), "--no-wait")
    assert not queued["done"]
    listed = admin_json(cluster, "operations")
    ops = [o for o in listed if o["id"] == queued["operation"]]
    # Listed while in flight, or already done (then gone): either way never listed wrongly.
    for o in ops:
        assert (o["partition"], o["kind"], o["detail"]) == (1, "transfer_leader", f"to store {target}")
        assert o["age_s"] >= 0 and o["state"] in ("queued", "sent")
    eventually(lambda: partition(cluster, 1)["leader"] == target, 20, "the queued transfer to finish")
    eventually(lambda: all(o["id"] != queued["operation"] for o in admin_json(cluster, "operations")), 20,
               "the finished transfer to leave the list")


def test_an_unreachable_router_is_named() -> None:
    got = subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", "127.0.0.1:1", "stores"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert got.returncode == 1 and "cannot reach the placement service at 127.0.0.1:1" in got.stderr
