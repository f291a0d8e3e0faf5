"""A real router process (``tessera router``) on a free port in a temp data dir, driven
over gRPC the way nodes, clients and admins will: registration and bootstrap through
StoreHeartbeat, the lookups, input validation, operations, liveness, crash and restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.wire.errors import error_from_rpc
from conftest import eventually
from router.testing import RouterProcess
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc

pytestmark = pytest.mark.timeout(60)

STORE_ADDRS = ["127.0.0.1:17201", "127.0.0.1:17202", "127.0.0.1:17203"]


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Starts a router with these extra arguments (and kills it after the test)."""
    started: list[RouterProcess] = []

    def start(*extra: str, data_dir: Path | None = None, listen: str = "127.0.0.1:0") -> RouterProcess:
        # The stores here are fakes: no scheduler moves anything behind the tests' back.
        r = RouterProcess(data_dir or tmp_path / "router", listen=listen,
                          extra_args=("--schedule-interval", "0", *extra))
        started.append(r)
        return r.start()

    yield start
    for r in started:
        r.kill()


class Meta:
    """A thin synchronous Meta client for the tests."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = meta_pb2_grpc.MetaStub(self.channel)

    def heartbeat(
        self, store_id: int, address: str, partitions: Iterable[meta_pb2.PartitionStats] = ()
    ) -> meta_pb2.StoreHeartbeatResponse:
        return self.stub.StoreHeartbeat(
            meta_pb2.StoreHeartbeatRequest(store_id=store_id, address=address, partitions=list(partitions)),
            timeout=5,
        )

    def scan(self, **kw) -> meta_pb2.ScanPartitionsResponse:
        return self.stub.ScanPartitions(meta_pb2.ScanPartitionsRequest(**kw), timeout=5)

    def stores(self) -> list[meta_pb2.Store]:
        return list(self.stub.GetStores(meta_pb2.GetStoresRequest(), timeout=5).stores)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def meta_for() -> Iterator[Callable[[RouterProcess], Meta]]:
    """A Meta client of a router (closed after the test)."""
    made: list[Meta] = []

    def make(router: RouterProcess) -> Meta:
        m = Meta(router.address)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def register_three(meta: Meta) -> list[int]:
    return [meta.heartbeat(0, a).store_id for a in STORE_ADDRS]


def hosting(*pids: int) -> list[meta_pb2.PartitionStats]:
    return [meta_pb2.PartitionStats(partition_id=p) for p in pids]


def invalid_field(exc: grpc.RpcError) -> str:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
    err = error_from_rpc(exc)
    assert err is not None and err.WhichOneof("kind") == "invalid_argument", exc
    return err.invalid_argument.field


# -- registration and bootstrap ------------------------------------------------------------


def test_stores_register_and_receive_bootstrap_creates(start_router, meta_for):
    meta = meta_for(start_router("--partitions", "8", "--replicas", "3"))
    r1 = meta.heartbeat(0, STORE_ADDRS[0])
    r2 = meta.heartbeat(0, STORE_ADDRS[1])
    assert (r1.store_id, r2.store_id) == (1, 2)
    assert not r1.operations and not r2.operations
    assert not meta.scan().partitions  # two stores are not enough for three replicas
    with pytest.raises(grpc.RpcError) as e:
        meta.stub.GetPartition(meta_pb2.GetPartitionRequest(key=b"k"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "not bootstrapped" in (e.value.details() or "")

    r3 = meta.heartbeat(0, STORE_ADDRS[2])
    assert r3.store_id == 3
    parts = meta.scan().partitions
    assert [p.id for p in parts] == list(range(1, 9))
    assert [p.start for p in parts] == [b""] + [bytes([b]) for b in range(0x20, 0x100, 0x20)]
    assert [p.end for p in parts] == [bytes([b]) for b in range(0x20, 0x100, 0x20)] + [b""]

    for store_id, response in ((3, r3), (1, meta.heartbeat(1, STORE_ADDRS[0]))):
        creates = [op for op in response.operations if op.WhichOneof("kind") == "create_replica"]
        assert sorted(op.partition_id for op in creates) == list(range(1, 9))
        for op in creates:
            cr = op.create_replica
            assert cr.bootstrap and (cr.partition.epoch.conf_ver, cr.partition.epoch.version) == (1, 1)
            mine = [r for r in cr.partition.replicas if r.store_id == store_id]
            assert len(mine) == 1 and mine[0].replica_id == cr.replica_id
            assert sorted(r.store_id for r in cr.partition.replicas) == [1, 2, 3]
    all_rids = [r.replica_id for p in parts for r in p.replicas]
    assert len(set(all_rids)) == 24

    # Re-sent until reported; once the store hosts everything, nothing more.
    assert len(meta.heartbeat(2, STORE_ADDRS[1], hosting(1, 2, 3)).operations) == 5
    assert len(meta.heartbeat(2, STORE_ADDRS[1], hosting(*range(1, 9))).operations) == 0
    assert len(meta.heartbeat(2, STORE_ADDRS[1]).operations) == 0  # done stays done
    # A known store re-registering from its data dir keeps its id.
    assert meta.heartbeat(2, "127.0.0.1:17299").store_id == 2


def test_lookups_answer(start_router, meta_for):
    meta = meta_for(start_router("--partitions", "4"))
    register_three(meta)
    for s in (1, 2, 3):
        meta.heartbeat(s, STORE_ADDRS[s - 1], hosting(1, 2, 3, 4))

    by_key = {k: meta.stub.GetPartition(meta_pb2.GetPartitionRequest(key=k), timeout=5).partition.id
              for k in (b"", b"\x3f\xff", b"\x40", b"\x7f", b"\x80", b"\xbf", b"\xc0", b"\xff\xff")}
    assert by_key == {b"": 1, b"\x3f\xff": 1, b"\x40": 2, b"\x7f": 2, b"\x80": 3, b"\xbf": 3,
                      b"\xc0": 4, b"\xff\xff": 4}
    resp = meta.stub.GetPartition(meta_pb2.GetPartitionRequest(partition_id=3), timeout=5)
    assert resp.partition.start == b"\x80" and not resp.HasField("leader")

    meta.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=3, leader_store_id=2, term=4), timeout=5)
    resp = meta.stub.GetPartition(meta_pb2.GetPartitionRequest(key=b"\x90"), timeout=5)
    assert (resp.partition.leader_store_id, resp.partition.term) == (2, 4)
    assert resp.leader.id == 2 and resp.leader.address == STORE_ADDRS[1]
    assert resp.leader.state == meta_pb2.STORE_UP

    ranged = meta.scan(start=b"\x50", end=b"\x90")
    assert [p.id for p in ranged.partitions] == [2, 3] and not ranged.status
    assert [p.id for p in meta.scan(start=b"\x50", limit=2).partitions] == [2, 3]

    # Leader progress and each store's applied index show up in the status.
    desc = resp.partition
    rid = {r.store_id: r.replica_id for r in desc.replicas}
    meta.heartbeat(2, STORE_ADDRS[1], [meta_pb2.PartitionStats(
        partition_id=3, leader=True, term=4, applied=12, descriptor=desc,
        progress=[meta_pb2.ReplicaStatus(replica_id=rid[s], store_id=s, match=12 - s) for s in (1, 2, 3)])])
    meta.heartbeat(1, STORE_ADDRS[0], [meta_pb2.PartitionStats(partition_id=3, term=4, applied=9)])
    full = meta.scan(with_status=True)
    assert [s.partition_id for s in full.status] == [1, 2, 3, 4]
    st = {r.store_id: (r.match, r.applied) for r in full.status[2].replicas}
    assert st[2] == (10, 12) and st[1] == (11, 9)

    stores = meta.stores()
    assert [(s.id, s.address, s.state) for s in stores] == [
        (i + 1, a, meta_pb2.STORE_UP) for i, a in enumerate(STORE_ADDRS)]
    assert stores[1].leader_count == 1 and stores[1].replica_count == 1
    assert all(s.last_heartbeat_ms > 0 for s in stores)


def test_heartbeats_of_changes_and_the_address_book_sent_only_when_it_changed(start_router, meta_for):
    meta = meta_for(start_router("--partitions", "2", "--replicas", "3"))
    hb = meta.stub.StoreHeartbeat
    first = hb(meta_pb2.StoreHeartbeatRequest(address=STORE_ADDRS[0]), timeout=5)
    assert dict(first.store_addresses) == {1: STORE_ADDRS[0]} and first.addresses_digest
    again = hb(meta_pb2.StoreHeartbeatRequest(store_id=1, address=STORE_ADDRS[0], delta=True,
                                              addresses_digest=first.addresses_digest), timeout=5)
    assert not again.store_addresses and again.addresses_digest == first.addresses_digest
    assert not again.want_full  # a store placement knows may send changes only
    # A store placement has never seen, sending changes: placement asks for everything.
    new = hb(meta_pb2.StoreHeartbeatRequest(store_id=7, address=STORE_ADDRS[1], delta=True), timeout=5)
    assert new.store_id == 7 and new.want_full
    # The book changed (store 7 joined): the next heartbeat of store 1 carries it again.
    later = hb(meta_pb2.StoreHeartbeatRequest(store_id=1, address=STORE_ADDRS[0], delta=True,
                                              addresses_digest=first.addresses_digest), timeout=5)
    assert dict(later.store_addresses) == {1: STORE_ADDRS[0], 7: STORE_ADDRS[1]}
    assert later.addresses_digest != first.addresses_digest
    # Changes patch what a store hosts: store 1 reports partition 2 gone.
    register_three(meta)
    hb(meta_pb2.StoreHeartbeatRequest(store_id=1, address=STORE_ADDRS[0], partitions=hosting(1, 2)), timeout=5)
    hb(meta_pb2.StoreHeartbeatRequest(store_id=1, address=STORE_ADDRS[0], delta=True, gone=[2]), timeout=5)
    assert next(s for s in meta.stores() if s.id == 1).replica_count == 1
    with pytest.raises(grpc.RpcError) as e:
        hb(meta_pb2.StoreHeartbeatRequest(store_id=1, address=STORE_ADDRS[0], gone=[1]), timeout=5)
    assert invalid_field(e.value) == "gone"


def test_bad_input_is_invalid_argument_naming_the_field(start_router, meta_for):
    meta = meta_for(start_router("--partitions", "2"))
    register_three(meta)
    calls = [
        (lambda: meta.heartbeat(0, ""), "address"),
        (lambda: meta.stub.GetPartition(meta_pb2.GetPartitionRequest(partition_id=77), timeout=5), "partition_id"),
        (lambda: meta.scan(start=b"b", end=b"a"), "end"),
        (lambda: meta.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=9, leader_store_id=1, term=1),
                                        timeout=5), "partition_id"),
        (lambda: meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(), timeout=5), "operation"),
        (lambda: meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
            partition_id=9, transfer_leader=meta_pb2.TransferLeader(to_store_id=1))), timeout=5),
         "operation.partition_id"),
        (lambda: meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
            partition_id=1, transfer_leader=meta_pb2.TransferLeader(to_store_id=42))), timeout=5),
         "operation.transfer_leader.to_store_id"),
        (lambda: meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
            partition_id=1)), timeout=5), "operation.kind"),
        (lambda: meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
            partition_id=1, split=meta_pb2.Split(split_key=b"\xf0"))), timeout=5), "operation.split.split_key"),
        (lambda: meta.stub.SetStoreState(meta_pb2.SetStoreStateRequest(store_id=99, state=meta_pb2.STORE_DRAINING),
                                         timeout=5), "store_id"),
        (lambda: meta.stub.SetStoreState(meta_pb2.SetStoreStateRequest(store_id=1, state=meta_pb2.STORE_DOWN),
                                         timeout=5), "state"),
    ]
    for call, field in calls:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert invalid_field(e.value) == field
        assert field in (e.value.details() or "")


def test_operations_go_to_the_partition_leaders_store(start_router, meta_for):
    meta = meta_for(start_router("--partitions", "2"))
    register_three(meta)
    for s in (1, 2, 3):
        meta.heartbeat(s, STORE_ADDRS[s - 1], hosting(1, 2))
    submitted = meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
        partition_id=2, transfer_leader=meta_pb2.TransferLeader(to_store_id=3))), timeout=5)
    assert submitted.operation_id > 0
    assert not meta.heartbeat(1, STORE_ADDRS[0], hosting(1, 2)).operations  # no leader known yet
    meta.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=2, leader_store_id=1, term=2), timeout=5)
    assert not meta.heartbeat(3, STORE_ADDRS[2], hosting(1, 2)).operations
    ops = meta.heartbeat(1, STORE_ADDRS[0], hosting(1, 2)).operations
    assert [(op.id, op.partition_id, op.transfer_leader.to_store_id) for op in ops] == [
        (submitted.operation_id, 2, 3)]
    assert (ops[0].epoch.conf_ver, ops[0].epoch.version) == (1, 1)

    # One operation per partition at a time: a split of partition 2 waits for the transfer.
    with pytest.raises(grpc.RpcError, match="in flight"):
        meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
            partition_id=2, split=meta_pb2.Split(split_key=b"\xc0"))), timeout=5)
    meta.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=1, leader_store_id=1, term=2), timeout=5)
    split = meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
        partition_id=1, split=meta_pb2.Split(split_key=b"\x40"))), timeout=5)
    ops = meta.heartbeat(1, STORE_ADDRS[0], hosting(1, 2)).operations
    sp = next(op for op in ops if op.id == split.operation_id).split
    assert sp.split_key == b"\x40" and sp.new_partition_id == 3 and len(sp.new_replica_ids) == 3
    assert min(sp.new_replica_ids) > 6  # fresh replica ids


def test_silent_store_is_reported_down(start_router, meta_for):
    meta = meta_for(start_router("--store-down-after", "0.5"))
    sid = meta.heartbeat(0, STORE_ADDRS[0]).store_id
    assert meta.stores()[0].state == meta_pb2.STORE_UP
    eventually(lambda: meta.stores()[0].state == meta_pb2.STORE_DOWN, 5, "the silent store to be reported down")
    meta.heartbeat(sid, STORE_ADDRS[0])
    assert meta.stores()[0].state == meta_pb2.STORE_UP
    drained = meta.stub.SetStoreState(meta_pb2.SetStoreStateRequest(store_id=sid, state=meta_pb2.STORE_DRAINING),
                                      timeout=5)
    assert drained.store.state == meta_pb2.STORE_DRAINING


# -- durability and lifecycle --------------------------------------------------------------


def durable_view(meta: Meta):
    """What the router must keep across restarts: its partitions and their replicas, its stores."""
    parts = [(p.id, p.start, p.end, p.epoch.conf_ver, p.epoch.version,
              tuple((r.store_id, r.replica_id, r.role) for r in p.replicas)) for p in meta.scan().partitions]
    stores = [(s.id, s.address) for s in meta.stores()]
    return parts, stores


def test_kill9_and_restart_serves_the_same_table(start_router, meta_for, tmp_path):
    router = start_router("--partitions", "8")
    meta = meta_for(router)
    register_three(meta)
    meta.stub.SubmitOperation(meta_pb2.SubmitOperationRequest(operation=meta_pb2.Operation(
        partition_id=5, split=meta_pb2.Split(split_key=b"\x90"))), timeout=5)
    before = durable_view(meta)
    assert len(before[0]) == 8 and len(before[1]) == 3
    router.kill()

    again = start_router("--partitions", "8", listen=router.address)
    meta2 = meta_for(again)
    assert durable_view(meta2) == before
    # The bootstrap creates and the queued split survived; ids are not reused.
    creates = meta2.heartbeat(1, STORE_ADDRS[0]).operations
    assert sorted(op.partition_id for op in creates if op.WhichOneof("kind") == "create_replica") == list(range(1, 9))
    assert meta2.heartbeat(0, "127.0.0.1:17204").store_id == 4
    meta2.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=5, leader_store_id=1, term=3), timeout=5)
    split = [op for op in meta2.heartbeat(1, STORE_ADDRS[0]).operations if op.WhichOneof("kind") == "split"]
    assert len(split) == 1 and split[0].split.new_partition_id == 9


def test_sigterm_exits_cleanly_and_keeps_leader_hints(start_router, meta_for, tmp_path):
    router = start_router("--partitions", "2")
    meta = meta_for(router)
    register_three(meta)
    meta.stub.ReportLeader(meta_pb2.ReportLeaderRequest(partition_id=2, leader_store_id=3, term=7), timeout=5)
    pid = router.proc.pid
    assert router.terminate() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, nothing left behind
    assert "Traceback" not in router.log()

    again = start_router("--partitions", "2", data_dir=tmp_path / "router")
    p = meta_for(again).stub.GetPartition(meta_pb2.GetPartitionRequest(partition_id=2), timeout=5).partition
    assert (p.leader_store_id, p.term) == (3, 7)
    again.proc.send_signal(signal.SIGINT)
    assert again.proc.wait(timeout=10) == 0


def test_second_router_on_the_same_data_dir_is_refused(start_router, tmp_path):
    start_router()
    second = RouterProcess(tmp_path / "router", log_path=tmp_path / "second.log")
    with pytest.raises(RuntimeError):
        second.start(timeout=10)
    assert second.proc is not None and second.proc.returncode == 1
    assert "in use by another router" in second.log()


def test_health_reflection_and_proxy(start_router):
    router = start_router()
    with grpc.insecure_channel(router.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "tessera.v1.Meta", "tessera.v1.KV"):
            request = health_pb2.HealthCheckRequest(service=name)
            # types-grpcio-health-checking declares HealthStub without its methods.
            reply = health.Check(request, timeout=5)  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        # types-grpcio-reflection declares ServerReflectionInfo as binascii's Incomplete, not callable.
        answers = list(refl.ServerReflectionInfo(  # type: ignore[operator]
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"tessera.v1.Meta", "tessera.v1.KV", "grpc.health.v1.Health"} <= names

        kv = kv_pb2_grpc.KVStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            kv.Scan(kv_pb2.ScanRequest(start=b"b", end=b"a"), timeout=5)
        assert invalid_field(e.value) == "end"
        # No partitions yet: the proxy keeps retrying within the caller's deadline.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            kv.Get(kv_pb2.GetRequest(key=b"k"), timeout=1.0)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3


def test_corrupt_table_file_stops_the_router(tmp_path):
    data_dir = tmp_path / "router"
    data_dir.mkdir()
    (data_dir / "placement.json").write_bytes(b'{"format": 1, "stores": [')
    r = RouterProcess(data_dir, log_path=tmp_path / "r.log")
    with pytest.raises(RuntimeError):
        r.start(timeout=10)
    assert r.proc is not None and r.proc.returncode == 1
    assert "placement.json is unreadable" in r.log() and "refusing to start" in r.log()


def test_log_level_warning_leaves_out_info_records(start_router, tmp_path):
    # The control: at the default level the router says where it serves from, at INFO.
    chatty = start_router(data_dir=tmp_path / "chatty")
    assert chatty.terminate() == 0
    assert " INFO tessera.router: router 1 of a placement group of 1, data in " in chatty.log()
    quiet = start_router("--log-level", "warning", data_dir=tmp_path / "quiet")
    assert quiet.terminate() == 0
    assert " INFO " not in quiet.log() and "placement group" not in quiet.log(), quiet.log()
