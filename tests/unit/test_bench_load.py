"""The load generator's parts in-process: keys, key distributions, operation mixes, histogram
merging, the result's JSON shape, the failover arithmetic and --target parsing.

The process tier (tests/process/test_bench.py) runs the whole command against real clusters;
these pin down the numbers those runs rest on.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from tools.bench import histogram, procs, report
from tools.bench.failover import gaps, in_ranges
from tools.bench.runner import LoadResult
from tools.bench.targets import Target, TargetError, parse_target
from tools.bench.workload import (
    KEY_SIZE,
    SCAN,
    SCAN_MAX,
    WORKLOADS,
    OpMix,
    OpStream,
    ScrambledZipfian,
    Uniform,
    Zipfian,
    key_of,
    needs_preload,
    zeta,
)

# -- keys ------------------------------------------------------------------------------------


def test_keys_are_16_bytes_distinct_and_spread_evenly_over_the_first_byte():
    keys = [key_of(i) for i in range(256 * 40)]
    assert {len(k) for k in keys} == {KEY_SIZE}
    assert len(set(keys)) == len(keys)
    # 131 is odd, so i -> 131*i mod 256 is a bijection: every first byte exactly 40 times.
    assert set(Counter(k[0] for k in keys).values()) == {40}
    # Eight pre-split partitions cut the first byte into eighths: each gets its share of any
    # prefix of the key numbers (a small --keys loads every partition too).
    for n in (100, 1000, 100_000):
        per_partition = Counter(key_of(i)[0] // 32 for i in range(n))
        assert len(per_partition) == 8
        assert min(per_partition.values()) >= 0.75 * n / 8, (n, per_partition)


# -- distributions -----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [1, 2, 7, 1000, 100_000])
def test_choosers_stay_in_range(keys):
    rng = random.Random(3)
    for chooser in (Uniform(keys), ScrambledZipfian(keys), Zipfian(keys)):
        drawn = [chooser.next(rng) for _ in range(5000)]
        assert min(drawn) >= 0 and max(drawn) < keys


def test_zipfian_follows_the_zipf_law():
    """Unscrambled, item i is drawn with probability (1/(i+1)^0.99) / zeta(n): exactly for the
    two hottest items, by Gray's approximation (monotone, heavy-tailed) for the rest."""
    n, draws = 1000, 200_000
    rng = random.Random(7)
    z = Zipfian(n)
    counts = Counter(z.next(rng) for _ in range(draws))
    zn = zeta(n, 0.99)
    for i in (0, 1):
        expected = draws / ((i + 1) ** 0.99) / zn
        assert abs(counts[i] - expected) < 0.05 * expected, (i, counts[i], expected)
    assert counts[1] > counts[2] > counts[9] > counts[99] > 0
    assert counts[0] > 10 * counts[99]
    # The tail is heavy: the colder half of the items still gets a few percent of the draws.
    assert 0.02 * draws < sum(counts[i] for i in range(n // 2, n)) < 0.2 * draws


def test_scrambled_zipfian_is_skewed_and_its_hot_keys_spread_over_partitions():
    n, draws = 1000, 100_000
    rng = random.Random(11)
    counts = Counter(ScrambledZipfian(n).next(rng) for _ in range(draws))
    ranked = [k for k, _ in counts.most_common()]
    # Uniform would give each key 0.1% and the top 1% of keys 1% of the draws.
    assert counts[ranked[0]] > 20 * draws / n
    assert sum(counts[k] for k in ranked[:10]) > 0.08 * draws
    # ... whereas uniform stays flat.
    flat = Counter(Uniform(n).next(rng) for _ in range(draws))
    assert flat.most_common(1)[0][1] < 3 * draws / n
    # Scrambled: the 32 hottest key numbers are not neighbours; they fall in most of eight
    # first-byte partitions (unscrambled, they would be key numbers 0..31).
    assert ranked[:32] != list(range(32))
    assert len({key_of(k)[0] // 32 for k in ranked[:32]}) >= 6


# -- operation mixes ---------------------------------------------------------------------------


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_op_mix_draws_the_workload_shares(workload):
    rng = random.Random(5)
    mix = OpMix(workload)
    draws = 50_000
    got = Counter(mix.next(rng) for _ in range(draws))
    assert set(got) == {op for op, share in WORKLOADS[workload].items() if share > 0}
    for op, share in WORKLOADS[workload].items():
        assert abs(got[op] / draws - share) < 0.01, (op, got[op] / draws, share)


def test_every_mix_sums_to_one_and_only_pure_writes_skip_the_preload():
    for workload, mix in WORKLOADS.items():
        assert sum(mix.values()) == pytest.approx(1.0)
        assert needs_preload(workload) == (workload != "write")


def test_scans_ask_for_one_to_scan_max_keys():
    stream = OpStream("scan", "uniform", 100, seed=1)
    limits = {stream.next().scan_limit for _ in range(2000)}
    assert limits == set(range(1, SCAN_MAX + 1))
    assert all(stream.next().kind == SCAN for _ in range(100))


def test_op_streams_are_reproducible_per_seed_and_differ_across_seeds():
    a = [OpStream("a", "zipfian", 1000, seed=1).next() for _ in range(1)]
    s1, s2, s3 = (OpStream("a", "zipfian", 1000, seed=s) for s in (1, 1, 2))
    first = [s1.next() for _ in range(50)]
    assert first == [s2.next() for _ in range(50)]
    assert first != [s3.next() for _ in range(50)]
    assert a[0] == first[0]


# -- histograms --------------------------------------------------------------------------------


def test_histograms_merged_from_their_encodings_equal_one_histogram_of_everything():
    """What --procs does: each process encodes its histogram, the parent adds the decodings."""
    rng = random.Random(2)
    parts = [[rng.uniform(0.0002, 0.05) for _ in range(3000)] for _ in range(3)]
    parts[2].append(1.5)  # one slow request in one process: the merged max must show it
    encoded = []
    whole = histogram.new()
    for values in parts:
        h = histogram.new()
        for v in values:
            histogram.record_seconds(h, v)
            histogram.record_seconds(whole, v)
        encoded.append(histogram.encode(h))
    merged = histogram.merge(encoded)
    assert merged.get_total_count() == sum(len(p) for p in parts) == whole.get_total_count()
    assert histogram.latency_ms(merged) == histogram.latency_ms(whole)
    assert histogram.latency_ms(merged)["max"] == pytest.approx(1500.0, rel=1e-3)


def test_latency_is_reported_in_milliseconds_within_the_histogram_precision():
    h = histogram.new()
    for ms in range(1, 1001):  # 1..1000 ms, one each
        histogram.record_seconds(h, ms / 1000.0)
    lat = histogram.latency_ms(h)
    assert lat["p50"] == pytest.approx(500, rel=2e-3)
    assert lat["p99"] == pytest.approx(990, rel=2e-3)
    assert lat["max"] == pytest.approx(1000, rel=2e-3)
    assert histogram.latency_ms(histogram.new()) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    # Out-of-range values are clamped, not lost.
    histogram.record_seconds(h, 0.0)
    histogram.record_seconds(h, 3600.0)
    assert h.get_total_count() == 1002


def _result(ops: int, seconds: dict[int, list[int]], errors: dict[str, int], cpu: float, *lat: float) -> LoadResult:
    h = histogram.new()
    for v in lat:
        histogram.record_seconds(h, v)
    return LoadResult(ops=ops, errors_by_kind=errors, histogram=histogram.encode(h), timeline=seconds, cpu_pct=cpu)


def test_process_results_merge_counts_errors_cpu_and_a_zero_filled_timeline():
    a = _result(3, {0: [2, 0], 2: [1, 1]}, {"deadline": 1}, 40.0, 0.001, 0.002, 0.003)
    b = _result(2, {0: [1, 0], 1: [1, 2]}, {"deadline": 1, "unavailable": 1}, 55.5, 0.004, 0.005)
    m = procs.merge([a, b], duration=4.0)
    assert m.ops == 5 and m.histogram.get_total_count() == 5
    assert m.errors_by_kind == {"deadline": 2, "unavailable": 1} and m.errors == 3
    assert m.client_cpu == [40.0, 55.5]
    assert m.timeline == [[0, 3, 0], [1, 1, 2], [2, 1, 1], [3, 0, 0]]


def test_concurrency_is_split_evenly_over_processes():
    assert procs.split(64, 1) == [64]
    assert procs.split(10, 3) == [4, 3, 3]
    with pytest.raises(ValueError):
        procs.split(2, 3)


# -- the JSON result ---------------------------------------------------------------------------


def test_json_result_has_the_contract_fields_and_survives_a_round_trip():
    m = procs.merge([_result(20, {0: [10, 0], 1: [10, 1]}, {"deadline": 1}, 30.0, *[0.002] * 20)], 2.0)
    info = report.RunInfo(workload="a", concurrency=8, duration=2.0, warmup=1.0, keys=100, value_size=128,
                          distribution="zipfian", consistency="lease", partitions=8, target="tessera",
                          address="tessera://h:1", procs=1)
    fo = {"longest_gap_s": 0.6, "first_ok_s": 0.5, "led_partitions": 3}
    result = json.loads(json.dumps(report.build(info, m, {"failover": fo})))
    assert result["throughput"] == 10.0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert result["latency_ms"]["p50"] == pytest.approx(2.0, rel=2e-3)
    assert result["errors"] == 1 and result["errors_by_kind"] == {"deadline": 1}
    assert result["target"] == "tessera"
    for field in ("workload", "concurrency", "value_size", "key_size", "keys", "distribution", "partitions",
                  "procs", "duration", "client_cpu", "timeline", "histogram"):
        assert field in result, field
    assert result["key_size"] == 16 and result["client_cpu"] == [30.0]
    assert result["timeline"] == [[0, 10, 0], [1, 10, 1]]
    assert histogram.decode(result["histogram"]).get_total_count() == 20
    assert result["failover"] == fo
    text = report.human(result)
    assert "10 ops/s" in text and "deadline 1" in text and "30%" in text


# -- failover arithmetic -----------------------------------------------------------------------


def test_failover_gaps_span_the_kill():
    ok = [0.0, 0.1, 0.2, 0.3, 1.1, 1.15, 1.2]
    first, longest = gaps(ok, kill_at=0.35, end=2.0)
    assert first == pytest.approx(0.75)
    assert longest == pytest.approx(0.8)  # 0.3 -> 1.1
    # Nothing after the kill: no first success, and the gap runs to the end of the load.
    first, longest = gaps([0.0, 0.1], kill_at=0.5, end=3.0)
    assert first is None and longest == pytest.approx(2.9)


def test_key_ranges_are_half_open_and_an_empty_end_is_open():
    ranges = [(b"b", b"d"), (b"x", b"")]
    assert in_ranges(b"b", ranges) and in_ranges(b"c\xff", ranges) and in_ranges(b"\xff\xff", ranges)
    assert not in_ranges(b"d", ranges) and not in_ranges(b"a", ranges)


# -- --target ----------------------------------------------------------------------------------


def test_targets_parse_to_a_kind_and_addresses():
    assert parse_target("tessera://a:1,b:2") == Target("tessera", ("a:1", "b:2"))
    assert parse_target("a:1") == Target("tessera", ("a:1",))  # what --router always meant
    assert parse_target("etcd://127.0.0.1:2379") == Target("etcd", ("127.0.0.1:2379",))
    assert parse_target("etcd") == parse_target("etcd://") == Target("etcd", ())
    assert parse_target("tessera") == Target("tessera", ())
    assert str(parse_target("tessera://a:1,b:2")) == "tessera://a:1,b:2"
    for bad in ("redis://a:1", "tessera://a", "etcd://a:b", "tessera://:1"):
        with pytest.raises(TargetError):
            parse_target(bad)


def test_tessera_client_errors_map_to_driver_error_kinds():
    import grpc

    from router.client import DeadlineExceeded, InvalidArgumentError, RouterUnavailableError, ServerError
    from tools.bench.tessera_driver import error_kind

    assert error_kind(DeadlineExceeded("x")) == "deadline"
    assert error_kind(RouterUnavailableError("x")) == "unavailable"
    assert error_kind(InvalidArgumentError("key", 10, "too long")) == "invalid_argument"
    assert error_kind(ServerError("x", grpc.StatusCode.INTERNAL)) == "internal"
    assert error_kind(ServerError("x")) == "server_error"


def test_live_display_prints_nothing_when_stderr_is_not_a_terminal(capsys):
    from tools.bench.live import StatusLine, preload_bar

    with preload_bar(10) as advance:
        advance(10)
    with StatusLine(2.0) as status:
        status.show(-0.5, 0, 0, 0.0)
        status.show(1.0, 100, 1, 2.5)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
