"""Fast tests of the nemesis parts: schedule, proxies, and the history checkers.

The checkers are fed hand-made histories that break each invariant, so a checker that
accepted everything would fail here.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tools.checker import Op
from tools.nemesis import schedule
from tools.nemesis.checks import check_bank, check_register, check_set
from tools.nemesis.proxy import DELAY, DROP, PASS, LinkProxy, ProxyNet
from tools.nemesis.workloads import FINAL_READER, partition_prefix, text

pytestmark = pytest.mark.timeout(60)


# -- schedule ---------------------------------------------------------------------------------


ALL = list(schedule.KINDS)


def test_schedule_is_a_function_of_the_seed() -> None:
    a = schedule.build(7, 80, ALL)
    b = schedule.build(7, 80, ALL)
    c = schedule.build(8, 80, ALL)
    assert a == b
    assert a.describe() == b.describe()
    assert a.steps != c.steps


def test_schedule_covers_every_kind_and_shape_when_there_is_room() -> None:
    for seed in range(20):
        s = schedule.build(seed, 120, ALL)
        assert s.missing() == [], (seed, s.describe())
        kinds = s.kinds()
        for shape in schedule.PARTITION_SHAPES:
            assert f"partition/{shape}" in kinds


def test_schedule_episodes_are_well_formed() -> None:
    s = schedule.build(3, 90, ALL)
    for episode, steps in s.episodes().items():
        first = steps[0]
        if first.action == "transfer":
            assert len(steps) == 1
            continue
        assert [st.action for st in steps] == [first.action, schedule.ACTIONS[first.action]], episode
        assert steps[1].at > first.at
    primary = sorted((st for st in s.steps if st.action != "transfer"), key=lambda st: st.at)
    # The primary lane never overlaps: every inject comes after the previous heal.
    for prev, nxt in zip(primary, primary[1:]):
        assert nxt.at >= prev.at
        if schedule.ACTIONS.get(nxt.action) is not None:
            assert schedule.ACTIONS.get(prev.action) is None
    assert all(st.at <= s.duration - schedule.TAIL for st in s.steps)


def test_schedule_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        schedule.build(1, 30, ["kill", "meteor"])


def test_cli_fault_names_match_the_schedule() -> None:
    from tools.cli import FAULTS

    assert tuple(FAULTS) == schedule.KINDS
    assert "member" in schedule.KINDS and "member" in schedule.PRIMARY


def _member_steps(s: schedule.Schedule) -> list[schedule.Step]:
    return [st for st in s.steps if st.action == "add-replica"]


def test_member_runs_on_four_nodes_and_is_refused_on_three(capsys) -> None:
    from tools.cli import main

    assert schedule.default_nodes(["member", "kill"]) == 4
    assert schedule.default_nodes(["kill", "partition"]) == 3
    assert schedule.build(1, 40, ["member"]).nodes == 4
    with pytest.raises(ValueError, match="--nodes 3"):
        schedule.build(1, 40, ["member", "kill"], nodes=3)
    schedule.build(1, 40, ["member"], nodes=5)  # more is fine
    assert main(["nemesis", "--faults", "member,kill", "--nodes", "3"]) == 2
    err = capsys.readouterr().err
    assert "--nodes 3" in err and "member" in err and "4 nodes" in err


def test_member_episodes_first_always_splits() -> None:
    later = []
    for seed in range(40):
        s = schedule.build(seed, 90, ["member", "kill"])
        members = _member_steps(s)
        assert members, (seed, s.describe())
        assert members[0].param("split") is True, (seed, s.describe())
        assert "member/split" in s.kinds() and s.missing() == []
        later += [m.param("split") for m in members[1:]]
        for m in members:
            assert 0 <= m.param("partition") < 4
            assert m.param("remove") in ("leader", "follower:0", "follower:1")
            if m.param("split"):
                assert m.param("keep") in (0, 1)
            assert m.param("spare") is None  # 4 nodes: one spare store per partition, no choice
        heals = [st for st in s.steps if st.action == "finish-move"]
        assert [h.episode for h in heals] == [m.episode for m in members]
        # The move itself is planned for: the next inject comes after heal + move + gap.
        primary = [st for st in s.steps if st.action != "transfer"]
        for a, b in zip(primary, primary[1:]):
            if a.action == "finish-move":
                assert b.at >= a.at + schedule.MEMBER_MOVE_S + schedule.GAP[0] - 0.01
        assert all(h.at + schedule.MEMBER_MOVE_S <= s.duration - schedule.TAIL for h in heals)
    assert True in later and False in later  # later ones split half the time


def test_member_schedule_is_a_function_of_the_seed() -> None:
    faults = ["member", "partition", "kill", "transfer"]
    a, b = schedule.build(11, 90, faults), schedule.build(11, 90, faults)
    assert a == b and a.describe() == b.describe() and "4 nodes" in a.describe()
    assert _member_steps(a)
    assert a.steps != schedule.build(12, 90, faults).steps
    assert schedule.build(11, 90, faults, nodes=5).steps != a.steps
    assert any(m.param("spare") is not None for seed in range(10)
               for m in _member_steps(schedule.build(seed, 90, faults, nodes=5)))


def test_four_nodes_add_the_halves_shape() -> None:
    assert "halves" not in schedule.partition_shapes(3)
    assert set(schedule.partition_shapes(4)) == set(schedule.PARTITION_SHAPES)
    for seed in range(20):
        three = schedule.build(seed, 120, ["partition"], nodes=3)
        four = schedule.build(seed, 120, ["partition"], nodes=4)
        assert "partition/halves" not in three.kinds() and three.missing() == []
        assert four.missing() == [], four.describe()
        assert {f"partition/{x}" for x in schedule.PARTITION_SHAPES} <= four.kinds()
        for st in four.steps:
            if st.param("shape") == "halves":
                assert 0 <= st.param("mate") < 3
            if st.param("shape") == "asymmetric":
                assert 0 <= st.param("other") < 3


# -- keys -------------------------------------------------------------------------------------


def test_partition_prefix_stays_in_range() -> None:
    from router.placement.keyspace import contains, even_ranges

    for n in (1, 2, 3, 4, 8, 16):
        prefixes = set()
        for start, end in even_ranges(n):
            p = partition_prefix(start, end)
            assert contains(start, end, p + b"reg/0") and contains(start, end, p + b"\xff" * 8)
            prefixes.add(p)
        assert len(prefixes) == n
    assert text(b"A\x80\\b") == "A\\x80\\x5cb"


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


async def _until(cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


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
            await _until(lambda: ab.stats.dropped_bytes >= 3, 5)
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


# -- history checkers -------------------------------------------------------------------------


class H:
    """A tiny history builder: ``h.op(process, f, key, value, outcome, start, end)``."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, p: int, f: str, key: str, value: object, outcome: str, start: int, end: int | None,
           result: object = "same") -> "H":
        self.ops.append(Op(p, "invoke", f, key, None if f in ("get", "read") else value, start))
        if end is not None:
            self.ops.append(Op(p, outcome, f, key, value if result == "same" else result, end))
        return self

    def final(self, key: str, value: object, t: int = 1000) -> "H":
        return self.op(FINAL_READER, "get", key, None, "ok", t, t + 1, result=value)


def test_set_checker_accepts_a_good_history() -> None:
    h = H()
    h.op(0, "put", "Aset/add/w0-1", "w0-1", "ok", 1, 2)
    h.op(0, "put", "Aset/add/w0-2", "w0-2", "info", 3, 4)  # unknown: either is fine
    h.op(2, "put", "Aset/add/w0-3", "w0-3", "info", 5, 6)
    h.op(4, "put", "Aset/add/w0-4", "w0-4", "fail", 7, 8)
    h.op(1, "get", "Bset/list/w1", None, "ok", 1, 2, result=None)
    h.op(1, "cas", "Bset/list/w1", [None, "w1-1"], "ok", 3, 4)
    h.op(1, "get", "Bset/list/w1", None, "ok", 5, 6, result="w1-1")
    h.op(1, "cas", "Bset/list/w1", ["w1-1", "w1-1,w1-2"], "fail", 7, 8)  # compare failed: retry
    h.op(1, "get", "Bset/list/w1", None, "ok", 9, 10, result="w1-1")
    h.op(1, "cas", "Bset/list/w1", ["w1-1", "w1-1,w1-2"], "ok", 11, 12)
    h.final("Aset/add/w0-1", "w0-1").final("Aset/add/w0-2", "w0-2").final("Aset/add/w0-3", None)
    h.final("Aset/add/w0-4", None).final("Bset/list/w1", "w1-1,w1-2")
    v = check_set(h.ops)
    assert v.ok, v.report()
    assert check_register(h.ops).ok


def test_set_checker_rejects_a_lost_acknowledged_add() -> None:
    h = H().op(0, "put", "Aset/add/w0-1", "w0-1", "ok", 1, 2).final("Aset/add/w0-1", None)
    v = check_set(h.ops)
    assert v.ok is False and "lost" in v.report()
    assert "w0-1" in "\n".join(v.details)  # the window shows the add


def test_set_checker_rejects_a_phantom_and_a_failed_add_that_applied() -> None:
    h = H().final("Aset/add/w9-9", "w9-9")
    v = check_set(h.ops)
    assert v.ok is False and "never added" in v.report()
    h = H().op(0, "put", "Aset/add/w0-1", "w0-1", "fail", 1, 2).final("Aset/add/w0-1", "w0-1")
    assert check_set(h.ops).ok is False


def test_set_checker_rejects_a_duplicate_append() -> None:
    # The cas applied, but was answered "failed": the client appended again.
    h = H()
    h.op(1, "get", "Bset/list/w1", None, "ok", 1, 2, result=None)
    h.op(1, "cas", "Bset/list/w1", [None, "w1-1"], "fail", 3, 4)
    h.op(1, "get", "Bset/list/w1", None, "ok", 5, 6, result="w1-1")
    h.op(1, "cas", "Bset/list/w1", ["w1-1", "w1-1,w1-1"], "ok", 7, 8)
    h.final("Bset/list/w1", "w1-1,w1-1")
    v = check_set(h.ops)
    assert v.ok is False and "2 times" in v.report()


def test_set_checker_rejects_a_lost_append_and_a_foreign_element() -> None:
    h = H()
    h.op(1, "cas", "Bset/list/w1", [None, "w1-1"], "ok", 1, 2)
    h.op(1, "cas", "Bset/list/w1", ["w1-1", "w1-1,w1-2"], "ok", 3, 4)
    h.final("Bset/list/w1", "w1-1,w7-7")
    report = check_set(h.ops).report()
    assert "w1-2" in report and "lost" in report and "never appended" in report


def test_bank_checker() -> None:
    accounts = ["Abank/acct00", "Abank/acct01"]

    def read(p: int, balances: dict, start: int) -> H:
        return h.op(p, "read", "bank", None, "ok", start, start + 1, result=balances)

    h = H()
    h.op(0, "transfer", "bank", {"from": accounts[0], "to": accounts[1], "amount": 10}, "ok", 1, 5)
    read(1, {accounts[0]: 90, accounts[1]: 110}, 6)
    read(FINAL_READER, {accounts[0]: 90, accounts[1]: 110}, 100)
    assert check_bank(h.ops, accounts, 200).ok

    h = H()
    h.op(0, "transfer", "bank", {"from": accounts[0], "to": accounts[1], "amount": 10}, "ok", 1, 5)
    read(1, {accounts[0]: 90, accounts[1]: 100}, 3)  # saw half a transfer
    read(FINAL_READER, {accounts[0]: 90, accounts[1]: 110}, 100)
    v = check_bank(h.ops, accounts, 200)
    assert v.ok is False and "total 190 != 200" in v.report()
    assert "transfer" in "\n".join(v.details)  # the concurrent transfer is in the window

    h = H()
    read(1, {accounts[0]: 200}, 3)  # an account vanished
    read(FINAL_READER, {accounts[0]: 300, accounts[1]: -100}, 100)
    report = check_bank(h.ops, accounts, 200).report()
    assert "missing" in report and "negative" in report

    h = H()
    read(1, {accounts[0]: 100, accounts[1]: 100}, 3)  # no final read at all
    assert check_bank(h.ops, accounts, 200).ok is False


def test_register_check_rejects_a_stale_read() -> None:
    h = H()
    h.op(0, "put", "k", "1", "ok", 1, 2)
    h.op(0, "put", "k", "2", "ok", 3, 4)
    h.op(1, "get", "k", None, "ok", 5, 6, result="1")  # after the second put completed
    v = check_register(h.ops)
    assert v.ok is False and "smallest failing window" in v.report()
    # The same read concurrent with the second put is fine.
    h = H()
    h.op(0, "put", "k", "1", "ok", 1, 2)
    h.op(0, "put", "k", "2", "ok", 3, 7)
    h.op(1, "get", "k", None, "ok", 5, 6, result="1")
    assert check_register(h.ops).ok


def test_register_check_rejects_a_cas_that_answered_failed_but_applied() -> None:
    h = H()
    h.op(0, "put", "k", "1", "ok", 1, 2)
    h.op(0, "cas", "k", ["1", "2"], "fail", 3, 4)  # claims nothing happened...
    h.op(1, "get", "k", None, "ok", 5, 6, result="2")  # ...but "2" is there
    assert check_register(h.ops).ok is False


# -- fault executor ---------------------------------------------------------------------------


class _FakeNet:
    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], str]] = []

    def set(self, pairs, mode, delay_s=0.0):  # type: ignore[no-untyped-def]
        self.calls.append((sorted(pairs), mode))

    def heal(self) -> None:
        self.calls.append(([], "heal"))


class _FakeProc:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path


class _FakeCluster:
    router = None

    def __init__(self, tmp_path, nodes: int = 3) -> None:  # type: ignore[no-untyped-def]
        self.node_procs = {n: _FakeProc(str(tmp_path / f"node{n}.log")) for n in range(1, nodes + 1)}


def _nemesis(tmp_path, nodes: int = 3):  # type: ignore[no-untyped-def]
    from tools.nemesis.faults import Nemesis

    files = {n: str(tmp_path / f"f{n}.json") for n in range(1, nodes + 1)}
    return Nemesis(_FakeCluster(tmp_path, nodes), _FakeNet(), files, [11, 12, 13, 14], log=lambda _line: None)  # type: ignore[arg-type]


def test_partition_shapes_cut_the_right_links(tmp_path) -> None:
    from tools.nemesis.schedule import Step

    def links(**params):  # type: ignore[no-untyped-def]
        nem = _nemesis(tmp_path)
        step = Step(1.0, 1, "partition", "partition", tuple(sorted(params.items())))
        asyncio.run(nem.apply(step))
        (pairs, mode), = nem.net.calls
        assert mode == DROP
        heal = Step(2.0, 1, "partition", "heal-network", step.params)
        asyncio.run(nem.apply(heal))
        assert nem.net.calls[-1] == (pairs, PASS) and not nem.cut
        return pairs

    assert links(shape="majority", minority="node:2") == [(1, 2), (2, 1), (2, 3), (3, 2)]
    # Only node 1's messages to node 3 are dropped; node 3 -> node 1 still flows.
    assert links(shape="asymmetric", **{"from": "node:1", "other": 1}) == [(1, 3)]
    # Nodes 1 and 3 cannot talk; both still reach the bridge, node 2.
    assert links(shape="bridge", bridge="node:2") == [(1, 3), (3, 1)]


def test_four_node_partition_shapes(tmp_path) -> None:
    from tools.nemesis.schedule import Step

    def links(**params):  # type: ignore[no-untyped-def]
        nem = _nemesis(tmp_path, nodes=4)
        step = Step(1.0, 1, "partition", "partition", tuple(sorted(params.items())))
        asyncio.run(nem.apply(step))
        (pairs, mode), = nem.net.calls
        assert mode == DROP
        return pairs

    def cut(left, right):  # type: ignore[no-untyped-def]
        return sorted([(a, b) for a in left for b in right] + [(b, a) for a in left for b in right])

    # 2 | 2: node 2 and the mate-th of the others (1, 3, 4).
    assert links(shape="halves", mate=0, **{"with": "node:2"}) == cut([1, 2], [3, 4])
    assert links(shape="halves", mate=1, **{"with": "node:2"}) == cut([2, 3], [1, 4])
    assert links(shape="halves", mate=5, **{"with": "node:4"}) == cut([3, 4], [1, 2])
    # One node alone against the three others.
    assert links(shape="majority", minority="node:3") == cut([3], [1, 2, 4])
    assert links(shape="asymmetric", other=2, **{"from": "node:1"}) == [(1, 4)]
    # Node 1 cut from 3 and 4 (which still talk to each other); node 2 reaches everyone.
    assert links(shape="bridge", bridge="node:2") == cut([1], [3, 4])


# -- member: the move against a fake router and fake nodes -------------------------------------


class _FakePlacement:
    """Partition 12 on stores 1,2,3 (leader 1); store 4 spare. Like the real one, changes show up
    in GetPartition a few polls after they are submitted: AddReplica -> learner -> voter,
    RemoveReplica -> gone (and the leader moves first when it is the one removed)."""

    def __init__(self, lag: int = 3, promote_after: int = 3) -> None:
        from tesserapb import meta_pb2

        self.pb = meta_pb2
        self.desc = meta_pb2.PartitionDescriptor(
            id=12, leader_store_id=1, term=5, epoch=meta_pb2.Epoch(conf_ver=1, version=1),
            replicas=[meta_pb2.Replica(store_id=s, replica_id=s, role=meta_pb2.VOTER) for s in (1, 2, 3)],
        )
        self.lag, self.promote_after = lag, promote_after
        self.pending: list[tuple[int, object]] = []  # (polls left, change)
        self.submitted: list[object] = []
        self.net: _FakeNet | None = None
        self.net_calls_at_submit: list[int] = []  # how many network changes preceded each submit

    def _step(self) -> None:
        pb = self.pb
        due = [c for n, c in self.pending if n <= 0]
        self.pending = [(n - 1, c) for n, c in self.pending if n > 0]
        for change in due:
            kind, store = change  # type: ignore[misc]
            d = self.desc
            d.epoch.conf_ver += 1
            if kind == "learner":
                d.replicas.append(pb.Replica(store_id=store, replica_id=10 + store, role=pb.LEARNER))
                self.pending.append((self.promote_after, ("voter", store)))
            elif kind == "voter":
                next(r for r in d.replicas if r.store_id == store).role = pb.VOTER
            elif kind == "remove":
                keep = [r for r in d.replicas if r.store_id != store]
                del d.replicas[:]
                d.replicas.extend(keep)
                if d.leader_store_id == store:
                    d.leader_store_id, d.term = keep[0].store_id, d.term + 1

    def get(self, pid: int):  # type: ignore[no-untyped-def]
        assert pid == 12
        self._step()
        return self.pb.PartitionDescriptor.FromString(self.desc.SerializeToString())

    def submit(self, op) -> None:  # type: ignore[no-untyped-def]
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


async def _serve_fakes(placement: _FakePlacement, nodes: dict[int, _FakeNode]):  # type: ignore[no-untyped-def]
    import grpc

    from node.wire import errors as werr
    from tesserapb import kv_pb2_grpc, meta_pb2, meta_pb2_grpc

    class Meta(meta_pb2_grpc.MetaServicer):
        async def GetPartition(self, request, context):  # noqa: N802
            return meta_pb2.GetPartitionResponse(partition=placement.get(request.partition_id))

        async def ScanPartitions(self, request, context):  # noqa: N802
            return meta_pb2.ScanPartitionsResponse(partitions=[placement.get(12)])

        async def SubmitOperation(self, request, context):  # noqa: N802
            placement.submit(request.operation)
            return meta_pb2.SubmitOperationResponse(operation_id=len(placement.submitted))

    def kv_for(node: _FakeNode):  # type: ignore[no-untyped-def]
        class KV(kv_pb2_grpc.KVServicer):
            async def Get(self, request, context):  # noqa: N802
                pid = request.context.partition_id
                if pid in node.gone:
                    await werr.abort(context, werr.partition_not_found(pid), "not hosted")
                await werr.abort(context, werr.not_leader(pid), "not leader")
        return KV()

    servers, addresses = [], {}
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


class _LiveProc:
    def __init__(self, address: str) -> None:
        self.address = address
        self.alive = True
        self.log_path = "/dev/null"


class _LiveCluster:
    def __init__(self, router: str, addresses: dict[int, str]) -> None:
        self.router = _LiveProc(router)
        self.node_procs = {n: _LiveProc(a) for n, a in addresses.items()}


def _run_move(tmp_path, monkeypatch, params: dict,  # type: ignore[no-untyped-def]
              claim: tuple[int, int] | None = None):
    """Inject and heal one member episode; returns (nemesis, placement, fake nodes, details)."""
    from tools.nemesis import faults
    from tools.nemesis.faults import Nemesis
    from tools.nemesis.schedule import Step

    monkeypatch.setattr(faults, "POLL_S", 0.01)
    monkeypatch.setattr(faults, "CONF_SPREAD_S", 0.01)
    monkeypatch.setattr(faults, "MINORITY_CLAIM_WAIT_S", 0.3)
    placement = _FakePlacement()
    nodes = {n: _FakeNode() for n in (1, 2, 3, 4)}

    async def scenario():  # type: ignore[no-untyped-def]
        servers, router, addresses = await _serve_fakes(placement, nodes)
        try:
            nem = Nemesis(_LiveCluster(router, addresses), _FakeNet(), {}, [11, 12, 13, 14],  # type: ignore[arg-type]
                          log=lambda _line: None)
            placement.net = nem.net  # type: ignore[assignment]
            p = tuple(sorted({"partition": 1, **params}.items()))
            inject = await nem.apply(Step(1.0, 1, "member", "add-replica", p))
            if claim is not None:  # the cut-off voter wins an election it should not
                placement.desc.leader_store_id, placement.desc.term = claim
            await asyncio.sleep(0.5)  # the hold: the watcher polls every 0.2 s

            async def drop_replica() -> None:  # the removed store lets go of its replica
                await _until(lambda: len(placement.desc.replicas) == 3 and placement.desc.epoch.conf_ver > 3, 10)
                await asyncio.sleep(0.1)
                for n in (1, 2, 3):
                    if all(r.store_id != n for r in placement.desc.replicas):
                        nodes[n].gone.add(12)

            dropper = asyncio.ensure_future(drop_replica())
            heal = await nem.apply(Step(6.0, 1, "member", "finish-move", p))
            await dropper
            return nem, inject.detail, heal.detail
        finally:
            for srv in servers:
                await srv.stop(None)

    nem, inject, heal = asyncio.run(scenario())
    return nem, placement, nodes, inject, heal


def test_member_move_split_cuts_leader_and_voter_from_voter_and_learner(tmp_path, monkeypatch) -> None:
    from tesserapb import meta_pb2

    nem, placement, nodes, inject, heal = _run_move(
        tmp_path, monkeypatch, {"split": True, "keep": 1, "remove": "leader"})
    # Learner on the spare store 4; cut {1 (leader), 3 (keep=1 of 2, 3)} | {2, 4}.
    add = placement.submitted[0]
    assert add.partition_id == 12 and add.add_replica.replica.store_id == 4
    # Store 4 was cut off from 1 and 3 before it joined (so it cannot catch up and stays a
    # learner), then the rest of the split once the router showed the learner.
    early = [(1, 4), (3, 4), (4, 1), (4, 3)]
    cut = sorted([(a, b) for a in (1, 3) for b in (2, 4)] + [(b, a) for a in (1, 3) for b in (2, 4)])
    assert nem.net.calls[0] == (early, DROP), inject
    assert placement.net_calls_at_submit[0] == 1
    assert nem.net.calls[1] == (cut, DROP)
    assert nem.net.calls[2] == (cut, PASS) and len(nem.net.calls) == 3
    assert "LEARNER after" in inject and "[1, 3] (leader 1) | [2, 4]" in inject
    assert nem.resolved[1] == (2,)  # the cut-off voter: read from directly (stale-read check)
    # Then the leader's own replica removed, once store 4 was a voter.
    rm = placement.submitted[1]
    assert rm.remove_replica.replica.store_id == 1
    assert sorted(r.store_id for r in placement.desc.replicas) == [2, 3, 4]
    assert all(r.role == meta_pb2.VOTER for r in placement.desc.replicas)
    assert "add->voter" in heal and "store 1 (the leader) removed" in heal and "store 1 dropped it" in heal
    assert nem.problems == [] and nem.moves == {} and not nem.cut


def test_member_move_without_split_removes_a_follower(tmp_path, monkeypatch) -> None:
    nem, placement, nodes, inject, heal = _run_move(tmp_path, monkeypatch, {"split": False, "remove": "follower:1"})
    assert nem.net.calls == []  # no cut
    assert [op.WhichOneof("kind") for op in placement.submitted] == ["add_replica", "remove_replica"]
    assert placement.submitted[1].remove_replica.replica.store_id == 3  # 2nd follower of leader 1
    assert sorted(r.store_id for r in placement.desc.replicas) == [1, 2, 4]
    assert "store 3 (a follower) removed" in heal
    assert nem.problems == []


def test_member_move_reports_a_leader_elected_without_a_voter_majority(tmp_path, monkeypatch) -> None:
    # Voter 2, cut off with only the learner, shows up as the leader at a later term.
    nem, placement, nodes, inject, heal = _run_move(
        tmp_path, monkeypatch, {"split": True, "keep": 1, "remove": "follower:0"}, claim=(2, 9))
    assert "MINORITY LEADER: store 2 at term 9" in heal
    assert len(nem.problems) == 1 and "without a majority of voters" in nem.problems[0]


def test_member_move_that_never_promotes_is_a_problem(tmp_path, monkeypatch) -> None:
    from tools.nemesis import faults

    from tools.nemesis.schedule import Step

    monkeypatch.setattr(faults, "VOTER_TIMEOUT_S", 0.5)
    monkeypatch.setattr(faults, "POLL_S", 0.01)
    placement = _FakePlacement(promote_after=10**9)  # stays a learner

    async def scenario():  # type: ignore[no-untyped-def]
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem = faults.Nemesis(_LiveCluster(router, addresses), _FakeNet(), {}, [11, 12],  # type: ignore[arg-type]
                                 log=lambda _line: None)
            p = (("partition", 1), ("remove", "leader"), ("split", False))
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


def test_raft_mutation_reaches_every_node(monkeypatch, tmp_path, capsys) -> None:
    import tempfile

    from tools.nemesis import runner

    seen: dict[int, list[str]] = {}

    class Cluster:
        def __init__(self, root, *, nodes, partitions, node_args):  # type: ignore[no-untyped-def]
            for n in range(1, nodes + 1):
                seen[n] = node_args(n)
            self.node_procs, self.router = {}, None

        def start(self) -> None:
            raise RuntimeError("not starting anything in a unit test")

        def stop(self, grace: float = 0.0) -> None:
            pass

    monkeypatch.setattr(runner, "Cluster", Cluster)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert runner.run(10, ["member"], "set", 3, raft_mutation="learner-votes") == 1
    assert sorted(seen) == [1, 2, 3, 4]
    for args in seen.values():
        assert args[args.index("--raft-mutation") + 1] == "learner-votes"
    assert "4 nodes" in capsys.readouterr().out
    assert runner.run(10, ["kill"], "set", 3) == 1
    assert sorted(seen) == [1, 2, 3, 4] and all("--raft-mutation" not in a for n, a in seen.items() if n <= 3)


def test_disk_faults_write_the_fault_file(tmp_path, monkeypatch) -> None:
    import json

    from tools.nemesis import faults
    from tools.nemesis.schedule import Step

    nem = _nemesis(tmp_path)
    # A node confirms by logging "fault hooks now ..."; this fake one never does.
    monkeypatch.setattr(faults, "FAULT_APPLY_TIMEOUT_S", 0.05)
    done = asyncio.run(nem.apply(Step(1.0, 1, "slowdisk", "slow-disk", (("delay_ms", 50), ("target", "node:3")))))
    assert "did not confirm" in done.detail
    with open(nem.fault_files[3]) as f:
        assert json.load(f) == {"fsync_delay_ms": 50}
    asyncio.run(nem.apply(Step(2.0, 1, "slowdisk", "fast-disk", (("delay_ms", 50), ("target", "node:3")))))
    with open(nem.fault_files[3]) as f:
        assert json.load(f) == {}
    asyncio.run(nem.apply(Step(3.0, 2, "fsync", "fail-fsync", (("target", "node:1"),))))
    with open(nem.fault_files[1]) as f:
        assert json.load(f) == {"fail_fsync": True}
    assert nem.fsync_failed == {1}


def test_stale_read_check_flags_a_node_serving_old_data() -> None:
    import grpc

    from tesserapb import kv_pb2, kv_pb2_grpc
    from tools.nemesis.checks import stale_reads

    class KV(kv_pb2_grpc.KVServicer):
        async def Get(self, request, context):  # noqa: N802
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


def test_heal_all_finishes_a_move_the_schedule_left_open(tmp_path, monkeypatch) -> None:
    from tools.nemesis import faults
    from tools.nemesis.schedule import Step

    monkeypatch.setattr(faults, "POLL_S", 0.01)
    monkeypatch.setattr(faults, "CONF_SPREAD_S", 0.01)
    monkeypatch.setattr(faults, "UNHOSTED_TIMEOUT_S", 0.2)
    placement = _FakePlacement()

    async def scenario():  # type: ignore[no-untyped-def]
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem = faults.Nemesis(_LiveCluster(router, addresses), _FakeNet(), {}, [11, 12],  # type: ignore[arg-type]
                                 log=lambda _line: None)
            p = (("keep", 0), ("partition", 1), ("remove", "follower:0"), ("split", True))
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


def test_transfer_to_a_store_without_a_voter_goes_to_a_voter(tmp_path) -> None:
    from tools.nemesis.faults import Nemesis
    from tools.nemesis.schedule import Step

    placement = _FakePlacement()

    async def scenario() -> str:
        servers, router, addresses = await _serve_fakes(placement, {n: _FakeNode() for n in (1, 2, 3, 4)})
        try:
            nem = Nemesis(_LiveCluster(router, addresses), _FakeNet(), {}, [11, 12],  # type: ignore[arg-type]
                          log=lambda _line: None)
            done = await nem.apply(Step(1.0, 1, "transfer", "transfer", (("partition", 1), ("to", "node:4"))))
            return done.detail
        finally:
            for srv in servers:
                await srv.stop(None)

    detail = asyncio.run(scenario())
    (op,) = placement.submitted
    assert op.partition_id == 12 and op.transfer_leader.to_store_id == 1  # voters [1, 2, 3][(4 - 1) % 3]
    assert "no voter of partition 12 there; node 1 instead" in detail
