"""What auth costs: the same ``tessera bench`` with TLS off, TLS on, and TLS + auth, side by side.

    .venv/bin/python -m tools.bench_auth [--concurrency 1,64] [--duration 6] [--rounds 1]
    .venv/bin/python -m tools.bench_auth --micro [--rounds 3]

``--micro`` measures the check alone: one in-process gRPC server over mutual TLS answering an
empty ``KV.Get`` (unary) and ``KV.Stream`` (one item per message), with and without the auth
interceptor, from one client at 1 and 64 calls in flight.

For each round and each concurrency it measures three fresh local 3-node clusters back to
back, so all see the same machine load: plaintext; mutual TLS (``--tls``); mutual TLS with
``--auth``, the bench client sending the bootstrap admin token on every call (so every KV
stream open and every Meta call is checked by the interceptor; docs/auth.md). It prints one
markdown table: throughput, latency percentiles and the servers' CPU per write (as
tools/bench_side.py measures it). docs/auth.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from typing import Any

from tools.bench_side import side_by_side

MODES = {"plaintext": (False, False), "TLS": (True, False), "TLS+auth": (True, True)}  # label -> (tls, auth)


async def _micro_one(
    server_tls: Any, tls_config: Any, token: str | None, kind: str, inflight: int, seconds: float
) -> float:
    """Calls (or stream messages) per second against a fresh in-process server."""
    import grpc

    from common import auth
    from common.auth import Grant, Role
    from common.auth_server import AuthInterceptor
    from common.tls import add_port, aio_channel
    from tesserapb import kv_pb2

    async def get(request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        return kv_pb2.GetResponse()

    async def stream(requests: Any, context: Any) -> Any:
        async for req in requests:
            yield kv_pb2.StreamResponse(responses=[kv_pb2.StreamResponseItem(request_id=i.request_id)
                                                   for i in req.requests])

    handlers = grpc.method_handlers_generic_handler("tessera.v1.KV", {
        "Get": grpc.unary_unary_rpc_method_handler(get, kv_pb2.GetRequest.FromString,
                                                   kv_pb2.GetResponse.SerializeToString),
        "Stream": grpc.stream_stream_rpc_method_handler(stream, kv_pb2.StreamRequest.FromString,
                                                        kv_pb2.StreamResponse.SerializeToString),
    })
    grants = {auth.token_hash(token): Grant(1, Role.ADMIN)} if token else {}
    server = grpc.aio.server(interceptors=[AuthInterceptor(grants.get)] if token else [])
    server.add_generic_rpc_handlers((handlers,))
    port = add_port(server, "127.0.0.1:0", server_tls)
    await server.start()
    channel = aio_channel(f"127.0.0.1:{port}", tls_config)
    md = auth.call_metadata(token) or None  # as the client library sends it
    loop = asyncio.get_running_loop()
    done = 0
    try:
        end = loop.time() + seconds
        if kind == "unary":
            call = channel.unary_unary("/tessera.v1.KV/Get", request_serializer=kv_pb2.GetRequest.SerializeToString,
                                       response_deserializer=kv_pb2.GetResponse.FromString)

            async def worker() -> None:
                nonlocal done
                while loop.time() < end:
                    await call(kv_pb2.GetRequest(key=b"k"), metadata=md)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(inflight)))
        else:
            bidi = channel.stream_stream("/tessera.v1.KV/Stream",
                                         request_serializer=kv_pb2.StreamRequest.SerializeToString,
                                         response_deserializer=kv_pb2.StreamResponse.FromString)(metadata=md)
            msg = kv_pb2.StreamRequest(requests=[kv_pb2.StreamRequestItem(request_id=1, get=kv_pb2.GetRequest())])
            for _ in range(inflight):
                await bidi.write(msg)
            while loop.time() < end:
                await bidi.read()
                done += 1
                await bidi.write(msg)
            await bidi.done_writing()
    finally:
        await channel.close()
        await server.stop(None)
    return done / seconds


def micro(rounds: int) -> None:
    from common import aio, auth, tls
    from tools.certs import ensure_cluster_certs

    with tempfile.TemporaryDirectory(prefix="tessera-bench-auth-") as tmp:
        made = ensure_cluster_certs(tmp, nodes=[1], routers=[])
        config = tls.TlsConfig.load(made.ca, made.client.cert, made.client.key)
        server_config = tls.TlsConfig.load(made.ca, made.nodes[1].cert, made.nodes[1].key)
        token = auth.new_token()
        print("| round | call | in flight | TLS calls/s | TLS+auth calls/s | cost |  (in process, 3 s each)")
        print("|---|---|---|---|---|---|")
        for r in range(rounds):
            for kind in ("unary", "stream"):
                for inflight in (1, 64):
                    plain = aio.run(_micro_one(server_config, config, None, kind, inflight, 3.0))
                    checked = aio.run(_micro_one(server_config, config, token, kind, inflight, 3.0))
                    print(f"| {r + 1} | {kind} | {inflight} | {plain:,.0f} | {checked:,.0f} | "
                          f"{100 * (plain - checked) / plain:+.0f}% |", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,64", help="comma-separated (default: %(default)s)")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workload", default="write")
    p.add_argument("--micro", action="store_true", help="the check alone, in process")
    a = p.parse_args(argv)
    if a.micro:
        micro(a.rounds)
        return 0
    side_by_side(MODES, column="mode", concurrency=a.concurrency, duration=a.duration, rounds=a.rounds,
                 workload=a.workload, prefix="tessera-bench-auth-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
