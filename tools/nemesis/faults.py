"""Carry out schedule steps against a running cluster, and undo everything on demand.

How each fault is injected (all on loopback, nothing needs root, nothing outlives the run):

- kill / restart: SIGKILL of the node process (no shutdown path runs: unsynced writes in
  flight are lost as in a power cut of the process), restart on the same data dir and port.
- pause / resume: SIGSTOP / SIGCONT. The process keeps its sockets; peers and clients see it
  go silent, and on resume it must notice its lease expired before serving reads.
- partition / latency: the :class:`~tools.nemesis.proxy.ProxyNet` links between stores are set
  to drop or delay; clients and the router still reach every node directly.
- fail-fsync / restart-healthy: the node's ``--fault-file`` says ``{"fail_fsync": true}`` (the
  WAL's fault hook: every fsync fails, the node stops acknowledging writes for good); healing
  clears the file and restarts the node (SIGKILL + start).
- slow-disk / fast-disk: ``{"fsync_delay_ms": N}`` in the fault file.
- kill-router / restart-router: SIGKILL of the router process, restart on its data dir and port.
- transfer: ``SubmitOperation(transfer_leader)`` through the router's Meta service; the leader's
  node carries it out on its next heartbeat.

The :class:`Nemesis` keeps what it broke (killed, paused, failed, slowed, cut) so that
:meth:`Nemesis.heal_all` can restore a healthy cluster whatever the schedule left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from tesserapb import meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster
from tools.nemesis.proxy import DELAY, DROP, ProxyNet
from tools.nemesis.schedule import Step

RESTART_TIMEOUT_S = 30.0
FAULT_APPLY_TIMEOUT_S = 2.0


def write_fault_file(path: str, spec: dict) -> None:
    """Replace the node's fault file atomically (the node polls it every 100 ms)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)


def restart_router(cluster: Cluster, timeout: float = RESTART_TIMEOUT_S) -> None:
    """Start the (dead) router again on its data dir and on the address it had.

    Nodes and clients were given the router's address once; it has to come back there.
    ``Cluster`` has no router restart, so this reuses its process spawner.
    """
    p = cluster.router
    assert p is not None and not p.alive
    argv = list(p.argv)
    argv[argv.index("--listen") + 1] = p.address
    p.argv = argv
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster._spawn(p, timeout)  # noqa: SLF001 - see docstring
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the port may still be held for a moment


@dataclass
class Applied:
    """What one step did, once resolved against the live cluster."""

    step: Step
    started: float  # monotonic
    finished: float
    detail: str
    nodes: tuple[int, ...] = ()


@dataclass
class Nemesis:
    cluster: Cluster
    net: ProxyNet
    fault_files: dict[int, str]
    partitions: list[int]  # partition ids in key order (schedule's K -> partitions[K])
    log: Callable[[str], None] = print
    killed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    fsync_failed: set[int] = field(default_factory=set)
    slow: set[int] = field(default_factory=set)
    cut: set[tuple[int, int]] = field(default_factory=set)
    delayed: set[tuple[int, int]] = field(default_factory=set)
    router_down: bool = False
    resolved: dict[int, tuple[int, ...]] = field(default_factory=dict)  # episode -> nodes hit
    _episode_pairs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # episode -> links

    @property
    def stores(self) -> list[int]:
        return sorted(self.cluster.node_procs)

    # -- resolving symbolic targets ------------------------------------------------------

    async def leaders(self) -> dict[int, int]:
        """Partition id -> leader store as the router knows it (empty if it cannot say)."""
        if self.router_down or self.cluster.router is None:
            return {}
        try:
            async with grpc.aio.insecure_channel(self.cluster.router.address) as ch:
                resp = await meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return {}
        return {p.id: p.leader_store_id for p in resp.partitions if p.leader_store_id}

    async def resolve(self, target: str) -> tuple[int, str]:
        """``node:N`` -> N; ``leader:K`` -> the leader store of the K-th partition (falls back
        to a fixed store, said so in the description, when no leader is known)."""
        kind, _, arg = target.partition(":")
        if kind == "node":
            return int(arg), f"node {arg}"
        pid = self.partitions[int(arg) % len(self.partitions)]
        leader = (await self.leaders()).get(pid)
        if leader in self.cluster.node_procs:
            return leader, f"node {leader} (leader of partition {pid})"
        fallback = self.stores[int(arg) % len(self.stores)]
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
        return True

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
            to = others[int(step.param("other")) % len(others)]  # type: ignore[arg-type]
            return [(n, to)], f"asymmetric: {what} -> node {to} dropped, node {to} -> {n} flows", (n, to)
        if shape == "bridge":
            b, what = await self.resolve(str(step.param("bridge")))
            others = [s for s in stores if s != b]
            half = len(others) // 2
            left, right = others[:half], others[half:]
            pairs = [(x, y) for x in left for y in right] + [(y, x) for x in left for y in right]
            return pairs, f"bridge: {left} | {right} cut, joined only by {what}", (b,)
        raise ValueError(f"unknown partition shape {shape!r}")

    async def _do_partition(self, step: Step) -> tuple[str, tuple[int, ...]]:
        pairs, detail, nodes = await self._partition_pairs(step)
        self.net.set(pairs, DROP)
        self.cut.update(pairs)
        self._episode_pairs[step.episode] = pairs
        return detail + f" (links dropped: {', '.join(f'{a}->{b}' for a, b in pairs)})", nodes

    async def _do_latency(self, step: Step) -> tuple[str, tuple[int, ...]]:
        n, what = await self.resolve(str(step.param("target")))
        ms = int(step.param("delay_ms"))  # type: ignore[arg-type]
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
        """How many times node ``n`` logged a change of its fault hooks (see node/server.py)."""
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
        ms = int(step.param("delay_ms"))  # type: ignore[arg-type]
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
        p = self.cluster.router
        assert p is not None and p.popen is not None
        if not p.alive:
            return "router already down", ()
        p.popen.kill()
        await asyncio.to_thread(p.popen.wait)
        self.router_down = True
        return f"SIGKILL router at {p.address}", ()

    async def _do_restart_router(self, step: Step) -> tuple[str, tuple[int, ...]]:
        if not self.router_down:
            return "router was up", ()
        await asyncio.to_thread(restart_router, self.cluster)
        self.router_down = False
        return "router restarted", ()

    async def _do_transfer(self, step: Step) -> tuple[str, tuple[int, ...]]:
        k = int(step.param("partition"))  # type: ignore[arg-type]
        pid = self.partitions[k % len(self.partitions)]
        to, what = await self.resolve(str(step.param("to")))
        if self.router_down:
            return f"router down: no transfer of partition {pid} to {what}", ()
        try:
            async with grpc.aio.insecure_channel(self.cluster.router.address) as ch:  # type: ignore[union-attr]
                await meta_pb2_grpc.MetaStub(ch).SubmitOperation(
                    meta_pb2.SubmitOperationRequest(
                        operation=meta_pb2.Operation(
                            partition_id=pid, transfer_leader=meta_pb2.TransferLeader(to_store_id=to)
                        )
                    ),
                    timeout=2,
                )
        except grpc.aio.AioRpcError as exc:
            return f"transfer of partition {pid} to {what} not queued: {exc.code().name}", ()
        return f"transfer of partition {pid} to {what} queued", ()

    # -- healing everything -----------------------------------------------------------------

    async def heal_all(self) -> list[str]:
        """Undo every fault still in force; return what was done."""
        done: list[str] = []
        for n in sorted(self.paused):
            self._resume(n)
            done.append(f"SIGCONT node {n}")
        if self.cut or self.delayed:
            self.net.heal()
            done.append("every link back to pass")
            self.cut.clear()
            self.delayed.clear()
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
        if self.router_down:
            await asyncio.to_thread(restart_router, self.cluster)
            self.router_down = False
            done.append("router restarted")
        return done
