"""A real cluster: router and node processes on loopback, real WAL/LMDB/fsync, SIGKILL.

Every test waits on conditions with deadlines; every cluster is stopped and
its temp directory removed by the fixture, leaving no process behind.
"""

from __future__ import annotations

import glob
import os
import pathlib
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from common.wire.errors import error_from_rpc
from conftest import eventually
from router.client import Client, InvalidArgumentError
from tesserapb import errors_pb2, kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


def _keys(n: int, prefix: bytes = b"") -> list[bytes]:
    # Spread over the byte space so every pre-split partition gets some.
    rng = random.Random(n)
    return [bytes([rng.randrange(256)]) + prefix + b"%06d" % i for i in range(n)]


@pytest.fixture()
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    """Starts a cluster of ``Cluster(**kw)`` (and stops it after the test)."""
    made: list[tuple[Cluster, str]] = []

    def make(**kw: Any) -> Cluster:
        root = tempfile.mkdtemp(prefix="tessera-test-")
        c = Cluster(root=root, **kw)
        made.append((c, root))
        c.start()
        c.wait_ready(60)
        return c

    yield make
    for c, root in made:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_node_that_fails_to_start_is_reported_in_its_own_words(tmp_path) -> None:
    missing = str(tmp_path / "no-such-peers.json")
    c = Cluster(root=str(tmp_path / "cluster"), nodes=1, extra_node_args=["--peer-addresses", missing])
    with pytest.raises(RuntimeError) as failed:
        c.start()
    message = str(failed.value)
    assert message.startswith("node1 did not start (exit status 1; log ")
    assert "tessera node: cannot start" in message and "no-such-peers.json" in message, message
    # start() stopped what it had started: the router is gone too.
    assert c.router is not None and not c.router.alive


def test_a_node_without_a_batch_listener_still_replicates_with_the_others(make_cluster) -> None:
    """Raft batches go over plain TCP where a node has a listener and over the gRPC stream
    where it has none (--peer-listen none, or a node from before docs/decisions.md D23): a
    mixed cluster replicates, and survives the loss of either kind of node."""
    c = make_cluster(node_args=lambda i: ["--peer-listen", "none"] if i == 1 else [])
    assert c.node_procs[1].peer_address == ""
    assert all(c.node_procs[i].peer_address.startswith("127.0.0.1:") for i in (2, 3))
    c.wait_balanced(30)  # placement spreads the leaders over both kinds of node
    with grpc.insecure_channel(c.router.address) as ch:
        parts = meta_pb2_grpc.MetaStub(ch).ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions
    led = [sum(1 for p in parts if p.leader_store_id == s) for s in (1, 2, 3)]
    assert max(led) - min(led) <= 1, led
    keys = _keys(60)
    with Client(c.router.address) as cl:
        for k in keys:
            cl.put(k, b"v-" + k)
        for victim in (1, 2):  # without the gRPC-only node, then without a TCP one
            c.kill(victim)
            for k in keys[:20]:
                cl.put(k, b"w-" + k)
            for k in keys[:20]:
                got = cl.get(k, consistency="linearizable")
                assert got is not None and got.value == b"w-" + k
            c.restart(victim)
            c.wait_ready(60)


def _leader_of(c: Cluster, key: bytes) -> int:
    assert c.router is not None
    with grpc.insecure_channel(c.router.address) as ch:
        p = meta_pb2_grpc.MetaStub(ch).GetPartition(meta_pb2.GetPartitionRequest(key=key), timeout=5).partition
    return p.leader_store_id


def _stream_writes(
    address: str, items: list[kv_pb2.StreamRequestItem], timeout: float
) -> list[kv_pb2.StreamResponseItem]:
    """Send ``items`` on one KV.Stream, half-close it, and collect every answer until it ends."""
    with grpc.insecure_channel(address) as ch:
        responses = kv_pb2_grpc.KVStub(ch).Stream(iter([kv_pb2.StreamRequest(requests=items)]), timeout=timeout)
        return [item for r in responses for item in r.responses]


def test_stream_writes_are_answered_once_even_unconfirmed_and_after_the_client_half_closes(make_cluster) -> None:
    """Puts and deletes on KV.Stream are answered from their proposal's callback, not a task:
    the stream still answers each exactly once, with its result, with the deadline's
    UNAVAILABLE when no quorum confirms it, and before it ends when the client half-closed."""
    c = make_cluster(nodes=3, partitions=1)
    key = b"stream-fast-path"
    with Client(c.router.address) as cl:
        cl.put(key, b"v0")
    leader = _leader_of(c, key)
    address = c.node_procs[leader].address
    put = kv_pb2.StreamRequestItem(request_id=7, put=kv_pb2.PutRequest(key=key, value=b"v1"))
    delete = kv_pb2.StreamRequestItem(request_id=8, delete=kv_pb2.DeleteRequest(key=b"absent-key"))
    empty = kv_pb2.StreamRequestItem(request_id=9, put=kv_pb2.PutRequest(key=b"", value=b"x"))
    got = {r.request_id: r for r in _stream_writes(address, [put, delete, empty], 30)}
    assert sorted(got) == [7, 8, 9]
    assert got[7].code == 0 and got[7].put.version >= 2
    assert got[8].code == 0 and not got[8].delete.deleted
    assert got[9].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "must not be empty" in got[9].message
    # No quorum: the write is proposed, never confirmed, and answered by its deadline (5 s).
    for store in c.node_procs:
        if store != leader:
            c.kill(store)
    started = time.monotonic()
    unconfirmed = kv_pb2.StreamRequestItem(request_id=10, put=kv_pb2.PutRequest(key=key, value=b"v2"))
    late = _stream_writes(address, [unconfirmed], 30)
    assert [r.request_id for r in late] == [10], late
    assert late[0].code == grpc.StatusCode.UNAVAILABLE.value[0] and "not confirmed in time" in late[0].message, late
    assert time.monotonic() - started >= 4.5



def test_stream_linearizable_gets_are_answered_once_from_their_read_barrier(make_cluster) -> None:
    """LINEARIZABLE gets on KV.Stream wait for their ReadIndex without a task: each is answered
    exactly once, sees every write acknowledged before it, gets its error when it cannot be
    routed, is answered before the stream ends when the client half-closed, and gets the
    deadline's UNAVAILABLE when no quorum confirms the leadership."""
    c = make_cluster(nodes=3, partitions=1)
    key = b"stream-read-path"
    with Client(c.router.address) as cl:
        version = cl.put(key, b"v0")
    leader = _leader_of(c, key)
    address = c.node_procs[leader].address
    lin = kv_pb2.ReadOptions(consistency=kv_pb2.LINEARIZABLE)

    def get(rid: int, k: bytes, **ctx: Any) -> kv_pb2.StreamRequestItem:
        return kv_pb2.StreamRequestItem(request_id=rid, get=kv_pb2.GetRequest(
            key=k, read_options=lin, context=kv_pb2.RequestContext(**ctx)))

    put = kv_pb2.StreamRequestItem(request_id=1, put=kv_pb2.PutRequest(key=key, value=b"v1"))
    items = [get(2, key), get(3, b"absent-key"), get(4, b"k" * 5000), get(5, key, partition_id=999)]
    got = {r.request_id: r for r in _stream_writes(address, items, 30)}
    assert sorted(got) == [2, 3, 4, 5]
    assert got[2].code == 0 and got[2].get.found and got[2].get.value == b"v0" and got[2].get.version == version
    assert got[3].code == 0 and not got[3].get.found
    assert got[4].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "limit" in got[4].message, got[4]
    assert got[5].code != 0, got[5]
    # A write acknowledged on the stream is seen by a linearizable get sent after its answer.
    (acked,) = _stream_writes(address, [put], 30)
    assert acked.code == 0
    (seen,) = _stream_writes(address, [get(6, key)], 30)
    assert seen.code == 0 and seen.get.value == b"v1" and seen.get.version == acked.put.version
    # No follower answers (paused, their connections open): the leadership cannot be
    # confirmed; the get is answered once, with an error, never with a value (the leader
    # refuses as its lease runs out, within about half a second; the deadline backs that up).
    paused = [c.node_procs[s].running for s in c.node_procs if s != leader]
    for p in paused:
        assert p is not None
        p.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        late = _stream_writes(address, [get(7, key)], 30)
    finally:
        for p in paused:
            assert p is not None
            p.send_signal(signal.SIGCONT)
    assert time.monotonic() - started < 10
    assert [r.request_id for r in late] == [7], late
    assert late[0].code in (grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0]), late
    assert not late[0].HasField("get"), late


def test_reads_writes_scans_across_partitions(make_cluster) -> None:
    c = make_cluster()
    with Client(c.router.address) as cl:
        keys = _keys(200)
        versions = {k: cl.put(k, b"v-" + k) for k in keys}
        for k in keys[:50]:
            assert cl.get(k) == (b"v-" + k, versions[k])
            assert cl.get(k, consistency="linearizable") == (b"v-" + k, versions[k])
        assert cl.get(keys[0], consistency="stale", max_staleness_ms=5000) is not None
        rows = cl.scan(b"", b"", limit=None)
        assert [r.key for r in rows] == sorted(keys)
        page = cl.scan(b"", b"", limit=7)
        assert [r.key for r in page] == sorted(keys)[:7]
        k = keys[3]
        assert cl.cas(k, versions[k] + 1000, b"nope").succeeded is False
        res = cl.cas(k, versions[k], b"swapped")
        got = cl.get(k)
        assert res.succeeded and got is not None and got.value == b"swapped"
        assert cl.delete(k) is True and cl.get(k) is None and cl.delete(k) is False


def _raw_stub(c: Cluster, key: bytes) -> tuple[grpc.Channel, kv_pb2_grpc.KVStub, kv_pb2.RequestContext]:
    """A channel to ``key``'s leader, a KV stub on it and the request context of its partition."""
    assert c.router is not None
    with grpc.insecure_channel(c.router.address) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)
        p = meta.GetPartition(meta_pb2.GetPartitionRequest(key=key), timeout=5).partition
        stores = {s.id: s.address for s in meta.GetStores(meta_pb2.GetStoresRequest(), timeout=5).stores}
    ch = grpc.insecure_channel(stores[p.leader_store_id])
    return ch, kv_pb2_grpc.KVStub(ch), kv_pb2.RequestContext(partition_id=p.id, epoch=p.epoch)


def test_bad_input_gets_invalid_argument_naming_the_limit(make_cluster) -> None:
    c = make_cluster()
    ch, kv, ctx = _raw_stub(c, b"\x10k")
    try:
        cases = [
            (kv.Put, kv_pb2.PutRequest(context=ctx, key=b"\x10" + b"k" * 5000, value=b"v"), "key", 4096),
            (kv.Put, kv_pb2.PutRequest(context=ctx, key=b"\x10k", value=b"v" * ((1 << 20) + 1)), "value", 1 << 20),
            (kv.Put, kv_pb2.PutRequest(context=ctx, key=b"", value=b"v"), "key", 0),
            (kv.Scan, kv_pb2.ScanRequest(context=ctx, start=b"\x10z", end=b"\x10a"), "end", 0),
            (kv.Scan, kv_pb2.ScanRequest(context=ctx, start=b"\x10a", limit=10**6), "limit", 10_000),
            (
                kv.Get,
                # A consistency no enum value names, on purpose: the node must refuse it.
                kv_pb2.GetRequest(context=ctx, key=b"\x10k",
                                  read_options=kv_pb2.ReadOptions(consistency=42)),  # type: ignore[arg-type]
                "read_options.consistency",
                0,
            ),
        ]
        for call, req, field, limit in cases:
            with pytest.raises(grpc.RpcError) as err:
                call(req, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.value)
            detail = error_from_rpc(err.value)
            assert detail is not None and detail.invalid_argument.field == field
            assert detail.invalid_argument.limit == limit
        # Nothing half-applied: the rejected writes left no trace.
        got = kv.Get(kv_pb2.GetRequest(context=ctx, key=b"\x10k"), timeout=5)
        assert not got.found
    finally:
        ch.close()
    with Client(c.router.address) as cl, pytest.raises(InvalidArgumentError):
        cl.put(b"x" * 5000, b"v")


def test_acked_writes_survive_kill9_of_one_node_and_of_all(make_cluster) -> None:
    c = make_cluster()
    with Client(c.router.address) as cl:
        acked = {k: cl.put(k, b"a-" + k) for k in _keys(100, b"a")}
        victim = _leader_of(c, next(iter(acked)))
        c.kill(victim)
        acked.update({k: cl.put(k, b"a-" + k) for k in _keys(100, b"b")})
        c.restart(victim)
        for k, v in acked.items():
            assert cl.get(k, consistency="linearizable") == (b"a-" + k, v)
    for i in (1, 2, 3):
        c.kill(i)
    for i in (1, 2, 3):
        c.restart(i)
    c.wait_ready(60)
    with Client(c.router.address) as cl:
        for k, v in acked.items():
            assert cl.get(k, consistency="linearizable") == (b"a-" + k, v)


def test_restarted_follower_catches_up_by_snapshot(make_cluster) -> None:
    c = make_cluster(extra_node_args=["--compact-threshold", "200", "--compact-keep", "20"])
    with Client(c.router.address) as cl:
        key0 = b"\x05early"
        cl.put(key0, b"before")
        leader = _leader_of(c, key0)
        follower = next(i for i in (1, 2, 3) if i != leader)
        c.kill(follower)
        for i in range(600):
            cl.put(b"\x05k%05d" % i, b"x" * 64)
        c.restart(follower)
        ch = grpc.insecure_channel(c.node_address(follower))
        try:
            kv = kv_pb2_grpc.KVStub(ch)

            def follower_has_it() -> bool:
                try:
                    r = kv.Get(
                        kv_pb2.GetRequest(
                            key=b"\x05k00599",
                            read_options=kv_pb2.ReadOptions(consistency=kv_pb2.STALE, max_staleness_ms=60_000),
                        ),
                        timeout=2,
                    )
                    return r.found
                except grpc.RpcError:
                    return False

            eventually(follower_has_it, 60, "the restarted follower to catch up")
        finally:
            ch.close()
    log = pathlib.Path(c.root, "logs", f"node{follower}.log").read_text()
    assert "installed snapshot of partition" in log  # caught up by snapshot, not by log replay


def test_leader_killed_under_load_no_lost_or_duplicated_writes(make_cluster) -> None:
    c = make_cluster()
    acked: dict[bytes, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        with Client(c.router.address) as cl:
            i = 0
            while not stop.is_set():
                k = b"\x30w%02d-%06d" % (w, i)
                try:
                    v = cl.put(k, b"val")
                except Exception as exc:  # a write whose outcome is unknown is not acked
                    errors.append(exc)
                    continue
                with lock:
                    acked[k] = v
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    eventually(lambda: len(acked) > 200, 30, "writes to flow")
    victim = _leader_of(c, b"\x30w")
    killed_at = time.monotonic()
    before = len(acked)
    c.kill(victim)
    eventually(lambda: len(acked) > before + 200, 30, "writes to flow again after the leader was killed")
    recovery = time.monotonic() - killed_at
    stop.set()
    for t in threads:
        t.join(30)
    c.restart(victim)
    with Client(c.router.address) as cl:
        for k, v in acked.items():
            got = cl.get(k, consistency="linearizable")
            # Same version as acknowledged: the write was applied exactly once.
            assert got == (b"val", v), (k, got, v)
    assert recovery < 30


def test_wal_torn_tail_recovers_and_corruption_refuses_to_start(make_cluster) -> None:
    c = make_cluster()
    with Client(c.router.address) as cl:
        for k in _keys(50, b"t"):
            cl.put(k, b"t")
    c.kill(3)
    segs = sorted(glob.glob(os.path.join(c.root, "node3", "wal", "*.wal")))
    with open(segs[-1], "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage-torn-tail")
    c.restart(3)
    with Client(c.router.address) as cl:
        assert cl.put(b"\x01after-torn", b"ok") > 0
    c.kill(3)
    path = segs[0]
    with open(path, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))
    proc = subprocess.run(
        c._node_argv(3, 0), capture_output=True, timeout=60, env=dict(os.environ, PYTHONUNBUFFERED="1"), check=False
    )
    assert proc.returncode != 0
    assert path.encode() in proc.stderr and b"offset" in proc.stderr, proc.stderr[-2000:]


def test_routing_errors_are_structured(make_cluster) -> None:
    c = make_cluster()
    assert c.router is not None
    with grpc.insecure_channel(c.router.address) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)
        p = meta.GetPartition(meta_pb2.GetPartitionRequest(key=b"\x10"), timeout=5).partition
        stores = {s.id: s.address for s in meta.GetStores(meta_pb2.GetStoresRequest(), timeout=5).stores}
    leader = p.leader_store_id
    follower = next(s for s in stores if s != leader)

    def call(store: int, ctx: kv_pb2.RequestContext, key: bytes) -> errors_pb2.Error:
        with grpc.insecure_channel(stores[store]) as ch, pytest.raises(grpc.RpcError) as err:
            kv_pb2_grpc.KVStub(ch).Put(kv_pb2.PutRequest(context=ctx, key=key, value=b"v"), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
        detail = error_from_rpc(err.value)
        assert detail is not None
        return detail

    stale = kv_pb2.RequestContext(partition_id=p.id, epoch=meta_pb2.Epoch(conf_ver=1, version=p.epoch.version + 7))
    d = call(leader, stale, b"\x10k")
    assert d.WhichOneof("kind") == "epoch_not_match" and d.epoch_not_match.current.id == p.id
    assert d.epoch_not_match.current.epoch.version == p.epoch.version

    ctx = kv_pb2.RequestContext(partition_id=p.id, epoch=p.epoch)
    d = call(leader, ctx, b"\xff" + b"outside")
    assert d.WhichOneof("kind") == "key_not_in_partition" and d.key_not_in_partition.partition.end == p.end

    d = call(leader, kv_pb2.RequestContext(partition_id=999, epoch=p.epoch), b"\x10k")
    assert d.WhichOneof("kind") == "partition_not_found"

    d = call(follower, ctx, b"\x10k")
    assert d.WhichOneof("kind") == "not_leader"
    assert d.not_leader.leader_store_id == leader and d.not_leader.leader_address == stores[leader]


def test_batch_with_cas_is_all_or_nothing(make_cluster) -> None:
    from router.client import Cas, Put

    c = make_cluster(partitions=2)
    with Client(c.router.address) as cl:
        va = cl.put(b"\x01acct-a", b"100")
        vb = cl.put(b"\x01acct-b", b"0")
        res = cl.batch([Cas(b"\x01acct-a", va, b"70"), Cas(b"\x01acct-b", vb, b"30")])
        assert all(r.succeeded for r in res)
        stale = cl.batch([Cas(b"\x01acct-a", va, b"0"), Put(b"\x01acct-c", b"x")])
        assert not any(r.succeeded for r in stale)
        acct_a = cl.get(b"\x01acct-a")
        assert acct_a is not None and acct_a.value == b"70" and cl.get(b"\x01acct-c") is None
