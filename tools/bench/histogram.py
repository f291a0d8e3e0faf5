"""Latency accounting: an HDR histogram in microseconds (1 us..60 s, 3 significant digits).

An HDR histogram records every operation in constant memory with a bounded relative error
(0.1% here), so a 10-minute run costs the same as a 10-second one and p99.9 is exact to that
error rather than estimated from a sample. Its compressed encoding is what the ``--procs``
client processes send back to the parent, which adds them: merged percentiles are those of
all operations, not an average of per-process percentiles (which would be meaningless).
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s: longer than any request deadline the bench uses
SIGNIFICANT_DIGITS = 3

# The percentiles the report names, as (JSON field, percentile).
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_seconds(h: HdrHistogram, seconds: float) -> None:
    """Record one latency given in seconds, clamped into the trackable range."""
    h.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6))))


def encode(h: HdrHistogram) -> str:
    """The histogram as HdrHistogram's standard base64 text (also what --json stores)."""
    return h.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def merge(encoded: list[str]) -> HdrHistogram:
    """One histogram holding every value of every encoded histogram."""
    total = new()
    for text in encoded:
        total.add(decode(text))
    return total


def latency_ms(h: HdrHistogram) -> dict[str, float]:
    """{"p50", "p90", "p99", "p999", "max"} in milliseconds (0.0 for an empty histogram)."""
    if h.get_total_count() == 0:
        return {name: 0.0 for name, _ in PERCENTILES} | {"max": 0.0}
    out = {name: round(h.get_value_at_percentile(p) / 1000.0, 3) for name, p in PERCENTILES}
    out["max"] = round(h.get_max_value() / 1000.0, 3)
    return out


def percentile_curve(h: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, latency ms) pairs from p0 to p100, dense towards the tail: for the plot."""
    points = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0]
    if h.get_total_count() == 0:
        return []
    return [(p, h.get_value_at_percentile(p) / 1000.0) for p in points]
