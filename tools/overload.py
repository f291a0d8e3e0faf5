"""An open-loop overload of one node: more writes offered than it can serve, at a fixed rate
whatever it answers, while the node's memory is sampled.

Open loop is the point: a closed-loop client (the library, ``tessera bench``) slows down as the
node does, so it never shows what a node does with more than it can take. This one sends a
``KV.Stream`` message of ``batch`` puts every ``batch / rate`` seconds on each of ``streams``
streams, never waiting for answers (only for gRPC's own flow control, which is the transport
pushing back), and counts the answers by code: OK, RESOURCE_EXHAUSTED (refused by a bound,
node/admission.py), anything else. ``--pid`` samples that process's resident memory.

    python -m tools.overload --node 127.0.0.1:7200 --partition 1 --seconds 60 [--pid N]

prints one JSON line (the same fields as :class:`OverloadResult`). tests/process/test_overload.py
runs it for a dozen seconds; docs/limits.md says what it showed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field

import grpc

from tesserapb import kv_pb2, kv_pb2_grpc
from tools.procstat import rss_bytes

_OK = grpc.StatusCode.OK.value[0]
_BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@dataclass
class OverloadResult:
    seconds: float = 0.0
    sent: int = 0  # put requests offered
    ok: int = 0
    busy: int = 0  # RESOURCE_EXHAUSTED
    other: int = 0
    unanswered: int = 0  # offered, no answer by the end
    behind_s: float = 0.0  # how far the sender fell behind its schedule (gRPC flow control)
    rss_start: int = 0  # bytes
    rss_max: int = 0
    rss_end: int = 0
    other_messages: list[str] = field(default_factory=list)


async def overload(
    node: str,
    partition: int,
    *,
    seconds: float,
    rate: float = 40_000.0,
    batch: int = 200,
    value_bytes: int = 1024,
    streams: int = 4,
    pid: int = 0,
) -> OverloadResult:
    res = OverloadResult()
    if pid:
        res.rss_start = res.rss_max = rss_bytes(pid)
    value = b"x" * value_bytes
    interval = batch * streams / rate
    stop_at = time.monotonic() + seconds

    async def one(k: int, ch: grpc.aio.Channel) -> None:
        call = kv_pb2_grpc.KVStub(ch).Stream()
        next_id = 1

        async def reader() -> None:
            async for resp in call:
                for item in resp.responses:
                    if item.code == _OK:
                        res.ok += 1
                    elif item.code == _BUSY:
                        res.busy += 1
                    else:
                        res.other += 1
                        if len(res.other_messages) < 5:
                            res.other_messages.append(f"{item.code}: {item.message}")

        reading = asyncio.ensure_future(reader())
        due = time.monotonic()
        try:
            while due < stop_at:
                msg = kv_pb2.StreamRequest()
                for i in range(batch):
                    item = msg.requests.add(request_id=next_id)
                    next_id += 1
                    put = item.put
                    put.context.partition_id = partition
                    put.key = b"overload/%d/%d" % (k, i)
                    put.value = value
                await call.write(msg)
                res.sent += batch
                due += interval
                now = time.monotonic()
                res.behind_s = max(res.behind_s, now - due)
                if due > now:
                    await asyncio.sleep(due - now)
            await call.done_writing()
            await asyncio.wait_for(reading, timeout=10)
        except (TimeoutError, grpc.aio.AioRpcError):
            pass
        finally:
            reading.cancel()

    async def sample() -> None:
        while pid:
            res.rss_max = max(res.rss_max, rss_bytes(pid))
            await asyncio.sleep(0.2)

    started = time.monotonic()
    sampling = asyncio.ensure_future(sample())
    try:
        async with grpc.aio.insecure_channel(node, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            await asyncio.gather(*(one(k, ch) for k in range(streams)))
    finally:
        sampling.cancel()
    res.seconds = time.monotonic() - started
    res.unanswered = res.sent - res.ok - res.busy - res.other
    if pid:
        res.rss_end = rss_bytes(pid)
        res.rss_max = max(res.rss_max, res.rss_end)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--node", required=True, metavar="HOST:PORT", help="the partition leader's node")
    p.add_argument("--partition", type=int, default=1, help="partition id to write to (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to offer load (default: %(default)s)")
    p.add_argument("--rate", type=float, default=40_000.0, help="puts offered per second (default: %(default)s)")
    p.add_argument("--value-bytes", type=int, default=1024, help="size of each value (default: %(default)s)")
    p.add_argument("--streams", type=int, default=4, help="concurrent streams (default: %(default)s)")
    p.add_argument("--pid", type=int, default=0, help="sample this process's memory (default: none)")
    a = p.parse_args(argv)
    res = asyncio.run(overload(a.node, a.partition, seconds=a.seconds, rate=a.rate, value_bytes=a.value_bytes,
                               streams=a.streams, pid=a.pid))
    print(json.dumps(dataclasses.asdict(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
