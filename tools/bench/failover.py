"""``--failover``: how long writes stall when a leader is SIGKILLed under load.

A write load (concurrency 16, each request given 1 s, so a stalled request fails fast and
the worker tries again instead of hiding the stall inside one long call) runs against a
``--local`` cluster. A few seconds into the measurement one key is picked, its leader found
and killed, and the load goes on for several more seconds. Only the writes that the killed
member was serving are judged: for Tessera the keys of every partition it led at the kill
(all of them stall, not just the picked key's); for etcd, whose single leader serves
everything, every write. Reported: the time from the kill to the first such write that
succeeds, and the longest gap between two successive successful such writes (the outage as a
client sees it, spanning the kill). The member is restarted afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from tools.bench.driver import LocalTarget
from tools.bench.live import StatusLine
from tools.bench.runner import LoadResult, LoadSpec, Snapshot, run_load
from tools.bench.targets import make_driver, parse_target
from tools.bench.workload import UPDATE, key_of

CONCURRENCY = 16
REQUEST_TIMEOUT_S = 1.0
KILL_AFTER_S = 3.0  # measured seconds of steady load before the kill
AFTER_KILL_S = 6.0  # at least this long of load after it


@runtime_checkable
class LedRanges(Protocol):
    """A LocalTarget that can say which key ranges a member leads (Tessera: its partitions)."""

    def led_ranges(self, member: str) -> list[tuple[bytes, bytes]]: ...


@dataclass
class FailoverResult:
    member: str  # who was killed
    led_partitions: int  # how many partitions (etcd: 1) it led at the kill
    kill_at_s: float  # when, in seconds since the measurement started
    first_ok_s: float | None  # kill -> first successful affected write (None: none succeeded)
    longest_gap_s: float  # longest time between successive successful affected writes
    affected_writes: int  # successful writes judged

    def as_json(self) -> dict[str, object]:
        return {
            "member": self.member,
            "led_partitions": self.led_partitions,
            "kill_at_s": round(self.kill_at_s, 3),
            "first_ok_s": None if self.first_ok_s is None else round(self.first_ok_s, 3),
            "longest_gap_s": round(self.longest_gap_s, 3),
            "affected_writes": self.affected_writes,
        }


@dataclass
class _Kill:
    """What the killer did: whom, when (loop time), and which key ranges that member led."""

    member: str = ""
    led: int = 0
    ranges: list[tuple[bytes, bytes]] | None = None  # None: it served every key (etcd)
    at: float = 0.0


def failover_spec(spec: LoadSpec) -> LoadSpec:
    """The load a failover run drives, whatever --workload and --concurrency said."""
    return replace(spec, workload="write", concurrency=CONCURRENCY, timeout=REQUEST_TIMEOUT_S,
                   duration=max(spec.duration, KILL_AFTER_S + AFTER_KILL_S))


def in_ranges(key: bytes, ranges: list[tuple[bytes, bytes]]) -> bool:
    return any(start <= key and (not end or key < end) for start, end in ranges)


def gaps(ok_times: list[float], kill_at: float, end: float) -> tuple[float | None, float]:
    """(kill -> first success after it, longest gap between successive successes). With no
    success after the kill the gap runs from the last success to ``end``."""
    times = sorted(ok_times)
    after = [t for t in times if t >= kill_at]
    first_ok = after[0] - kill_at if after else None
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    if not after:
        longest = max(longest, end - (times[-1] if times else kill_at))
    return first_ok, longest


async def run_failover(local: LocalTarget, spec: LoadSpec, status: StatusLine) -> tuple[LoadResult, FailoverResult]:
    """Run the failover load against ``local`` (``spec`` from failover_spec) and measure it."""
    loop = asyncio.get_running_loop()
    driver = make_driver(parse_target(local.target), deadline_s=spec.timeout, tls=spec.tls, token=spec.token,
                         wire=spec.wire)
    ok_writes: list[tuple[float, bytes]] = []
    kill = _Kill()
    begin = loop.time()

    def on_result(kind: str, key: bytes, done: float, ok: bool) -> None:
        if ok and kind == UPDATE:
            ok_writes.append((done, key))

    def show(s: Snapshot) -> None:
        p99 = s.histogram.get_value_at_percentile(99.0) / 1000.0 if s.ops else 0.0
        status.show(s.elapsed, s.ops, s.errors, p99)

    async def killer() -> None:
        await asyncio.sleep(spec.warmup + KILL_AFTER_S)
        key = key_of(random.Random(spec.seed).randrange(spec.keys))
        member = await asyncio.to_thread(local.leader_for, key)
        led = (await asyncio.to_thread(local.leaders)).get(member, 0)
        ranges = await asyncio.to_thread(local.led_ranges, member) if isinstance(local, LedRanges) else None
        kill.member, kill.led, kill.ranges = member, led, ranges
        await asyncio.to_thread(local.kill, member)
        # Once the process is gone, not before: a write answered while the kill was under way
        # was served by the member still alive and is no success "after" it.
        kill.at = loop.time()

    try:
        result, _ = await asyncio.gather(
            run_load(driver, spec, start_at=begin, on_progress=show, on_result=on_result), killer()
        )
    finally:
        await driver.close()
    judged = [t for t, key in ok_writes if kill.ranges is None or in_ranges(key, kill.ranges)]
    first_ok, longest = gaps(judged, kill.at, loop.time())
    await asyncio.to_thread(local.restart, kill.member)
    return result, FailoverResult(
        member=kill.member,
        led_partitions=kill.led,
        kill_at_s=kill.at - (begin + spec.warmup),
        first_ok_s=first_ok,
        longest_gap_s=longest,
        affected_writes=len(judged),
    )
