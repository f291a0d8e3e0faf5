"""The tessera command line parsed in-process: exit statuses, defaults from the environment."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest


def test_main_returns_exit_status_in_process(capsys):
    from tools.cli import main

    assert main(["--help"]) == 0
    assert main(["simulate", "--mutation", "bogus"]) == 2


def test_router_default_comes_from_environment(monkeypatch, root_logger):
    from tools import cli

    seen = []

    def record(args):
        seen.append(args.router)
        return 2

    # main() builds a fresh parser each call, which picks up the patched handler.
    monkeypatch.setattr(cli, "_admin", record)
    monkeypatch.setattr(cli, "_kv", record)
    monkeypatch.setenv("TESSERA_ROUTER", "router.example:7000")
    cli.main(["kv", "get", "x"])
    monkeypatch.delenv("TESSERA_ROUTER")
    cli.main(["admin", "stores"])
    monkeypatch.setattr(cli, "_bench", record)
    cli.main(["bench", "--workload", "c", "--router", "h:1"])
    assert seen == ["router.example:7000", cli.DEFAULT_ROUTER, "h:1"]


def test_nemesis_faults_are_the_schedule_kinds():
    from tools.cli import build_parser
    from tools.nemesis import schedule

    parser = build_parser()
    every = ",".join(schedule.KINDS)
    assert parser.parse_args(["nemesis", "--faults", every]).faults == list(schedule.KINDS)
    assert parser.parse_args(["nemesis"]).faults == ["kill", "pause", "partition"]
    for bad in ("meteor", "kill,meteor", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["nemesis", "--faults", bad])


def test_router_flag_defaults_are_the_placement_defaults():
    from router.main import config_from_args
    from router.placement.config import PlacementConfig
    from tools.cli import build_parser

    assert config_from_args(build_parser().parse_args(["router"])) == PlacementConfig()


def test_log_level_flag_is_passed_on_to_every_child():
    from tools.cli import build_parser
    from tools.cluster import Cluster, Proc

    parser = build_parser()
    for argv in (["node"], ["router"], ["cluster", "up"], ["nemesis"], ["bench", "--workload", "c"]):
        assert parser.parse_args(argv).log_level == "info"
        assert parser.parse_args([*argv, "--log-level", "WARNING"]).log_level == "warning"
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--log-level", "verbose"])
    cluster = Cluster(root="/nonexistent", log_level="debug")
    cluster.router_procs[1] = cluster.router = Proc("router", [], "/dev/null", address="127.0.0.1:1")
    assert "--log-level debug" in " ".join(cluster._router_argv(1, {1: 0}))
    assert "--log-level debug" in " ".join(cluster._node_argv(1, 0))


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--failover"], "--failover needs --local"),
        (["--failover", "--local", "--procs", "2"], "--failover runs one client process"),
        (["--concurrency", "2", "--procs", "3"], "--concurrency 2 is fewer workers than --procs 3"),
        (["--local", "--target", "tessera://h:1"], "--local starts its own cluster"),
        (["--target", "etcd"], "--target etcd names no address"),
        (["--target", "redis://h:1"], "unknown scheme 'redis'"),
        (["--target", "tessera://nohost"], "'nohost' is not HOST:PORT"),
    ],
)
def test_bench_refuses_flags_that_cannot_work_together(capsys, root_logger, argv, says):
    """Checked before anything starts (no cluster, no connection): exit 2 naming the flag."""
    from tools.cli import main

    assert main(["bench", "--workload", "write", *argv]) == 2
    assert says in capsys.readouterr().err


def test_bench_plot_without_matplotlib_is_refused_before_the_run(capsys, root_logger, monkeypatch):
    import sys

    from tools.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when absent
    # No cluster at the (default) router: the refusal has to come before any connection.
    assert main(["bench", "--workload", "c", "--plot", "latency.png"]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """(command path, its option strings) for the parser and every subcommand under it."""
    options = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
    yield path, options
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_docs_cli_md_names_every_command_and_flag():
    from conftest import REPO
    from tools.cli import build_parser

    doc = (REPO / "docs" / "cli.md").read_text()

    def mentions(word: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", doc) is not None

    missing = []
    for path, options in _commands(build_parser()):
        if (path and f"## `tessera {path[0]}" not in doc) or (path[1:] and not mentions(path[-1])):
            missing.append(" ".join(path))
        missing += [f"{' '.join(path)} {o}".strip() for o in options if not mentions(o)]
    assert not missing, f"docs/cli.md does not mention: {missing}"


def test_version_is_printed_on_request(capsys):
    from tools.cli import main

    assert main(["--version"]) == 0
    assert re.fullmatch(r"tessera \S+\n", capsys.readouterr().out)


def test_router_group_flags_are_checked_before_anything_starts(capsys):
    from router.main import _check_args, parse_peers
    from tools.cli import build_parser

    def problem(*argv: str) -> str | None:
        return _check_args(build_parser().parse_args(["router", *argv]))

    assert parse_peers("2=h:2, 3=h:3") == {2: "h:2", 3: "h:3"}
    assert problem("--id", "1", "--peers", "2=h:2,3=h:3") is None
    assert "names this router (2)" in (problem("--id", "2", "--peers", "2=h:2") or "")
    assert "at most 7 routers, got 8" in (problem("--peers", ",".join(f"{i}=h:{i}" for i in range(2, 9))) or "")
    for bad in ("2", "x=h:1", "2=h:1,2=h:2"):
        assert (problem("--peers", bad) or "").startswith("--peers:"), bad
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cluster", "up", "--routers", "8"])
    assert "in [1, 7]" in capsys.readouterr().err


def test_tls_flags_go_anywhere_and_admin_partitions_key_keeps_its_meaning():
    from tools.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["kv", "--ca", "ca.pem", "get", "x", "--cert", "c.pem", "--key", "c.key"])
    assert (a.tls_ca, a.tls_cert, a.tls_key) == ("ca.pem", "c.pem", "c.key")
    b = parser.parse_args(["admin", "partition", "--key", "user:1", "--tls-key", "c.key", "--ca", "ca.pem"])
    assert (b.key, b.tls_key, b.tls_ca) == ("user:1", "c.key", "ca.pem")
    n = parser.parse_args(["node", "--store-id", "1", "--ca", "ca.pem", "--cert", "n.pem", "--key", "n.key"])
    assert (n.tls_ca, n.tls_cert, n.tls_key) == ("ca.pem", "n.pem", "n.key")
    assert parser.parse_args(["router"]).tls_ca is None
    assert parser.parse_args(["cluster", "up", "--tls"]).tls is True


def test_incomplete_tls_flags_and_bench_tls_without_local_are_usage_errors(capsys, monkeypatch, root_logger):
    from tools.cli import main

    for var in ("TESSERA_CA", "TESSERA_CERT", "TESSERA_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["kv", "get", "x", "--ca", "ca.pem"]) == 2
    assert "tessera kv get: TLS needs --ca, --cert and --key together" in capsys.readouterr().err
    monkeypatch.setenv("TESSERA_CERT", "c.pem")
    assert main(["admin", "stores", "--ca", "ca.pem"]) == 2
    assert "missing --key" in capsys.readouterr().err
    assert main(["bench", "--workload", "write", "--tls"]) == 2
    assert "--tls needs --local" in capsys.readouterr().err
    assert main(["bench", "--workload", "write", "--local", "--tls", "--target", "etcd"]) == 2
    assert "--tls applies to a local Tessera cluster only" in capsys.readouterr().err
