"""The installed ``tessera`` console script keeps the command-line contract (docs/cli.md).

These run the real entry point that ``make dev`` installs next to the interpreter
(``.venv/bin/tessera``) as a subprocess, so they also catch a broken install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("node", "router", "cluster", "kv", "admin", "bench", "simulate", "nemesis")


def _tessera_path() -> Path:
    path = Path(sys.executable).parent / "tessera"
    if not path.exists():
        pytest.fail(
            f"no tessera console script next to {sys.executable}; run the suite with `make test` "
            "(or `make dev` first and use .venv/bin/python -m pytest)"
        )
    return path


def tessera(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_tessera_path()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_help_lists_every_subcommand():
    result = tessera("--help")
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert f"    {name} " in result.stdout, f"{name!r} missing from --help:\n{result.stdout}"


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "--help"],
        ["router", "--help"],
        ["cluster", "up", "--help"],
        ["kv", "get", "--help"],
        ["admin", "partitions", "--help"],
        ["bench", "--help"],
        ["simulate", "--help"],
        ["nemesis", "--help"],
    ],
)
def test_every_subcommand_has_help(argv):
    result = tessera(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tessera " + argv[0])


def test_contract_flags_appear_in_help():
    up = tessera("cluster", "up", "--help").stdout
    for flag in ("--nodes", "--routers", "--partitions", "--data-dir", "--base-port", "--max-down"):
        assert flag in up
    bench = tessera("bench", "--help").stdout
    for flag in ("--workload", "--concurrency", "--duration", "--keys", "--value-size",
                 "--partitions", "--consistency", "--json", "--plot", "--router"):
        assert flag in bench
    simulate = tessera("simulate", "--help").stdout
    for flag in ("--seeds", "--start", "--mutation", "--workers", "--verbose"):
        assert flag in simulate
    nemesis = tessera("nemesis", "--help").stdout
    for flag in ("--duration", "--faults", "--workload", "--seed", "--history"):
        assert flag in nemesis


def test_kv_get_reports_unreachable_router():
    result = tessera("kv", "--router", "127.0.0.1:9", "--timeout", "1", "get", "x")
    assert result.returncode == 1
    assert "cannot reach the router" in result.stderr
    assert result.stdout == ""


def test_router_flag_accepted_before_and_after_subcommand():
    for argv in (["kv", "--router", "127.0.0.1:9", "--timeout", "1", "get", "x"],
                 ["kv", "get", "x", "--timeout", "1", "--router", "127.0.0.1:9"]):
        result = tessera(*argv)
        assert result.returncode == 1 and "127.0.0.1:9" in result.stderr, result.stderr


def test_node_requires_store_id():
    result = tessera("node", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "--store-id" in result.stderr


def test_unknown_mutations_are_refused_with_the_list_of_known_ones():
    result = tessera("simulate", "--seeds", "1", "--mutation", "bogus")
    assert result.returncode == 2
    assert "--mutation: unknown mutation 'bogus'" in result.stderr
    for name in ("commit-previous-term", "vote-ignores-log", "vote-not-persisted", "apply-uncommitted",
                 "learner-votes"):
        assert name in result.stderr
    result = tessera("node", "--store-id", "1", "--raft-mutation", "vote-not-persisted")
    # A driver bug of the simulator, not a bug the core can run.
    assert result.returncode == 2 and "unknown mutation 'vote-not-persisted'" in result.stderr


def test_fsync_is_noop_only_with_unsynced_is_lost():
    result = tessera("node", "--store-id", "1", "--testing-fsync-is-noop")
    assert result.returncode == 2 and "needs --testing-unsynced-is-lost" in result.stderr


def test_simulate_requires_seeds():
    result = tessera("simulate")
    assert result.returncode == 2
    assert "--seeds" in result.stderr


def test_no_command_prints_usage_and_fails():
    result = tessera()
    assert result.returncode == 2
    assert "usage: tessera" in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dev_is_a_no_op_when_up_to_date():
    # `make -q` runs nothing and exits 0 only if every target is up to date. The environment
    # drops the outer make's variables (this suite usually runs under `make test`).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    if not (REPO / ".venv" / ".installed").exists():
        pytest.skip("no .venv built by `make dev` in this work tree")
    result = subprocess.run(["make", "-q", "dev"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (
        "`make dev` would rebuild something right after `make dev`:\n"
        + subprocess.run(["make", "-n", "dev"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60, check=False).stdout
    )


def test_a_production_start_never_loads_the_test_only_mutations_or_files():
    probe = (
        "import sys, tools.cli, node.server, router.main\n"
        "args = tools.cli.build_parser().parse_args(['node', '--store-id', '1'])\n"
        "assert node.server._files(args) is node.server.OS_FILES\n"
        "print(sorted(m for m in sys.modules if 'mutation' in m or 'unsynced_lost' in m))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
