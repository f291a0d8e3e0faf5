"""``tessera kv`` and ``tessera router`` as a user runs them: real processes, real ports.

Without storage nodes the kv commands can only fail, so these check that each failure names
its cause and exits with the contract's status: an unreachable router, a cluster that is not
bootstrapped, nodes that do not answer (a write's outcome is unknown), bad input (exit 2).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from router.testing import LISTENING, RouterProcess
from tesserapb import meta_pb2, meta_pb2_grpc

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def tessera(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "tessera"
    if not exe.exists():
        pytest.skip("no tessera console script next to the interpreter; run `make dev`")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=30, cwd=REPO, check=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    r = RouterProcess(tmp_path / "router", extra_args=("--partitions", "4")).start()
    yield r
    r.kill()


def bootstrap_with_dead_nodes(router: RouterProcess) -> None:
    with grpc.insecure_channel(router.address) as ch:
        meta = meta_pb2_grpc.MetaStub(ch)
        for _ in range(3):
            meta.StoreHeartbeat(meta_pb2.StoreHeartbeatRequest(address=f"127.0.0.1:{closed_port()}"), timeout=5)
        assert len(meta.ScanPartitions(meta_pb2.ScanPartitionsRequest(), timeout=5).partitions) == 4


def test_unreachable_router_says_so():
    addr = f"127.0.0.1:{closed_port()}"
    result = tessera("kv", "get", "x", "--router", addr, "--timeout", "1")
    assert result.returncode == 1
    assert f"cannot reach the router at {addr}" in result.stderr
    assert result.stdout == ""


def test_router_without_partitions_says_not_bootstrapped(router):
    result = tessera("kv", "--router", router.address, "put", "k", "v", "--timeout", "1")
    assert result.returncode == 1
    assert "no partition for the key" in result.stderr and "not bootstrapped" in result.stderr


def test_unanswered_write_reports_unknown_outcome(router):
    bootstrap_with_dead_nodes(router)
    result = tessera("kv", "put", "k", "v", "--router", router.address, "--timeout", "1")
    assert result.returncode == 1
    assert "timed out" in result.stderr and "may or may not have been applied" in result.stderr
    assert result.stderr.count("\n") == 1  # one line


def test_bad_input_exits_2_naming_the_field(router, monkeypatch):
    monkeypatch.setenv("TESSERA_ROUTER", router.address)
    result = tessera("kv", "scan", "b", "a")
    assert result.returncode == 2
    assert "invalid argument" in result.stderr and "end" in result.stderr
    assert tessera("kv", "get", "k", "--consistency", "eventual").returncode == 2


def test_tessera_router_serves_and_stops_on_sigint(tmp_path):
    exe = Path(sys.executable).parent / "tessera"
    if not exe.exists():
        pytest.skip("no tessera console script; run `make dev`")
    proc = subprocess.Popen([str(exe), "router", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "r"),
                             "--partitions", "2", "--replicas", "1", "--store-down-after", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None  # both piped
    try:
        line = proc.stdout.readline()
        assert line.startswith(LISTENING), (line, proc.stderr.read() if proc.poll() is not None else "")
        address = line[len(LISTENING):].strip()
        with grpc.insecure_channel(address) as ch:
            meta = meta_pb2_grpc.MetaStub(ch)
            hb = meta.StoreHeartbeat(meta_pb2.StoreHeartbeatRequest(address="127.0.0.1:1"), timeout=5)
            # --replicas 1: one store is enough to bootstrap.
            assert hb.store_id == 1 and len(hb.operations) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert (tmp_path / "r" / "placement.json").exists()
