"""Membership changes on a real cluster: add a replica (learner, snapshot, promotion), remove one
(the leader included), collect a replica removed while it was cut off, re-add to the same store.

Four node processes, the partitions bootstrapped on three of them, so store 4 starts empty.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import grpc
import pytest

from conftest import eventually
from router.client import Client
from support.running import running_cluster
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    with running_cluster("tessera-member-", lambda root: Cluster(
        root=root, nodes=4, partitions=2, schedule_interval=0
    )) as c:
        yield c


class Meta:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = meta_pb2_grpc.MetaStub(self.channel)

    def partition(self, pid: int) -> meta_pb2.PartitionDescriptor:
        return self.stub.GetPartition(meta_pb2.GetPartitionRequest(partition_id=pid), timeout=5).partition

    def submit(self, pid: int, **kind) -> int:
        op = meta_pb2.Operation(partition_id=pid, **kind)
        return self.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=op), timeout=5).operation_id

    def add(self, pid: int, store: int) -> None:
        self.submit(pid, add_replica=meta_pb2.AddReplica(replica=meta_pb2.Replica(store_id=store)))

    def remove(self, pid: int, store: int) -> None:
        self.submit(pid, remove_replica=meta_pb2.RemoveReplica(replica=meta_pb2.Replica(store_id=store)))

    def replica_count(self, store: int) -> int:
        stores = self.stub.GetStores(meta_pb2.GetStoresRequest(), timeout=5).stores
        return next(s.replica_count for s in stores if s.id == store)

    def roles(self, pid: int) -> dict[int, int]:
        return {r.store_id: r.role for r in self.partition(pid).replicas}

    def hosts_only_members(self, store: int) -> bool:
        """The store's last heartbeat reported exactly the replicas placement lists on it."""
        listed = sum(store in self.roles(p.id) for p in self.stub.ScanPartitions(
            meta_pb2.ScanPartitionsRequest(), timeout=5).partitions)
        return self.replica_count(store) == listed


def _stale_get(address: str, desc: meta_pb2.PartitionDescriptor, key: bytes) -> bytes | None:
    """A follower read served by the replica on ``address`` itself (None: not served there)."""
    with grpc.insecure_channel(address) as ch:
        try:
            resp = kv_pb2_grpc.KVStub(ch).Get(
                kv_pb2.GetRequest(
                    context=kv_pb2.RequestContext(partition_id=desc.id, epoch=desc.epoch),
                    key=key,
                    read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE, max_staleness_ms=5000),
                ),
                timeout=2,
            )
        except grpc.RpcError:
            return None
    return resp.value if resp.found else b"<missing>"


def _keys_of(desc: meta_pb2.PartitionDescriptor, n: int) -> list[bytes]:
    return [desc.start + b"k%04d" % i for i in range(n)]


def test_move_a_replica_and_remove_the_leader(cluster: Cluster) -> None:
    assert cluster.router is not None
    meta = Meta(cluster.router.address)
    desc = meta.partition(1)
    hosts = {r.store_id for r in desc.replicas}
    (spare,) = set(range(1, 5)) - hosts
    keys = _keys_of(desc, 200)
    with Client(cluster.router.address) as cl:
        for k in keys:
            cl.put(k, b"v-" + k)

        meta.add(1, spare)
        eventually(lambda: meta.roles(1).get(spare) == meta_pb2.VOTER, 30, f"store {spare} to become a voter")
        desc = meta.partition(1)
        assert len(desc.replicas) == 4 and desc.epoch.conf_ver >= 3  # learner added, then promoted
        # The new replica got the data by snapshot and serves it.
        assert eventually(
            lambda: _stale_get(cluster.node_address(spare), meta.partition(1), keys[-1]) == b"v-" + keys[-1],
            15,
            "the new replica to serve a follower read",
        )

        # Remove the leader's replica: it hands leadership over first, then leaves.
        leader = desc.leader_store_id
        meta.remove(1, leader)
        eventually(lambda: leader not in meta.roles(1) and len(meta.roles(1)) == 3, 30, f"store {leader} to leave")
        assert set(meta.roles(1).values()) == {meta_pb2.VOTER}
        eventually(lambda: meta.hosts_only_members(leader), 15, f"store {leader} to delete its replica")
        assert _stale_get(cluster.node_address(leader), meta.partition(1), keys[0]) is None

        # Writes and reads go on through the new configuration, and nothing was lost.
        for k in keys[:50]:
            cl.put(k, b"w-" + k)
        for k in keys:
            expect = (b"w-" if k in keys[:50] else b"v-") + k
            got = cl.get(k, "linearizable")
            assert got is not None and got.value == expect, k

    # The new member survives a crash of every node: membership and data come back from disk.
    for i in range(1, 5):
        cluster.kill(i)
    for i in range(1, 5):
        cluster.restart(i)
    cluster.wait_ready(60)
    assert set(meta.roles(1)) == (hosts - {leader}) | {spare}
    with Client(cluster.router.address) as cl:
        first, last = cl.get(keys[0], "linearizable"), cl.get(keys[-1], "linearizable")
        assert first is not None and first.value == b"w-" + keys[0]
        assert last is not None and last.value == b"v-" + keys[-1]
    assert eventually(
        lambda: _stale_get(cluster.node_address(spare), meta.partition(1), keys[0]) == b"w-" + keys[0],
        15,
        "the moved replica to serve after the restart",
    )


def test_replica_removed_while_cut_off_is_collected_and_can_come_back(cluster: Cluster) -> None:
    assert cluster.router is not None
    meta = Meta(cluster.router.address)
    desc = meta.partition(2)
    victim = next(r.store_id for r in desc.replicas if r.store_id != desc.leader_store_id)
    old_id = next(r.replica_id for r in desc.replicas if r.store_id == victim)
    keys = _keys_of(desc, 50)
    proc = cluster.node_procs[victim].popen
    assert proc is not None
    with Client(cluster.router.address) as cl:
        for k in keys:
            cl.put(k, b"1")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            meta.remove(2, victim)
            eventually(lambda: victim not in meta.roles(2), 30, f"store {victim} to be removed while stopped")
            for k in keys:
                cl.put(k, b"2")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # It never applied its removal; placement tells it to delete the replica.
        eventually(lambda: meta.hosts_only_members(victim), 30, f"store {victim} to collect its removed replica")

        # Back on the same store as a new member (new replica id), with the current data.
        meta.add(2, victim)
        eventually(lambda: meta.roles(2).get(victim) == meta_pb2.VOTER, 30, f"store {victim} to rejoin as a voter")
        new_id = next(r.replica_id for r in meta.partition(2).replicas if r.store_id == victim)
        assert new_id != old_id
        assert eventually(
            lambda: _stale_get(cluster.node_address(victim), meta.partition(2), keys[-1]) == b"2",
            15,
            "the re-added replica to serve the newest value",
        )
        for k in keys:
            got = cl.get(k, "linearizable")
            assert got is not None and got.value == b"2", k
