"""``tessera nemesis``'s flags are checked before a cluster starts (in-process, no cluster:
the runner is replaced by one that fails the test if it is ever reached)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.cli import main
from tools.nemesis import runner

REAL_RUN = runner.run


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: object, **kwargs: object) -> int:
        raise AssertionError("a cluster would have started")

    monkeypatch.setattr(runner, "run", run)


def nemesis(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["nemesis", *args])
    return code, capsys.readouterr().err


def test_an_unknown_raft_mutation_gets_the_nodes_own_message(capsys, root_logger) -> None:
    code, err = nemesis(capsys, "--raft-mutation", "no-such-bug")
    assert code == 2
    assert main(["node", "--store-id", "1", "--raft-mutation", "no-such-bug"]) == 2
    node_err = capsys.readouterr().err
    message = node_err[node_err.index("argument --raft-mutation"):]
    assert message in err and "learner-votes" in message and "long-lease" in message
    assert "no-such-bug" in str(runner.usage_problem("register", ["kill"], nodes=3, raft_mutation="no-such-bug"))


def test_a_history_that_cannot_be_written_is_refused_at_once(capsys, root_logger, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "h.jsonl"
    code, err = nemesis(capsys, "--history", str(missing))
    assert code == 2 and f"cannot write the history to {missing}: No such file or directory" in err
    code, err = nemesis(capsys, "--history", str(tmp_path))
    assert code == 2 and "Is a directory" in err
    # A writable path passes, and the check leaves nothing behind (nor touches what is there).
    fresh, old = tmp_path / "fresh.jsonl", tmp_path / "old.jsonl"
    old.write_text("kept\n")
    for path in (fresh, old):
        assert runner.usage_problem("register", ["kill"], nodes=3, history_path=str(path)) is None
    assert not fresh.exists() and old.read_text() == "kept\n"


def test_client_mutations(capsys, root_logger) -> None:
    code, err = nemesis(capsys, "--client-mutation", "no-such-bug")
    assert code == 2 and "unknown mutation 'no-such-bug'; known:" in err and "double-append" in err
    code, err = nemesis(capsys, "--client-mutation", "double-append")  # the register workload
    assert code == 2 and "breaks the set workload, not register (use --workload set)" in err
    assert runner.usage_problem("set", ["kill"], nodes=3, client_mutation="double-append") is None


def test_other_flags(capsys, root_logger) -> None:
    code, err = nemesis(capsys, "--nodes", "2")
    assert code == 2 and "at least 3 nodes" in err
    code, err = nemesis(capsys, "--faults", "member", "--nodes", "3")
    assert code == 2 and "--nodes 3" in err
    with pytest.raises(ValueError, match="unknown workload 'queue'"):
        REAL_RUN(1, ["kill"], "queue")  # the real run: refused before anything starts
