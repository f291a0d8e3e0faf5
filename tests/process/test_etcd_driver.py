"""The bench's etcd side against a real etcd: tools/etcd_cluster.py and tools/bench/etcd_driver.py.

Needs the ``etcd`` binary (Debian: etcd-server); every test that starts one is skipped, saying
so, when it is not on PATH. Each test starts its own 3-member cluster (about a second) in a temp
directory and stops it afterwards, checking that no member process is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from conftest import REPO, eventually, eventually_async
from tools.bench.driver import DriverError
from tools.bench.etcd_driver import EtcdDriver, endpoints_of
from tools.etcd_cluster import EtcdCluster, EtcdNotInstalled

pytestmark = pytest.mark.timeout(120)

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (no `etcd` on PATH; Debian package etcd-server)")


def _gone(pid: int) -> bool:
    """The process is gone or a zombie (exited, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture()
def etcd() -> Iterator[EtcdCluster]:
    root = tempfile.mkdtemp(prefix="tessera-etcd-test-")
    cluster = EtcdCluster(root, members=3, log_level="warning")
    try:
        cluster.start(timeout=30)
        yield cluster
    finally:
        pids = list(cluster.pids().values())
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert all(_gone(pid) for pid in pids), "stop() left an etcd member running"


@needs_etcd
def test_put_get_scan_and_cas_semantics(etcd: EtcdCluster) -> None:
    async def run() -> None:
        d = EtcdDriver.from_target(etcd.target)
        try:
            assert await d.get(b"k", "linearizable", 5) is None
            await d.put(b"k", b"v1", 5)
            first = await d.get(b"k", "linearizable", 5)
            assert first is not None and first.value == b"v1" and first.version > 0
            # Serializable reads (lease, stale) see it too: they go to the leader, which applied it.
            for consistency in ("lease", "stale"):
                read = await d.get(b"k", consistency, 5)
                assert read == first, consistency

            # cas: the right version wins and moves the version; a stale or wrong one loses.
            assert await d.cas(b"k", first.version, b"v2", 5) is True
            second = await d.get(b"k", "linearizable", 5)
            assert second is not None and second.value == b"v2" and second.version > first.version
            assert await d.cas(b"k", first.version, b"v3", 5) is False
            assert await d.cas(b"k", second.version + 1000, b"v3", 5) is False
            assert await d.cas(b"k", 0, b"v3", 5) is False  # 0 means absent; it is not
            assert (await d.get(b"k", "linearizable", 5)) == second
            # Create-if-absent.
            assert await d.cas(b"new", 0, b"n1", 5) is True
            assert await d.cas(b"new", 0, b"n2", 5) is False
            created = await d.get(b"new", "linearizable", 5)
            assert created is not None and created.value == b"n1"
            # A version on an absent key fails.
            assert await d.cas(b"absent", 1, b"x", 5) is False
            assert await d.get(b"absent", "linearizable", 5) is None

            # scan: from start on, in key order, up to limit.
            for i in range(20):
                await d.put(b"s%03d" % i, b"x", 5)
            assert await d.scan(b"s000", 5, "linearizable", 5) == 5
            assert await d.scan(b"s015", 100, "lease", 5) == 5  # s015..s019; nothing sorts after "s"
            assert await d.scan(b"s", 1000, "linearizable", 5) == 20
            assert await d.scan(b"", 1000, "linearizable", 5) == 22  # k, new and the 20
            assert await d.scan(b"t", 10, "linearizable", 5) == 0
            assert d.leader_endpoint == etcd.member_procs[etcd.leader_for(b"")].client_address
        finally:
            await d.close()

    asyncio.run(run())


@needs_etcd
def test_the_driver_follows_the_leader_after_it_is_killed(etcd: EtcdCluster) -> None:
    async def run() -> None:
        d = EtcdDriver(etcd.endpoints)
        try:
            await d.put(b"before", b"1", 5)
            old = etcd.leader_for(b"")
            assert d.leader_endpoint == etcd.member_procs[old].client_address
            etcd.kill(old)
            killed_at = time.monotonic()

            async def write() -> bool:
                try:
                    await d.put(b"after", b"2", 2)
                    return True
                except DriverError:
                    return False

            await eventually_async(write, 15, "a put through the driver after the leader was killed")
            recovered = time.monotonic() - killed_at
            new = etcd.leader_for(b"")
            assert new != old
            assert d.leader_endpoint == etcd.member_procs[new].client_address
            assert d.leader_changes >= 1  # more under load: an election may take two terms
            got = await d.get(b"after", "linearizable", 5)
            assert got is not None and got.value == b"2", got
            assert recovered < 15
            # The leader change shows in etcd's own count.
            assert etcd.elections() >= 1

            # The old leader comes back as a follower on its data and sees everything.
            etcd.restart(old)
            assert etcd.member_procs[old].alive
            assert await d.get(b"after", "lease", 5) is not None
        finally:
            await d.close()

    asyncio.run(run())


@needs_etcd
def test_the_driver_follows_a_leader_that_moved_without_an_error(etcd: EtcdCluster) -> None:
    """After MoveLeader the old leader still answers (it forwards writes to the new one); the
    driver must notice the newer term in the replies and move to the new leader itself."""

    async def run() -> None:
        d = EtcdDriver(etcd.endpoints)
        try:
            await d.put(b"k", b"0", 5)
            old = etcd.leader_for(b"")
            new = next(m for m in etcd.member_procs if m != old)
            etcd.move_leader(new)
            n = 0

            async def on_new_leader() -> bool:
                nonlocal n
                n += 1
                await d.put(b"k", b"%d" % n, 5)
                return d.leader_endpoint == etcd.member_procs[new].client_address

            await eventually_async(on_new_leader, 10, f"the driver sending to {new} after MoveLeader")
            assert n <= 3, f"it took {n} puts to move"
            assert d.leader_changes == 1
        finally:
            await d.close()

    asyncio.run(run())


@needs_etcd
def test_the_driver_leaves_a_leader_that_stopped_answering(etcd: EtcdCluster) -> None:
    """A leader frozen by SIGSTOP refuses nothing: calls to it time out. The driver must look
    for the leader again after a deadline, not keep sending to the frozen one."""

    async def run() -> None:
        d = EtcdDriver(etcd.endpoints)
        old = etcd.leader_for(b"")
        frozen = etcd.member_procs[old]
        assert frozen.popen is not None
        try:
            await d.put(b"before", b"1", 5)
            assert d.leader_endpoint == frozen.client_address
            frozen.popen.send_signal(signal.SIGSTOP)

            async def write() -> bool:
                try:
                    await d.put(b"after", b"2", 1.5)
                    return True
                except DriverError:
                    return False

            await eventually_async(write, 20, "a put through the driver while the old leader is frozen")
            assert d.leader_endpoint != frozen.client_address
        finally:
            frozen.popen.send_signal(signal.SIGCONT)
            await d.close()

    asyncio.run(run())


@needs_etcd
def test_errors_have_driver_kinds(etcd: EtcdCluster) -> None:
    async def run() -> None:
        d = EtcdDriver(etcd.endpoints)
        try:
            await d.put(b"k", b"v", 5)
            for m in list(etcd.member_procs):
                etcd.kill(m)
            with pytest.raises(DriverError) as err:
                await d.put(b"k", b"v", 1.0)
            assert err.value.kind in ("deadline", "not_leader", "unavailable"), err.value.kind
            with pytest.raises(DriverError) as err:
                await d.cas(b"k", 0, b"v", 1.0)
            assert err.value.kind in ("deadline", "not_leader", "unavailable"), err.value.kind
        finally:
            await d.close()

    asyncio.run(run())


@needs_etcd
def test_members_die_with_a_launcher_killed_by_sigkill(tmp_path) -> None:
    """PR_SET_PDEATHSIG through tools.lifecycle: no etcd outlives the process that started it."""
    script = (
        "import sys, time\n"
        "from tools.etcd_cluster import EtcdCluster\n"
        "c = EtcdCluster(sys.argv[1], log_level='warning')\n"
        "c.start()\n"
        "print(' '.join(str(p) for p in c.pids().values()), flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "etcd")], stdout=subprocess.PIPE,
                                cwd=str(REPO), text=True)
    try:
        assert launcher.stdout is not None
        pids = [int(p) for p in launcher.stdout.readline().split()]
        assert len(pids) == 3, pids
        assert not any(_gone(p) for p in pids)
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    try:
        eventually(lambda: all(_gone(p) for p in pids), 10, "every etcd member to exit after its launcher died")
    finally:
        for p in pids:  # should the test fail, leave nothing behind
            if not _gone(p):
                os.kill(p, signal.SIGKILL)


def test_no_etcd_on_path_is_a_clear_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EtcdNotInstalled, match="etcd-server"):
        EtcdCluster(str(tmp_path / "etcd")).start()


def test_targets_name_their_endpoints() -> None:
    assert endpoints_of("etcd://127.0.0.1:1,127.0.0.1:2") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert endpoints_of("http://h:1/, https://h:2") == ["h:1", "h:2"]
    with pytest.raises(ValueError):
        endpoints_of("etcd://")
