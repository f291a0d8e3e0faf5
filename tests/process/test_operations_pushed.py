"""Operations reach their node when they are decided, not at the node's next heartbeat.

The nodes here heartbeat once a minute (`--heartbeat-interval 60`), so every step below can
only finish within its deadline if placement pushes ("heartbeat now", on the WatchOperations
stream) and nodes report their own changes at once (a new leader, a membership step).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import REPO
from support.running import running_cluster
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

SLOW_HEARTBEATS = 60.0
DEADLINE = 15.0  # a quarter of one heartbeat interval, for each step


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("tessera-push-", lambda root: Cluster(
        root=root, nodes=4, partitions=2, schedule_interval=0,
        extra_node_args=["--heartbeat-interval", str(SLOW_HEARTBEATS)]
    )) as c:
        yield c


def admin(cluster: Cluster, *args: str) -> Any:
    assert cluster.router is not None
    got = subprocess.run(
        [sys.executable, "-m", "tools.cli", "admin", "--router", cluster.router.address, "--json", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def test_transfer_add_and_remove_each_finish_long_before_a_heartbeat_is_due(cluster: Cluster) -> None:
    part = admin(cluster, "partition", "1")
    target = next(r["store"] for r in part["replicas"] if r["store"] != part["leader"])
    got = admin(cluster, "transfer-leader", "1", str(target), "--timeout", str(DEADLINE))
    assert got["done"] and got["seconds"] < DEADLINE

    # Which three of the four stores a partition starts on depends on which nodes registered
    # first, so the new replica goes to whichever store the partition is not on.
    holders = {r["store"] for r in admin(cluster, "partition", "1")["replicas"]}
    joining = next(s for s in (1, 2, 3, 4) if s not in holders)
    got = admin(cluster, "add-replica", "1", str(joining), "--timeout", str(DEADLINE))
    assert got["done"] and got["seconds"] < DEADLINE
    part = admin(cluster, "partition", "1")
    leaving = next(r["store"] for r in part["replicas"] if r["store"] not in (joining, part["leader"]))
    got = admin(cluster, "remove-replica", "1", str(leaving), "--timeout", str(DEADLINE))
    assert got["done"] and got["seconds"] < DEADLINE
    assert sorted(r["store"] for r in admin(cluster, "partition", "1")["replicas"]) == sorted(
        s for s in (1, 2, 3, 4) if s != leaving
    )
