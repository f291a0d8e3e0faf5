"""tools/stats.py: the one percentile the benchmarks report."""

from __future__ import annotations

from tools.stats import percentile


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.5) == 51.0  # index round(49.5) = 50
    assert percentile(values, 0.99) == 99.0  # index round(98.01) = 98
    assert percentile([3.0, 7.0], 0.5) == 3.0  # round(0.5) = 0: never the mean 5.0
    assert percentile([42.0], 0.999) == 42.0


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.5) == 0.0
