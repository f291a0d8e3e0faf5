"""common.metrics (cheap histograms, the scrape listener) and common.logs' JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from common import logs
from common.metrics import Buckets, MetricsServer, RpcStats, counter, histogram, parse_listen


def test_buckets_are_prometheus_le_buckets() -> None:
    b = Buckets((0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 0.01, 5.0):  # a value equal to a bound is in that bucket (le)
        b.observe(v)
    assert b.cumulative() == [("0.001", 2), ("0.01", 4), ("+Inf", 5)]
    assert b.count == 5 and b.total == pytest.approx(5.0135)


def test_rpc_stats_export_a_counter_and_a_histogram_per_rpc_and_outcome() -> None:
    stats = RpcStats((0.001,))
    stats.note("put", 0, 0.0005)
    stats.note("put", 0, 0.002)
    stats.note("put", 14, 0.0001)
    registry = CollectorRegistry()

    class C(Collector):
        def collect(self):
            yield from stats.families("tessera_x", "things")
            yield counter("tessera_y", "y", 3, [("where", "here")])
            yield histogram("tessera_z_seconds", "z", Buckets((1.0,)))

    registry.register(C())
    from prometheus_client import generate_latest

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(registry).decode()) for s in fam.samples}
    assert samples[("tessera_x_requests_total", (("outcome", "OK"), ("rpc", "put")))] == 2
    assert samples[("tessera_x_requests_total", (("outcome", "UNAVAILABLE"), ("rpc", "put")))] == 1
    ok_put = (("outcome", "OK"), ("rpc", "put"))
    assert samples[("tessera_x_request_duration_seconds_bucket", (("le", "0.001"), *ok_put))] == 1
    assert samples[("tessera_x_request_duration_seconds_count", (("outcome", "OK"), ("rpc", "put")))] == 2
    assert samples[("tessera_y_total", (("where", "here"),))] == 3
    assert samples[("tessera_z_seconds_count", ())] == 0


@pytest.mark.parametrize("bad", ["", "7100", "host:", ":80", "host:99999", "host:x"])
def test_a_bad_metrics_listen_address_names_the_flag(bad: str) -> None:
    with pytest.raises(ValueError, match="--metrics-listen"):
        parse_listen(bad)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9100") == ("::1", 9100)


def test_the_metrics_server_answers_scrapes_and_only_them() -> None:
    async def main() -> None:
        registry = CollectorRegistry()

        class C(Collector):
            def collect(self):
                yield counter("tessera_scraped", "scrapes", 1)

        registry.register(C())
        server = MetricsServer(registry)
        await server.start("127.0.0.1:0")
        try:
            assert server.port and server.url == f"http://127.0.0.1:{server.port}/metrics"

            async def ask(request: bytes) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(request)
                await writer.drain()
                answer = await reader.read()
                writer.close()
                return answer

            ok = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = ok.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200") and b"text/plain" in head
            assert b"tessera_scraped_total 1.0" in body
            assert (await ask(b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 404")
            assert (await ask(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.0 405")
            assert server.scrapes == 1
        finally:
            await server.close()

    asyncio.run(main())


def test_json_log_lines_carry_ts_level_logger_msg_and_the_fields() -> None:
    out = io.StringIO()
    logs.setup("info", stream=out, fmt="json")
    try:
        logs.set_fields(store=4)
        log = logging.getLogger("tessera.test")
        log.info("partition %d: hello", 7, extra={"partition": 7})
        with logs.partition_context(9):
            log.warning("about %s", "nine")
        log.debug("not written at info")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("it broke")
    finally:
        logs._process_fields.clear()
        logs.setup("info")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["msg"] for r in lines] == ["partition 7: hello", "about nine", "it broke"]
    assert lines[0]["partition"] == 7 and lines[1]["partition"] == 9 and "partition" not in lines[2]
    for r in lines:
        assert r["store"] == 4 and r["logger"] == "tessera.test"
        assert r["ts"].endswith("Z") and "T" in r["ts"]
    assert [r["level"] for r in lines] == ["info", "warning", "error"]
    assert "RuntimeError: boom" in lines[2]["exc"]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.setup("info", fmt="xml")
