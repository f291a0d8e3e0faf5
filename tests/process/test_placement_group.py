"""The placement service replicated by three routers: losing any one, the leader included,
loses nothing, and the cluster keeps serving reads, writes, placement queries and admin commands.

Three router processes (the placement group, checkpointing every 20 commands so that a router
kept down long enough must catch up from a snapshot), three nodes, a client writing throughout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, eventually
from router.client import Client
from support.running import running_cluster
from support.writer import Writer
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("tessera-pgroup-", lambda root: Cluster(
        root=root, routers=3, nodes=3, partitions=2, schedule_interval=0,
        extra_router_args=["--checkpoint-every", "20"]
    )) as c:
        yield c


def admin(cluster: Cluster, *args: str, routers: str | None = None) -> Any:
    got = subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", routers or cluster.router_addresses, "--json", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def group(cluster: Cluster) -> dict[str, Any]:
    got = admin(cluster, "routers")
    assert isinstance(got, dict)
    return got


def test_three_routers_elect_one_leader(cluster: Cluster) -> None:
    eventually(lambda: group(cluster)["leader"], 30, "a placement leader")
    g = group(cluster)
    assert [m["id"] for m in g["members"]] == [1, 2, 3]
    assert [m["role"] for m in g["members"]].count("leader") == 1
    assert {m["address"] for m in g["members"]} == set(cluster.router_addresses.split(","))


def test_killing_the_placement_leader_loses_nothing_and_stops_nothing(cluster: Cluster) -> None:
    before = group(cluster)
    leader = before["leader"]
    parts = admin(cluster, "partitions")
    with Writer(cluster.router_addresses, deadline_s=10) as w:
        eventually(lambda: len(w.acked) > 50, 30, "writes to flow")
        cluster.kill_router(leader)
        def new_leader() -> dict[str, Any] | None:
            g = group(cluster)
            return g if g["leader"] not in (None, leader) else None

        after = eventually(new_leader, 30, "another placement leader")
        assert after is not None and after["term"] > before["term"]
        n = len(w.acked)
        eventually(lambda: len(w.acked) > n + 50, 30, "writes to flow again")
        # Placement answers queries and carries out admin commands at the new leader.
        assert [p["id"] for p in admin(cluster, "partitions")] == [p["id"] for p in parts]
        p = admin(cluster, "partition", "1")
        target = next(r["store"] for r in p["replicas"] if r["store"] != p["leader"])
        assert admin(cluster, "transfer-leader", "1", str(target))["done"]
        # A client that never loaded the map starts with the dead router first in its list.
        dead = cluster.router_procs[leader].address
        others = [a for a in cluster.router_addresses.split(",") if a != dead]
        with Client(",".join([dead, *others]), deadline_s=10) as fresh:
            fresh.put(b"fresh-client", b"1")
            got = fresh.get(b"fresh-client", "linearizable")
            assert got is not None and got.value == b"1"
    with Client(cluster.router_addresses, deadline_s=10) as client:
        for key, value in w.acked.items():
            got = client.get(key, "linearizable")
            assert got is not None and got.value == value, key
    cluster.restart_router(leader)
    eventually(lambda: {m["id"]: m["role"] for m in group(cluster)["members"]}[leader] == "follower", 30,
               f"router {leader} to rejoin as a follower")


def test_a_router_kept_down_catches_up_from_a_snapshot(cluster: Cluster) -> None:
    g = group(cluster)
    follower = next(m["id"] for m in g["members"] if m["role"] == "follower")
    cluster.kill_router(follower)
    # The highest index any member is known to have applied (null: not known to the answerer,
    # e.g. the router just killed).
    start = max(m["applied"] for m in group(cluster)["members"] if m["applied"] is not None)
    # Placement commands (the nodes' heartbeats, admin operations) pile up meanwhile: with a
    # checkpoint every 20 commands and 5 kept behind it, 60 compact past what it holds.
    p = admin(cluster, "partition", "2")
    stores = [r["store"] for r in p["replicas"]]
    for k in range(6):
        admin(cluster, "transfer-leader", "2", str(stores[k % len(stores)]))
    eventually(lambda: max(m["applied"] for m in group(cluster)["members"]) > start + 60, 60,
               "60 placement commands while the router is down")
    cluster.restart_router(follower)

    def caught_up() -> bool:
        g = group(cluster)  # the leader's view, which alone knows every member's progress
        if g["leader"] is None or g["served_by"] != g["leader"]:
            return False
        members = {m["id"]: m for m in g["members"]}
        leader = members[g["leader"]]
        return members[follower]["role"] == "follower" and members[follower]["applied"] >= leader["applied"] - 10

    eventually(caught_up, 60, f"router {follower} to catch up")
    log = Path(cluster.router_procs[follower].log_path).read_text()
    assert "installed the placement checkpoint" in log
    # It answers as the others do: the follower's own view names the same leader and partitions.
    view = admin(cluster, "routers", routers=cluster.router_procs[follower].address)
    assert view["leader"] == group(cluster)["leader"]


def test_admin_waits_a_while_for_a_placement_leader_then_says_there_is_none(cluster: Cluster) -> None:
    """`tessera admin` rides out a placement election (a router that knows no leader yet is
    asked again for ELECTION_WAIT_S) and, with no quorum at all, still ends with a clear error."""
    from tools.admin import ELECTION_WAIT_S

    survivor = 1
    others = [i for i in cluster.router_procs if i != survivor]
    for i in others:
        cluster.kill_router(i)
    try:
        argv = [sys.executable, "-m", "tools.cli", "admin", "--router", cluster.router_procs[survivor].address,
                "partitions"]
        seen: list[tuple[float, str]] = []

        def says_no_leader() -> bool:
            started = time.monotonic()
            got = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
            assert got.returncode == 1, got.stdout
            seen.append((time.monotonic() - started, got.stderr))
            return "no leader is known yet" in got.stderr

        eventually(says_no_leader, 60, "the lone router to know no leader", interval=0.1)
        took, _ = seen[-1]
        assert took >= ELECTION_WAIT_S - 0.5, seen[-1]
    finally:
        for i in others:
            cluster.restart_router(i)
        eventually(lambda: group(cluster)["leader"] is not None, 60, "the placement group to have a leader again")
