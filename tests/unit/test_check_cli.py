"""``tessera check`` in-process through tools.cli.main, on the fixture histories in
tests/unit/histories/ (small histories written for these tests, one per verdict)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tools.checker import Op
from tools.cli import main
from tools.nemesis.histories import FINAL_READER, SETUP_PROCESS
from tools.nemesis.history_checks import check_workload
from tools.nemesis.workloads import Recorder

HISTORIES = Path(__file__).parent / "histories"


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_history_that_holds_is_exit_0(capsys) -> None:
    code, out, _ = check(capsys, str(HISTORIES / "register_ok.jsonl"))
    assert code == 0
    assert "linearizability: OK: 2 keys, 7 operations" in out
    assert "tessera check: OK (" in out and "model register" in out
    assert check(capsys, str(HISTORIES / "bank_ok.jsonl"), "--model", "bank")[0] == 0
    assert check(capsys, str(HISTORIES / "etcd_linearizable.log"), "--format", "jepsen-etcd")[0] == 0


def test_a_violation_is_exit_1_with_each_bad_keys_window(capsys) -> None:
    code, out, _ = check(capsys, str(HISTORIES / "register_two_bad_keys.jsonl"))
    assert code == 1
    assert "linearizability: FAILED: 3 keys" in out and "2 key(s) fail" in out
    # The pre-pass's key and the search's key, each with its window.
    assert "key '1reg/0': not linearizable" in out
    assert "though every write of it came before p0 put '0.2' ok [30..40], which completed" in out
    assert "key '2reg/0': not linearizable" in out and "<-- cannot be linearized" in out
    assert "key '3reg/0'" not in out
    assert out.rstrip().endswith("model register)") and "tessera check: FAILED" in out

    code, out, _ = check(capsys, str(HISTORIES / "set_appended_twice.jsonl"), "--model", "set")
    assert code == 1 and "element 'w1-2' present 2 times" in out and "smallest failing window" in out
    code, out, _ = check(capsys, str(HISTORIES / "bank_total_changed.jsonl"), "--model", "bank")
    assert code == 1 and "total 190 != 200" in out
    code, out, _ = check(capsys, str(HISTORIES / "etcd_not_linearizable.log"), "--format", "jepsen-etcd")
    assert code == 1 and "key 'register': not linearizable" in out


@pytest.mark.parametrize("args,message", [
    (["no/such/history.jsonl"], "cannot read no/such/history.jsonl: No such file or directory"),
    ([str(HISTORIES / "not_json.jsonl")], "line 2: invalid JSON"),
    ([str(HISTORIES / "bank_ok.jsonl")], "line 1: unknown f 'transfer'"),  # a bank history as a register
    ([str(HISTORIES / "register_ok.jsonl"), "--model", "bank"], "no initial deposit"),
    ([str(HISTORIES / "etcd_linearizable.log")], "line 1: invalid JSON"),  # the wrong --format
    ([str(HISTORIES / "etcd_linearizable.log"), "--format", "jepsen-etcd", "--model", "set"],
     "jepsen-etcd is a register history"),
])
def test_an_unreadable_history_is_exit_2(capsys, args: list[str], message: str) -> None:
    code, out, err = check(capsys, *args)
    assert code == 2 and message in err and err.startswith("tessera check: ") and out == ""


def test_usage_errors_are_exit_2(capsys) -> None:
    assert check(capsys)[0] == 2
    assert check(capsys, "h.jsonl", "--model", "queue")[0] == 2
    assert check(capsys, "h.jsonl", "--time-limit", "0")[0] == 2


def test_an_undecided_check_is_exit_1(capsys, monkeypatch) -> None:
    monkeypatch.setattr("tools.checker.linearizability._PREPASS", False)
    code, out, _ = check(capsys, str(HISTORIES / "register_two_bad_keys.jsonl"), "--time-limit", "1e-9")
    assert code == 1 and "UNDECIDED" in out


def test_stdin(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((HISTORIES / "register_ok.jsonl").read_text()))
    code, out, _ = check(capsys, "-")
    assert code == 0 and "(-: 14 events, model register)" in out


@pytest.mark.parametrize("model", ["register", "set", "bank"])
def test_a_recorded_history_checks_offline_as_online(capsys, tmp_path, model: str) -> None:
    """What `tessera nemesis --history` writes reads back into the same verdicts."""
    rec = Recorder()
    ops = {
        "register": [Op(0, "invoke", "put", "1reg/0", "0.1", 1), Op(0, "ok", "put", "1reg/0", "0.1", 2),
                     Op(1, "invoke", "get", "1reg/0", None, 3), Op(1, "ok", "get", "1reg/0", "9.9", 4)],
        "set": [Op(0, "invoke", "put", "Aset/add/w0-1", "w0-1", 1), Op(0, "info", "put", "Aset/add/w0-1", "w0-1", 2),
                Op(FINAL_READER, "invoke", "get", "Aset/add/w0-1", None, 3),
                Op(FINAL_READER, "ok", "get", "Aset/add/w0-1", "w0-1", 4)],
        "bank": [Op(SETUP_PROCESS, "invoke", "transfer", "bank", {"deposit": {"a": 5, "b": 5}}, 1),
                 Op(SETUP_PROCESS, "ok", "transfer", "bank", {"deposit": {"a": 5, "b": 5}}, 2),
                 Op(FINAL_READER, "invoke", "read", "bank", None, 3),
                 Op(FINAL_READER, "ok", "read", "bank", {"a": 3, "b": 6}, 4)],
    }[model]
    rec.ops.extend(ops)
    online = [v.report() for v in check_workload(model, rec.ops)]
    path = tmp_path / "history.jsonl"
    rec.write(str(path))
    code, out, _ = check(capsys, str(path), "--model", model)
    assert out.splitlines()[:-1] == "\n".join(online).splitlines()
    assert code == (0 if model == "set" else 1)
