"""``tessera kv put KEY`` and ``kv put KEY -`` read the value from stdin, byte for byte, against
a real cluster; ``kv get`` gives the same bytes back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tools.cluster import Cluster

pytestmark = pytest.mark.timeout(180)

TESSERA = os.path.join(os.path.dirname(sys.executable), "tessera")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real cluster (free ports) for the module; stopped and removed afterwards."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(root=str(root), partitions=2, base_port=0)
    try:
        cluster.start()
        cluster.wait_ready(60)
        assert cluster.router is not None
        yield cluster.router.address
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def kv(router: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([TESSERA, "kv", *args, "--router", router], input=stdin,
                          capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("how", [(), ("-",)], ids=["value-omitted", "value-dash"])
def test_put_reads_binary_value_from_stdin_byte_exact(router: str, how: tuple[str, ...]) -> None:
    value = b"\x00bin\x00ary \xff\xfe\r\n" + os.urandom(64 * 1024) + b"\n"  # NULs, not UTF-8, trailing newline
    key = f"stdin/{'-'.join(how) or 'omitted'}"
    put = kv(router, "put", key, *how, stdin=value)
    assert put.returncode == 0 and put.stdout == b"OK\n", put.stderr
    got = kv(router, "get", key, "--consistency", "linearizable")
    assert got.returncode == 0, got.stderr
    assert got.stdout == value


def test_put_of_empty_stdin_stores_the_empty_value(router: str) -> None:
    assert kv(router, "put", "stdin/empty", "full").returncode == 0
    assert kv(router, "put", "stdin/empty", stdin=b"").returncode == 0
    got = kv(router, "get", "stdin/empty")
    assert got.returncode == 0 and got.stdout == b""
