"""Observability of a real cluster (docs/observability.md): Prometheus metrics scraped from live
node and router processes, the Grafana dashboard against them, gRPC reflection on every
listener, JSON log lines, and gRPC health through a WAL replay and a fail-stop.

One cluster for the module (3 nodes, 2 partitions, every process with --metrics-listen and
--log-format json, every node with a --fault-file); the test that fails a node's disk runs
last. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import CODE_NAMES
from conftest import REPO, eventually
from router.client import Client
from support.running import running_cluster
from tesserapb import kv_pb2, kv_pb2_grpc
from tools.cluster import Cluster
from tools.nemesis.faults import write_fault_file

pytestmark = pytest.mark.timeout(180)

DASHBOARD = REPO / "docs" / "grafana" / "tessera.json"
# Every label a tessera_ metric may carry; none of them ever holds a key, a partition or a store.
BOUNDED_LABELS = {"rpc", "outcome", "result", "where", "reason", "state", "kind", "le"}
NODE_RPCS = {"get", "put", "delete", "compare_and_set", "scan", "batch"}
PARTITIONS = 2

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scrape:
    """One scrape of a /metrics URL: every sample, and the names the exposition declares."""

    def __init__(self, url: str) -> None:
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            self.text = resp.read().decode()
        self.samples: Samples = {}
        self.names: set[str] = set()  # sample names a query may use (x_total, x_bucket, ...)
        for fam in text_string_to_metric_families(self.text):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(fam.type, ("",))
            self.names.update(fam.name + s for s in suffixes)
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def tessera(self) -> Iterator[tuple[str, dict[str, str]]]:
        for name, labels in self.samples:
            if name.startswith("tessera_"):
                yield name, dict(labels)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    def make(root: str) -> Cluster:
        faults = {i: os.path.join(root, f"faults{i}.json") for i in (1, 2, 3)}
        return Cluster(root=root, nodes=3, partitions=PARTITIONS, metrics=True, log_format="json",
                       node_args=lambda i: ["--fault-file", faults[i]])

    with running_cluster("tessera-observe-", make) as c:
        yield c


def _nodes(c: Cluster) -> list[Scrape]:
    return [Scrape(c.node_procs[i].metrics_url) for i in sorted(c.node_procs)]


def _sum(scrapes: list[Scrape], name: str, **labels: str) -> float:
    return sum(s.get(name, **labels) for s in scrapes)


def test_metrics_count_what_the_cluster_did(cluster: Cluster) -> None:
    n = 25
    rng = random.Random(7)
    keys = [bytes([rng.randrange(256)]) + b"metrics-%03d" % i for i in range(n)]  # over both partitions
    before = _nodes(cluster)
    with Client(cluster.router_addresses) as client:
        for k in keys:
            client.put(k, b"v", timeout=30)
        assert client.get(keys[0], timeout=30) is not None
    after = _nodes(cluster)

    def delta(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    # Exactly the puts answered OK (a routing retry shows under its own outcome, not as OK).
    assert delta("tessera_node_requests_total", rpc="put", outcome="OK") == n
    assert delta("tessera_node_request_duration_seconds_count", rpc="put", outcome="OK") == n
    assert delta("tessera_node_requests_total", rpc="get", outcome="OK") >= 1
    assert delta("tessera_raft_proposals_total") >= n
    assert delta("tessera_raft_entries_committed_total") >= n
    for s0, s1 in zip(before, after):  # every node holds a replica of every write: each fsyncs
        assert s1.get("tessera_wal_fsync_duration_seconds_count") > s0.get("tessera_wal_fsync_duration_seconds_count")
        assert s1.get("tessera_wal_written_bytes_total") > s0.get("tessera_wal_written_bytes_total")
        assert s1.get("tessera_lmdb_used_bytes") > 0
        assert s1.get("tessera_node_serving") == 1 and s1.get("tessera_node_failed") == 0
        assert s1.get("tessera_node_disk_full") == 0 and s1.get("tessera_node_busy_refusals_total") == 0
        assert s1.get("tessera_raft_replicas") == PARTITIONS
    assert _sum(after, "tessera_raft_leaders") == PARTITIONS
    # Followers apply once they hear the commit index: three replicas apply every write.
    eventually(lambda: _sum(_nodes(cluster), "tessera_raft_entries_applied_total")
               - _sum(before, "tessera_raft_entries_applied_total") >= 3 * n, 30, "every replica applied the writes")

    for s in after:
        for name, labels in s.tessera():
            assert set(labels) <= BOUNDED_LABELS, f"{name} has unbounded labels {labels}"
            if "outcome" in labels:
                assert labels["outcome"] in CODE_NAMES.values(), (name, labels)
            if name.startswith("tessera_node_request"):
                assert labels["rpc"] in NODE_RPCS, (name, labels)
        # Histogram count and request counter are the same numbers, bucket +Inf included.
        for (name, pairs), value in s.samples.items():
            if name == "tessera_node_requests_total":
                lab = dict(pairs)
                assert s.get("tessera_node_request_duration_seconds_count", **lab) == value
                assert s.get("tessera_node_request_duration_seconds_bucket", **lab, le="+Inf") == value
    # The label sets do not grow with the keys written: as many series after 25 more puts.
    series = {k for s in after for k in s.samples if k[0].startswith("tessera_node_request")}
    with Client(cluster.router_addresses) as client:
        for k in keys:
            client.put(k + b"-again", b"v", timeout=30)
    again = {k for s in _nodes(cluster) for k in s.samples if k[0].startswith("tessera_node_request")}
    assert again == series


def test_router_metrics_tell_the_placement_group_and_its_rpcs(cluster: Cluster) -> None:
    assert cluster.router is not None
    first = Scrape(cluster.router.metrics_url)
    assert first.get("tessera_placement_is_leader") == 1
    assert first.get("tessera_placement_leader_id") == 1
    assert first.get("tessera_placement_partitions") == PARTITIONS
    assert first.get("tessera_placement_partitions_without_leader") == 0
    assert first.get("tessera_placement_stores", state="up") == 3
    assert first.get("tessera_router_requests_total", rpc="Meta/ScanPartitions", outcome="OK") >= 1
    for name, labels in first.tessera():
        assert set(labels) <= BOUNDED_LABELS, f"{name} has unbounded labels {labels}"
    # Nodes heartbeat every second: the count moves.
    beats = first.get("tessera_router_requests_total", rpc="Meta/StoreHeartbeat", outcome="OK")
    assert beats >= 1
    eventually(lambda: Scrape(cluster.router.metrics_url).get(  # type: ignore[union-attr]
        "tessera_router_requests_total", rpc="Meta/StoreHeartbeat", outcome="OK") > beats, 10, "more heartbeats")
    # An operation submitted through Meta is counted by kind and result.
    from tesserapb import meta_pb2, meta_pb2_grpc

    with grpc.insecure_channel(cluster.router.address) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)
        with pytest.raises(grpc.RpcError):  # no store 99: refused
            meta.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
                partition_id=1, transfer_leader=meta_pb2.TransferLeader(to_store_id=99))), timeout=5)
    s = Scrape(cluster.router.metrics_url)
    assert s.get("tessera_placement_operations_total", kind="transfer_leader", result="refused") >= 1
    assert s.get("tessera_router_requests_total", rpc="Meta/SubmitOperation", outcome="OK") == first.get(
        "tessera_router_requests_total", rpc="Meta/SubmitOperation", outcome="OK")


def test_every_metric_the_dashboard_names_is_exported(cluster: Cluster) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    named = {m for e in exprs for m in re.findall(r"\b((?:tessera|process)_[a-z_]+)", e)}
    assert len(named) >= 30  # the dashboard covers requests, Raft, disk, health and placement
    assert cluster.router is not None
    exported = set().union(*(s.names for s in [*_nodes(cluster), Scrape(cluster.router.metrics_url)]))
    assert not named - exported, f"the dashboard names metrics nobody exports: {sorted(named - exported)}"


def test_reflection_lists_the_services_on_every_listener(cluster: Cluster) -> None:
    assert cluster.router is not None
    want = {
        cluster.router.address: {"tessera.v1.Meta", "tessera.v1.KV", "grpc.health.v1.Health",
                                  "grpc.reflection.v1alpha.ServerReflection"},
        **{cluster.node_address(i): {"tessera.v1.KV", "tessera.v1.RaftTransport", "grpc.health.v1.Health",
                                     "grpc.reflection.v1alpha.ServerReflection"} for i in cluster.node_procs},
    }
    for address, services in want.items():
        with grpc.insecure_channel(address) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            # types-grpcio-reflection declares ServerReflectionInfo as Incomplete, not callable.
            (resp,) = list(stub.ServerReflectionInfo(  # type: ignore[operator]
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            listed = {s.name for s in resp.list_services_response.service}
            assert services <= listed, (address, listed)


def test_json_log_lines_carry_the_fields(cluster: Cluster) -> None:
    for proc, field, value in [(cluster.node_procs[1], "store", 1), (cluster.router, "router", 1)]:
        assert proc is not None
        with open(proc.log_path) as f:
            lines = [line for line in f if line.startswith("{")]
        assert lines, f"no JSON log line in {proc.log_path}"
        records = [json.loads(line) for line in lines]  # every one is valid JSON
        for r in records:
            assert {"ts", "level", "logger", "msg"} <= set(r), r
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r
            assert r[field] == value, r
    with open(cluster.node_procs[1].log_path) as f:
        about = [json.loads(line) for line in f if line.startswith("{") and '"partition"' in line]
    # Placement had the node create its replicas: those lines say which partition.
    assert about and all(isinstance(r["partition"], int) and r["partition"] >= 1 for r in about)
    assert any(f"partition {r['partition']}" in r["msg"] for r in about)


def _health(address: str) -> int | None:
    """The node's overall health status, or None when it does not answer."""
    try:
        with grpc.insecure_channel(address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=2)
            return int(resp.status)
    except grpc.RpcError:
        return None


def test_health_is_not_serving_while_the_wal_replays_and_after_fail_stop(cluster: Cluster) -> None:
    i = 3
    address = cluster.node_address(i)
    fault_file = cluster.node_procs[i].argv[cluster.node_procs[i].argv.index("--fault-file") + 1]
    assert _health(address) == health_pb2.HealthCheckResponse.SERVING
    for svc in ("tessera.v1.KV", "tessera.v1.RaftTransport"):
        with grpc.insecure_channel(address) as ch:
            got = health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=svc), timeout=2)
            assert got.status == health_pb2.HealthCheckResponse.SERVING

    # A restart held in its replay: listening, NOT_SERVING, KV calls UNAVAILABLE; then SERVING.
    cluster.kill(i)
    write_fault_file(fault_file, {"replay_delay_ms": 4000})
    # The restart runs on this thread (a child dies with the thread that started it:
    # PR_SET_PDEATHSIG); another thread watches the node while it replays.
    seen: dict[str, bool] = {}
    kv_error: list[tuple[grpc.StatusCode, str]] = []
    started = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not started.is_set():
            if _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING:
                seen["not_serving"] = True
                with grpc.insecure_channel(address) as ch:
                    try:
                        kv_pb2_grpc.KVStub(ch).Get(
                            kv_pb2.GetRequest(context=kv_pb2.RequestContext(partition_id=1), key=b"k"), timeout=5)
                    except grpc.RpcError as exc:
                        kv_error.append((exc.code(), exc.details() or ""))
                seen["done_before_start"] = not started.is_set()
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        cluster.restart(i, timeout=60)  # returns once it prints "listening on": replayed
    finally:
        started.set()
        t.join(30)
    assert seen.get("not_serving"), "health never said NOT_SERVING during the replay"
    assert seen.get("done_before_start"), "the node finished its replay while the test was looking"
    assert kv_error, "a KV call during the replay was answered"
    code, details = kv_error[0]
    assert code == grpc.StatusCode.UNAVAILABLE and "replaying" in details
    assert _health(address) == health_pb2.HealthCheckResponse.SERVING
    s = Scrape(cluster.node_procs[i].metrics_url)
    assert s.get("tessera_node_serving") == 1 and s.get("tessera_node_not_serving", reason="replaying") == 0

    # A failed fsync: the node fails stop for good, health says NOT_SERVING, metrics say why.
    cluster.wait_ready(60)
    write_fault_file(fault_file, {"fail_fsync": True})
    deadline = time.monotonic() + 60
    with Client(cluster.router_addresses) as client:
        k = 0
        while _health(address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "the node with a failing disk still says SERVING"
            client.put(b"disk-%d" % k, b"v", timeout=30)  # every replica fsyncs it, node 3's too
            k += 1
    s = Scrape(cluster.node_procs[i].metrics_url)
    assert s.get("tessera_node_failed") == 1
    assert s.get("tessera_wal_failed") == 1
    assert s.get("tessera_node_serving") == 0
    assert s.get("tessera_node_not_serving", reason="failed") == 1


def test_cluster_up_prints_every_process_metrics_url_in_its_ready_line(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    tessera = os.path.join(os.path.dirname(sys.executable), "tessera")
    proc = subprocess.Popen([tessera, "cluster", "up", "--base-port", "0", "--partitions", "1",
                             "--data-dir", str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line.startswith("ready:"):
            line = proc.stdout.readline()
            assert line, f"cluster up ended without a ready line: {proc.stderr.read() if proc.stderr else ''}"
        # What scripts parse stays first; the metrics URLs follow, one per process.
        m = re.fullmatch(r"ready: router (\S+) \(nodes [^)]*\) metrics (.*)\n", line)
        assert m, line
        urls = dict(item.split("=", 1) for item in m.group(2).split())
        assert set(urls) == {"router", "node1", "node2", "node3"}
        for name, url in urls.items():
            s = Scrape(url)
            assert s.get("process_cpu_seconds_total") > 0
            assert ("tessera_node_serving" if name.startswith("node") else "tessera_placement_is_leader") in s.names
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
