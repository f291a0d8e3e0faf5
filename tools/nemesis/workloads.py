"""Client workloads: many concurrent asyncio clients, every operation recorded.

Each worker is one Jepsen *process*: it invokes one operation at a time through its own
:class:`~router.client.AsyncClient` and records the invocation and its completion as
:class:`~tools.checker.Op` events with wall-clock nanosecond times (anchored to the wall clock
once, then advanced by the monotonic clock, so an NTP step cannot reorder the history).
Outcomes: ``ok``; ``fail`` when the operation certainly had no effect (a read that failed, a
cas whose compare failed, bad input); ``info`` when a write's outcome is unknown (a deadline,
a server error). After an ``info`` the worker continues as a new process id, as Jepsen does.

Keys and values are bytes on the wire and ``str`` in histories (:func:`text`). Every workload
spreads or pins its keys by partition, using the partition ranges the router reports:

- :class:`RegisterWorkload`: get (lease or linearizable) / put / cas on a few hot keys in
  every partition, so that a misbehaving leader shows in the history whichever partition it
  leads. A cas is by *version* on the wire (Tessera's API) and by *value* in the history
  (the checker's register model); every value written is unique, so "the register holds the
  value I read" and "the key is at the version I read" are the same condition.
- :class:`SetWorkload`: half the workers add unique elements as keys of their own
  (``.../set/add/ELEM``); the other half append elements to a list-valued key each owns
  (``.../set/list/OWNER``) by read + cas, re-reading and retrying when the cas reports a
  failed compare. A write applied twice (a broken retry dedup) or a cas answered "failed"
  although it applied shows up as a duplicated or unexpected element. The final read
  (linearizable, after healing) is recorded as gets by :data:`FINAL_READER`.
- :class:`BankWorkload`: accounts in one partition; transfers are one atomic
  ``batch([Cas(a, va, ...), Cas(b, vb, ...)])`` from fresh reads; reads are a ``scan`` of the
  accounts' range, which a node serves from one LMDB read transaction after its read barrier
  (``node/kv_service.py`` ``_scan`` -> ``StateStore.scan``), i.e. one consistent state of the
  partition, so every read must see the same total. Bank histories use Jepsen's bank
  vocabulary, ``f`` = ``transfer`` / ``read``, with JSON values.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from router.client import (
    AsyncClient,
    Cas,
    CasResult,
    InvalidArgumentError,
    Put,
)
from tools.checker import Op, write_events, write_jsonl
from tools.nemesis.histories import FINAL_READER, SETUP_PROCESS


def text(b: bytes) -> str:
    """Bytes as a readable, unambiguous str: printable ASCII as is, other bytes as \\xNN."""
    return "".join(chr(c) if 0x20 <= c < 0x7F and c != 0x5C else f"\\x{c:02x}" for c in b)


def partition_prefix(start: bytes, end: bytes) -> bytes:
    """A short key prefix such that every key starting with it lies in ``[start, end)``.

    Prefers one printable character (readable histories), else the range's start itself.
    """
    for c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        lo, hi = bytes([c]), bytes([c + 1])
        if start <= lo and (not end or hi <= end):
            return lo
    if not start:
        return b"\x00"
    return start


@dataclass(frozen=True)
class PartitionRange:
    id: int
    start: bytes
    end: bytes

    @property
    def prefix(self) -> bytes:
        return partition_prefix(self.start, self.end)


class Recorder:
    """A Jepsen-shaped history under construction."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now(self) -> int:
        return self._wall0 + (time.monotonic_ns() - self._mono0)

    def invoke(self, process: int, f: str, key: str, value: object) -> None:
        self.ops.append(Op(process, "invoke", f, key, value, self.now()))

    def complete(self, process: int, type_: str, f: str, key: str, value: object) -> None:
        self.ops.append(Op(process, type_, f, key, value, self.now()))

    def counts(self) -> Counter[str]:
        return Counter(f"{op.f}:{op.type}" for op in self.ops if op.type != "invoke")

    def write(self, path: str) -> None:
        """JSON lines: :func:`~tools.checker.write_jsonl` for get/put/cas histories (validated),
        :func:`~tools.checker.write_events` for the bank's."""
        if all(op.f in ("get", "put", "cas") for op in self.ops):
            write_jsonl(self.ops, path)
        else:
            write_events(self.ops, path)


def write_outcome(exc: BaseException) -> str:
    """``fail`` only when the write certainly did not happen, else ``info``."""
    return "fail" if isinstance(exc, InvalidArgumentError) else "info"


@dataclass
class Context:
    router: str
    partitions: list[PartitionRange]
    recorder: Recorder
    seed: int
    op_timeout: float = 5.0
    final_timeout: float = 30.0
    t0: float = field(default_factory=time.monotonic)  # the schedule's time zero (monotonic)


@dataclass
class Workload:
    """Base: ``setup``, then ``worker`` tasks until ``stop``, then ``final`` after healing."""

    ctx: Context
    workers: int = 10
    think_s: float = 0.01
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, list[str]] = field(default_factory=dict)  # a few messages per kind

    name = "workload"

    def client(self) -> AsyncClient:
        return AsyncClient(self.ctx.router, deadline_s=self.ctx.op_timeout)

    def rng(self, worker: int) -> random.Random:
        return random.Random(f"{self.ctx.seed}/{self.name}/{worker}")

    async def setup(self) -> None:
        pass

    async def worker(self, w: int, stop: asyncio.Event) -> None:
        raise NotImplementedError

    async def final(self) -> None:
        pass

    async def think(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, self.think_s))

    def note(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        samples = self.error_samples.setdefault(kind, [])
        if len(samples) < 3:
            samples.append(f"at {time.monotonic() - self.ctx.t0:.2f}s: {str(exc)[:300]}")


# -- register ---------------------------------------------------------------------------------


@dataclass
class RegisterWorkload(Workload):
    keys_per_partition: int = 2
    keys: list[bytes] = field(default_factory=list)

    name = "register"

    async def setup(self) -> None:
        self.keys = [p.prefix + b"reg/%d" % i for p in self.ctx.partitions for i in range(self.keys_per_partition)]

    async def worker(self, w: int, stop: asyncio.Event) -> None:
        rng = self.rng(w)
        rec = self.ctx.recorder
        process = w
        seq = 0
        known: dict[bytes, tuple[str | None, int]] = {}  # key -> (value, version) last seen
        async with self.client() as client:
            while not stop.is_set():
                key = rng.choice(self.keys)
                k = text(key)
                r = rng.random()
                if r < 0.4 or key not in known:
                    consistency = rng.choice(("lease", "linearizable"))
                    rec.invoke(process, "get", k, None)
                    try:
                        got = await client.get(key, consistency=consistency)
                    except Exception as exc:
                        self.note(exc)
                        rec.complete(process, "fail", "get", k, None)
                    else:
                        value = None if got is None else got.value.decode()
                        known[key] = (value, 0 if got is None else got.version)
                        rec.complete(process, "ok", "get", k, value)
                elif r < 0.7:
                    seq += 1
                    value = f"{w}.{seq}"
                    rec.invoke(process, "put", k, value)
                    try:
                        version = await client.put(key, value.encode())
                    except Exception as exc:
                        self.note(exc)
                        outcome = write_outcome(exc)
                        rec.complete(process, outcome, "put", k, value)
                        known.pop(key, None)
                        if outcome == "info":
                            process += self.workers
                    else:
                        known[key] = (value, version)
                        rec.complete(process, "ok", "put", k, value)
                else:
                    seq += 1
                    expected, version = known[key]
                    value = f"{w}.{seq}"
                    rec.invoke(process, "cas", k, [expected, value])
                    try:
                        res = await client.cas(key, version, value.encode())
                    except Exception as exc:
                        self.note(exc)
                        outcome = write_outcome(exc)
                        rec.complete(process, outcome, "cas", k, [expected, value])
                        known.pop(key, None)
                        if outcome == "info":
                            process += self.workers
                    else:
                        if res.succeeded:
                            known[key] = (value, res.current_version)
                            rec.complete(process, "ok", "cas", k, [expected, value])
                        else:
                            known.pop(key, None)
                            rec.complete(process, "fail", "cas", k, [expected, value])
                await self.think(rng)

    async def final(self) -> None:
        rec = self.ctx.recorder
        async with AsyncClient(self.ctx.router, deadline_s=self.ctx.final_timeout) as client:
            for key in self.keys:
                k = text(key)
                rec.invoke(FINAL_READER, "get", k, None)
                got = await client.get(key, consistency="linearizable")
                rec.complete(FINAL_READER, "ok", "get", k, None if got is None else got.value.decode())


# -- set --------------------------------------------------------------------------------------

ADD = b"set/add/"
LIST = b"set/list/"


@dataclass
class SetWorkload(Workload):
    """Unique-key adds and per-owner list appends; see the module docstring."""

    owners: dict[int, bytes] = field(default_factory=dict)  # appender worker -> its list key

    name = "set"

    def _is_appender(self, w: int) -> bool:
        return w % 2 == 1

    async def setup(self) -> None:
        parts = self.ctx.partitions
        for w in range(self.workers):
            if self._is_appender(w):
                self.owners[w] = parts[w % len(parts)].prefix + LIST + b"w%d" % w

    async def worker(self, w: int, stop: asyncio.Event) -> None:
        async with self.client() as client:
            if self._is_appender(w):
                await self._appender(w, client, stop)
            else:
                await self._adder(w, client, stop)

    async def _adder(self, w: int, client: AsyncClient, stop: asyncio.Event) -> None:
        rng = self.rng(w)
        rec = self.ctx.recorder
        parts = self.ctx.partitions
        process, seq = w, 0
        while not stop.is_set():
            seq += 1
            elem = f"w{w}-{seq}"
            key = parts[seq % len(parts)].prefix + ADD + elem.encode()
            k = text(key)
            rec.invoke(process, "put", k, elem)
            try:
                await client.put(key, elem.encode())
            except Exception as exc:
                self.note(exc)
                outcome = write_outcome(exc)
                rec.complete(process, outcome, "put", k, elem)
                if outcome == "info":
                    process += self.workers
            else:
                rec.complete(process, "ok", "put", k, elem)
            await self.think(rng)

    async def _appender(self, w: int, client: AsyncClient, stop: asyncio.Event) -> None:
        rng = self.rng(w)
        rec = self.ctx.recorder
        key = self.owners[w]
        k = text(key)
        process, seq = w, 0
        while not stop.is_set():
            seq += 1
            elem = f"w{w}-{seq}"
            # Until the element is appended (ok), or its outcome is unknown (info: it may still
            # apply, so appending it again could legitimately duplicate it), or we stop.
            while not stop.is_set():
                consistency = rng.choice(("lease", "linearizable"))
                rec.invoke(process, "get", k, None)
                try:
                    got = await client.get(key, consistency=consistency)
                except Exception as exc:
                    self.note(exc)
                    rec.complete(process, "fail", "get", k, None)
                    await self.think(rng)
                    continue
                current = None if got is None else got.value.decode()
                rec.complete(process, "ok", "get", k, current)
                version = 0 if got is None else got.version
                new = elem if not current else f"{current},{elem}"
                rec.invoke(process, "cas", k, [current, new])
                try:
                    res = await self._append(client, key, version, new)
                except Exception as exc:
                    self.note(exc)
                    outcome = write_outcome(exc)
                    rec.complete(process, outcome, "cas", k, [current, new])
                    if outcome == "info":
                        process += self.workers
                        break
                    continue
                if res.succeeded:
                    rec.complete(process, "ok", "cas", k, [current, new])
                    break
                # The compare failed: nothing applied (so the API promises). Re-read and append
                # the same element again; had it applied after all, it is now there twice.
                rec.complete(process, "fail", "cas", k, [current, new])
                await self.think(rng)
            await self.think(rng)

    async def _append(self, client: AsyncClient, key: bytes, version: int, new: str) -> CasResult:
        """Write ``new`` (the list with one more element) over the list ``key`` read at
        ``version``: one cas. The one seam a client mutation overrides
        (:mod:`tools.nemesis.client_mutations`)."""
        return await client.cas(key, version, new.encode())

    async def final(self) -> None:
        rec = self.ctx.recorder
        attempted = {op.key for op in rec.ops if op.type == "invoke" and op.f == "put"}
        async with AsyncClient(self.ctx.router, deadline_s=self.ctx.final_timeout) as client:
            for p in self.ctx.partitions:
                start = p.prefix + ADD
                end = p.prefix + ADD[:-1] + b"0"  # "/" + 1
                t0 = rec.now()
                rows = await client.scan(start, end, limit=None, consistency="linearizable")
                t1 = rec.now()
                found = {text(kv.key): kv.value.decode() for kv in rows}
                for k in sorted(attempted | set(found)):
                    if not k.startswith(text(start)):
                        continue  # another partition's element
                    rec.ops.append(Op(FINAL_READER, "invoke", "get", k, None, t0))
                    rec.ops.append(Op(FINAL_READER, "ok", "get", k, found.get(k), t1))
            for key in self.owners.values():
                k = text(key)
                rec.invoke(FINAL_READER, "get", k, None)
                got = await client.get(key, consistency="linearizable")
                rec.complete(FINAL_READER, "ok", "get", k, None if got is None else got.value.decode())


# -- bank -------------------------------------------------------------------------------------


@dataclass
class BankWorkload(Workload):
    """Transfers between accounts of one partition; reads must always see the same total."""

    accounts: int = 8
    initial: int = 100
    keys: list[bytes] = field(default_factory=list)
    partition: PartitionRange | None = None

    name = "bank"

    @property
    def total(self) -> int:
        return self.accounts * self.initial

    @property
    def account_names(self) -> list[str]:
        return [text(k) for k in self.keys]

    def _range(self) -> tuple[bytes, bytes]:
        assert self.partition is not None
        start = self.partition.prefix + b"bank/"
        return start, self.partition.prefix + b"bank0"

    async def setup(self) -> None:
        rng = random.Random(f"{self.ctx.seed}/bank")
        self.partition = rng.choice(self.ctx.partitions)
        start, _ = self._range()
        self.keys = [start + b"acct%02d" % i for i in range(self.accounts)]
        rec = self.ctx.recorder
        value = {text(k): self.initial for k in self.keys}
        rec.invoke(SETUP_PROCESS, "transfer", "bank", {"deposit": value})
        async with AsyncClient(self.ctx.router, deadline_s=self.ctx.final_timeout) as client:
            await client.batch([Put(k, str(self.initial).encode()) for k in self.keys])
        rec.complete(SETUP_PROCESS, "ok", "transfer", "bank", {"deposit": value})

    async def _read(self, client: AsyncClient, consistency: str) -> dict[str, int | str]:
        start, end = self._range()
        rows = await client.scan(start, end, limit=None, consistency=consistency)
        return {text(kv.key): _balance(kv.value) for kv in rows}

    async def worker(self, w: int, stop: asyncio.Event) -> None:
        rng = self.rng(w)
        rec = self.ctx.recorder
        process = w
        async with self.client() as client:
            while not stop.is_set():
                if rng.random() < 0.3:
                    rec.invoke(process, "read", "bank", None)
                    try:
                        balances = await self._read(client, rng.choice(("lease", "linearizable")))
                    except Exception as exc:
                        self.note(exc)
                        rec.complete(process, "fail", "read", "bank", None)
                    else:
                        rec.complete(process, "ok", "read", "bank", balances)
                else:
                    process = await self._transfer(w, process, rng, client)
                await self.think(rng)

    async def _transfer(self, w: int, process: int, rng: random.Random, client: AsyncClient) -> int:
        rec = self.ctx.recorder
        a, b = rng.sample(self.keys, 2)
        try:
            got_a = await client.get(a, consistency=rng.choice(("lease", "linearizable")))
            got_b = await client.get(b, consistency=rng.choice(("lease", "linearizable")))
        except Exception as exc:
            self.note(exc)
            return process
        if got_a is None or got_b is None:
            self.errors["account missing"] += 1
            return process
        bal_a, bal_b = _balance(got_a.value), _balance(got_b.value)
        if not isinstance(bal_a, int) or not isinstance(bal_b, int):
            self.errors["balance not an integer"] += 1  # the reads' check reports it
            return process
        if bal_a <= 0:
            return process
        amount = rng.randint(1, bal_a)
        what = {"from": text(a), "to": text(b), "amount": amount}
        rec.invoke(process, "transfer", "bank", what)
        try:
            results = await client.batch(
                [
                    Cas(a, got_a.version, str(bal_a - amount).encode()),
                    Cas(b, got_b.version, str(bal_b + amount).encode()),
                ]
            )
        except Exception as exc:
            self.note(exc)
            outcome = write_outcome(exc)
            rec.complete(process, outcome, "transfer", "bank", what)
            return process + self.workers if outcome == "info" else process
        rec.complete(process, "ok" if all(r.succeeded for r in results) else "fail", "transfer", "bank", what)
        return process

    async def final(self) -> None:
        rec = self.ctx.recorder
        async with AsyncClient(self.ctx.router, deadline_s=self.ctx.final_timeout) as client:
            rec.invoke(FINAL_READER, "read", "bank", None)
            balances = await self._read(client, "linearizable")
            rec.complete(FINAL_READER, "ok", "read", "bank", balances)


def _balance(raw: bytes) -> int | str:
    """An account's balance; anything but an integer is kept as text for the checker to flag."""
    try:
        return int(raw)
    except ValueError:
        return raw.decode("latin-1")


WORKLOADS: dict[str, type[Workload]] = {"register": RegisterWorkload, "set": SetWorkload, "bank": BankWorkload}


def make(name: str, ctx: Context, *, workers: int = Workload.workers, mutation: str | None = None) -> Workload:
    """The workload ``name``; with ``mutation`` (testing), its deliberately broken client
    (:mod:`tools.nemesis.client_mutations`, loaded only then). ValueError for an unknown name
    or a mutation of another workload."""
    try:
        cls = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
    if mutation:
        from tools.nemesis.client_mutations import workload_class  # test-only code

        cls = workload_class(mutation, name)
    return cls(ctx, workers=workers)
