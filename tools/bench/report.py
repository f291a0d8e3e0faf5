"""The bench's results: one JSON-able dict (``--json``) and the human summary printed from it.

The dict is the record of a run: the contract fields (throughput, latency_ms, errors, target)
that other tools and the comparison matrix read, the parameters that produced them, each
client process's CPU share, the per-second timeline and the merged HDR histogram itself
(encoded), so percentiles nobody asked for today can still be read from an old result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tools.bench import histogram
from tools.bench.procs import Merged
from tools.bench.workload import KEY_SIZE

# A client process above this share of a core was probably the bottleneck, not the store.
CPU_BOUND_PCT = 90.0


@dataclass(frozen=True)
class RunInfo:
    """The parameters a result is labelled with."""

    workload: str
    concurrency: int
    duration: float
    warmup: float
    keys: int
    value_size: int
    distribution: str
    consistency: str
    partitions: int | None
    target: str  # "tessera" or "etcd"
    address: str  # the --target string that was driven
    procs: int


def build(info: RunInfo, merged: Merged, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result dict (see docs/cli.md, `tessera bench`)."""
    result: dict[str, Any] = {
        "throughput": round(merged.ops / info.duration, 1) if info.duration > 0 else 0.0,
        "latency_ms": histogram.latency_ms(merged.histogram),
        "errors": merged.errors,
        "errors_by_kind": dict(sorted(merged.errors_by_kind.items())),
        "target": info.target,
        "address": info.address,
        "ops": merged.ops,
        "workload": info.workload,
        "concurrency": info.concurrency,
        "duration": info.duration,
        "warmup": info.warmup,
        "keys": info.keys,
        "key_size": KEY_SIZE,
        "value_size": info.value_size,
        "distribution": info.distribution,
        "consistency": info.consistency,
        "partitions": info.partitions,
        "procs": info.procs,
        "client_cpu": merged.client_cpu,
        "timeline": merged.timeline,
        "histogram": histogram.encode(merged.histogram),
    }
    if info.workload == "cas":
        result["cas_conflicts"] = merged.cas_conflicts
    result.update(extra or {})
    return result


def human(result: dict[str, Any]) -> str:
    """The summary printed at the end of a run (plain text: stdout may be a file)."""
    lat = result["latency_ms"]
    lines = [
        f"{result['workload']} on {result['target']}: {result['throughput']:,.0f} ops/s  "
        f"p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms  "
        f"p999 {lat['p999']:.2f} ms  max {lat['max']:.1f} ms  errors {result['errors']}  "
        f"(concurrency {result['concurrency']}, {result['duration']:g} s, {result['distribution']}, "
        f"{result['keys']} keys)"
    ]
    if result["errors_by_kind"]:
        lines.append("errors: " + ", ".join(f"{k} {n}" for k, n in result["errors_by_kind"].items()))
    if "cas_conflicts" in result:
        lines.append(f"cas: {result['cas_conflicts']} compare-and-sets found the version changed")
    cpu = result["client_cpu"]
    busy = any(c >= CPU_BOUND_PCT for c in cpu)
    lines.append(
        "client CPU: " + ", ".join(f"{c:.0f}%" for c in cpu) + " of a core per client process"
        + (" (a client was near a full core: it may be the bottleneck; try --procs)" if busy else "")
    )
    fo = result.get("failover")
    if fo:
        first = "none" if fo["first_ok_s"] is None else f"{fo['first_ok_s']:.2f} s"
        lines.append(
            f"failover: killed {fo.get('member', '?')} (leading {fo['led_partitions']} partition(s)) at "
            f"{fo.get('kill_at_s', 0.0):.1f} s; first successful write to what it led after {first}; "
            f"longest gap between such writes {fo['longest_gap_s']:.2f} s"
        )
    if "elections" in result:
        lines.append(f"elections during the run: {result['elections']}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
