"""``--plot FILE.png``: throughput over time and the latency percentile distribution.

The left panel is the per-second timeline (successful ops and errors), with the failover kill
marked, because a stall or a slow start is invisible in an average. The right panel is the
HDR percentile plot (latency against 1/(1-percentile) on a log axis), which shows the tail
the way p50/p99 numbers cannot. matplotlib is only needed here (a dev dependency): without it
--plot is refused before the run starts rather than after it.
"""

from __future__ import annotations

from typing import Any

from tools.bench import histogram


class PlotUnavailable(RuntimeError):
    pass


def check_available() -> None:
    """Raise PlotUnavailable (with what to install) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed (pip install 'matplotlib>=3.7', "
            "or `make dev`, whose dev extra has it)"
        ) from exc


def plot(result: dict[str, Any], path: str) -> None:
    """Write the two-panel PNG for ``result`` (a report.build dict) to ``path``."""
    check_available()
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        timeline = result["timeline"]
        t = [row[0] + 0.5 for row in timeline]
        left.plot(t, [row[1] for row in timeline], marker=".", label="ops/s")
        if any(row[2] for row in timeline):
            left.plot(t, [row[2] for row in timeline], marker=".", color="tab:red", label="errors/s")
        fo = result.get("failover")
        if fo:
            left.axvline(fo["kill_at_s"], color="black", linestyle="--", label=f"kill {fo['member']}")
        left.set_xlabel("seconds since warm-up ended")
        left.set_ylabel("per second")
        left.set_ylim(bottom=0)
        left.set_xlim(0, max(1, len(timeline)))
        left.set_title(f"{result['workload']} on {result['target']}: throughput")
        left.legend(loc="lower right")
        left.grid(alpha=0.3)

        curve = histogram.percentile_curve(histogram.decode(result["histogram"]))
        if curve:
            xs = [1.0 / (1.0 - min(p, 99.9999) / 100.0) for p, _ in curve]
            right.plot(xs, [ms for _, ms in curve], marker=".")
            right.set_xscale("log")
            ticks = [(1.0, "0"), (2.0, "50"), (10.0, "90"), (100.0, "99"), (1000.0, "99.9"),
                     (10000.0, "99.99"), (100000.0, "99.999")]
            right.set_xticks([x for x, _ in ticks], [label for _, label in ticks])
        right.set_xlabel("percentile")
        right.set_ylabel("latency (ms)")
        right.set_title(f"latency, {result['ops']:,} ops, concurrency {result['concurrency']}")
        right.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
