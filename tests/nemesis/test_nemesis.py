"""The bounded nemesis run of ``make test``: a real cluster under faults, every check must hold.

Four runs with fixed seeds, one per workload plus a 4-node set run with membership changes
(``member``: a replica moved to the spare store, the first time with the network cut right
after the learner joined) and every partition shape, ``halves`` included; between them every
fault kind (and every partition shape) occurs at least once (asserted from the schedules
before anything starts). About four minutes in all on the 2-core machine; longer soaks run
the same thing with ``tessera nemesis --duration ...``.

Three short runs must fail, so the pipeline can fail, not only pass: one with a deliberately
broken client (``--client-mutation double-append``: it applies some appends twice behind the
history's back), failing with the seed, the schedule, the failing window and a command that
reproduces it; one (about 70 s) whose nodes run the Raft
mutation ``learner-votes`` (candidates count learners' votes, the YugabyteDB bug Jepsen found
in 2019), which a member episode must catch as lost acknowledged writes or a
non-linearizable history. A third runs nodes whose leader lease lasts ten election timeouts
(``long-lease``, about 35 s, under the bank workload, whose idle partitions let it show): a
paused leader must be caught serving stale reads.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import cli
from tools.checker import read_jsonl
from tools.nemesis import runner, schedule, workloads

pytestmark = pytest.mark.slow

# (workload, faults, seed, duration): chosen so each schedule holds every kind it asks for.
# The shortest durations (and a seed) whose schedules still hold every kind asked for: the
# four runs are most of the suite's time (test_ci_runs_cover_every_fault_kind checks the choice).
RUNS = [
    ("register", ["kill", "pause", "partition", "transfer", "split"], 149, 41),
    ("set", ["fsync", "slowdisk", "router", "kill", "transfer", "split"], 4, 27),
    ("bank", ["latency", "pause", "fsync", "router", "partition", "transfer"], 71, 45),
    ("set", ["member", "partition", "repair", "drain"], 20, 65),  # 4 nodes (a spare store to move replicas to)
]
RUN_IDS = ["register", "set", "bank", "set-member"]


def _children() -> set[int]:
    """Pids of this process's live children (cluster nodes and routers would be among them)."""
    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(pid))
    return out


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs create their temp dirs here, so a concurrent run elsewhere cannot confuse the check."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield


def _nemesis_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {d for d in os.listdir(tmp) if d.startswith("tessera-nemesis-")}


def test_ci_runs_cover_every_fault_kind() -> None:
    seen: set[str] = set()
    for _, faults, seed, duration in RUNS:
        s = schedule.build(seed, duration, faults)
        assert s.missing() == [], s.describe()
        seen |= s.kinds()
    want = set(schedule.KINDS) | {f"partition/{shape}" for shape in schedule.PARTITION_SHAPES} | {"member/split"}
    assert want <= seen, want - seen
    assert {w for w, *_ in RUNS} == set(workloads.WORKLOADS)
    s = schedule.build(*MUTATION_RUN[1:], MUTATION_RUN[0])
    assert s.nodes == 4 and any(st.param("split") for st in s.steps), s.describe()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("workload,faults,seed,duration", RUNS, ids=RUN_IDS)
def test_nemesis_run_holds(workload, faults, seed, duration, tmp_path, capsys) -> None:
    children, dirs = _children(), _nemesis_dirs()
    history = str(tmp_path / "history.jsonl")
    rc = runner.run(duration, faults, workload, seed, history)
    out = capsys.readouterr().out
    checked = cli.main(["check", history, "--model", workload])
    offline = capsys.readouterr().out.splitlines()[:-1]  # its verdicts, then its summary line
    print(out)  # shown by pytest when the test fails
    assert rc == 0, f"nemesis failed (seed {seed}); see the output above"
    assert f"nemesis: OK (seed {seed})" in out
    # The verdict first, then the history; which checks the same way offline.
    assert out.index(f"nemesis: OK (seed {seed})") < out.index(f"history written to {history}")
    assert checked == 0 and offline, offline
    assert all(f"  {line}" in out.splitlines() for line in offline), offline
    assert "recovered:" in out  # per-fault recovery times were printed
    if "member" in faults:
        assert "4 nodes" in out
        # The move went through: the learner became a voter, an old replica left (removed by
        # the nemesis, or by placement's scheduler, which finishes moves too).
        assert re.search(r"move: .*add->voter [\d.]+ s.*removed (by the scheduler first|[\d.]+ s after RemoveReplica)",
                         out), out
    if workload == "bank":
        with open(history) as f:
            ops = [json.loads(line) for line in f]
        assert {op["f"] for op in ops} == {"transfer", "read"}
    else:
        ops = read_jsonl(history)
    assert len(ops) > 1000
    assert _children() <= children, "cluster processes left behind"
    assert _nemesis_dirs() <= dirs, "temporary directory left behind"


# The must-fail run with a broken client, as anyone can run it by hand.
DOUBLE_APPEND = ["--workload", "set", "--duration", "8", "--faults", "transfer", "--seed", "5",
                 "--client-mutation", "double-append"]


@pytest.mark.timeout(120)
def test_nemesis_catches_a_write_applied_twice(capsys, root_logger) -> None:
    """A client that applies every 10th append a second time, unrecorded and without the
    version check (a retry that escaped deduplication): ``tessera nemesis --client-mutation
    double-append``."""
    children, dirs = _children(), _nemesis_dirs()
    rc = cli.main(["nemesis", *DOUBLE_APPEND])
    out = capsys.readouterr().out
    print(out)
    assert rc == 1
    assert "nemesis: FAILED, seed 5" in out
    assert "schedule (seed 5" in out and "--seed 5" in out
    assert "present 2 times" in out and "smallest failing window" in out
    assert "--client-mutation double-append" in out.split("reproduce the schedule:")[1]
    assert _children() <= children
    assert _nemesis_dirs() <= dirs


# (faults, seed, duration): one member episode (a schedule's first always splits the network
# right after the learner joined). About 70 s: the move cannot finish on the broken partition,
# so the run waits out the move's and the recovery's bounds before it reports.
MUTATION_RUN = (["member"], 5, 16)


@pytest.mark.timeout(180)
def test_nemesis_catches_learner_votes(capsys) -> None:
    """Nodes that count learners' votes: a voter cut off with the new learner gets elected
    while the other side keeps committing; after the heal it overwrites acknowledged writes."""
    faults, seed, duration = MUTATION_RUN
    children, dirs = _children(), _nemesis_dirs()
    rc = runner.run(duration, faults, "set", seed, raft_mutation="learner-votes")
    out = capsys.readouterr().out
    print(out)
    assert rc == 1
    assert f"nemesis: FAILED, seed {seed}" in out
    assert "--raft-mutation learner-votes" in out  # the reproduce line
    # Caught by the history checks, not only as a broken run or a process crash.
    assert "the run itself broke" not in out
    assert re.search(r"^  (set|linearizability): FAILED", out, re.M), "no history check failed"
    assert _children() <= children
    assert _nemesis_dirs() <= dirs


@pytest.mark.timeout(120)
def test_nemesis_catches_a_lease_held_too_long(capsys) -> None:
    """Nodes whose leader lease outlives the election timeout (ten of them): a paused leader
    wakes up inside its lease and serves reads that a newer leader's writes made stale."""
    children, dirs = _children(), _nemesis_dirs()
    # Whether a resumed leader reads its client's queued request before its peers' higher term
    # is a race (each pause catches it about two times in three): five pauses, not one. The
    # bank workload, because it leaves partitions idle: a busy partition's new leader has
    # appends queued for the old one, which step it down the moment it resumes, before it can
    # serve anything (with the register workload on every partition, no pause catches it).
    rc = runner.run(30, ["pause"], "bank", 3, raft_mutation="long-lease")
    out = capsys.readouterr().out
    print(out)
    assert rc == 1
    assert "nemesis: FAILED, seed 3" in out
    assert "STALE READ: lease read" in out
    assert _children() <= children
    assert _nemesis_dirs() <= dirs
