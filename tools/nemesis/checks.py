"""What must hold: the workloads' histories, and the cluster's recovery after the faults.

History checks (pure functions of a history, so hand-made violating histories test them):

- :func:`check_register`: per-key linearizability with the project's checker
  (:mod:`tools.checker`); a failure is shown as the smallest window the checker found.
- :func:`check_set`: after healing, every acknowledged add is present exactly once, nothing is
  present that was never attempted, an add whose every attempt definitely failed is absent,
  and an ``info`` add is present at most once. For list-valued keys also: elements in the
  order they were appended, and every read along the way a prefix of the final list.
- :func:`check_bank`: every successful read (and the final one) sees every account, no
  negative balance, and the initial total.

Recovery checks (against the live cluster):

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
import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from router.client import AsyncClient
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.checker import Op, Operation, check_history, describe, pair_ops
from tools.nemesis.workloads import FINAL_READER

WINDOW_LIMIT = 40  # operations shown for one failure


@dataclass
class Verdict:
    name: str
    ok: bool | None  # None: undecided (the checker ran out of time)
    summary: str
    details: list[str] = field(default_factory=list)  # why not ok, smallest failing window first

    def report(self) -> str:
        state = {True: "OK", False: "FAILED", None: "UNDECIDED"}[self.ok]
        lines = [f"{self.name}: {state}: {self.summary}"]
        lines += [f"  {line}" for d in self.details for line in d.splitlines()]
        return "\n".join(lines)


# -- register ---------------------------------------------------------------------------------


def check_register(history: list[Op], time_limit_s: float = 60.0, name: str = "linearizability") -> Verdict:
    """Linearizability of the get/put/cas operations, per key."""
    ops = [op for op in history if op.f in ("get", "put", "cas")]
    result = check_history(ops, time_limit_s=time_limit_s)
    total = sum(s.operations for s in result.stats.values())
    summary = f"{len(result.stats)} keys, {total} operations"
    if result.ok:
        return Verdict(name, True, summary)
    details = []
    if result.failures:
        smallest = min(result.failures, key=lambda f: len(f.window))
        details.append(f"smallest failing window ({len(result.failures)} key(s) fail):")
        details.append(describe(dataclasses.replace(result, failures=[smallest])))
    else:
        details.append(describe(result))
    return Verdict(name, result.ok, summary, details)


# -- set --------------------------------------------------------------------------------------

ADD_KEY = re.compile(r"set/add/(.+)$")
LIST_KEY = re.compile(r"set/list/(.+)$")


def _elements(value: object) -> list[str]:
    return str(value).split(",") if value else []


def _window(title: str, ops: Iterable[Operation]) -> tuple[str, list[Operation]]:
    unique = {o.index: o for o in ops}.values()
    chosen = sorted(unique, key=lambda o: (o.start, o.index))[:WINDOW_LIMIT]
    return title, chosen


def _show(problems: list[tuple[str, list[Operation]]], name: str, summary: str) -> Verdict:
    if not problems:
        return Verdict(name, True, summary)
    problems.sort(key=lambda p: len(p[1]))
    title, ops = problems[0]
    details = [f"{len(problems)} problem(s); the smallest failing window:", f"{title}:"]
    details += [f"  {op}" for op in ops]
    if len(problems) > 1:
        details.append("other problems:")
        details += [f"  {t}" for t, _ in problems[1:20]]
        if len(problems) > 20:
            details.append(f"  ... and {len(problems) - 20} more")
    return Verdict(name, False, summary, details)


def check_set(history: list[Op]) -> Verdict:
    """The set/append workload's invariants (see the module docstring)."""
    operations = pair_ops(history)
    finals: dict[str, Operation] = {}
    adds: dict[str, list[Operation]] = {}
    lists: dict[str, list[Operation]] = {}
    for op in operations:
        if op.process == FINAL_READER:
            if op.f == "get" and op.outcome == "ok":
                finals[op.key] = op
        elif ADD_KEY.search(op.key):
            adds.setdefault(op.key, []).append(op)
        elif LIST_KEY.search(op.key):
            lists.setdefault(op.key, []).append(op)
    problems: list[tuple[str, list[Operation]]] = []
    acked = 0

    add_elems = {key: m.group(1) for key in [*adds, *finals] if (m := ADD_KEY.search(key))}  # key -> element
    for key, elem in sorted(add_elems.items()):
        attempts = [op for op in adds.get(key, []) if op.f == "put"]
        final = finals.get(key)
        ok = any(a.outcome == "ok" for a in attempts)
        maybe = any(a.outcome == "info" for a in attempts)
        acked += ok
        if final is None:
            problems.append(_window(f"add {elem!r}: no final read of {key!r}", attempts))
            continue
        present = final.output is not None
        window = [*attempts, final]
        if present and final.output != elem:
            problems.append(_window(f"add {elem!r}: {key!r} holds {final.output!r}", window))
        elif present and not attempts:
            problems.append(_window(f"element {elem!r} present but never added", window))
        elif ok and not present:
            problems.append(_window(f"acknowledged add {elem!r} lost", window))
        elif present and not ok and not maybe:
            problems.append(_window(f"add {elem!r} failed, yet it is present", window))

    list_keys = set(lists) | {k for k in finals if LIST_KEY.search(k)}
    for key in sorted(list_keys):
        ops = lists.get(key, [])
        final = finals.get(key)
        if final is None:
            problems.append(_window(f"list {key!r}: no final read", ops[-WINDOW_LIMIT:]))
            continue
        final_elems = _elements(final.output)
        appends: dict[str, list[Operation]] = {}  # element -> the cas operations appending it
        for op in ops:
            if op.f == "cas":
                _, new = op.cas
                appends.setdefault(_elements(new)[-1], []).append(op)
        for elem, count in Counter(final_elems).items():
            if count > 1:
                problems.append(_window(
                    f"list {key!r}: element {elem!r} present {count} times (a write applied twice?)",
                    [*appends.get(elem, []), final],
                ))
        for elem, tries in appends.items():
            ok = any(t.outcome == "ok" for t in tries)
            maybe = any(t.outcome == "info" for t in tries)
            acked += ok
            if ok and elem not in final_elems:
                problems.append(_window(f"list {key!r}: acknowledged append of {elem!r} lost", [*tries, final]))
            elif not ok and not maybe and elem in final_elems:
                problems.append(_window(
                    f"list {key!r}: every cas appending {elem!r} answered failed, yet it is present",
                    [*tries, final],
                ))
        for elem in final_elems:
            if elem not in appends:
                problems.append(_window(f"list {key!r}: element {elem!r} present but never appended", [final]))
        order = {e: min(t.index for t in tries) for e, tries in appends.items()}
        ranks = [order[e] for e in final_elems if e in order]
        if ranks != sorted(ranks):
            problems.append(_window(f"list {key!r}: elements out of append order: {final.output!r}", [final]))
        for op in ops:
            seen = None
            if op.f == "get" and op.outcome == "ok":
                seen = op.output
            elif op.f == "cas" and op.outcome == "ok":
                seen = op.cas[1]
            if seen is not None and _elements(seen) != final_elems[: len(_elements(seen))]:
                problems.append(_window(
                    f"list {key!r}: {seen!r} observed, not a prefix of the final {final.output!r}", [op, final]
                ))
    summary = f"{len(add_elems)} add keys, {len(list_keys)} lists, {acked} acknowledged adds/appends"
    return _show(problems, "set", summary)


# -- bank -------------------------------------------------------------------------------------


def _pair_any(history: list[Op]) -> list[Operation]:
    """Pair invokes with completions per process, for any ``f`` (bank ops are not get/put/cas)."""
    pending: dict[int, Operation] = {}
    out: list[Operation] = []
    for i, op in enumerate(history):
        if op.type == "invoke":
            if op.process in pending:
                raise ValueError(f"op #{i}: process {op.process} invoked while one is outstanding")
            pending[op.process] = Operation(i, op, None)
            out.append(pending[op.process])
        else:
            inv = pending.pop(op.process, None)
            if inv is None:
                raise ValueError(f"op #{i}: completion without an invoke")
            inv.completion = op
    return out


def _show_bank(op: Operation) -> str:
    end = "?" if op.end is None else str(op.end)
    value = op.output if op.f == "read" else op.invoke.value
    return f"p{op.process} {op.f} {value!r} {op.outcome} [{op.start}..{end}]"


def check_bank(history: list[Op], accounts: list[str], total: int) -> Verdict:
    """Every ok read (and the final one) sees all accounts, none negative, the same total."""
    operations = _pair_any(history)
    reads = [op for op in operations if op.f == "read" and op.outcome == "ok"]
    transfers = [op for op in operations if op.f == "transfer" and op.process != FINAL_READER]
    problems: list[tuple[str, list[Operation]]] = []
    want = set(accounts)
    for r in reads:
        balances = r.output if isinstance(r.output, dict) else {}
        why = []
        if set(balances) != want:
            missing, extra = sorted(want - set(balances)), sorted(set(balances) - want)
            why.append(f"accounts missing {missing} extra {extra}")
        bad = {k: v for k, v in balances.items() if not isinstance(v, int)}
        if bad:
            why.append(f"non-integer balances {bad}")
        else:
            if any(v < 0 for v in balances.values()):
                why.append("a negative balance")
            if sum(balances.values()) != total:
                why.append(f"total {sum(balances.values())} != {total}")
        if why:
            concurrent = [
                t for t in transfers
                if t.outcome != "fail" and t.start <= (r.end or 0) and (t.end is None or t.end >= r.start)
            ]
            concurrent.sort(key=lambda t: abs(t.start - r.start))
            window = sorted([r, *concurrent[: WINDOW_LIMIT - 1]], key=lambda o: (o.start, o.index))
            problems.append((f"read by p{r.process}: {'; '.join(why)}", window))
    if not any(r.process == FINAL_READER for r in reads):
        problems.append(("no final read", []))
    ok_transfers = sum(1 for t in transfers if t.outcome == "ok")
    summary = f"{len(reads)} reads, {ok_transfers} transfers acknowledged, total {total}"
    if not problems:
        return Verdict("bank", True, summary)
    problems.sort(key=lambda p: len(p[1]))
    title, ops = problems[0]
    details = [f"{len(problems)} bad read(s); the smallest failing window:", f"{title}:"]
    details += [f"  {_show_bank(op)}" for op in ops]
    details += [f"  also: {t}" for t, _ in problems[1:10]]
    return Verdict("bank", False, summary, details)


# -- recovery ---------------------------------------------------------------------------------


@dataclass
class Health:
    ok: bool
    seconds: float
    detail: str


async def cluster_status(router: str) -> tuple[list, list, dict[int, int]]:
    """(descriptors, status, store id -> state) from the router's Meta service."""
    async with grpc.aio.insecure_channel(router) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)
        parts = await meta.ScanPartitions(meta_pb2.ScanPartitionsRequest(with_status=True), timeout=2)
        stores = await meta.GetStores(meta_pb2.GetStoresRequest(), timeout=2)
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


async def wait_healthy(router: str, bound_s: float, replicas: int = 3) -> Health:
    """Until every partition has a leader and ``replicas`` caught-up voters (or ``bound_s``)."""
    t0 = time.monotonic()
    last = "no answer from the router"
    while True:
        try:
            parts, status, stores = await cluster_status(router)
            problem = health_problem(parts, status, stores, replicas)
            if problem is None:
                detail = f"{len(parts)} partitions: leader and {replicas} replicas caught up"
                return Health(True, time.monotonic() - t0, detail)
            last = problem
        except grpc.aio.AioRpcError as exc:
            last = f"router: {exc.code().name}"
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
