"""The node's side of the control plane: heartbeats to the router, and the work it hands back.

Every ``interval`` seconds the node reports each replica (leader or not,
term, applied index, the leader's descriptor and replication progress) and
receives operations: create a replica (bootstrap of the pre-split
partitions, or an empty one that joins by snapshot), transfer a leader, add
or remove a member (this store leads the partition), delete a replica that
was removed from its group while it was cut off.  It also refreshes the store address book
the transport and the NotLeader hints use.  A new leader is reported at once
so routing converges without waiting for the next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from common.wire.descriptors import descriptor_from_pb, descriptor_to_pb, epoch_to_pb
from node.raftstore import RaftStore
from node.replica import Replica
from tesserapb import meta_pb2, meta_pb2_grpc

log = logging.getLogger("tessera.router_link")


class RouterLink:
    rs: RaftStore
    """The replicas to report and to act on. Set by the node before :meth:`start`: the
    RaftStore is built after this link, since it needs the link's resolve and report_leader."""

    def __init__(self, store_id: int, address: str, router: str, *, interval: float = 1.0) -> None:
        self.store_id = store_id
        self.address = address
        self.router = router
        self.interval = interval
        self.addresses: dict[int, str] = {store_id: address}
        # Test harnesses (tessera nemesis) route node-to-node traffic through proxies.
        self.peer_overrides: dict[int, str] = {}
        self._channel = grpc.aio.insecure_channel(router)
        self._stub = meta_pb2_grpc.MetaStub(self._channel)
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self.heartbeats = 0

    def address_of(self, store_id: int) -> str:
        return self.addresses.get(store_id, "")

    def resolve(self, store_id: int) -> str | None:
        """Where to dial a peer store: the override (a fault-injecting proxy), else its address."""
        return self.peer_overrides.get(store_id) or self.addresses.get(store_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="router-link")

    async def stop(self) -> None:
        for t in [self._task, *self._bg]:
            if t is not None:
                t.cancel()
        for t in [self._task, *self._bg]:
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
        await self._channel.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except grpc.aio.AioRpcError as exc:
                log.warning("router %s unreachable: %s", self.router, exc.code().name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.interval)

    def _stats(self, rep: Replica) -> meta_pb2.PartitionStats:
        raw = rep.raw
        st = meta_pb2.PartitionStats(
            partition_id=rep.pid,
            leader=raw.is_leader,
            term=raw.term,
            applied=rep.applied,
            replica_id=rep.replica_id,
            epoch=epoch_to_pb(rep.descriptor.epoch),
        )
        if raw.is_leader:
            st.descriptor.CopyFrom(descriptor_to_pb(rep.descriptor, self.store_id, raw.term))
            for rid, pr in raw.status().progress.items():
                st.progress.add(
                    replica_id=rid,
                    store_id=rep.store_of(rid) or 0,
                    role=meta_pb2.LEARNER if pr.learner else meta_pb2.VOTER,
                    match=pr.match,
                )
        return st

    async def heartbeat(self) -> None:
        req = meta_pb2.StoreHeartbeatRequest(
            store_id=self.store_id,
            address=self.address,
            partitions=[self._stats(rep) for rep in self.rs.replicas.values()],
        )
        resp = await self._stub.StoreHeartbeat(req, timeout=5)
        self.heartbeats += 1
        for op in resp.operations:
            await self._apply_operation(op)
        stores = await self._stub.GetStores(meta_pb2.GetStoresRequest(), timeout=5)
        for s in stores.stores:
            if s.address:
                self.addresses[s.id] = s.address

    async def _apply_operation(self, op: meta_pb2.Operation) -> None:
        kind = op.WhichOneof("kind")
        if kind != "create_replica" or op.create_replica.partition.id not in self.rs.replicas:
            log.info("operation %d for partition %d: %s", op.id, op.partition_id, kind)
        if kind == "create_replica":
            cr = op.create_replica
            try:
                await self.rs.create_replica(descriptor_from_pb(cr.partition), cr.replica_id, cr.bootstrap)
            except (ValueError, NotImplementedError) as exc:
                log.warning("cannot create replica of partition %d: %s", cr.partition.id, exc)
        elif kind == "add_replica":
            self.rs.request_add(op.partition_id, op.add_replica.replica.replica_id, op.add_replica.replica.store_id)
        elif kind == "remove_replica":
            self.rs.request_remove(op.partition_id, op.remove_replica.replica.replica_id)
        elif kind == "destroy_replica":
            self.rs.destroy_if_removed(descriptor_from_pb(op.destroy_replica.partition), op.destroy_replica.replica_id)
        elif kind == "transfer_leader":
            rep = self.rs.replicas.get(op.partition_id)
            if rep is None or not rep.is_leader():
                return
            member = rep.descriptor.replica_on(op.transfer_leader.to_store_id)
            target = member.replica_id if member is not None else None
            if target is not None:
                try:
                    rep.raw.transfer_leader(target)
                    self.rs.kick()
                except Exception as exc:
                    log.warning("transfer of partition %d refused: %s", rep.pid, exc)
        else:
            log.info("operation %s for partition %d not supported yet", kind, op.partition_id)

    def report_leader(self, rep: Replica) -> None:
        """Tell the router at once that we lead ``rep`` (fire and forget)."""
        req = meta_pb2.ReportLeaderRequest(
            partition_id=rep.pid,
            leader_store_id=self.store_id,
            term=rep.raw.term,
            epoch=epoch_to_pb(rep.descriptor.epoch),
        )

        async def send() -> None:
            try:
                await self._stub.ReportLeader(req, timeout=2)
            except grpc.aio.AioRpcError:
                pass  # the next heartbeat carries it anyway

        t = asyncio.get_running_loop().create_task(send())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
