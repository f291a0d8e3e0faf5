"""The node's side of the control plane: heartbeats to the router, and the work it hands back.

Every ``interval`` seconds the node reports its replicas (leader or not,
term, applied index, the leader's descriptor and replication progress) and
receives operations. A report names only the replicas whose report changed since the last
one placement acknowledged (and the ones gone), so an idle store's heartbeat is nearly
empty; it reports everything after a failed heartbeat, when placement asks (it has just
registered the store), and every ``FULL_REPORT_EVERY_S`` whatever happened. Operations:
create a replica (bootstrap of the pre-split partitions, or an empty one that joins by
snapshot), transfer a leader, add or remove a member (this store leads the partition),
split a partition (this store leads it: the leader picks the middle key by size if
placement named none, and proposes the split as an entry of the partition's log,
docs/decisions.md D21), delete a replica that was removed from its group while it was cut
off. Leaders report their partition's approximate size (node/state/store.py keeps it with
the data), which size-based splits use. It also refreshes the store address book the
transport and the NotLeader hints use.

Nothing waits for the next turn when it need not: a new leader is reported at once
(ReportLeader); a replica whose descriptor changed (a membership step) makes the node
heartbeat at once (:meth:`RouterLink.poke`); and the node holds a ``WatchOperations``
stream open, on which the router says "heartbeat now" the moment it queues work for this
store, so an operation reaches the node when it is decided.  The routers are a list
(``--routers A,B,C``): calls go to the placement leader, found as common/routers.py says.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import grpc

from common import tls as tls_mod
from common.backoff import BackoffPolicy
from common.descriptor import Epoch
from common.keyspace import MAX_SPLIT_KEY_BYTES, strictly_inside
from common.routers import RouterSet
from common.wire.descriptors import descriptor_from_pb, descriptor_to_pb, epoch_to_pb
from common.wire.errors import error_from_rpc, leader_hint
from node.node_auth import NodeTokens
from node.raftstore import RaftStore
from node.replica import Replica
from node.settings import HEARTBEAT_INTERVAL_S
from node.state.commands import SplitCommand
from tesserapb import meta_pb2, meta_pb2_grpc

log = logging.getLogger("tessera.router_link")

# Short reconnect waits: a stream that ends usually means a router restarted or the leader moved.
WATCH_BACKOFF = BackoffPolicy(initial_s=0.05, max_s=1.0)
# A report of every replica at least this often, so that anything placement's view of the
# store missed does not last (it should miss nothing: a delta is sent again in full when its
# heartbeat fails).
FULL_REPORT_EVERY_S = 60.0
# A router's gRPC channel redials quickly, as the client's do (router/client/channels.py).
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000))


class RouterLink:
    rs: RaftStore
    """The replicas to report and to act on. Set by the node before :meth:`start`: the
    RaftStore is built after this link, since it needs the link's resolve and report_leader."""

    def __init__(
        self,
        store_id: int,
        address: str,
        routers: str | Sequence[str],
        *,
        interval: float = HEARTBEAT_INTERVAL_S,
        zone: str = "",
        tls: tls_mod.TlsConfig | None = None,
    ) -> None:
        self.store_id = store_id
        self.tls = tls  # mutual TLS to the routers (docs/security.md); None: plaintext
        self.address = address
        self.zone = zone  # the failure domain placement spreads replicas over (--zone)
        self.routers = RouterSet(routers)
        self.interval = interval
        self.addresses: dict[int, str] = {store_id: address}
        # Test harnesses (tessera nemesis) route node-to-node traffic through proxies.
        self.peer_overrides: dict[int, str] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._due = asyncio.Event()  # heartbeat now, not at the next turn
        self.heartbeats = 0
        # The longest key a client may write here (--max-key-bytes); a split key is never longer.
        self.max_key_bytes = MAX_SPLIT_KEY_BYTES
        # Each partition's report as placement last acknowledged it (serialized), what a
        # delta is computed against; the next report is full until one is acknowledged.
        self._acked: dict[int, bytes] = {}
        self._full_due = True
        self._last_full = float("-inf")
        self._addresses_digest = 0
        self.full_reports = 0
        # pid -> (what a quiet replica's report is made of, the report, its bytes): a quiet
        # partition's report is reused until one of those inputs changes (D26).
        self._quiet_reports: dict[int, tuple[tuple[object, ...], meta_pb2.PartitionStats, bytes]] = {}
        self.reports_built = 0
        # The token table client calls are checked against, when the node runs --auth
        # (node/node_auth.py); None: the node does not ask for it.
        self.tokens: NodeTokens | None = None

    @property
    def router(self) -> str:
        """The router calls go to now (the placement leader, once found)."""
        return self.routers.current

    def _stub(self) -> meta_pb2_grpc.MetaStub:
        address = self.routers.current
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = tls_mod.aio_channel(address, self.tls, CHANNEL_OPTIONS)
        return meta_pb2_grpc.MetaStub(channel)

    def poke(self) -> None:
        """Heartbeat now (something placement cares about changed, or work waits)."""
        self._due.set()

    def address_of(self, store_id: int) -> str:
        return self.addresses.get(store_id, "")

    def resolve(self, store_id: int) -> str | None:
        """Where to dial a peer store: the override (a fault-injecting proxy), else its address."""
        return self.peer_overrides.get(store_id) or self.addresses.get(store_id)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="router-link"),
            asyncio.create_task(self._watch(), name="router-link-watch"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._bg]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for channel in self._channels.values():
            await channel.close()

    async def _run(self) -> None:
        while True:
            self._due.clear()
            for _ in range(self.routers.tries):
                try:
                    await self.heartbeat()
                    break
                except grpc.aio.AioRpcError as exc:
                    if not self.routers.failed(exc.code(), leader_hint(error_from_rpc(exc))):
                        log.warning("router %s: heartbeat failed: %s", self.router, exc.code().name)
                        break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("heartbeat failed")
                    break
            try:
                await asyncio.wait_for(self._due.wait(), self.interval)
            except TimeoutError:
                pass

    async def _watch(self) -> None:
        """Keep a WatchOperations stream open to the current router; each message: heartbeat now."""
        failures = 0
        while True:
            try:
                stream = self._stub().WatchOperations(meta_pb2.WatchOperationsRequest(store_id=self.store_id))
                async for _ in stream:
                    failures = 0
                    self.poke()
            except grpc.aio.AioRpcError as exc:
                self.routers.failed(exc.code(), leader_hint(error_from_rpc(exc)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching for operations failed")
            # The stream ended (router restarted, leader moved): reconnect, backing off.
            await asyncio.sleep(WATCH_BACKOFF.delay(failures, random.random()))
            failures += 1

    def _stats(self, rep: Replica, sizes: dict[int, int]) -> meta_pb2.PartitionStats:
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
            st.size_bytes = sizes.get(rep.pid, 0)
            st.descriptor.CopyFrom(descriptor_to_pb(rep.descriptor, self.store_id, raw.term))
            for rid, pr in raw.status().progress.items():
                st.progress.add(
                    replica_id=rid,
                    store_id=rep.store_of(rid) or 0,
                    role=meta_pb2.LEARNER if pr.learner else meta_pb2.VOTER,
                    match=pr.match,
                )
        return st

    def _reports(self) -> tuple[dict[int, meta_pb2.PartitionStats], dict[int, bytes]]:
        """Every replica's report, and its serialized form (what a delta compares).

        Building and serializing a report costs about 10 us, every partition every interval.
        A quiet (quiesced) replica's report is kept instead, with the inputs it was built
        from, and rebuilt only when one of them changed: role, term, applied index, replica
        id, descriptor (a new object on any change), size. The rest of a report, a leader's
        replication progress, cannot change while its group is quiet: every follower's match
        is the leader's last index until something is appended, which wakes the group, and
        a learner turns voter only by a conf change, which moves the applied index.
        """
        sizes = self.rs.state.sizes()
        cache = self._quiet_reports
        stats: dict[int, meta_pb2.PartitionStats] = {}
        wire: dict[int, bytes] = {}
        for pid, rep in self.rs.replicas.items():
            raw = rep.raw
            key: tuple[object, ...] | None = None
            if raw.quiesced:
                leader = raw.is_leader
                key = (rep, leader, raw.term, rep.applied, rep.replica_id, rep.descriptor,
                       sizes.get(pid, 0) if leader else 0)
                hit = cache.get(pid)
                if hit is not None and hit[0] == key:
                    stats[pid], wire[pid] = hit[1], hit[2]
                    continue
            st = self._stats(rep, sizes)
            b = st.SerializeToString(deterministic=True)
            self.reports_built += 1
            stats[pid], wire[pid] = st, b
            if key is not None:
                cache[pid] = (key, st, b)
            else:
                cache.pop(pid, None)
        if len(cache) > len(stats):
            for pid in [p for p in cache if p not in stats]:
                del cache[pid]
        return stats, wire

    async def heartbeat(self) -> None:
        stats, wire = self._reports()
        now = asyncio.get_running_loop().time()
        full = self._full_due or now - self._last_full >= FULL_REPORT_EVERY_S
        req = meta_pb2.StoreHeartbeatRequest(
            store_id=self.store_id, address=self.address, addresses_digest=self._addresses_digest, zone=self.zone
        )
        if self.tokens is not None:
            req.tokens_version = self.tokens.version
        if full:
            req.partitions.extend(stats.values())
        else:
            req.delta = True
            req.partitions.extend(stats[pid] for pid, b in wire.items() if self._acked.get(pid) != b)
            req.gone.extend(pid for pid in self._acked if pid not in wire)
        self._full_due = True  # until placement acknowledges this one
        stub = self._stub()
        resp = await stub.StoreHeartbeat(req, timeout=5)
        self.heartbeats += 1
        self._acked = wire
        self._full_due = resp.want_full
        if full:
            self._last_full = now
            self.full_reports += 1
        for op in resp.operations:
            await self._apply_operation(op)
        # The address book rides on the heartbeat, and only when it changed: one call per
        # interval, however many stores.
        for store_id, address in resp.store_addresses.items():
            self.addresses[store_id] = address
        self._addresses_digest = resp.addresses_digest
        if self.tokens is not None and self.tokens.update(resp):
            self.poke()  # tells placement at once that this node has the new token table

    async def _apply_operation(self, op: meta_pb2.Operation) -> None:
        kind = op.WhichOneof("kind")
        if kind != "create_replica" or op.create_replica.partition.id not in self.rs.replicas:
            log.info("operation %d for partition %d: %s", op.id, op.partition_id, kind,
                     extra={"partition": op.partition_id})
        if kind == "create_replica":
            cr = op.create_replica
            try:
                await self.rs.create_replica(descriptor_from_pb(cr.partition), cr.replica_id, cr.bootstrap)
            except (ValueError, NotImplementedError) as exc:
                log.warning("cannot create replica of partition %d: %s", cr.partition.id, exc,
                            extra={"partition": cr.partition.id})
        elif kind == "add_replica":
            self.rs.request_add(op.partition_id, op.add_replica.replica.replica_id, op.add_replica.replica.store_id)
        elif kind == "remove_replica":
            self.rs.request_remove(op.partition_id, op.remove_replica.replica.replica_id)
        elif kind == "destroy_replica":
            self.rs.destroy_if_removed(descriptor_from_pb(op.destroy_replica.partition), op.destroy_replica.replica_id)
        elif kind == "split":
            await self._split(op)
        elif kind == "transfer_leader":
            rep = self.rs.replicas.get(op.partition_id)
            if rep is None or not rep.is_leader():
                return
            member = rep.descriptor.replica_on(op.transfer_leader.to_store_id)
            target = member.replica_id if member is not None else None
            pr = rep.raw.status().progress.get(target) if target is not None else None
            if pr is not None and not pr.recent_active:
                # Not heard from lately (down?): a transfer would stall writes for an election
                # timeout and fail. Placement drops the operation once the partition moves on.
                log.info("transfer of partition %d to store %d skipped: not heard from lately",
                         rep.pid, op.transfer_leader.to_store_id, extra={"partition": rep.pid})
                return
            if target is not None:
                # A quiet group does not tick, and only ticks abandon a transfer whose target
                # never answers (while one is pending, the leader takes no proposals and no
                # membership steps): wake it first.
                rep.ensure_awake()
                try:
                    rep.raw.transfer_leader(target)
                    self.rs.kick()
                except Exception as exc:
                    log.warning("transfer of partition %d refused: %s", rep.pid, exc, extra={"partition": rep.pid})
        else:
            log.info("operation %s for partition %d not supported yet", kind, op.partition_id,
                     extra={"partition": op.partition_id})

    async def _split(self, op: meta_pb2.Operation) -> None:
        """Propose placement's split as an entry of the partition's log (we lead it).

        Proposing twice is harmless: the entry carries the epoch it was decided against, and
        the first to apply moves the epoch, so any later copy changes nothing.
        """
        rep = self.rs.replicas.get(op.partition_id)
        if rep is None or not rep.is_leader():
            return
        desc = rep.descriptor
        if op.HasField("epoch") and Epoch(op.epoch.conf_ver, op.epoch.version) != desc.epoch:
            log.info("split of partition %d dropped: decided at another epoch", rep.pid, extra={"partition": rep.pid})
            return
        ids = list(op.split.new_replica_ids)
        if not op.split.new_partition_id or len(ids) != len(desc.replicas):
            log.warning("split of partition %d dropped: it names no ids for the new partition", rep.pid,
                        extra={"partition": rep.pid})
            return
        state = self.rs.state
        key = bytes(op.split.split_key)
        if key:
            left = await asyncio.to_thread(state.size_below, rep.start, key)
        else:
            point = await asyncio.to_thread(state.split_point, rep.pid, rep.start, rep.end)
            if point is None:
                log.info("split of partition %d: no key splits it in two (too little data)", rep.pid,
                         extra={"partition": rep.pid})
                return
            key, left = point
        if len(key) > min(MAX_SPLIT_KEY_BYTES, self.max_key_bytes) or not strictly_inside(rep.start, rep.end, key):
            log.warning("split of partition %d dropped: %r is not a valid boundary", rep.pid, key[:40],
                        extra={"partition": rep.pid})
            return
        if rep.descriptor is not desc or not rep.is_leader():
            return  # changed while we measured: placement sends it again if still wanted
        pairs = tuple(sorted((r.store_id, rid) for r, rid in zip(desc.replicas, ids)))
        cmd = SplitCommand(desc.epoch.conf_ver, desc.epoch.version, key, op.split.new_partition_id, pairs, left)
        try:
            fut = rep.propose(cmd)
        except Exception as exc:
            log.info("split of partition %d not proposed: %r", rep.pid, exc, extra={"partition": rep.pid})
            return
        # Nobody waits for it: placement sees the outcome in the reports (and re-sends).
        fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        log.info("partition %d: proposed a split at %r (new partition %d)", rep.pid, key[:40], cmd.new_partition_id,
                 extra={"partition": rep.pid})

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
                await self._stub().ReportLeader(req, timeout=2)
            except grpc.aio.AioRpcError:
                pass  # the next heartbeat carries it anyway

        t = asyncio.get_running_loop().create_task(send())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
