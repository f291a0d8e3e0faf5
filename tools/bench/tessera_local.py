"""``--local`` for Tessera: a throw-away 3-node cluster (tools.cluster.Cluster) as a LocalTarget.

Members are store ids ("1", "2", "3"), which are also the Cluster's node numbers. Who leads
what comes from the router's Meta ScanPartitions (the data `tessera admin partitions --json`
shows): each partition's leader store and Raft term. Elections are counted as how far each
partition's term rose since the cluster was ready, which counts every leader change (and
every failed election round, which is as much an availability cost).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter

import grpc

from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster

READY_TIMEOUT_S = 120.0
RPC_TIMEOUT_S = 5.0


class TesseraLocal:
    """A started Cluster in a temp directory; stop() stops it and removes the directory."""

    def __init__(self, cluster: Cluster, root: str) -> None:
        self.cluster = cluster
        self._root = root
        self._start_terms = {p.id: p.term for p in self._partitions()}

    @classmethod
    def start_new(
        cls, partitions: int, log_level: str = "info", nodes: int = 3, tls: bool = False, auth: bool = False
    ) -> TesseraLocal:
        root = tempfile.mkdtemp(prefix="tessera-bench-")
        cluster = Cluster(root=root, nodes=nodes, partitions=partitions, log_level=log_level, tls=tls, auth=auth)
        try:
            cluster.start()
            cluster.wait_ready(READY_TIMEOUT_S)
            # Placement balances leaders right after start: those moves are not elections the
            # measured load caused, so the count (elections()) starts after them.
            cluster.wait_balanced(READY_TIMEOUT_S)
            return cls(cluster, root)
        except BaseException:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise

    @property
    def target(self) -> str:
        return f"tessera://{self.cluster.router_addresses}"

    @property
    def tls_files(self) -> tuple[str, str, str] | None:
        """The client's (ca, cert, key) files when the cluster runs mutual TLS, else None."""
        return self.cluster.tls_files

    @property
    def token(self) -> str | None:
        """The bootstrap admin token when the cluster runs --auth, else None."""
        return self.cluster.admin_token

    def _meta(self, ch: grpc.Channel) -> meta_pb2_grpc.MetaStub:
        return meta_pb2_grpc.MetaStub(ch)

    def _router(self) -> str:
        assert self.cluster.router is not None
        return self.cluster.router.address

    def _partitions(self) -> list[meta_pb2.PartitionDescriptor]:
        with self.cluster.channel(self._router()) as ch:
            resp = self._meta(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=RPC_TIMEOUT_S)
        return list(resp.partitions)

    def leader_for(self, key: bytes) -> str:
        """The store leading ``key``'s partition; waits (a few seconds) while it has none."""
        deadline = time.monotonic() + 10.0
        while True:
            with self.cluster.channel(self._router()) as ch:
                got = self._meta(ch).GetPartition(meta_pb2.GetPartitionRequest(key=key), timeout=RPC_TIMEOUT_S)
            if got.partition.leader_store_id:
                return str(got.partition.leader_store_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader for {key!r}'s partition {got.partition.id}")
            time.sleep(0.05)

    def leaders(self) -> dict[str, int]:
        return dict(Counter(str(p.leader_store_id) for p in self._partitions() if p.leader_store_id))

    def led_ranges(self, member: str) -> list[tuple[bytes, bytes]]:
        """The [start, end) key ranges of the partitions ``member`` leads now (end b"": open)."""
        return [(p.start, p.end) for p in self._partitions() if str(p.leader_store_id) == member]

    def kill(self, member: str) -> None:
        self.cluster.kill(int(member))

    def restart(self, member: str) -> None:
        self.cluster.restart(int(member))

    def elections(self) -> int:
        now = self._partitions()
        return sum(max(0, p.term - self._start_terms.get(p.id, p.term)) for p in now)

    def stop(self) -> None:
        try:
            self.cluster.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
