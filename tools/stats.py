"""Summary statistics shared by the benchmarks (``tessera bench``, ``python -m tools.bench_wal``)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1) of ``sorted_values`` (ascending), 0.0 when empty.

    Nearest rank on the closed interval: the value at index ``round(q * (n - 1))``, so q=0 is
    the minimum, q=1 the maximum, and every answer is a measured value, never an interpolation.
    """
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]
