"""The nemesis's parts that need sockets: its fault-injecting proxies, and its replica move
driven against a fake router and fake nodes served over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import grpc
import pytest

from common.wire import errors as werr
from conftest import eventually_async
from support.nemesis_fakes import FakeNet, LiveCluster, nemesis_over
from tesserapb import kv_pb2, kv_pb2_grpc, meta_pb2, meta_pb2_grpc
from tools.nemesis import faults
from tools.nemesis.checks import stale_reads
from tools.nemesis.faults import Nemesis
from tools.nemesis.proxy import DELAY, DROP, PASS, LinkProxy, ProxyNet
from tools.nemesis.schedule import Param, Step

pytestmark = pytest.mark.timeout(60)


# -- proxy ------------------------------------------------------------------------------------


class _Store:
    """A tiny stand-in for a node: records every line it receives and acks it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.got = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self.received.append(line)
                self.got.set()
                writer.write(b"ack " + line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _send(port: int, line: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(line)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()


def test_proxy_blocks_one_direction_only() -> None:
    async def scenario() -> None:
        a, b = _Store(), _Store()
        await a.start()
        await b.start()
        ab = LinkProxy("a->b", lambda: f"127.0.0.1:{b.port}")  # a dials b through this
        ba = LinkProxy("b->a", lambda: f"127.0.0.1:{a.port}")
        await ab.start()
        await ba.start()
        try:
            assert await _send(ab.port, b"a1\n", 5) == b"ack a1\n"
            assert await _send(ba.port, b"b1\n", 5) == b"ack b1\n"

            # An open a->b connection is cut the moment the link goes to drop.
            reader, writer = await asyncio.open_connection("127.0.0.1", ab.port)
            writer.write(b"a2\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"ack a2\n"
            ab.set_mode(DROP)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: the stream noticed
            writer.close()

            # New a->b traffic is swallowed: accepted and read, never delivered.
            reader, writer = await asyncio.open_connection("127.0.0.1", ab.port)
            writer.write(b"a3\n")
            await writer.drain()
            await eventually_async(lambda: ab.stats.dropped_bytes >= 3, 5, "the proxy to swallow the a->b bytes")
            assert b"a3\n" not in b.received
            # ... while b->a still flows, both ways on its connection.
            assert await _send(ba.port, b"b2\n", 5) == b"ack b2\n"
            assert b"b2\n" in a.received and b"a3\n" not in b.received

            # Healing cuts the black-holed connection (the dialer reconnects at once).
            ab.set_mode(PASS)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert await _send(ab.port, b"a4\n", 5) == b"ack a4\n"
            assert b"a3\n" not in b.received

            # Delay mode holds each chunk back, in order.
            ab.set_mode(DELAY, 0.2)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await _send(ab.port, b"a5\n", 5) == b"ack a5\n"
            assert loop.time() - t0 >= 0.4  # 0.2 s each way
            ba_t0 = loop.time()
            assert await _send(ba.port, b"b3\n", 5) == b"ack b3\n"
            assert loop.time() - ba_t0 < 0.2
        finally:
            await ab.close()
            await ba.close()
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_proxy_net_runs_on_its_own_thread_and_stops() -> None:
    async def serve() -> tuple[_Store, asyncio.AbstractEventLoop]:
        s = _Store()
        await s.start()
        return s, asyncio.get_running_loop()

    # The stores run on this test's loop in a thread of their own, the proxies on theirs.
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        stores = {n: asyncio.run_coroutine_threadsafe(serve(), loop).result(5)[0] for n in (1, 2, 3)}
        before = {th.name for th in threading.enumerate()}
        net = ProxyNet([1, 2, 3], lambda n: f"127.0.0.1:{stores[n].port}")
        with net:
            assert "nemesis-proxies" in {th.name for th in threading.enumerate()} - before
            peers = net.peer_map(1)
            assert set(peers) == {"2", "3"} and peers["2"] == net.address(1, 2)
            assert len({net.address(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}) == 6

            def send(a: int, b: int, line: bytes) -> bytes:
                port = int(net.address(a, b).rsplit(":", 1)[1])
                return asyncio.run_coroutine_threadsafe(_send(port, line, 5), loop).result(10)

            assert send(1, 2, b"x\n") == b"ack x\n"
            net.set([(1, 2)], DROP)
            assert net.modes()[(1, 2)] == DROP and net.modes()[(2, 1)] == PASS
            assert send(2, 1, b"y\n") == b"ack y\n"
            with pytest.raises(asyncio.TimeoutError):
                port = int(net.address(1, 2).rsplit(":", 1)[1])
                asyncio.run_coroutine_threadsafe(_send(port, b"z\n", 0.3), loop).result(10)
            net.heal()
            assert set(net.modes().values()) == {PASS}
            assert send(1, 2, b"w\n") == b"ack w\n"
            assert b"z\n" not in stores[2].received
        assert "nemesis-proxies" not in {th.name for th in threading.enumerate()}
        for s in stores.values():
            asyncio.run_coroutine_threadsafe(s.close(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def test_proxy_net_switches_both_wires_of_a_link_together() -> None:
    """With a batch-listener target too (docs/decisions.md D23) every link is two proxies: the
    peer file names both, and a fault on A->B holds on both wires."""

    async def serve() -> _Store:
        s = _Store()
        await s.start()
        return s

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        grpc_side = {n: asyncio.run_coroutine_threadsafe(serve(), loop).result(5) for n in (1, 2)}
        tcp_side = {n: asyncio.run_coroutine_threadsafe(serve(), loop).result(5) for n in (1, 2)}
        net = ProxyNet([1, 2], lambda n: f"127.0.0.1:{grpc_side[n].port}",
                       lambda n: f"127.0.0.1:{tcp_side[n].port}")
        with net:
            entry = net.peer_map(1)["2"]
            assert isinstance(entry, dict) and entry["address"] == net.address(1, 2)
            tcp_proxy = entry["peer_address"]
            assert tcp_proxy != entry["address"]

            def send(address: str, line: bytes, timeout: float = 5) -> bytes:
                port = int(address.rsplit(":", 1)[1])
                return asyncio.run_coroutine_threadsafe(_send(port, line, timeout), loop).result(10)

            assert send(tcp_proxy, b"t\n") == b"ack t\n" and b"t\n" in tcp_side[2].received
            net.set([(1, 2)], DROP)
            for address in (entry["address"], tcp_proxy):
                with pytest.raises(asyncio.TimeoutError):
                    send(address, b"cut\n", 0.3)
            net.heal()
            assert send(tcp_proxy, b"u\n") == b"ack u\n"
            assert b"cut\n" not in tcp_side[2].received and b"cut\n" not in grpc_side[2].received
        for s in [*grpc_side.values(), *tcp_side.values()]:
            asyncio.run_coroutine_threadsafe(s.close(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


# -- member: the move against a fake router and fake nodes -------------------------------------


class _FakePlacement:
    """Partition 12 on stores 1,2,3 (leader 1); store 4 spare. Like the real one, changes show up
    in GetPartition a few polls after they are submitted: AddReplica -> learner -> voter,
    RemoveReplica -> gone (and the leader moves first when it is the one removed)."""

    def __init__(self, lag: int = 3, promote_after: int = 3, scheduler_removes: int = 0) -> None:
        self.desc = meta_pb2.PartitionDescriptor(
            id=12, leader_store_id=1, term=5, epoch=meta_pb2.Epoch(conf_ver=1, version=1),
            replicas=[meta_pb2.Replica(store_id=s, replica_id=s, role=meta_pb2.VOTER) for s in (1, 2, 3)],
        )
        self.lag, self.promote_after = lag, promote_after
        # Placement's scheduler finishing the move itself: this store's replica removed as
        # soon as the learner is promoted.
        self.scheduler_removes = scheduler_removes
        self.pending: list[tuple[int, tuple[str, int]]] = []  # (polls left, (change, store))
        self.submitted: list[meta_pb2.Operation] = []
        self.net: FakeNet | None = None
        self.net_calls_at_submit: list[int] = []  # how many network changes preceded each submit

    def _step(self) -> None:
        due = [c for n, c in self.pending if n <= 0]
        self.pending = [(n - 1, c) for n, c in self.pending if n > 0]
        for kind, store in due:
            d = self.desc
            d.epoch.conf_ver += 1
            if kind == "learner":
                d.replicas.append(meta_pb2.Replica(store_id=store, replica_id=10 + store, role=meta_pb2.LEARNER))
                self.pending.append((self.promote_after, ("voter", store)))
            elif kind == "voter":
                next(r for r in d.replicas if r.store_id == store).role = meta_pb2.VOTER
                if self.scheduler_removes:
                    keep = [r for r in d.replicas if r.store_id != self.scheduler_removes]
                    del d.replicas[:]
                    d.replicas.extend(keep)
                    d.epoch.conf_ver += 1
            elif kind == "remove":
                keep = [r for r in d.replicas if r.store_id != store]
                del d.replicas[:]
                d.replicas.extend(keep)
                if d.leader_store_id == store:
                    d.leader_store_id, d.term = keep[0].store_id, d.term + 1

    def get(self, pid: int) -> meta_pb2.PartitionDescriptor:
        assert pid == 12
        self._step()
        return meta_pb2.PartitionDescriptor.FromString(self.desc.SerializeToString())

    def submit(self, op: meta_pb2.Operation) -> None:
        self.submitted.append(op)
        self.net_calls_at_submit.append(len(self.net.calls) if self.net else -1)
        kind = op.WhichOneof("kind")
        if kind == "add_replica":
            self.pending.append((self.lag, ("learner", op.add_replica.replica.store_id)))
        elif kind == "remove_replica":
            self.pending.append((self.lag, ("remove", op.remove_replica.replica.store_id)))


class _FakeNode:
    """A node's KV service: "partition not found" for the partitions in ``gone``."""

    def __init__(self) -> None:
        self.gone: set[int] = set()


async def _serve_fakes(
    placement: _FakePlacement, nodes: dict[int, _FakeNode]
) -> tuple[list[grpc.aio.Server], str, dict[int, str]]:
    """Serve ``placement`` as the router and each of ``nodes``; returns the servers (to stop)
    and the addresses of the router and of each node."""

    class Meta(meta_pb2_grpc.MetaServicer):
        async def GetPartition(self, request, context):
            return meta_pb2.GetPartitionResponse(partition=placement.get(request.partition_id))

        async def ScanPartitions(self, request, context):
            return meta_pb2.ScanPartitionsResponse(partitions=[placement.get(12)])

        async def SubmitOperation(self, request, context):
            placement.submit(request.operation)
            return meta_pb2.SubmitOperationResponse(operation_id=len(placement.submitted))

    def kv_for(node: _FakeNode) -> kv_pb2_grpc.KVServicer:
        class KV(kv_pb2_grpc.KVServicer):
            async def Get(self, request, context):
                pid = request.context.partition_id
                if pid in node.gone:
                    await werr.abort(context, werr.WireError.of(werr.partition_not_found(pid), "not hosted"))
                await werr.abort(context, werr.WireError.of(werr.not_leader(pid), "not leader"))
        return KV()

    servers: list[grpc.aio.Server] = []
    addresses: dict[int, str] = {}
    router = grpc.aio.server()
    meta_pb2_grpc.add_MetaServicer_to_server(Meta(), router)
    port = router.add_insecure_port("127.0.0.1:0")
    await router.start()
    servers.append(router)
    for n, node in nodes.items():
        srv = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(kv_for(node), srv)
        addresses[n] = f"127.0.0.1:{srv.add_insecure_port('127.0.0.1:0')}"
        await srv.start()
        servers.append(srv)
    return servers, f"127.0.0.1:{port}", addresses


@dataclass
class _MoveRun:
    """One member episode run by :func:`_run_move`, injected and healed."""

    nem: Nemesis
    net: FakeNet  # the nemesis's network: the links it cut and healed
    placement: _FakePlacement
    inject: str  # what the inject step said it did
    heal: str  # what the heal step said


def _run_move(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Param], claim: tuple[int, int] | None = None,
    placement: _FakePlacement | None = None,
) -> _MoveRun:
    """Inject and heal one member episode of partition 12 (of ``params``) against the fakes.

    ``claim``: (store, term) the router names as the leader right after the inject.
    """
    monkeypatch.setattr(faults, "POLL_S", 0.01)
    monkeypatch.setattr(faults, "CONF_SPREAD_S", 0.01)
    monkeypatch.setattr(faults, "MINORITY_CLAIM_WAIT_S", 0.3)
    placement = placement or _FakePlacement()
    nodes = {n: _FakeNode() for n in (1, 2, 3, 4)}

    async def scenario() -> _MoveRun:
        servers, router, addresses = await _serve_fakes(placement, nodes)
        try:
            nem, net = nemesis_over(LiveCluster(router, addresses), [11, 12, 13, 14])
            placement.net = net
            merged: dict[str, Param] = {"partition": 2, **params}  # 12: the second in key order
            p = tuple(sorted(merged.items()))
            inject = await nem.apply(Step(1.0, 1, "member", "add-replica", p))
            if claim is not None:  # the cut-off voter wins an election it should not
                placement.desc.leader_store_id, placement.desc.term = claim
            await asyncio.sleep(0.5)  # the hold: the watcher polls every 0.2 s

            async def drop_replica() -> None:  # the removed store lets go of its replica
                await eventually_async(lambda: len(placement.desc.replicas) == 3 and placement.desc.epoch.conf_ver > 3,
                                       10, "the move to finish (three replicas, a newer conf_ver)")
                await asyncio.sleep(0.1)
                for n in (1, 2, 3):
                    if all(r.store_id != n for r in placement.desc.replicas):
                        nodes[n].gone.add(12)

            dropper = asyncio.ensure_future(drop_replica())
            heal = await nem.apply(Step(6.0, 1, "member", "finish-move", p))
            await dropper
            return _MoveRun(nem, net, placement, inject.detail, heal.detail)
        finally:
            for srv in servers:
                await srv.stop(None)

    return asyncio.run(scenario())


def test_member_move_split_cuts_leader_and_voter_from_voter_and_learner(monkeypatch: pytest.MonkeyPatch) -> None:
    move = _run_move(monkeypatch, {"split": True, "keep": 1, "remove": "leader"})
    placement, calls = move.placement, move.net.calls
    # Learner on the spare store 4; cut {1 (leader), 3 (keep=1 of 2, 3)} | {2, 4}.
    add = placement.submitted[0]
    assert add.partition_id == 12 and add.add_replica.replica.store_id == 4
    # Store 4 was cut off from 1 and 3 before it joined (so it cannot catch up and stays a
    # learner), then the rest of the split once the router showed the learner.
    early = [(1, 4), (3, 4), (4, 1), (4, 3)]
    cut = sorted([(a, b) for a in (1, 3) for b in (2, 4)] + [(b, a) for a in (1, 3) for b in (2, 4)])
    assert calls[0] == (early, DROP), move.inject
    assert placement.net_calls_at_submit[0] == 1
    assert calls[1] == (cut, DROP)
    assert calls[2] == (cut, PASS) and len(calls) == 3
    assert "LEARNER after" in move.inject and "[1, 3] (leader 1) | [2, 4]" in move.inject
    assert move.nem.resolved[1] == (2,)  # the cut-off voter: read from directly (stale-read check)
    # Then the leader's own replica removed, once store 4 was a voter.
    rm = placement.submitted[1]
    assert rm.remove_replica.replica.store_id == 1
    assert sorted(r.store_id for r in placement.desc.replicas) == [2, 3, 4]
    assert all(r.role == meta_pb2.VOTER for r in placement.desc.replicas)
    heal = move.heal
    assert "add->voter" in heal and "store 1 (the leader) removed" in heal and "store 1 dropped it" in heal
    assert move.nem.problems == [] and move.nem.moves == {} and not move.nem.cut


def test_member_move_without_split_removes_a_follower(monkeypatch: pytest.MonkeyPatch) -> None:
    move = _run_move(monkeypatch, {"split": False, "remove": "follower:1"})
    assert move.net.calls == []  # no cut
    assert [op.WhichOneof("kind") for op in move.placement.submitted] == ["add_replica", "remove_replica"]
    assert move.placement.submitted[1].remove_replica.replica.store_id == 3  # 2nd follower of leader 1
    assert sorted(r.store_id for r in move.placement.desc.replicas) == [1, 2, 4]
    assert "store 3 (a follower) removed" in move.heal
    assert move.nem.problems == []


def test_member_move_the_scheduler_finished_first_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    # Placement's scheduler removes store 2's replica the moment the learner is promoted.
    move = _run_move(monkeypatch, {"split": False, "remove": "follower:1"},
                     placement=_FakePlacement(scheduler_removes=2))
    assert [op.WhichOneof("kind") for op in move.placement.submitted] == ["add_replica"]
    assert sorted(r.store_id for r in move.placement.desc.replicas) == [1, 3, 4]
    assert "store 2 removed by the scheduler first" in move.heal and "store 2 dropped it" in move.heal
    assert move.nem.problems == [] and move.nem.moves == {}  # nothing left for the final heal to redo


def test_member_move_reports_a_leader_elected_without_a_voter_majority(monkeypatch: pytest.MonkeyPatch) -> None:
    # Voter 2, cut off with only the learner, shows up as the leader at a later term.
    move = _run_move(monkeypatch, {"split": True, "keep": 1, "remove": "follower:0"}, claim=(2, 9))
    assert "MINORITY LEADER: store 2 at term 9" in move.heal
    problems = move.nem.problems
    assert len(problems) == 1 and "without a majority of voters" in problems[0]


def test_member_move_that_never_promotes_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "VOTER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(faults, "POLL_S", 0.01)
    placement = _FakePlacement(promote_after=10**9)  # stays a learner

    async def scenario() -> tuple[Nemesis, str]:
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem, _ = nemesis_over(LiveCluster(router, addresses), [11, 12])
            p = (("partition", 2), ("remove", "leader"), ("split", False))
            await nem.apply(Step(1.0, 1, "member", "add-replica", p))
            done = await nem.apply(Step(2.0, 1, "member", "finish-move", p))
            return nem, done.detail
        finally:
            for srv in servers:
                await srv.stop(None)

    nem, detail = asyncio.run(scenario())
    assert "NOT a voter" in detail and "nothing removed" in detail
    assert len(nem.problems) == 1 and "not a voter" in nem.problems[0]
    assert [op.WhichOneof("kind") for op in placement.submitted] == ["add_replica"]


def test_stale_read_check_flags_a_node_serving_old_data() -> None:
    class KV(kv_pb2_grpc.KVServicer):
        async def Get(self, request, context):
            pid = request.context.partition_id
            if pid == 1:  # refuses: not the leader any more
                await context.abort(grpc.StatusCode.UNAVAILABLE, "not leader")
            if pid == 2:  # serves the new data
                return kv_pb2.GetResponse(found=True, value=b"e1d/0.3", version=9)
            return kv_pb2.GetResponse(found=False)  # 3: serves from before the write

    async def scenario() -> None:
        server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(KV(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            res = await stale_reads(f"127.0.0.1:{port}", {1: b"k1", 2: b"k2", 3: b"k3"}, "e1d/")
        finally:
            await server.stop(None)
        assert (res.asked, res.answered) == (6, 4)
        assert len(res.violations) == 2 and all("partition 3" in v for v in res.violations)

    asyncio.run(scenario())


def test_heal_all_finishes_a_move_the_schedule_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "POLL_S", 0.01)
    monkeypatch.setattr(faults, "CONF_SPREAD_S", 0.01)
    monkeypatch.setattr(faults, "UNHOSTED_TIMEOUT_S", 0.2)
    placement = _FakePlacement()

    async def scenario() -> tuple[Nemesis, list[str]]:
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem, _ = nemesis_over(LiveCluster(router, addresses), [11, 12])
            p = (("keep", 0), ("partition", 2), ("remove", "follower:0"), ("split", True))
            await nem.apply(Step(1.0, 1, "member", "add-replica", p))
            assert nem.cut and nem.moves
            done = await nem.heal_all()  # no finish-move step ran
            return nem, done
        finally:
            for srv in servers:
                await srv.stop(None)

    nem, done = asyncio.run(scenario())
    assert not nem.cut and not nem.moves
    assert any("move #1 of partition 12 finished" in d and "removed" in d for d in done), done
    assert sorted(r.store_id for r in placement.desc.replicas) == [1, 3, 4]  # follower 2 went
    # The fake store kept its replica: reported, not waited on forever.
    assert any("still hosts partition 12" in p for p in nem.problems), nem.problems


def test_transfer_to_a_store_without_a_voter_goes_to_a_voter() -> None:
    placement = _FakePlacement()

    async def scenario() -> str:
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem, _ = nemesis_over(LiveCluster(router, addresses), [11, 12])
            done = await nem.apply(Step(1.0, 1, "transfer", "transfer", (("partition", 2), ("to", "node:4"))))
            return done.detail
        finally:
            for srv in servers:
                await srv.stop(None)

    detail = asyncio.run(scenario())
    (op,) = placement.submitted
    assert op.partition_id == 12 and op.transfer_leader.to_store_id == 1  # voters [1, 2, 3][(4 - 1) % 3]
    assert "no voter of partition 12 there; node 1 instead" in detail
