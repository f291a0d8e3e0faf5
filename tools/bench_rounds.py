"""What a Raft round costs, without processes: three stores in one event loop.

    python -m tools.bench_rounds [--partitions 8] [--batch 4] [--waves 200] [--profile N] [--json FILE]

Three real ``RaftStore``s (real WAL and LMDB files in a temporary directory) host every
partition; their Raft traffic crosses an in-memory transport (tools/memory_transport.py) that
serialises each batch to a ``RaftBatch`` and parses it back, as the TCP transport's two ends
do. The loop then runs waves: ``--batch`` puts proposed to every partition's leader at once,
the next wave once all are acknowledged. It prints the CPU of the whole process per write (all three stores), the store
rounds and Raft messages (by type) per write, and with ``--profile N`` cProfile's top N functions
by own time.

What it is for: telling a round's fixed cost from a write's. At ``--batch 1`` a wave is one
write per partition and the rounds dominate; at ``--batch 16`` the writes do; the difference
between the two is what each extra write costs (docs/benchmarks.md, "Counting rounds"). No
client, no sockets, no gRPC: what it shows is the node's own work, where py-spy on a loaded
cluster shows everything at once, flat. Numbers are this process's CPU, so compare two commits
by running both (the machine's speed drifts), not against a number written down elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from common import aio
from common.descriptor import Descriptor, Epoch, ReplicaDesc
from node import round_executor
from node.raft import MessageType
from node.raftstore import RaftStore
from node.replica import Replica
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import OpResult, StateStore
from node.wal import WriteAheadLog
from tesserapb import raft_pb2
from tools.memory_transport import MemoryTransport, Observer

STORES = (1, 2, 3)
VALUE = b"v" * 128


@dataclass
class Result:
    partitions: int
    batch: int
    waves: int
    writes: int
    cpu_us_per_write: float
    wall_us_per_wave: float
    rounds_per_write: float  # store rounds (all three stores) per write
    batches_per_write: float  # transport batches (one per destination store per flush)
    # By Raft message type; "APP (empty)" are appends without entries (probes, commit indexes).
    messages_per_write: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the measured waves' wall time


def _counter(counts: collections.Counter[str]) -> Observer:
    """Count each written batch and its messages by type (empty appends apart)."""

    def observe(from_store: int, to_store: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        counts["batches"] += 1
        for m in msgs:
            if m.partition_id:  # store-level heartbeats (partition 0) are the ticker's, not a write's
                name = MessageType(m.type).name
                counts[name + " (empty)" if m.type == MessageType.APP and not m.entries else name] += 1

    return observe


async def _leaders(stores: dict[int, RaftStore], partitions: int, timeout: float) -> dict[int, Replica]:
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for pid in range(1, partitions + 1):
            lead = next((rs.replicas[pid] for rs in stores.values() if rs.replicas[pid].is_leader()), None)
            if lead is not None:
                found[pid] = lead
        if len(found) == partitions:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{partitions - len(found)} of {partitions} partitions elected no leader in {timeout} s")
        await asyncio.sleep(0.02)


async def _wave(leaders: dict[int, Replica], batch: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[None]] = []
    for pid, rep in leaders.items():
        for i in range(batch):
            done: asyncio.Future[None] = loop.create_future()

            def settled(results: list[OpResult] | None, exc: BaseException | None,
                        done: asyncio.Future[None] = done) -> None:
                if exc is not None:
                    done.set_exception(exc)
                else:
                    done.set_result(None)

            p = rep.propose_call(put(b"k%d-%d-%d" % (pid, n, i), VALUE))
            p.on_settled = settled
            futs.append(done)
    await asyncio.wait_for(asyncio.gather(*futs), 30)


async def run(directory: str, partitions: int, batch: int, waves: int, warmup: int = 20,
              profile: cProfile.Profile | None = None) -> Result:
    """Build the three stores in ``directory``, run ``warmup`` then ``waves`` waves, measure."""
    counts: collections.Counter[str] = collections.Counter()
    stores: dict[int, RaftStore] = {}
    opened: list[tuple[RaftStore, WriteAheadLog, StateStore]] = []
    settings = RaftSettings()  # a node's defaults: ticks of 50 ms, elections after 0.5-1 s
    slow_trip = round_executor.SLOW_TRIP_S
    round_executor.SLOW_TRIP_S = 60.0  # trips where a node's would go, whatever this disk does meanwhile
    try:
        for sid in STORES:
            wal = WriteAheadLog.open(f"{directory}/wal{sid}")
            state = StateStore(f"{directory}/state{sid}")
            rs = RaftStore(sid, wal, state, MemoryTransport(sid, stores, _counter(counts)), settings)
            stores[sid] = rs
            opened.append((rs, wal, state))
        for rs in stores.values():
            await rs.start()
        for pid in range(1, partitions + 1):
            desc = Descriptor(pid, b"", b"", Epoch(1, 1), tuple(ReplicaDesc(store_id=s, replica_id=s) for s in STORES))
            for sid, rs in stores.items():
                await rs.create_replica(desc, sid, bootstrap=True)
        leaders = await _leaders(stores, partitions, 30)
        for n in range(warmup):
            await _wave(leaders, batch, n)
        counts.clear()
        rounds0 = sum(rs.rounds for rs in stores.values())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        for n in range(waves):
            await _wave(leaders, batch, warmup + n)
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        rounds = sum(rs.rounds for rs in stores.values()) - rounds0
    finally:
        round_executor.SLOW_TRIP_S = slow_trip
        for rs, wal, state in opened:
            await rs.stop()
            wal.close()
            state.close()
    writes = partitions * batch * waves
    batches = counts.pop("batches", 0)
    return Result(
        partitions=partitions,
        batch=batch,
        waves=waves,
        writes=writes,
        cpu_us_per_write=1e6 * cpu / writes,
        wall_us_per_wave=1e6 * wall / waves,
        seconds=wall,
        rounds_per_write=rounds / writes,
        batches_per_write=batches / writes,
        messages_per_write={name: n / writes for name, n in sorted(counts.items())},
    )


def report(r: Result) -> str:
    msgs = ", ".join(f"{name} {v:.2f}" for name, v in r.messages_per_write.items())
    return (
        f"{r.partitions} partitions x {r.batch} writes per wave, {r.waves} waves ({r.writes} writes)\n"
        f"  CPU per write (three stores): {r.cpu_us_per_write:,.0f} µs\n"
        f"  wall per wave: {r.wall_us_per_wave:,.0f} µs\n"
        f"  store rounds per write: {r.rounds_per_write:.2f}\n"
        f"  Raft batches per write: {r.batches_per_write:.2f}\n"
        f"  Raft messages per write: {msgs}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench_rounds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="writes per partition per wave (default: 4)")
    ap.add_argument("--waves", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20, help="waves before measuring (default: 20)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions by own time")
    ap.add_argument("--json", metavar="FILE", help="also write the result here")
    args = ap.parse_args(argv)
    for flag in ("partitions", "batch", "waves"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1")
    if args.warmup < 0 or args.profile < 0:
        ap.error("--warmup and --profile must not be negative")
    prof = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="tessera-rounds-") as tmp:
        result = aio.run(run(tmp, args.partitions, args.batch, args.waves, args.warmup, prof))  # the node's loop
    print(report(result))
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(result), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
