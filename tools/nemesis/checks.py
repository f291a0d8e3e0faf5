"""What must hold of the cluster itself: its recovery after the faults, checked live.

(The workloads' histories are checked by :mod:`tools.nemesis.history_checks`.)

- :func:`wait_healthy`: every partition has a leader, all its replicas are voters that have
  caught up with the leader (match and applied as reported through the router), and every
  store is up, within a stated bound.
- :func:`probe_writable`: a linearizable write then read of a probe key in every partition;
  the time to the first success is how long a fault (or its heal) kept a partition from
  taking writes.
- :func:`stale_reads`: reads sent straight to a node that was paused or cut off (bypassing
  the client's routing), for keys first written elsewhere while it was away: a node that
  still answers must answer with the new data (a leader must not serve from a lease it no
  longer holds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from router.client import AsyncClient
from router.client.channels import ChannelPool
from router.client.errors import RpcFailure
from router.client.meta import GrpcMeta
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2


@dataclass
class Health:
    ok: bool
    seconds: float
    detail: str


async def cluster_status(routers: str) -> tuple[list, list, dict[int, int]]:
    """(descriptors, status, store id -> state) from the placement leader, found among
    ``routers`` (comma-separated addresses); RpcFailure when none answers."""
    pool = ChannelPool()
    try:
        meta = GrpcMeta(routers.split(","), pool)
        parts = await meta.call("ScanPartitions", meta_pb2.ScanPartitionsRequest(with_status=True), 2.0)
        stores = await meta.call("GetStores", meta_pb2.GetStoresRequest(), 2.0)
    finally:
        await pool.close()
    return list(parts.partitions), list(parts.status), {s.id: s.state for s in stores.stores}


def health_problem(parts: list, status: list, stores: dict[int, int], replicas: int) -> str | None:
    """Why the cluster is not healthy yet, or None."""
    down = [s for s, state in stores.items() if state != meta_pb2.STORE_UP]
    if down:
        return f"stores not up: {down}"
    for d, st in zip(parts, status):
        if not d.leader_store_id:
            return f"partition {d.id}: no leader"
        voters = [r for r in st.replicas if r.role == meta_pb2.VOTER]
        if len(voters) != replicas or len(st.replicas) != replicas:
            return f"partition {d.id}: {len(voters)} voters of {len(st.replicas)} replicas, want {replicas}"
        top = max(r.match for r in st.replicas)
        lagging = [r.store_id for r in st.replicas if r.match < top or r.applied < top]
        if lagging:
            return f"partition {d.id}: replicas on stores {lagging} behind index {top}"
    return None


def balance_problem(parts: list, stores: dict[int, int]) -> str | None:
    """Why placement's replica balance is not done yet (up stores' replica counts differ by
    more than one), or None."""
    up = [s for s, state in stores.items() if state == meta_pb2.STORE_UP]
    counts = dict.fromkeys(up, 0)
    for d in parts:
        for r in d.replicas:
            if r.store_id in counts:
                counts[r.store_id] += 1
    if counts and max(counts.values()) - min(counts.values()) > 1:
        return f"replicas per store {dict(sorted(counts.items()))}: placement is still balancing"
    return None


async def wait_healthy(routers: str, bound_s: float, replicas: int = 3, balanced: bool = False) -> Health:
    """Until every partition has a leader and ``replicas`` caught-up voters (and, with
    ``balanced``, placement has spread the replicas evenly), or ``bound_s``."""
    t0 = time.monotonic()
    last = "no answer from the router"
    while True:
        try:
            parts, status, stores = await cluster_status(routers)
            problem = health_problem(parts, status, stores, replicas)
            if problem is None and balanced:
                problem = balance_problem(parts, stores)
            if problem is None:
                detail = f"{len(parts)} partitions: leader and {replicas} replicas caught up"
                return Health(True, time.monotonic() - t0, detail)
            last = problem
        except RpcFailure as exc:
            last = f"router: {exc.code.name}"
        if time.monotonic() - t0 > bound_s:
            return Health(False, time.monotonic() - t0, last)
        await asyncio.sleep(0.2)


@dataclass
class Probe:
    """Result of :func:`probe_writable`: seconds until each partition took a write (None: not
    within the bound) and any read-your-write violation seen."""

    seconds: dict[int, float | None]
    violations: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float | None:
        took = [s for s in self.seconds.values() if s is not None]
        if len(took) < len(self.seconds):
            return None
        return max(took, default=0.0)


class Prober:
    """Two long-lived clients for :func:`probe_writable`, raced against each other.

    A *fast* one (0.25 s attempts) gives way quickly when an attempt is stuck on a paused or
    cut-off node, so the probe measures the cluster's failover rather than the client's
    attempt timeout; a *patient* one (the default 2 s attempts) still gets through when
    every round trip is slow (added network latency, a slow disk). Their warm routing caches
    keep them working while the router is down, as any long-lived client does.
    """

    def __init__(self, router: str) -> None:
        self.clients = [
            AsyncClient(router, deadline_s=2.0, attempt_timeout_s=0.25),
            AsyncClient(router, deadline_s=4.0),
        ]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


async def probe_writable(
    prober: Prober,
    keys: dict[int, bytes],
    bound_s: float,
    tag: str,
    out: Probe | None = None,
    on_ok: Callable[[int], None] | None = None,
) -> Probe:
    """Write then linearizably read ``keys[pid]`` in every partition, retrying until it works.

    Every attempt writes a fresh value; the read that follows an acknowledged write must
    return one of this probe's values (nobody else writes probe keys), else it is a violation.
    ``out`` (optional) is filled in as partitions succeed, for a caller that may cancel;
    ``on_ok(pid)`` is called the moment a partition's write and read succeeded.
    """
    t0 = time.monotonic()
    if out is None:
        out = Probe({})
    out.seconds.update(dict.fromkeys(keys))

    async def one(client: AsyncClient, c: int, pid: int, key: bytes) -> bool:
        n = 0
        while time.monotonic() - t0 < bound_s:
            n += 1
            value = f"{tag}/{c}.{n}".encode()
            try:
                await client.put(key, value)
                got = await client.get(key, consistency="linearizable")
            except Exception:
                await asyncio.sleep(0.05)
                continue
            # An earlier attempt that timed out may still land after this one (its outcome was
            # unknown), as may the other client's, so any value of this probe is legal;
            # nothing, or another value, is not.
            if got is None or not got.value.startswith(f"{tag}/".encode()):
                out.violations.append(f"partition {pid}: wrote {value!r}, then read {got!r}")
            return True
        return False

    async def race(pid: int, key: bytes) -> None:
        tasks = [asyncio.ensure_future(one(c, i, pid, key)) for i, c in enumerate(prober.clients)]
        try:
            for done in asyncio.as_completed(tasks):
                if await done:
                    out.seconds[pid] = time.monotonic() - t0
                    if on_ok is not None:
                        on_ok(pid)
                    return
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    await asyncio.gather(*(race(pid, key) for pid, key in keys.items()))
    return out


@dataclass
class StaleCheck:
    asked: int = 0  # partitions read directly from the node
    answered: int = 0  # ... that the node served (the others it refused: not leader, etc.)
    violations: list[str] = field(default_factory=list)


async def stale_reads(
    address: str, keys: dict[int, bytes], tag: str, timeout: float = 3.0, out: StaleCheck | None = None
) -> StaleCheck:
    """Lease and linearizable Gets of ``keys[pid]`` sent directly to the node at ``address``.

    Every key was written for the first time (values starting with ``tag``), acknowledged,
    while the node was paused or cut off, and before this call. The node may refuse (it is
    not the leader any more, or cannot confirm it); if it answers, the key must be there.
    A paused node answers (if at all) once it is continued: ``timeout`` should outlast the pause.
    Results are added to ``out`` when given.
    """
    if out is None:
        out = StaleCheck()
    assert out is not None
    async with grpc.aio.insecure_channel(address) as ch:
        stub = kv_pb2_grpc.KVStub(ch)

        async def one(pid: int, key: bytes, consistency: kv_pb2.Consistency, name: str) -> None:
            out.asked += 1
            req = kv_pb2.GetRequest(
                context=kv_pb2.RequestContext(partition_id=pid),
                key=key,
                read_options=kv_pb2.ReadOptions(consistency=consistency),
            )
            try:
                resp = await stub.Get(req, timeout=timeout)
            except grpc.aio.AioRpcError:
                return  # refused or unreachable: no answer, nothing stale
            out.answered += 1
            if not resp.found or not resp.value.startswith(tag.encode()):
                got = resp.value if resp.found else "nothing"
                out.violations.append(
                    f"{name} read of partition {pid} served by {address} returned {got!r}, "
                    f"though {key!r} had been written (acknowledged) before the read"
                )

        await asyncio.gather(*(
            one(pid, key, c, name)
            for pid, key in keys.items()
            for c, name in ((kv_pb2.LEASE, "lease"), (kv_pb2.LINEARIZABLE, "linearizable"))
        ))
    return out
