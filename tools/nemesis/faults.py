"""Carry out schedule steps against a running cluster, and undo everything on demand.

How each fault is injected (all on loopback, nothing needs root, nothing outlives the run):

- kill / restart: SIGKILL of the node process (no shutdown path runs: unsynced writes in
  flight are lost as in a power cut of the process), restart on the same data dir and port.
- pause / resume: SIGSTOP / SIGCONT. The process keeps its sockets; peers and clients see it
  go silent, and on resume it must notice its lease expired before serving reads. The links
  from its peers to it drop while it is stopped and for PEERS_LATE_S after it continues: the
  node wakes to its clients' queued requests before any word of a newer term (as after a GC
  pause on a slow network), so a lease it kept too long shows as a stale read rather than
  hiding behind how fast its peers' messages happen to be read (its Raft traffic comes on
  plain TCP, read before the gRPC requests; docs/decisions.md D23).
- partition / latency: the :class:`~tools.nemesis.proxy.ProxyNet` links between stores are set
  to drop or delay; clients and the router still reach every node directly.
- fail-fsync / restart-healthy: the node's ``--fault-file`` says ``{"fail_fsync": true}`` (the
  WAL's fault hook: every fsync fails, the node stops acknowledging writes for good); healing
  clears the file and restarts the node (SIGKILL + start).
- slow-disk / fast-disk: ``{"fsync_delay_ms": N}`` in the fault file.
- kill-router / restart-router (``router``): the nemesis runs three routers (the placement
  group); the step SIGKILLs or SIGSTOPs one of them, the placement leader three times in four,
  and half the time first submits an operation (a leadership transfer) so that the failover
  happens while it is in flight. The heal restarts (or SIGCONTs) it and then requires the
  operation to have completed, i.e. to have left placement's list of operations in flight:
  the new placement leader must carry on what the old one accepted.
- transfer: ``SubmitOperation(transfer_leader)`` through the router's Meta service; the leader's
  node carries it out on its next heartbeat. A target store that holds no voter of the
  partition (with more than 3 nodes) is replaced by one of the partition's voters.
- split / finish-split (``split``): ``SubmitOperation(split)`` of partition K at its middle key,
  under the workload's load; with ``cut`` the partition's leader (or one follower) is first cut
  off from every other store. The heal restores the network; the split must be done within 25
  s of its submit: the partition's range shrank and a new partition starts where it now ends.
  A split placement refuses (no data yet to find a middle key in, another operation in flight)
  is logged, not a problem.
- kill-for-repair / restart-repaired (``repair``, 4+ nodes): SIGKILL of a node, held past the
  routers' short ``--max-down`` (4 s here), so placement re-creates each of its replicas on
  another store. The heal requires the repair to be done (every partition has its full set of
  voters, none on the dead node) within 30 s of the kill, restarts the node, and requires each
  of its stale replicas to be collected (the node answers "partition not found", unless the
  scheduler has given it a replica of that partition again) within 15 s.
- drain / undrain (``drain``, 4+ nodes): ``SetStoreState(DRAINING)`` of a node; the scheduler
  moves its replicas and leaders off. The heal requires the store to hold no replica within
  30 s of the drain, then sets it UP again (the scheduler fills it back). A drain placement
  refuses (too few other up stores) is logged, not a problem.
- add-replica / finish-move (``member``): a replica of partition K moves to a store that does
  not host it. ``SubmitOperation(add_replica)``; placement adds it as a learner and has the
  store create it empty, the leader replicates to it (snapshot) and promotes it to voter once
  caught up. With ``split``, the new store is first cut off from the leader and one voter (so
  it stays a learner: on loopback it would catch up and be promoted within milliseconds, long
  before the router's 1 s view shows it); as soon as the router's descriptor shows the
  learner (and 0.3 s more for the conf change to reach the followers) the node-to-node
  network is cut into {leader, that voter} | {the other voter, the learner}: a candidate that
  counted the
  learner's vote could win there and, after the heal, overwrite what the majority side
  committed. The heal restores the network (first waiting a moment for the cut-off voter to
  claim leadership, if it ever did: the worst moment to heal), waits for the promotion, then
  removes one of the old replicas (``RemoveReplica``; the leader's own, sometimes) and waits
  until the descriptor no longer lists it and its store stops hosting the partition. A
  leader elected on the voter-minority side is reported as a problem.

The :class:`Nemesis` keeps what it broke (killed, paused, failed, slowed, cut) so that
:meth:`Nemesis.heal_all` can restore a healthy cluster whatever the schedule left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from common.routers import parse_router_addresses
from common.wire.errors import error_from_rpc
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure
from router.client.meta import GrpcMeta
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2
from tools.cluster import Cluster
from tools.nemesis.proxy import DELAY, DROP, PASS, ProxyNet
from tools.nemesis.schedule import REPAIR_MAX_DOWN_S, REPLICAS, Step

RESTART_TIMEOUT_S = 30.0
PEERS_LATE_S = 1.0  # a resumed node hears from its peers this long after it continues (pause)
FAULT_APPLY_TIMEOUT_S = 2.0
# member episodes
LEARNER_TIMEOUT_S = 5.0  # AddReplica submitted -> the router's descriptor lists the learner
CONF_SPREAD_S = 0.3  # then this long for the conf change to reach the followers, before the cut
MINORITY_CLAIM_WAIT_S = 2.5  # at the heal: wait this long for a fresh claim of the cut-off side
VOTER_TIMEOUT_S = 20.0  # network healed -> the new replica is a voter
REMOVE_TIMEOUT_S = 20.0  # RemoveReplica submitted -> the descriptor no longer lists the replica
UNHOSTED_TIMEOUT_S = 10.0  # ... -> the removed replica's store no longer hosts the partition
POLL_S = 0.1
# router episodes: the router stopped -> the operation submitted just before it is done. It
# covers the longest hold (3 s, a paused leader may keep its followers waiting that long), an
# election, and placement's own redelivery period (10 s, router/placement/table.py) for an
# operation handed out just before the failover.
OPERATION_AFTER_FAILOVER_S = 20.0
# repair episodes: the kill -> every partition whole again without the dead node (past the
# routers' --max-down, 4 s, one move per partition it held, a few at a time).
REPAIR_TIMEOUT_S = 30.0
# ... the restart -> each of its stale replicas collected.
COLLECT_TIMEOUT_S = 15.0
# drain episodes: the drain -> the store holds no replica.
DRAIN_TIMEOUT_S = 30.0
# split episodes: submitted -> done (placement shows both halves): the longest hold (4 s, the
# leader may be cut off all along), an election, placement's redelivery period (10 s).
SPLIT_TIMEOUT_S = 25.0
META_TIMEOUT_S = 2.0  # one call to the router's Meta service


def write_fault_file(path: str, spec: dict) -> None:
    """Replace the node's fault file atomically (the node polls it every 100 ms)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)


@dataclass
class Applied:
    """What one step did, once resolved against the live cluster."""

    step: Step
    started: float  # monotonic
    finished: float
    detail: str
    nodes: tuple[int, ...] = ()


@dataclass
class RouterOutage:
    """A router episode in progress (see :meth:`Nemesis._do_kill_router`)."""

    router: int
    mode: str  # "kill" or "pause"
    leader: bool  # it led the placement group when it was stopped
    operation: int = 0  # the operation submitted just before (0: none)
    partition: int = 0
    stopped: float = 0.0  # monotonic
    watcher: asyncio.Future[str] | None = None  # until the operation is done


@dataclass
class SplitRun:
    """A split episode in progress (see :meth:`Nemesis._do_split`)."""

    pid: int
    submitted: float  # monotonic
    end: bytes  # the partition's end key before the split
    version: int  # and its range version
    watcher: asyncio.Future[str] | None = None  # until the split is done


@dataclass
class DeadNode:
    """A repair episode in progress: the node killed and what it held."""

    node: int
    killed: float  # monotonic
    held: tuple[int, ...]  # partitions with a replica on it at the kill
    watcher: asyncio.Future[tuple[bool, str]] | None = None  # until repaired: (done, detail)


@dataclass
class Drain:
    """A drain episode in progress."""

    node: int
    started: float  # monotonic
    watcher: asyncio.Future[str] | None = None  # until the store holds nothing


@dataclass
class Move:
    """A member episode in progress (see :meth:`Nemesis._do_add_replica`)."""

    episode: int
    step: Step
    pid: int
    spare: int  # the store receiving the new replica
    old: tuple[int, ...]  # the stores of the partition's voters before the move
    submitted: float  # monotonic: AddReplica accepted by the router
    pairs: list[tuple[int, int]] = field(default_factory=list)  # links cut (split)
    minority: int = 0  # the voter cut off with the learner (split)
    term_at_cut: int = 0  # the partition's term as the router knew it right after the cut
    claims: list[tuple[int, int]] = field(default_factory=list)  # (store, term) minority-side leaders seen
    watcher: asyncio.Task | None = None


@dataclass
class Nemesis:
    cluster: Cluster
    net: ProxyNet
    fault_files: dict[int, str]
    partitions: list[int]  # partition ids in key order (see :meth:`partition`)
    log: Callable[[str], None] = print
    killed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    fsync_failed: set[int] = field(default_factory=set)
    slow: set[int] = field(default_factory=set)
    cut: set[tuple[int, int]] = field(default_factory=set)
    delayed: set[tuple[int, int]] = field(default_factory=set)
    late: set[tuple[int, int]] = field(default_factory=set)  # peer -> paused node links held back
    routers_killed: set[int] = field(default_factory=set)
    routers_paused: set[int] = field(default_factory=set)
    outages: dict[int, RouterOutage] = field(default_factory=dict)  # episode -> router stopped
    splits: dict[int, SplitRun] = field(default_factory=dict)  # episode -> split submitted
    dead: dict[int, DeadNode] = field(default_factory=dict)  # episode -> node killed for repair
    drains: dict[int, Drain] = field(default_factory=dict)  # episode -> store draining
    resolved: dict[int, tuple[int, ...]] = field(default_factory=dict)  # episode -> nodes hit
    moves: dict[int, Move] = field(default_factory=dict)  # episode -> member move in progress
    problems: list[str] = field(default_factory=list)  # failed expectations (member moves)
    _episode_pairs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # episode -> links

    _pool: ChannelPool | None = None
    _meta: GrpcMeta | None = None

    @property
    def stores(self) -> list[int]:
        return sorted(self.cluster.node_procs)

    @property
    def router_down(self) -> bool:
        """No router of the placement group is running (killed or paused)."""
        return set(self.cluster.router_procs) <= self.routers_killed | self.routers_paused

    def meta(self) -> GrpcMeta:
        """The placement group's Meta service, following its leader wherever it is."""
        if self._meta is None:
            self._pool = ChannelPool()
            self._meta = GrpcMeta(parse_router_addresses(self.cluster.router_addresses), self._pool)
        return self._meta

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    # -- resolving symbolic targets ------------------------------------------------------

    def partition(self, k: int) -> int:
        """The id of the schedule's partition ``k``: the k-th in key order, counting from 1,
        which on the new cluster a run starts is the partition whose id is ``k``."""
        return self.partitions[(k - 1) % len(self.partitions)]

    async def leaders(self) -> dict[int, int]:
        """Partition id -> leader store as the router knows it (empty if it cannot say)."""
        if self.router_down:
            return {}
        try:
            resp = await self.meta().call("ScanPartitions", meta_pb2.ScanPartitionsRequest(), META_TIMEOUT_S)
        except RpcFailure:
            return {}
        return {p.id: p.leader_store_id for p in resp.partitions if p.leader_store_id}

    async def resolve(self, target: str) -> tuple[int, str]:
        """``node:N`` -> N; ``leader:K`` -> the leader store of partition K (falls back to a
        fixed store, said so in the description, when no leader is known)."""
        kind, _, arg = target.partition(":")
        if kind == "node":
            return int(arg), f"node {arg}"
        pid = self.partition(int(arg))
        leader = (await self.leaders()).get(pid)
        if leader in self.cluster.node_procs:
            return leader, f"node {leader} (leader of partition {pid})"
        fallback = self.stores[(int(arg) - 1) % len(self.stores)]
        return fallback, f"node {fallback} (partition {pid} has no known leader)"

    # -- applying steps ------------------------------------------------------------------

    async def apply(self, step: Step) -> Applied:
        started = time.monotonic()
        handler = getattr(self, "_do_" + step.action.replace("-", "_"))
        detail, nodes = await handler(step)
        if nodes:
            self.resolved.setdefault(step.episode, nodes)
        done = Applied(step, started, time.monotonic(), detail, nodes)
        self.log(f"nemesis: {step.at:7.2f}s #{step.episode} {step.action}: {detail}")
        return done

    def _hit(self, step: Step) -> tuple[int, ...]:
        return self.resolved.get(step.episode, ())

    async def _do_kill(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        if n in self.killed:
            return f"{what} already down", (n,)
        await asyncio.to_thread(self.cluster.kill, n)
        self.killed.add(n)
        self.paused.discard(n)
        return f"SIGKILL {what}", (n,)

    async def _do_restart(self, step: Step) -> tuple[str, tuple[int, ...]]:
        done = []
        for n in self._hit(step):
            if n in self.killed:
                await self._restart_node(n)
                done.append(n)
        return f"restarted node(s) {done}", ()

    async def _restart_node(self, n: int) -> None:
        await asyncio.to_thread(self.cluster.restart, n, RESTART_TIMEOUT_S)
        self.killed.discard(n)

    async def _do_pause(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        proc = self.cluster.node_procs[n].popen
        if n in self.killed or proc is None or proc.poll() is not None:
            return f"{what} is down, not paused", ()
        proc.send_signal(signal.SIGSTOP)
        self.paused.add(n)
        # Its peers' words reach it late (see the module docstring); links a partition holds
        # already stay the partition's.
        inbound = [(p, n) for p in self.stores if p != n and (p, n) not in self.cut and (p, n) not in self.late]
        self.net.set(inbound, DROP)
        self.late.update(inbound)
        return f"SIGSTOP {what}", (n,)

    async def _do_resume(self, step: Step) -> tuple[str, tuple[int, ...]]:
        done = [n for n in self._hit(step) if self._resume(n)]
        return f"SIGCONT node(s) {done}", ()

    def _resume(self, n: int) -> bool:
        if n not in self.paused:
            return False
        self.paused.discard(n)
        proc = self.cluster.node_procs[n].popen
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        late = [pair for pair in self.late if pair[1] == n]
        if late:
            asyncio.get_running_loop().call_later(PEERS_LATE_S, self._peers_reach, late)
        return True

    def _peers_reach(self, pairs: list[tuple[int, int]]) -> None:
        """The held-back links of a resumed node flow again (unless a partition took them)."""
        mine = [pair for pair in pairs if pair in self.late and pair not in self.cut]
        self.late.difference_update(pairs)
        if mine:
            self.net.set(mine, PASS)

    async def _partition_pairs(self, step: Step) -> tuple[list[tuple[int, int]], str, tuple[int, ...]]:
        shape = step.param("shape")
        stores = self.stores
        if shape in ("majority", "leader"):
            n, what = await self.resolve(str(step.param("minority")))
            pairs = [(a, b) for a in stores for b in stores if a != b and n in (a, b)]
            return pairs, f"{shape}: {what} cut off from {[s for s in stores if s != n]}", (n,)
        if shape == "asymmetric":
            n, what = await self.resolve(str(step.param("from")))
            others = [s for s in stores if s != n]
            to = others[step.number("other") % len(others)]
            return [(n, to)], f"asymmetric: {what} -> node {to} dropped, node {to} -> {n} flows", (n, to)
        if shape == "bridge":
            b, what = await self.resolve(str(step.param("bridge")))
            others = [s for s in stores if s != b]
            half = len(others) // 2
            left, right = others[:half], others[half:]
            pairs = [(x, y) for x in left for y in right] + [(y, x) for x in left for y in right]
            return pairs, f"bridge: {left} | {right} cut, joined only by {what}", (b,)
        if shape == "halves":
            n, what = await self.resolve(str(step.param("with")))
            others = [s for s in stores if s != n]
            mate = step.number("mate")
            rotated = others[mate % len(others):] + others[: mate % len(others)]
            left = sorted([n, *rotated[: len(stores) // 2 - 1]])
            right = [s for s in stores if s not in left]
            pairs = _between(left, right)
            return pairs, f"halves: {left} | {right} ({what} in the first half)", ()
        raise ValueError(f"unknown partition shape {shape!r}")

    async def _do_partition(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pairs, detail, nodes = await self._partition_pairs(step)
        self.net.set(pairs, DROP)
        self.cut.update(pairs)
        self._episode_pairs[step.episode] = pairs
        return detail + f" (links dropped: {', '.join(f'{a}->{b}' for a, b in pairs)})", nodes

    async def _do_latency(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        ms = step.number("delay_ms")
        pairs = [(a, b) for a in self.stores for b in self.stores if a != b and n in (a, b)]
        self.net.set(pairs, DELAY, ms / 1000.0)
        self.delayed.update(pairs)
        self._episode_pairs[step.episode] = pairs
        return f"+{ms} ms on every link of {what}", (n,)

    async def _do_heal_network(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pairs = self._episode_pairs.pop(step.episode, [])
        self.net.set(pairs, "pass")
        self.cut.difference_update(pairs)
        self.delayed.difference_update(pairs)
        return f"links back to pass: {', '.join(f'{a}->{b}' for a, b in pairs) or 'none'}", ()

    def _hook_changes(self, n: int) -> int:
        """How many times node ``n`` said it changed its fault hooks (a line it prints whatever
        its --log-level; see node/server.py)."""
        try:
            with open(self.cluster.node_procs[n].log_path, errors="replace") as f:
                return sum(1 for line in f if "fault hooks now" in line)
        except OSError:
            return 0

    async def _set_faults(self, n: int, spec: dict) -> str:
        """Write node ``n``'s fault file and wait until the node says it applied it, so that the
        fault is in force when the step returns (the node polls the file every 100 ms)."""
        before = self._hook_changes(n)
        write_fault_file(self.fault_files[n], spec)
        deadline = time.monotonic() + FAULT_APPLY_TIMEOUT_S
        while self._hook_changes(n) <= before:
            if time.monotonic() > deadline:
                return f" (node {n} did not confirm within {FAULT_APPLY_TIMEOUT_S:g} s)"
            await asyncio.sleep(0.02)
        return ""

    async def _do_fail_fsync(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        if n in self.killed:
            return f"{what} is down, disk not failed", ()
        self.fsync_failed.add(n)
        note = await self._set_faults(n, {"fail_fsync": True})
        return f"every fsync fails on {what}{note}", (n,)

    async def _do_restart_healthy(self, step: Step) -> tuple[str, tuple[int, ...]]:
        done = []
        for n in self._hit(step):
            if n in self.fsync_failed:
                await self._heal_disk_node(n)
                done.append(n)
        return f"fault file cleared, node(s) {done} killed and restarted", ()

    async def _heal_disk_node(self, n: int) -> None:
        write_fault_file(self.fault_files[n], {})
        self._resume(n)
        if n not in self.killed:
            await asyncio.to_thread(self.cluster.kill, n)
            self.killed.add(n)
        await self._restart_node(n)
        self.fsync_failed.discard(n)

    async def _do_slow_disk(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        ms = step.number("delay_ms")
        if n in self.fsync_failed:
            return f"{what} has a failed disk already", ()
        self.slow.add(n)
        note = await self._set_faults(n, {"fsync_delay_ms": ms})
        return f"fsync +{ms} ms on {what}{note}", (n,)

    async def _do_fast_disk(self, step: Step) -> tuple[str, tuple[int, ...]]:
        done = []
        for n in self._hit(step):
            if n in self.slow and n not in self.fsync_failed:
                await self._set_faults(n, {})
                done.append(n)
            self.slow.discard(n)
        return f"fault file cleared on node(s) {done}", ()

    async def _do_kill_router(self, step: Step) -> tuple[str, tuple[int, ...]]:
        running = [i for i in sorted(self.cluster.router_procs)
                   if i not in self.routers_killed | self.routers_paused and self.cluster.router_procs[i].alive]
        if not running:
            return "every router is down already", ()
        leader = 0
        try:
            got = await self.meta().call("GetRouters", meta_pb2.GetRoutersRequest(), META_TIMEOUT_S)
            leader = int(got.leader)
        except RpcFailure:
            pass
        if step.param("who", "leader") == "leader" and leader in running:
            victim = leader
        else:
            others = [i for i in running if i != leader] or running
            victim = others[step.number("other", 0) % len(others)]
        mode = str(step.param("mode", "kill"))
        outage = RouterOutage(victim, mode, victim == leader)
        parts = []
        if step.param("operation"):
            parts.append(await self._submit_in_flight(outage, step))
        proc = self.cluster.router_procs[victim]
        if mode == "pause" and (popen := proc.running) is not None:
            popen.send_signal(signal.SIGSTOP)
            self.routers_paused.add(victim)
            parts.insert(0, f"SIGSTOP router {victim}")
        else:
            await asyncio.to_thread(self.cluster.kill_router, victim)
            self.routers_killed.add(victim)
            parts.insert(0, f"SIGKILL router {victim}")
        outage.stopped = time.monotonic()
        self.outages[step.episode] = outage
        if outage.operation:
            outage.watcher = asyncio.ensure_future(self._wait_operation(outage, step.episode))
        role = "the placement leader" if outage.leader else f"a follower; router {leader or '?'} leads"
        parts[0] += f" ({role})"
        return "; ".join(parts), ()

    async def _submit_in_flight(self, outage: RouterOutage, step: Step) -> str:
        """Submit a transfer of partition K's leadership to another voter: the operation the
        router is stopped under."""
        pid = self.partition(step.number("partition", 1))
        try:
            desc = await self.descriptor(pid)
            voters = sorted(r.store_id for r in desc.replicas if r.role == meta_pb2.VOTER)
            others = [v for v in voters if v != desc.leader_store_id]
            if not others:
                return f"no other voter of partition {pid} to transfer to ({describe_replicas(desc)})"
            to = others[step.number("to", 0) % len(others)]
            resp = await self.meta().call("SubmitOperation", meta_pb2.SubmitOperationRequest(
                operation=meta_pb2.Operation(partition_id=pid, transfer_leader=meta_pb2.TransferLeader(to_store_id=to))
            ), META_TIMEOUT_S)
        except RpcFailure as exc:
            return f"no operation in flight (partition {pid}: {exc.code.name} {exc.message})"
        outage.operation, outage.partition = int(resp.operation_id), pid
        return f"operation {outage.operation} (transfer of partition {pid} to store {to}) in flight"

    async def _do_restart_router(self, step: Step) -> tuple[str, tuple[int, ...]]:
        outage = self.outages.pop(step.episode, None)
        if outage is None:
            return "no router stopped", ()
        detail = await self._start_router(outage.router)
        if outage.watcher is not None:
            detail += "; " + await outage.watcher
        return detail, ()

    async def _start_router(self, i: int) -> str:
        if i in self.routers_paused:
            self.routers_paused.discard(i)
            if (popen := self.cluster.router_procs[i].running) is not None:
                popen.send_signal(signal.SIGCONT)
            return f"SIGCONT router {i}"
        if i in self.routers_killed:
            await asyncio.to_thread(self.cluster.restart_router, i, RESTART_TIMEOUT_S)
            self.routers_killed.discard(i)
            return f"router {i} restarted"
        return f"router {i} was running"

    async def _wait_operation(self, outage: RouterOutage, episode: int) -> str:
        """Until the operation submitted before the outage leaves placement's list of
        operations in flight (done: for a transfer, the partition's leader is the target),
        watched from the moment the router stopped."""
        deadline = outage.stopped + OPERATION_AFTER_FAILOVER_S
        last = "no answer from placement"
        while True:
            try:
                got = await self.meta().call("ListOperations", meta_pb2.ListOperationsRequest(), META_TIMEOUT_S)
                if all(p.operation.id != outage.operation for p in got.operations):
                    took = time.monotonic() - outage.stopped
                    return f"operation {outage.operation} done {took:.2f} s after the router stopped"
                last = "still in flight"
            except RpcFailure as exc:
                last = f"placement: {exc.code.name}"
            if time.monotonic() > deadline:
                self.problems.append(
                    f"#{episode} router: operation {outage.operation} (partition {outage.partition}) submitted "
                    f"before router {outage.router} was stopped did not complete within "
                    f"{OPERATION_AFTER_FAILOVER_S:g} s ({last})")
                return f"operation {outage.operation} NOT done ({last})"
            await asyncio.sleep(POLL_S)

    async def _do_transfer(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pid = self.partition(step.number("partition"))
        to, what = await self.resolve(str(step.param("to")))
        if self.router_down:
            return f"router down: no transfer of partition {pid} to {what}", ()
        try:
            desc = await self.descriptor(pid)
        except RpcFailure:
            desc = None
        voters = [] if desc is None else sorted(r.store_id for r in desc.replicas if r.role == meta_pb2.VOTER)
        if voters and to not in voters:
            # More stores than replicas: aim at one of the partition's voters instead.
            to = voters[(to - 1) % len(voters)]
            what += f" (no voter of partition {pid} there; node {to} instead)"
        try:
            await self._submit(
                meta_pb2.Operation(partition_id=pid, transfer_leader=meta_pb2.TransferLeader(to_store_id=to))
            )
        except RpcFailure as exc:
            return f"transfer of partition {pid} to {what} not queued: {exc.code.name} {exc.message}", ()
        return f"transfer of partition {pid} to {what} queued", ()

    # -- splits (split) -------------------------------------------------------------------------

    async def _do_split(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pid = self.partition(step.number("partition"))
        if self.router_down:
            return f"router down: partition {pid} not split", ()
        try:
            desc = await self.descriptor(pid)
        except RpcFailure as exc:
            return f"partition {pid} not split: placement answered {exc.code.name} {exc.message}", ()
        cut = str(step.param("cut", "none"))
        voters = sorted(r.store_id for r in desc.replicas if r.role == meta_pb2.VOTER)
        leader = desc.leader_store_id
        followers = [v for v in voters if v != leader]
        victim = 0
        if cut == "leader" and leader in self.stores:
            victim = leader
        elif cut == "follower" and followers:
            victim = followers[step.number("follower", 0) % len(followers)]
        parts = []
        if victim:
            others = [s for s in self.stores if s != victim]
            self._cut(step.episode, _between([victim], others))
            parts.append(f"node {victim} ({'leader' if victim == leader else 'a follower'} of partition {pid}) "
                         f"cut off from {others}")
        try:
            await self._submit(meta_pb2.Operation(partition_id=pid, split=meta_pb2.Split()))
        except RpcFailure as exc:
            parts.append(f"split of partition {pid} refused: {exc.code.name} {exc.message}")
            return "; ".join(parts), (victim,) if victim else ()
        run = SplitRun(pid, time.monotonic(), desc.end, desc.epoch.version)
        run.watcher = asyncio.ensure_future(self._wait_split(step.episode, run))
        self.splits[step.episode] = run
        parts.append(f"split of partition {pid} ({describe_replicas(desc)}) submitted")
        return "; ".join(parts), (victim,) if victim else ()

    async def _do_finish_split(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pairs = self._episode_pairs.pop(step.episode, [])
        self._uncut(step.episode, pairs)
        run = self.splits.pop(step.episode, None)
        healed = "network healed; " if pairs else ""
        if run is None or run.watcher is None:
            return healed + "no split to wait for", ()
        return healed + await run.watcher, ()

    async def _wait_split(self, episode: int, run: SplitRun) -> str:
        """Until partition ``run.pid`` has shrunk and a partition starts where it now ends,
        watched from the submit."""
        deadline = run.submitted + SPLIT_TIMEOUT_S
        last = "no answer from placement"
        while True:
            try:
                desc = await self.descriptor(run.pid)
                if desc.epoch.version > run.version and desc.end != run.end:
                    right = await self.meta().call(
                        "GetPartition", meta_pb2.GetPartitionRequest(key=desc.end), META_TIMEOUT_S)
                    if right.partition.id != run.pid and right.partition.start == desc.end:
                        return (f"split of partition {run.pid} done {time.monotonic() - run.submitted:.2f} s after "
                                f"it was submitted: partition {right.partition.id} starts at {desc.end!r}")
                last = f"range version {desc.epoch.version}, ends at {desc.end!r}"
            except RpcFailure as exc:
                last = f"placement: {exc.code.name} {exc.message}"
            if time.monotonic() > deadline:
                self.problems.append(f"#{episode} split: partition {run.pid} not split {SPLIT_TIMEOUT_S:g} s after "
                                     f"it was submitted ({last})")
                return f"split of partition {run.pid} NOT done ({last})"
            await asyncio.sleep(POLL_S)

    # -- repair and drain (repair, drain) -------------------------------------------------------

    async def _partitions(self) -> list[meta_pb2.PartitionDescriptor]:
        resp = await self.meta().call("ScanPartitions", meta_pb2.ScanPartitionsRequest(), META_TIMEOUT_S)
        return list(resp.partitions)

    async def _wait_partitions(
        self, ok: Callable[[list[meta_pb2.PartitionDescriptor]], bool], deadline: float
    ) -> tuple[bool, str]:
        """Poll placement's partitions until ``ok`` (True, "") or the deadline (False, last seen)."""
        last = "no answer from placement"
        while True:
            try:
                parts = await self._partitions()
                if ok(parts):
                    return True, ""
                last = "; ".join(f"{d.id}: {describe_replicas(d)}" for d in parts)
            except RpcFailure as exc:
                last = f"placement: {exc.code.name} {exc.message}"
            if time.monotonic() > deadline:
                return False, last
            await asyncio.sleep(POLL_S * 2)

    async def _do_kill_for_repair(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        if n in self.killed or n in self.paused:
            return f"{what} is down already: not killed for repair", ()
        try:
            held = tuple(d.id for d in await self._partitions() if any(r.store_id == n for r in d.replicas))
        except RpcFailure as exc:
            return f"{what} not killed: placement answered {exc.code.name}", ()
        await asyncio.to_thread(self.cluster.kill, n)
        self.killed.add(n)
        dead = DeadNode(n, time.monotonic(), held)
        dead.watcher = asyncio.ensure_future(self._wait_repaired(dead))
        self.dead[step.episode] = dead
        return (f"SIGKILL {what}, which holds partitions {list(held)}: to be repaired after --max-down "
                f"{REPAIR_MAX_DOWN_S:g} s"), (n,)

    async def _do_restart_repaired(self, step: Step) -> tuple[str, tuple[int, ...]]:
        dead = self.dead.pop(step.episode, None)
        if dead is None:
            return "no node killed for repair", ()
        return await self._finish_repair(step.episode, dead), ()

    async def _wait_repaired(self, dead: DeadNode) -> tuple[bool, str]:
        """Watched from the kill: every partition has its voters again, none on the dead node."""
        n = dead.node

        def repaired(parts: list[meta_pb2.PartitionDescriptor]) -> bool:
            return all(
                sum(1 for r in d.replicas if r.role == meta_pb2.VOTER) >= REPLICAS
                and all(r.store_id != n for r in d.replicas)
                for d in parts
            )

        ok, last = await self._wait_partitions(repaired, dead.killed + REPAIR_TIMEOUT_S)
        return ok, f"{time.monotonic() - dead.killed:.2f} s after the kill" if ok else last

    async def _finish_repair(self, episode: int, dead: DeadNode) -> str:
        n = dead.node
        assert dead.watcher is not None
        ok, last = await dead.watcher
        parts = []
        if ok:
            parts.append(f"repaired {last}")
        else:
            self.problems.append(f"#{episode} repair: node {n}'s replicas not re-created elsewhere within "
                                 f"{REPAIR_TIMEOUT_S:g} s of the kill ({last})")
            parts.append(f"NOT repaired within {REPAIR_TIMEOUT_S:g} s ({last})")
        if n in self.killed:
            await self._restart_node(n)
            parts.append(f"node {n} restarted")
        if ok and dead.held:
            parts.append(await self._wait_collected(episode, n, dead.held))
        return "; ".join(parts)

    async def _wait_collected(self, episode: int, n: int, pids: tuple[int, ...]) -> str:
        """Until node ``n`` hosts none of ``pids`` placement no longer gives it."""
        t0 = time.monotonic()
        waiting = set(pids)
        last = ""
        async with grpc.aio.insecure_channel(self.cluster.node_procs[n].address) as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            while waiting:
                for pid in sorted(waiting):
                    try:
                        if any(r.store_id == n for r in (await self.descriptor(pid)).replicas):
                            waiting.discard(pid)  # the scheduler gave it a replica again
                            continue
                    except RpcFailure as exc:
                        last = f"placement: {exc.code.name}"
                        continue
                    req = kv_pb2.GetRequest(context=kv_pb2.RequestContext(partition_id=pid), key=b"",
                                            read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE))
                    try:
                        await kv.Get(req, timeout=1.0)
                        last = f"partition {pid} still served"
                    except grpc.aio.AioRpcError as exc:
                        err = error_from_rpc(exc)
                        if err is not None and err.WhichOneof("kind") == "partition_not_found":
                            waiting.discard(pid)
                        else:
                            last = f"partition {pid}: {exc.code().name}"
                if not waiting:
                    break
                if time.monotonic() - t0 > COLLECT_TIMEOUT_S:
                    self.problems.append(f"#{episode} repair: node {n} still hosts partitions {sorted(waiting)} "
                                         f"{COLLECT_TIMEOUT_S:g} s after its restart ({last})")
                    return f"stale replicas of {sorted(waiting)} NOT collected ({last})"
                await asyncio.sleep(POLL_S * 2)
        return f"its stale replicas collected {time.monotonic() - t0:.2f} s after the restart"

    async def _set_store_state(self, n: int, state: meta_pb2.StoreState) -> None:
        await self.meta().call("SetStoreState", meta_pb2.SetStoreStateRequest(store_id=n, state=state),
                               META_TIMEOUT_S)

    async def _do_drain(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        if n in self.killed or n in self.paused:
            return f"{what} is down: not drained", ()
        try:
            await self._set_store_state(n, meta_pb2.STORE_DRAINING)
        except RpcFailure as exc:
            return f"drain of {what} refused: {exc.code.name} {exc.message}", ()
        drain = Drain(n, time.monotonic())
        drain.watcher = asyncio.ensure_future(self._wait_drained(step.episode, drain))
        self.drains[step.episode] = drain
        return f"{what} draining", ()

    async def _wait_drained(self, episode: int, drain: Drain) -> str:
        n = drain.node

        def empty(parts: list[meta_pb2.PartitionDescriptor]) -> bool:
            return all(r.store_id != n for d in parts for r in d.replicas)

        ok, last = await self._wait_partitions(empty, drain.started + DRAIN_TIMEOUT_S)
        if ok:
            return f"store {n} emptied {time.monotonic() - drain.started:.2f} s after the drain"
        self.problems.append(f"#{episode} drain: store {n} still holds replicas {DRAIN_TIMEOUT_S:g} s after "
                             f"the drain ({last})")
        return f"store {n} NOT emptied within {DRAIN_TIMEOUT_S:g} s"

    async def _do_undrain(self, step: Step) -> tuple[str, tuple[int, ...]]:
        drain = self.drains.pop(step.episode, None)
        if drain is None:
            return "no store draining", ()
        return await self._undrain(drain), ()

    async def _undrain(self, drain: Drain) -> str:
        detail = await drain.watcher if drain.watcher is not None else ""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            try:
                await self._set_store_state(drain.node, meta_pb2.STORE_UP)
                return f"{detail}; store {drain.node} up again"
            except RpcFailure as exc:
                if time.monotonic() > deadline:
                    self.problems.append(f"store {drain.node} could not be set up again: {exc.code.name} {exc.message}")
                    return f"{detail}; store {drain.node} NOT up again: {exc.code.name}"
                await asyncio.sleep(0.5)

    # -- membership changes (member) -----------------------------------------------------------

    async def descriptor(self, pid: int) -> meta_pb2.PartitionDescriptor:
        """Partition ``pid``'s descriptor as placement has it now."""
        resp = await self.meta().call("GetPartition", meta_pb2.GetPartitionRequest(partition_id=pid), META_TIMEOUT_S)
        return resp.partition

    async def _submit(self, operation: meta_pb2.Operation) -> None:
        await self.meta().call("SubmitOperation", meta_pb2.SubmitOperationRequest(operation=operation), META_TIMEOUT_S)

    async def _wait_descriptor(
        self, pid: int, ok: Callable[[meta_pb2.PartitionDescriptor], bool], timeout: float
    ) -> tuple[meta_pb2.PartitionDescriptor | None, str]:
        """Poll the router until ``ok(descriptor)``; (descriptor, "") or (None, last seen)."""
        deadline = time.monotonic() + timeout
        last = "no answer from the router"
        while True:
            try:
                desc = await self.descriptor(pid)
                if ok(desc):
                    return desc, ""
                last = describe_replicas(desc)
            except RpcFailure as exc:
                last = f"router: {exc.code.name} {exc.message}"
            if time.monotonic() > deadline:
                return None, last
            await asyncio.sleep(POLL_S)

    async def _do_add_replica(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pid = self.partition(step.number("partition"))
        if self.router_down:
            return f"router down: no replica added to partition {pid}", ()
        desc = await self.descriptor(pid)
        hosting = {r.store_id for r in desc.replicas}
        voters = sorted(r.store_id for r in desc.replicas if r.role == meta_pb2.VOTER)
        if len(voters) != len(desc.replicas):
            # An earlier move that did not finish: moving again would only pile up replicas.
            self.problems.append(f"#{step.episode} member: partition {pid} still has non-voters "
                                 f"({describe_replicas(desc)}); no replica moved")
            return f"partition {pid} has non-voters ({describe_replicas(desc)}): nothing moved", ()
        spares = [s for s in self.stores if s not in hosting]
        if not spares:
            return f"partition {pid} is on every store ({describe_replicas(desc)}): nothing moved", ()
        spare = spares[step.number("spare", 0) % len(spares)]
        split = bool(step.param("split"))
        early: list[tuple[int, int]] = []
        if split:
            # The new replica must still be a learner when the network splits. On loopback it
            # catches up (and is promoted) within milliseconds of joining, well inside the
            # router's 1 s view of it, so it is cut off from the leader's side of the coming
            # split first: it joins, the others apply the change, but it cannot catch up.
            left, _ = self._split_sides(desc, voters, step)
            early = _between(left, [spare])
            self._cut(step.episode, early)
        what = f"partition {pid} ({describe_replicas(desc)}): replica added on store {spare}"
        try:
            await self._submit(meta_pb2.Operation(
                partition_id=pid, add_replica=meta_pb2.AddReplica(replica=meta_pb2.Replica(store_id=spare))))
        except RpcFailure as exc:
            self._uncut(step.episode, early)
            self.problems.append(f"#{step.episode} member: AddReplica of store {spare} to partition {pid} "
                                 f"refused: {exc.code.name} {exc.message}")
            return f"AddReplica of store {spare} to partition {pid} refused: {exc.code.name} {exc.message}", ()
        move = Move(step.episode, step, pid, spare, tuple(voters), time.monotonic())
        self.moves[step.episode] = move
        if not split:
            return what + " (a learner, promoted once caught up)", ()
        move.pairs = early

        def joined(d: meta_pb2.PartitionDescriptor) -> bool:
            return any(r.store_id == spare for r in d.replicas)

        seen, last = await self._wait_descriptor(pid, joined, LEARNER_TIMEOUT_S)
        if seen is None:
            note = f"store {spare} not in the descriptor after {LEARNER_TIMEOUT_S:g} s ({last}); split anyway"
        else:
            role = next(meta_pb2.Role.Name(r.role) for r in seen.replicas if r.store_id == spare)
            note = f"{role} after {time.monotonic() - move.submitted:.2f} s"
        await asyncio.sleep(CONF_SPREAD_S)
        desc = await self.descriptor(pid)
        left, minority = self._split_sides(desc, [v for v in voters if v != spare], step)
        right = sorted({minority, spare} - {0})
        pairs = _between(left, right)
        self._uncut(step.episode, [p for p in early if p not in pairs])  # the leader moved meanwhile
        self._cut(step.episode, pairs)
        move.pairs, move.minority = pairs, minority
        try:
            move.term_at_cut = (await self.descriptor(pid)).term
        except RpcFailure:
            move.term_at_cut = desc.term
        move.watcher = asyncio.ensure_future(self._watch_minority(move, right))
        return (f"{what}, cut off from {left} until the split ({note}); network split: {left} "
                f"(leader {desc.leader_store_id or '?'}) | {right} (voter {minority} with the learner), "
                f"term {move.term_at_cut}"), ((minority,) if minority else ())

    def _split_sides(self, desc: meta_pb2.PartitionDescriptor, voters: list[int], step: Step) -> tuple[list[int], int]:
        """The split of a member episode: ([leader, the ``keep``-th other voter], the remaining
        voter). The leader as the router knows it (the first voter if it knows none)."""
        leader = desc.leader_store_id if desc.leader_store_id in voters else voters[0]
        others = [v for v in voters if v != leader]
        if not others:
            return [leader], 0
        keep = others[step.number("keep", 0) % len(others)]
        minority = next((v for v in others if v != keep), 0)
        return sorted({leader, keep}), minority

    def _cut(self, episode: int, pairs: list[tuple[int, int]]) -> None:
        self.net.set(pairs, DROP)
        self.cut.update(pairs)
        have = self._episode_pairs.setdefault(episode, [])
        have += [p for p in pairs if p not in have]

    def _uncut(self, episode: int, pairs: list[tuple[int, int]]) -> None:
        if not pairs:
            return
        self.net.set(pairs, PASS)
        self.cut.difference_update(pairs)
        self._episode_pairs[episode] = [p for p in self._episode_pairs.get(episode, []) if p not in pairs]

    async def _minority_claim(self, move: Move, side: list[int]) -> tuple[int, int] | None:
        """(store, term) when the router names a store of the learner's side leader of the
        partition at a term later than at the cut: elected without a majority of voters."""
        try:
            desc = await self.descriptor(move.pid)
        except RpcFailure:
            return None
        if desc.leader_store_id in side and desc.term > move.term_at_cut:
            return desc.leader_store_id, desc.term
        return None

    async def _watch_minority(self, move: Move, side: list[int]) -> None:
        while True:
            claim = await self._minority_claim(move, side)
            if claim is not None and claim not in move.claims:
                move.claims.append(claim)
                self.log(f"nemesis: #{move.episode} partition {move.pid}: store {claim[0]} (cut off with the "
                         f"learner on store {move.spare}) claims leadership at term {claim[1]}")
            await asyncio.sleep(0.2)

    async def _do_finish_move(self, step: Step) -> tuple[str, tuple[int, ...]]:
        move = self.moves.get(step.episode)
        if move is None:
            return "no move in progress", ()
        return await self._finish_move(move), ()

    async def _finish_move(self, move: Move) -> str:
        pid, spare = move.pid, move.spare
        parts: list[str] = []
        if move.pairs:
            if move.claims:
                # It won an election once: heal just after it wins again (or it still leads),
                # so the deposed majority side hears from it as the leader.
                side = sorted({move.minority, spare})
                deadline = time.monotonic() + MINORITY_CLAIM_WAIT_S
                latest = max(t for _, t in move.claims)
                while time.monotonic() < deadline:
                    claim = await self._minority_claim(move, side)
                    if claim is not None and claim[1] > latest:
                        break
                    await asyncio.sleep(0.05)
            if move.watcher is not None:
                move.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await move.watcher
            self._uncut(move.episode, self._episode_pairs.pop(move.episode, move.pairs))
            parts.append("network healed")
            if move.claims:
                shown = ", ".join(f"store {s} at term {t}" for s, t in move.claims)
                self.problems.append(
                    f"#{move.episode} member: partition {pid}: elected on the side of the cut with one voter "
                    f"(store {move.minority}) and the learner (store {spare}): {shown} (term {move.term_at_cut} at "
                    f"the cut); a leader without a majority of voters"
                )
                parts.append(f"MINORITY LEADER: {shown}")
        healed = time.monotonic()

        def is_voter(d: meta_pb2.PartitionDescriptor) -> bool:
            return any(r.store_id == spare and r.role == meta_pb2.VOTER for r in d.replicas)

        desc, last = await self._wait_descriptor(pid, is_voter, VOTER_TIMEOUT_S)
        if desc is None:
            self.moves.pop(move.episode, None)
            self.problems.append(f"#{move.episode} member: partition {pid}: the replica on store {spare} was not "
                                 f"a voter {VOTER_TIMEOUT_S:g} s after the heal ({last})")
            parts.append(f"store {spare} NOT a voter within {VOTER_TIMEOUT_S:g} s ({last}); nothing removed")
            return "; ".join(parts)
        after_heal = f" ({time.monotonic() - healed:.2f} s after the heal)" if move.step.param("split") else ""
        parts.append(f"add->voter {time.monotonic() - move.submitted:.2f} s{after_heal}")

        leader = desc.leader_store_id
        remove = str(move.step.param("remove", "leader"))
        old = [s for s in move.old if any(r.store_id == s for r in desc.replicas)]
        if not old:
            self.moves.pop(move.episode, None)
            return "; ".join([*parts, "no old replica left to remove"])
        if scheduler_finished(desc, move.old):
            return await self._finished_by_scheduler(move, desc, parts)
        if remove == "leader" and leader in old:
            gone, why = leader, "the leader"
        else:
            followers = [s for s in old if s != leader] or old
            gone = followers[int(remove.partition(":")[2] or 0) % len(followers)]
            why = "a follower" if gone != leader else "the leader"
        t0 = time.monotonic()
        deadline = t0 + REMOVE_TIMEOUT_S
        while True:
            try:
                await self._submit(meta_pb2.Operation(
                    partition_id=pid, remove_replica=meta_pb2.RemoveReplica(replica=meta_pb2.Replica(store_id=gone))))
                break
            except RpcFailure as exc:
                with contextlib.suppress(RpcFailure):
                    now = await self.descriptor(pid)
                    if scheduler_finished(now, move.old):  # it won the race to the removal
                        return await self._finished_by_scheduler(move, now, parts)
                if time.monotonic() > deadline:
                    self.moves.pop(move.episode, None)
                    self.problems.append(f"#{move.episode} member: RemoveReplica of store {gone} from partition "
                                         f"{pid} refused: {exc.code.name} {exc.message}")
                    return "; ".join([*parts, f"RemoveReplica of store {gone} refused: {exc.code.name}"])
                await asyncio.sleep(0.5)

        def without(d: meta_pb2.PartitionDescriptor) -> bool:
            return all(r.store_id != gone for r in d.replicas) or bool(scheduler_finished(d, move.old))

        desc, last = await self._wait_descriptor(pid, without, max(1.0, deadline - time.monotonic()))
        if desc is None:
            self.moves.pop(move.episode, None)
            self.problems.append(f"#{move.episode} member: partition {pid}: store {gone} still listed "
                                 f"{REMOVE_TIMEOUT_S:g} s after RemoveReplica ({last})")
            return "; ".join([*parts, f"store {gone} ({why}) NOT removed within {REMOVE_TIMEOUT_S:g} s ({last})"])
        if any(r.store_id == gone for r in desc.replicas):
            # The scheduler removed another old replica first; ours was superseded (the epoch moved).
            gone, why = scheduler_finished(desc, move.old), "by the scheduler, first"
        parts.append(f"store {gone} ({why}) removed {time.monotonic() - t0:.2f} s after RemoveReplica, "
                     f"now {describe_replicas(desc)}")
        parts.append(await self._unhosted_note(move, gone, t0))
        self.moves.pop(move.episode, None)
        return "; ".join(parts)

    async def _finished_by_scheduler(self, move: Move, desc: meta_pb2.PartitionDescriptor, parts: list[str]) -> str:
        """Placement's scheduler removes the extra voter a move leaves, and may do so first."""
        left = scheduler_finished(desc, move.old)
        parts.append(f"store {left} removed by the scheduler first, now {describe_replicas(desc)}")
        parts.append(await self._unhosted_note(move, left, time.monotonic()))
        self.moves.pop(move.episode, None)
        return "; ".join(parts)

    async def _unhosted_note(self, move: Move, gone: int, t0: float) -> str:
        """Whether store ``gone`` let go of the moved partition's replica (a problem if not)."""
        unhosted = await self._wait_unhosted(gone, move.pid, UNHOSTED_TIMEOUT_S)
        if unhosted is None:
            return f"store {gone} down, not asked whether it dropped the replica"
        if unhosted:
            return f"store {gone} dropped it {time.monotonic() - t0:.2f} s later"
        self.problems.append(f"#{move.episode} member: store {gone} still hosts partition {move.pid} "
                             f"{UNHOSTED_TIMEOUT_S:g} s after leaving its descriptor")
        return f"store {gone} STILL HOSTS partition {move.pid}"

    async def _wait_unhosted(self, store: int, pid: int, timeout: float) -> bool | None:
        """Until node ``store`` answers "partition not found" for ``pid`` (True), or the
        timeout (False); None when the node is down (not asked)."""
        proc = self.cluster.node_procs.get(store)
        if store in self.killed or store in self.paused or proc is None or not proc.alive:
            return None
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(proc.address) as ch:
            kv = kv_pb2_grpc.KVStub(ch)
            while True:
                req = kv_pb2.GetRequest(
                    context=kv_pb2.RequestContext(partition_id=pid), key=b"",
                    read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE),
                )
                try:
                    await kv.Get(req, timeout=1.0)
                except grpc.aio.AioRpcError as exc:
                    err = error_from_rpc(exc)
                    if err is not None and err.WhichOneof("kind") == "partition_not_found":
                        return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.2)

    # -- healing everything -----------------------------------------------------------------

    async def heal_all(self) -> list[str]:
        """Undo every fault still in force; return what was done."""
        done: list[str] = []
        for n in sorted(self.paused):
            self._resume(n)
            done.append(f"SIGCONT node {n}")
        if self.cut or self.delayed or self.late:
            self.net.heal()
            done.append("every link back to pass")
            self.cut.clear()
            self.delayed.clear()
            self.late.clear()
            self._episode_pairs.clear()
        for n in sorted(self.slow):
            write_fault_file(self.fault_files[n], {})
            done.append(f"fast disk on node {n}")
        self.slow.clear()
        for n in sorted(self.fsync_failed):
            await self._heal_disk_node(n)
            done.append(f"node {n}: disk healed, restarted")
        for n in sorted(self.killed):
            await self._restart_node(n)
            done.append(f"node {n} restarted")
        for i in sorted(self.routers_killed | self.routers_paused):
            done.append(await self._start_router(i))
        for episode, drain in sorted(self.drains.items()):
            done.append(f"#{episode}: " + await self._undrain(drain))
        self.drains.clear()
        for dead in self.dead.values():  # the node was restarted above; the repair is not judged half-way
            if dead.watcher is not None:
                dead.watcher.cancel()
        self.dead.clear()
        for episode, run in sorted(self.splits.items()):
            if run.watcher is not None:
                done.append(f"#{episode}: " + await run.watcher)
        self.splits.clear()
        for episode, outage in sorted(self.outages.items()):
            if outage.watcher is not None:
                done.append(f"#{episode}: " + await outage.watcher)
        self.outages.clear()
        for episode, move in sorted(self.moves.items()):
            # A move the schedule did not get to finish: carry it through (3 voters again).
            move.pairs = []  # the network is healed already
            if move.watcher is not None:
                move.watcher.cancel()
            try:
                detail = await self._finish_move(move)
            except Exception as exc:
                detail = f"failed: {exc!r}"
                self.problems.append(f"#{episode} member: finishing the move at the final heal failed: {exc!r}")
            self.moves.pop(episode, None)
            done.append(f"move #{episode} of partition {move.pid} finished: {detail}")
        return done


def scheduler_finished(desc: meta_pb2.PartitionDescriptor, old: tuple[int, ...]) -> int:
    """The old store placement's scheduler removed to finish a move (the partition is back to
    its size without it), or 0 when the move is still the nemesis's to finish."""
    here = {r.store_id for r in desc.replicas}
    voters = sum(1 for r in desc.replicas if r.role == meta_pb2.VOTER)
    gone = [s for s in old if s not in here]
    return gone[0] if gone and voters <= REPLICAS and len(desc.replicas) <= REPLICAS else 0


def _between(left: list[int], right: list[int]) -> list[tuple[int, int]]:
    """Every link between the two groups, both directions."""
    return [(x, y) for x in left for y in right] + [(y, x) for x in left for y in right]


def describe_replicas(desc: meta_pb2.PartitionDescriptor) -> str:
    """``stores 1,2,4L (leader 2, conf_ver 3)``: the replicas by store, L for learners."""
    shown = ",".join(
        f"{r.store_id}{'' if r.role == meta_pb2.VOTER else 'L' if r.role == meta_pb2.LEARNER else '?'}"
        for r in sorted(desc.replicas, key=lambda r: r.store_id)
    )
    return f"stores {shown} (leader {desc.leader_store_id or '-'}, conf_ver {desc.epoch.conf_ver})"
