"""Fast tests of the nemesis parts: schedule, history checkers, and the fault executor on fakes.

The checkers are fed hand-made histories that break each invariant, so a checker that
accepted everything would fail here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from support.nemesis_fakes import fake_nemesis
from tools.checker import Op
from tools.nemesis import schedule
from tools.nemesis.history_checks import check_bank, check_register, check_set
from tools.nemesis.proxy import DROP, PASS
from tools.nemesis.schedule import Param
from tools.nemesis.workloads import (
    FINAL_READER,
    Context,
    PartitionRange,
    Recorder,
    RegisterWorkload,
    partition_prefix,
    text,
)

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
    for prev, nxt in itertools.pairwise(primary):
        assert nxt.at >= prev.at
        if schedule.ACTIONS.get(nxt.action) is not None:
            assert schedule.ACTIONS.get(prev.action) is None
    assert all(st.at <= s.duration - schedule.TAIL for st in s.steps)


def test_schedule_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        schedule.build(1, 30, ["kill", "meteor"])


def test_transfer_has_its_own_lane_and_member_is_primary() -> None:
    assert "transfer" not in schedule.PRIMARY
    assert set(schedule.PRIMARY) | {"transfer"} == set(schedule.KINDS)
    assert "member" in schedule.PRIMARY


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
            assert m.param("partition") in range(1, 5)  # numbered from 1, as the cluster does
            assert m.param("remove") in ("leader", "follower:0", "follower:1")
            if m.param("split"):
                assert m.param("keep") in (0, 1)
            assert m.param("spare") is None  # 4 nodes: one spare store per partition, no choice
        heals = [st for st in s.steps if st.action == "finish-move"]
        assert [h.episode for h in heals] == [m.episode for m in members]
        # The move itself is planned for: the next inject comes after heal + move + gap.
        primary = [st for st in s.steps if st.action != "transfer"]
        for a, b in itertools.pairwise(primary):
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


def test_router_episodes_run_on_three_routers_and_stop_leaders_and_followers_both_ways() -> None:
    assert schedule.default_routers(["kill", "router"]) == 3
    assert schedule.default_routers(["kill", "member"]) == 1
    drawn = [s for seed in range(40) for s in schedule.build(seed, 60, ["router"]).steps if s.action == "kill-router"]
    assert {(s.param("mode"), s.param("who")) for s in drawn} == {
        ("kill", "leader"), ("kill", "follower"), ("pause", "leader"), ("pause", "follower")}
    with_op = [s for s in drawn if s.param("operation")]
    assert 0 < len(with_op) < len(drawn)
    assert all(1 <= s.number("partition") <= 4 for s in with_op)


def test_split_episodes_cut_the_leader_a_follower_or_nothing() -> None:
    drawn = [s for seed in range(30) for s in schedule.build(seed, 40, ["split"]).steps if s.kind == "split"]
    injects = [s for s in drawn if s.action == "split"]
    assert len(drawn) == 2 * len(injects) and {s.action for s in drawn} == {"split", "finish-split"}
    assert {s.param("cut") for s in injects} == {"none", "leader", "follower"}
    assert all(1 <= s.number("partition") <= 4 for s in injects)


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
                assert st.param("mate") in range(3)
            if st.param("shape") == "asymmetric":
                assert st.param("other") in range(3)


def test_partitions_are_numbered_from_one_everywhere(tmp_path) -> None:
    """The schedule names partitions as the cluster and the run's log do: 1 to N, in key order."""
    numbers: set[Param] = set()
    for seed in range(30):
        s = schedule.build(seed, 120, ALL)
        for st in s.steps:
            for name, value in st.params:
                if name == "partition":
                    numbers.add(value)
                elif isinstance(value, str) and value.startswith("leader:"):
                    numbers.add(int(value.partition(":")[2]))
    assert numbers == {1, 2, 3, 4}
    nem, _ = fake_nemesis(tmp_path)  # partition ids 11..14 in key order, no router
    assert [nem.partition(k) for k in (1, 2, 3, 4)] == [11, 12, 13, 14]
    _, what = asyncio.run(nem.resolve("leader:2"))
    assert "partition 12 has no known leader" in what


# -- keys -------------------------------------------------------------------------------------


def test_register_workload_spreads_its_keys_over_every_partition() -> None:
    from common.keyspace import contains, even_ranges

    parts = [PartitionRange(i, start, end) for i, (start, end) in enumerate(even_ranges(4), 1)]
    wl = RegisterWorkload(Context("127.0.0.1:1", parts, Recorder(), seed=1))
    asyncio.run(wl.setup())
    for p in parts:
        mine = [k for k in wl.keys if contains(p.start, p.end, k)]
        assert len(mine) == wl.keys_per_partition, (p, wl.keys)


def test_partition_prefix_stays_in_range() -> None:
    from common.keyspace import contains, even_ranges

    for n in (1, 2, 3, 4, 8, 16):
        prefixes = set()
        for start, end in even_ranges(n):
            p = partition_prefix(start, end)
            assert contains(start, end, p + b"reg/0") and contains(start, end, p + b"\xff" * 8)
            prefixes.add(p)
        assert len(prefixes) == n
    assert text(b"A\x80\\b") == "A\\x80\\x5cb"


# -- history checkers -------------------------------------------------------------------------


class H:
    """A tiny history builder: ``h.op(process, f, key, value, outcome, start, end)``."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, p: int, f: str, key: str, value: object, outcome: str, start: int, end: int | None,
           result: object = "same") -> H:
        self.ops.append(Op(p, "invoke", f, key, None if f in ("get", "read") else value, start))
        if end is not None:
            self.ops.append(Op(p, outcome, f, key, value if result == "same" else result, end))
        return self

    def final(self, key: str, value: object, t: int = 1000) -> H:
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


# -- fault executor (fake cluster and network, no servers) ---------------------------------


def test_partition_shapes_cut_the_right_links(tmp_path) -> None:
    from tools.nemesis.schedule import Step

    def links(**params: Param) -> list[tuple[int, int]]:
        nem, net = fake_nemesis(tmp_path)
        step = Step(1.0, 1, "partition", "partition", tuple(sorted(params.items())))
        asyncio.run(nem.apply(step))
        (pairs, mode), = net.calls
        assert mode == DROP
        heal = Step(2.0, 1, "partition", "heal-network", step.params)
        asyncio.run(nem.apply(heal))
        assert net.calls[-1] == (pairs, PASS) and not nem.cut
        return pairs

    assert links(shape="majority", minority="node:2") == [(1, 2), (2, 1), (2, 3), (3, 2)]
    # Only node 1's messages to node 3 are dropped; node 3 -> node 1 still flows.
    from_node1: dict[str, Param] = {"from": "node:1", "other": 1}  # "from" is a keyword
    assert links(shape="asymmetric", **from_node1) == [(1, 3)]
    # Nodes 1 and 3 cannot talk; both still reach the bridge, node 2.
    assert links(shape="bridge", bridge="node:2") == [(1, 3), (3, 1)]


def test_four_node_partition_shapes(tmp_path) -> None:
    from tools.nemesis.schedule import Step

    def links(**params: Param) -> list[tuple[int, int]]:
        nem, net = fake_nemesis(tmp_path, nodes=4)
        step = Step(1.0, 1, "partition", "partition", tuple(sorted(params.items())))
        asyncio.run(nem.apply(step))
        (pairs, mode), = net.calls
        assert mode == DROP
        return pairs

    def cut(left: list[int], right: list[int]) -> list[tuple[int, int]]:
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


def test_raft_mutation_reaches_every_node(monkeypatch, tmp_path, capsys) -> None:
    import tempfile

    from tools.nemesis import runner

    seen: dict[int, list[str]] = {}
    levels: list[str] = []

    class Cluster:
        def __init__(
            self, root: str, *, nodes: int, partitions: int, routers: int, node_args: Callable[[int], list[str]],
            log_level: str,
        ) -> None:
            for n in range(1, nodes + 1):
                seen[n] = node_args(n)
            levels.append(log_level)
            self.node_procs: dict[int, object] = {}
            self.router_procs: dict[int, object] = {}
            self.router = None

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
    assert runner.run(10, ["kill"], "set", 3, log_level="debug") == 1
    assert sorted(seen) == [1, 2, 3, 4] and all("--raft-mutation" not in a for n, a in seen.items() if n <= 3)
    assert levels == ["info", "debug"]  # --log-level reaches the cluster, which passes it to every process


def test_disk_faults_write_the_fault_file(tmp_path, monkeypatch) -> None:
    import json

    from tools.nemesis import faults
    from tools.nemesis.schedule import Step

    nem, _ = fake_nemesis(tmp_path)
    # A node confirms by printing "fault hooks now ..."; this fake one never does.
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
