"""`tessera cluster up --auth` and the CLI with tokens (docs/auth.md), as a user runs them.

What must hold: ``--auth`` alone turns TLS on and says so; the bootstrap admin token is printed
on the cluster's first start and never again (a restart says it was printed, and the token
still works); ``--token`` and ``$TESSERA_TOKEN`` work; a refused command says "not
authenticated" (and how to give a token) or "permission denied", exits 1, and changes nothing;
``admin token create|list|revoke`` work and never show a secret twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import cluster_up

pytestmark = pytest.mark.timeout(240)

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")


def _up(data_dir: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`tessera cluster up --auth`, its output read up to the "try:" hint after the ready line."""
    return cluster_up.up(data_dir, "--auth", "--partitions", "1")


_stop = cluster_up.stop


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    return subprocess.run([TESSERA, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**clean, **env})


def test_cluster_up_auth_prints_the_admin_token_once_and_the_cli_uses_tokens(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    proc, lines = _up(data)
    try:
        text = "\n".join(lines)
        assert "--auth turns on --tls too" in text
        assert not any(line.startswith("plaintext") for line in lines), lines
        m = re.search(r"export TESSERA_TOKEN=(tsk_\S+)", text)
        assert m is not None, text
        admin = m.group(1)
        router = re.search(r"ready: router (\S+)", text).group(1)  # type: ignore[union-attr]
        d = Path(data) / "tls"
        certs = {"TESSERA_CA": str(d / "ca.pem"), "TESSERA_CERT": str(d / "client.pem"),
                 "TESSERA_KEY": str(d / "client.key"), "TESSERA_ROUTER": router}
        assert admin not in (Path(data) / "auth" / "bootstrap-admin.sha256").read_text()  # only its hash kept

        def kv(*args: str, token: str | None = None, flag: bool = False) -> subprocess.CompletedProcess[str]:
            env = dict(certs)
            extra: tuple[str, ...] = ()
            if token and flag:
                extra = ("--token", token)
            elif token:
                env["TESSERA_TOKEN"] = token
            return _run("kv", *args, *extra, "--timeout", "5", env=env)

        none = kv("put", "k", "stolen")
        assert none.returncode == 1 and "not authenticated" in none.stderr and "give --token" in none.stderr
        assert kv("put", "k", "v", token=admin).returncode == 0
        assert kv("put", "k2", "v2", token=admin, flag=True).returncode == 0

        made = _run("admin", "token", "create", "--role", "read", "--name", "ci reader",
                    env={**certs, "TESSERA_TOKEN": admin})
        assert made.returncode == 0, made.stderr
        reader = made.stdout.strip()
        assert reader.startswith("tsk_") and "shown once" in made.stderr
        assert "every node that is up will accept it" in made.stderr, made.stderr

        got = kv("get", "k", "--consistency", "linearizable", token=reader)
        assert (got.returncode, got.stdout) == (0, "v"), got.stderr
        denied = kv("put", "k", "overwritten", token=reader)
        assert denied.returncode == 1 and "permission denied" in denied.stderr and "needs role write" in denied.stderr
        low = _run("admin", "token", "list", env={**certs, "TESSERA_TOKEN": reader})
        assert low.returncode == 1 and "permission denied" in low.stderr, low.stderr

        listed = _run("admin", "token", "list", env={**certs, "TESSERA_TOKEN": admin})
        assert listed.returncode == 0, listed.stderr
        assert "ci reader" in listed.stdout and "bootstrap" in listed.stdout
        assert reader not in listed.stdout and admin not in listed.stdout

        revoked = _run("admin", "token", "revoke", "2", env={**certs, "TESSERA_TOKEN": admin})
        assert revoked.returncode == 0 and "token 2 revoked" in revoked.stdout, revoked.stderr
        gone = kv("get", "k", token=reader)
        assert gone.returncode == 1 and "not authenticated" in gone.stderr and "revoked" in gone.stderr

        plain = _run("kv", "get", "k", "--token", admin, env={"TESSERA_ROUTER": router})
        assert plain.returncode == 2 and "--token needs TLS" in plain.stderr

        got = kv("get", "k", "--consistency", "linearizable", token=admin)
        assert (got.returncode, got.stdout) == (0, "v"), got.stderr  # the refused put changed nothing

        _stop(proc, data)
        proc, lines = _up(data)  # the same data dir: the token is not printed again
        text = "\n".join(lines)
        assert "TESSERA_TOKEN=tsk_" not in text and "printed at this cluster's first start" in text
        router = re.search(r"ready: router (\S+)", text).group(1)  # type: ignore[union-attr]
        certs["TESSERA_ROUTER"] = router
        got = kv("get", "k2", "--consistency", "linearizable", token=admin)
        assert (got.returncode, got.stdout) == (0, "v2"), got.stderr
    finally:
        if proc.poll() is None:
            _stop(proc, data)
