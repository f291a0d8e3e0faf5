"""Issue #11's standard comparison: the same ``tessera bench`` runs against Tessera and etcd.

    python -m tools.bench_matrix [--duration 10] [--out FILE.md] [--partitions 8] [--quick]
                                 [--idle-partitions 1000] [--idle-seconds 60] [--no-idle] [--no-failover]

It starts one Tessera cluster (3 nodes, ``--partitions`` partitions, tools.cluster.Cluster) and
one 3-member etcd (tools.etcd_cluster.EtcdCluster) and keeps both for every throughput row, so
the elections each saw during the rows can be counted. Each row runs ``tessera bench --json``
as a subprocess, first against Tessera and then against etcd, row after row (interleaved), so
both see the same machine through the whole matrix; both clusters are up during every row.

Rows: workloads ``write`` and ``a`` at concurrency 1, 16, 64 and 256; ``c`` at 64 with
linearizable reads and with lease reads (which the etcd driver sends as serializable Ranges);
failover (``tessera bench --local --failover`` and ``--local --target etcd --failover``, each
on a throw-away cluster of its own); the idle cost (``python -m tools.bench_idle`` at
``--idle-partitions`` partitions with ``--baseline`` ``--partitions``, for the memory each idle
partition costs; etcd's idle members measured the same way over a window as long).

Output: a markdown table (figure | etcd | Tessera | ratio; the ratio is oriented so that > 1
means Tessera is better: throughput Tessera/etcd, times, CPU and memory etcd/Tessera), then the
elections, the machine, the date and the command, on stdout and in ``--out`` (with every run's
own JSON beside it, same name, ``.json``, for a figure that needs a second look). Without etcd on
PATH the etcd column says why it is empty. A row that fails prints its error and the matrix
goes on. ``--quick`` is a smoke run: 2 s rows over 10,000 keys, concurrency 1 and 16, a small
idle cluster (50 partitions, 5 s windows).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from tesserapb import meta_pb2, meta_pb2_grpc
from tools.bench_idle import memory_per_partition_kib
from tools.cluster import Cluster
from tools.etcd_cluster import EtcdCluster, EtcdNotInstalled, etcd_binary
from tools.procstat import cpu_seconds, rss_bytes

KINDS = ("tessera", "etcd")
_BENCH = [sys.executable, "-m", "tools.cli", "bench"]


@dataclass
class Row:
    """One benchmark configuration, run once per target."""

    label: str
    workload: str
    concurrency: int
    consistency: str = "lease"
    results: dict[str, dict | str] = field(default_factory=dict)  # kind -> JSON result, or the error


@dataclass
class Line:
    """One line of the output table."""

    figure: str
    etcd: float | None
    tessera: float | None
    fmt: str = "{:,.0f}"
    higher_is_better: bool = True
    note_etcd: str = ""
    note_tessera: str = ""

    def cell(self, value: float | None, note: str) -> str:
        text = "—" if value is None else self.fmt.format(value)
        return f"{text} ({note})" if note else text

    def ratio(self) -> str:
        if self.etcd is None or self.tessera is None or not self.etcd or not self.tessera:
            return "—"
        r = self.tessera / self.etcd if self.higher_is_better else self.etcd / self.tessera
        return f"{r:.2f}"


# -- running things ------------------------------------------------------------------


def bench_supports_targets() -> bool:
    """Whether this build's ``tessera bench`` takes ``--target`` (etcd runs need it)."""
    out = subprocess.run([*_BENCH, "--help"], check=False, capture_output=True, text=True, timeout=60)
    return "--target" in out.stdout


def last_words(output: str, n: int = 2) -> str:
    """The last ``n`` lines of ``output`` that are neither blank nor indented (a traceback's
    frames are indented; its exception line is not)."""
    said = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln[0].isspace()]
    return " | ".join(said[-n:]) or "(no output)"


def run_bench(args: list[str], timeout: float) -> dict:
    """``tessera bench ARGS --json FILE``; its JSON, or RuntimeError with its last words."""
    with tempfile.NamedTemporaryFile(prefix="bench-matrix-", suffix=".json", delete=False) as f:
        out = f.name
    try:
        argv = [*_BENCH, *args, "--json", out]
        print(f"  $ tessera bench {' '.join(args)}", flush=True)
        try:
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no result within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"exit status {done.returncode}: {last_words(done.stderr + done.stdout)}")
        with open(out) as f:
            result: dict = json.load(f)
        return result
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)


def tessera_terms(cluster: Cluster) -> dict[int, int]:
    """Each partition's Raft term, as the router knows it."""
    assert cluster.router is not None
    with grpc.insecure_channel(cluster.router.address) as ch:
        parts = meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions
    return {p.id: p.term for p in parts}


def tessera_elections_since(cluster: Cluster, before: dict[int, int]) -> int:
    """How far the partitions' terms rose since ``before``: every leader change (and every
    failed election round, which costs availability as much)."""
    now = tessera_terms(cluster)
    return sum(max(0, term - before.get(pid, term)) for pid, term in now.items())


@contextlib.contextmanager
def tessera_cluster(partitions: int) -> Iterator[Cluster]:
    root = tempfile.mkdtemp(prefix="tessera-matrix-")
    cluster = Cluster(root=root, nodes=3, partitions=partitions, log_level="warning")
    try:
        cluster.start()
        cluster.wait_ready(120)
        cluster.wait_balanced(60)  # the scheduler's own leader moves come before the count starts
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def etcd_cluster() -> Iterator[EtcdCluster]:
    root = tempfile.mkdtemp(prefix="tessera-matrix-etcd-")
    cluster = EtcdCluster(root, members=3, log_level="warning")
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure_pids(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """CPU share (100 = one core) over ``seconds`` and RSS at the end, per process."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {name: {"cpu_percent": round(100 * (cpu_seconds(pid) - before[name]) / wall, 2),
                   "rss_mib": round(rss_bytes(pid) / 2**20, 1)} for name, pid in pids.items()}


def tessera_idle(partitions: int, seconds: float, settle: float, baseline: int) -> dict:
    """``python -m tools.bench_idle --json`` at ``partitions`` (and first at ``baseline``, if
    not 0, for the memory per idle partition)."""
    argv = [sys.executable, "-m", "tools.bench_idle", "--partitions", str(partitions), "--seconds", str(seconds),
            "--settle", str(settle), *(["--baseline", str(baseline)] if baseline else []), "--json"]
    print(f"  $ python -m tools.bench_idle {' '.join(argv[3:])}", flush=True)
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=2 * (seconds + settle) + 1200)
    if done.returncode != 0:
        raise RuntimeError(f"bench_idle exit status {done.returncode}: {last_words(done.stderr + done.stdout)}")
    result: dict = json.loads(done.stdout[done.stdout.index("{"):])
    return result


def etcd_idle(seconds: float, settle: float) -> dict:
    with etcd_cluster() as etcd:
        time.sleep(settle)
        return {"processes": measure_pids(etcd.pids(), seconds)}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _nodes(idle: dict, prefix: str) -> dict[str, dict[str, float]]:
    return {name: p for name, p in idle["processes"].items() if name.startswith(prefix)}


# -- the matrix ----------------------------------------------------------------------


def rows_for(quick: bool) -> list[Row]:
    concurrencies = (1, 16) if quick else (1, 16, 64, 256)
    rows = [Row(f"{w} c={c}", w, c) for w in ("write", "a") for c in concurrencies]
    rows.append(Row("c c=64 linearizable", "c", 64, "linearizable"))
    rows.append(Row("c c=64 lease (etcd: serializable)", "c", 64, "lease"))
    return rows


def _attempt(what: str, fn: Callable[[], dict]) -> dict | str:
    try:
        return fn()
    except Exception as exc:  # a failed row is reported, and the matrix goes on
        print(f"  ! {what} failed: {exc}", flush=True)
        return f"failed: {exc}"


def run_matrix(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[Line], list[str], dict]:
    """Runs everything; returns the table's lines, notes for below it, and every run's own JSON."""
    notes: list[str] = []
    etcd_why_not = ""
    try:
        etcd_binary()
    except EtcdNotInstalled as exc:
        etcd_why_not = str(exc)
    with_targets = bench_supports_targets()
    if not with_targets and not etcd_why_not:
        etcd_why_not = "this build's `tessera bench` has no --target yet, so it cannot drive etcd"
    if etcd_why_not:
        notes.append(f"etcd column empty: {etcd_why_not}.")
        log(f"etcd skipped: {etcd_why_not}")
    kinds = [k for k in KINDS if k == "tessera" or not etcd_why_not]

    duration = args.duration
    keys = ["--keys", str(args.keys)] if args.keys else []
    row_timeout = duration + 180
    rows = rows_for(args.quick)
    elections: dict[str, int | str] = {}
    with contextlib.ExitStack() as stack:
        log(f"starting Tessera (3 nodes, {args.partitions} partitions)"
            + ("" if etcd_why_not else " and etcd (3 members)"))
        clusters: dict[str, Cluster | EtcdCluster] = {"tessera": stack.enter_context(tessera_cluster(args.partitions))}
        if "etcd" in kinds:
            clusters["etcd"] = stack.enter_context(etcd_cluster())
        tessera = clusters["tessera"]
        assert isinstance(tessera, Cluster)
        targets = {"tessera": f"tessera://{tessera.router_addresses}"}
        if "etcd" in clusters:
            targets["etcd"] = clusters["etcd"].target  # type: ignore[union-attr]
        terms_before = tessera_terms(tessera)
        etcd_before = clusters["etcd"].elections() if "etcd" in clusters else 0  # type: ignore[union-attr]

        for row in rows:
            log(f"{row.label}")
            for kind in kinds:
                where = ["--target", targets[kind]] if with_targets else ["--router", tessera.router_addresses]
                bench_args = ["--workload", row.workload, "--concurrency", str(row.concurrency),
                              "--duration", f"{duration:g}", "--partitions", str(args.partitions),
                              "--consistency", row.consistency, *keys, *where]
                row.results[kind] = _attempt(f"{row.label} on {kind}",
                                             lambda a=bench_args: run_bench(a, row_timeout))  # type: ignore[misc]

        try:
            elections["tessera"] = tessera_elections_since(tessera, terms_before)
        except grpc.RpcError as exc:
            elections["tessera"] = f"unknown ({exc.code().name})"
        if "etcd" in clusters:
            elections["etcd"] = clusters["etcd"].elections() - etcd_before  # type: ignore[union-attr]

    failover: dict[str, dict | str] = {}
    if not args.no_failover:
        log("failover (each on a throw-away cluster)")
        for kind in kinds:
            local = ["--local"] + (["--target", kind] if with_targets and kind == "etcd" else [])
            fargs = ["--workload", "write", "--concurrency", "16", "--duration", f"{duration:g}",
                     "--partitions", str(args.partitions), *local, "--failover"]
            failover[kind] = _attempt(f"failover on {kind}", lambda a=fargs: run_bench(a, row_timeout + 300))  # type: ignore[misc]

    idle: dict[str, dict | str] = {}
    if not args.no_idle:
        log(f"idle cost ({args.idle_seconds:g} s windows)")
        baseline = args.partitions if args.partitions < args.idle_partitions else 0
        idle["tessera"] = _attempt("Tessera idle", lambda: tessera_idle(args.idle_partitions, args.idle_seconds,
                                                                         args.idle_settle, baseline))
        if "etcd" in kinds:
            idle["etcd"] = _attempt("etcd idle", lambda: etcd_idle(args.idle_seconds, args.idle_settle))

    lines = table(rows, failover, idle, args)
    notes.append(_elections_note(elections, kinds))
    raw = {"rows": [{"label": r.label, "workload": r.workload, "concurrency": r.concurrency,
                     "consistency": r.consistency, "results": r.results} for r in rows],
           "failover": failover, "idle": idle, "elections": elections}
    return lines, notes, raw


def _elections_note(elections: dict[str, int | str], kinds: list[str]) -> str:
    said = ", ".join(f"{'Tessera' if k == 'tessera' else 'etcd'} {elections.get(k, '—')}" for k in kinds)
    return (f"Elections during the throughput rows (none were caused by the matrix): {said}. "
            "Tessera counts the rise of every partition's Raft term; etcd its "
            "etcd_server_leader_changes_seen_total.")


def _result(r: dict | str | None) -> dict | None:
    return r if isinstance(r, dict) else None


def _note(r: dict | str | None) -> str:
    if isinstance(r, str):
        return r if len(r) < 80 else r[:77] + "..."
    if r and r.get("errors"):
        return f"{r['errors']} errors"
    return ""


def table(rows: list[Row], failover: dict[str, dict | str], idle: dict[str, dict | str],
          args: argparse.Namespace) -> list[Line]:
    lines: list[Line] = []
    for row in rows:
        e, t = _result(row.results.get("etcd")), _result(row.results.get("tessera"))
        lines.append(Line(f"{row.label}: throughput (ops/s)", _num(e, "throughput"), _num(t, "throughput"),
                          note_etcd=_note(row.results.get("etcd")), note_tessera=_note(row.results.get("tessera"))))
        for q in ("p50", "p99"):
            lines.append(Line(f"{row.label}: {q} latency (ms)", _num(e, "latency_ms", q), _num(t, "latency_ms", q),
                              fmt="{:.2f}", higher_is_better=False))
    if failover:
        e, t = _result(failover.get("etcd")), _result(failover.get("tessera"))
        for key, what in (("first_ok_s", "failover: first write after the leader kill (s)"),
                          ("longest_gap_s", "failover: longest gap without a write (s)")):
            lines.append(Line(what, _failover(e, key), _failover(t, key), fmt="{:.2f}", higher_is_better=False,
                              note_etcd=_note(failover.get("etcd")) if e is None else "",
                              note_tessera=_note(failover.get("tessera")) if t is None else ""))
    if idle:
        lines.extend(_idle_lines(idle, args))
    return lines


def _num(r: dict | None, *path: str) -> float | None:
    """``r[path[0]][path[1]]...`` as a float; None when ``r`` is None or lacks it."""
    value: object = r
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def _failover(r: dict | None, key: str) -> float | None:
    if r is None:
        return None
    if isinstance(r.get("failover"), dict):
        value = r["failover"].get(key)
        return None if value is None else float(value)
    if key == "first_ok_s" and "failover_s" in r:  # the bench before --target
        return float(r["failover_s"])
    return None


def _idle_lines(idle: dict[str, dict | str], args: argparse.Namespace) -> list[Line]:
    t, e = _result(idle.get("tessera")), _result(idle.get("etcd"))
    t_nodes = _nodes(t, "node") if t else {}
    e_nodes = e["processes"] if e else {}
    n = args.idle_partitions
    lines = [
        Line(f"idle: CPU per node, % of a core (Tessera {n} partitions; etcd its one group)",
             _mean([p["cpu_percent"] for p in e_nodes.values()]), _mean([p["cpu_percent"] for p in t_nodes.values()]),
             fmt="{:.2f}", higher_is_better=False, note_etcd=_note(idle.get("etcd")) if e is None else "",
             note_tessera=_note(idle.get("tessera")) if t is None else ""),
        Line(f"idle: RSS per node, MiB (Tessera {n} partitions)",
             _mean([p["rss_mib"] for p in e_nodes.values()]), _mean([p["rss_mib"] for p in t_nodes.values()]),
             fmt="{:.1f}", higher_is_better=False),
    ]
    if t:
        routers = _nodes(t, "router")
        lines.append(Line(f"idle: Tessera's router, % of a core / MiB ({n} partitions)", None,
                          _mean([p["cpu_percent"] for p in routers.values()]), fmt="{:.2f}", higher_is_better=False,
                          note_tessera=f"{_mean([p['rss_mib'] for p in routers.values()]) or 0:.1f} MiB"))
    if t and "baseline" in t:
        base_n = t["baseline"]["partitions"]
        lines.append(Line(f"idle: memory per idle partition per node, KiB (RSS at {n} - at {base_n}) / {n - base_n}",
                          None, memory_per_partition_kib(t, t["baseline"]), fmt="{:.1f}", higher_is_better=False))
    return lines


def render(lines: list[Line], notes: list[str], args: argparse.Namespace, started: datetime.datetime,
           argv: list[str]) -> str:
    out = [
        f"# Tessera vs etcd ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        "Ratio > 1 means Tessera is better: throughput is Tessera / etcd; latency, failover time, CPU "
        "and memory are etcd / Tessera.",
        "",
        "| figure | etcd | Tessera | ratio |",
        "|---|---:|---:|---:|",
    ]
    for ln in lines:
        out.append(f"| {ln.figure} | {ln.cell(ln.etcd, ln.note_etcd)} | {ln.cell(ln.tessera, ln.note_tessera)} | "
                   f"{ln.ratio()} |")
    out += ["", *[f"- {n}" for n in notes], ""]
    out += ["Machine: " + machine(), "", f"Date: {started:%Y-%m-%d %H:%M:%S} UTC", "",
            "Command: `python -m tools.bench_matrix " + " ".join(argv) + "`", ""]
    return "\n".join(out)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    etcd = "etcd not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError, EtcdNotInstalled):
        first = subprocess.run([etcd_binary(), "--version"], check=False, capture_output=True, text=True,
                               timeout=10).stdout
        etcd = first.splitlines()[0] if first else etcd
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True,
                                timeout=10, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {etcd}"
            + (f", Tessera at {commit.strip()}" if commit.strip() else ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m tools.bench_matrix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=None, help="seconds per row (default: 10; --quick: 2)")
    ap.add_argument("--out", metavar="FILE.md",
                    help="also write the report here, and every run's own JSON next to it (FILE.json)")
    ap.add_argument("--partitions", type=int, default=8, help="Tessera's partitions for the rows (default: 8)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: short rows, fewer of them, a small idle cluster")
    ap.add_argument("--idle-partitions", type=int, default=None, help="default: 1000 (--quick: 50)")
    ap.add_argument("--idle-seconds", type=float, default=None, help="default: 60 (--quick: 5)")
    ap.add_argument("--idle-settle", type=float, default=None, help="default: 10 (--quick: 2)")
    ap.add_argument("--keys", type=int, default=None,
                    help="the rows' key space, passed to tessera bench (default: its own; --quick: 10000)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-cost measurement")
    ap.add_argument("--no-failover", action="store_true", help="skip the failover rows")
    args = ap.parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (2.0 if quick else 10.0)
    args.keys = args.keys if args.keys is not None else (10_000 if quick else None)
    args.idle_partitions = args.idle_partitions if args.idle_partitions is not None else (50 if quick else 1000)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (5.0 if quick else 60.0)
    args.idle_settle = args.idle_settle if args.idle_settle is not None else (2.0 if quick else 10.0)
    if args.duration <= 0 or args.partitions < 1 or args.idle_partitions < 1 or args.idle_seconds <= 0:
        ap.error("--duration and --idle-seconds must be positive, --partitions and --idle-partitions at least 1")

    started = datetime.datetime.now(datetime.UTC)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    lines, notes, raw = run_matrix(args, log)
    report = render(lines, notes, args, started, argv)
    print()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
        raw_path = os.path.splitext(args.out)[0] + ".json"
        with open(raw_path, "w") as f:
            json.dump({"date": started.isoformat(), "machine": machine(), "argv": argv, **raw}, f, indent=1)
        print(f"(every run's own JSON: {raw_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
