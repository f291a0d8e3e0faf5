"""A local etcd cluster of real processes: what the bench compares Tessera with.

:class:`EtcdCluster` starts ``members`` etcd servers (the ``etcd`` on PATH; Debian's package
is ``etcd-server``) on loopback, each with its own data directory under ``root`` and its log in
``ROOT/logs/NAME.log``, bootstrapped statically (``--initial-cluster``). It implements the
bench's :class:`tools.bench.driver.LocalTarget`: ``target``, ``leader_for``, ``leaders``,
``kill``, ``restart``, ``elections``, ``stop``.

Flags are etcd's defaults wherever a benchmark could be swayed: heartbeat 100 ms, election
timeout 1000 ms, the default backend quota, the default snapshot count, and fsync on every
commit (etcd 3.4 has no switch to turn it off). Only addresses, names, directories, the cluster
token and logging are set.

Orphans: each member is started through ``python tools/lifecycle.py etcd ...``, which sets
PR_SET_PDEATHSIG and then execs etcd in the same process, so a launcher killed with SIGKILL
takes its members with it, as :class:`tools.cluster.Cluster` does for Tessera's processes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import grpc

from tesserapb import etcd_rpc_pb2, etcd_rpc_pb2_grpc
from tools import lifecycle
from tools.cluster import free_port
from tools.lifecycle import PARENT_ENV

_LEADER_CHANGES = re.compile(rb"^etcd_server_leader_changes_seen_total\s+(\S+)", re.MULTILINE)
# Tessera's log level words -> etcd's (--log-level takes debug, info, warn, error, panic, fatal).
_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "warn": "warn", "error": "error",
               "critical": "fatal"}


class EtcdNotInstalled(RuntimeError):
    """There is no ``etcd`` on PATH."""

    def __init__(self) -> None:
        super().__init__("etcd is not installed (no `etcd` on PATH); on Debian/Ubuntu: "
                         "apt-get install etcd-server (etcd 3.4 or later)")


def etcd_binary() -> str:
    """The path of ``etcd``, or :class:`EtcdNotInstalled`."""
    path = shutil.which("etcd")
    if path is None:
        raise EtcdNotInstalled()
    return path


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    popen: subprocess.Popen[bytes] | None = None
    member_id: int = 0  # etcd's id for it, learnt from its Status header

    @property
    def client_address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class EtcdCluster:
    root: str
    members: int = 3
    log_level: str = "info"
    member_procs: dict[str, Member] = field(default_factory=dict)
    _token: str = field(default_factory=lambda: f"tessera-bench-{uuid.uuid4().hex[:12]}")
    _elections_at_start: int = 0
    _elections_seen: int = 0

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until the cluster has a leader (:meth:`wait_ready`)."""
        binary = etcd_binary()
        try:
            os.makedirs(os.path.join(self.root, "logs"), exist_ok=True)
            for i in range(1, self.members + 1):
                name = f"etcd{i}"
                self.member_procs[name] = Member(
                    name, free_port(), free_port(), os.path.join(self.root, name),
                    os.path.join(self.root, "logs", f"{name}.log"),
                )
            for m in self.member_procs.values():
                self._spawn(binary, m, "new")
            self.wait_ready(timeout)
            self._elections_at_start = self._elections_seen = self._leader_changes_seen()
        except BaseException:
            self.stop()
            raise

    def _argv(self, binary: str, m: Member, state: str) -> list[str]:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.member_procs.values())
        client_url = f"http://{m.client_address}"
        return [
            sys.executable, lifecycle.__file__, binary,
            "--name", m.name,
            "--data-dir", m.data_dir,
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-token", self._token,
            "--initial-cluster-state", state,
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", _LOG_LEVELS.get(self.log_level.lower(), "info"),
        ]

    def _spawn(self, binary: str, m: Member, state: str) -> None:
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        with open(m.log_path, "ab") as log:
            m.popen = subprocess.Popen(self._argv(binary, m, state), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env, cwd=self.root)

    def _status(self, m: Member, timeout: float = 1.0) -> etcd_rpc_pb2.StatusResponse:
        with grpc.insecure_channel(m.client_address) as ch:
            reply: etcd_rpc_pb2.StatusResponse = etcd_rpc_pb2_grpc.MaintenanceStub(ch).Status(
                etcd_rpc_pb2.StatusRequest(), timeout=timeout)
        m.member_id = reply.header.member_id
        return reply

    def _leader(self) -> Member | None:
        """The member that says it leads (its own id is the leader it names), or None."""
        for m in self.member_procs.values():
            if not m.alive:
                continue
            try:
                st = self._status(m)
            except grpc.RpcError:
                continue
            if st.leader and st.leader == st.header.member_id:
                return m
        return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until a live member leads and every live member answers Status. A member that exited
        is reported with the end of its log."""
        deadline = time.monotonic() + timeout
        last = "no member answered"
        while time.monotonic() < deadline:
            for m in self.member_procs.values():
                if m.popen is not None and m.popen.poll() is not None:
                    raise RuntimeError(f"{m.name} exited (status {m.popen.returncode}; log {m.log_path}): "
                                       f"{_tail(m.log_path)}")
            try:
                for m in self.member_procs.values():
                    if m.alive:
                        self._status(m)
                leader = self._leader()
                if leader is not None:
                    return
                last = "no leader yet"
            except grpc.RpcError as exc:
                last = f"Status: {exc.code().name}"
            time.sleep(0.1)
        raise TimeoutError(f"etcd cluster not ready after {timeout:g} s: {last}")

    def stop(self, grace: float = 0.0) -> None:
        """Stop every member and reap it: SIGKILL at once by default (the cluster is thrown away,
        and a graceful etcd shutdown first hands leadership over, which takes seconds with every
        member leaving at once); with ``grace`` > 0, SIGTERM first and SIGKILL after ``grace``."""
        running = [m.popen for m in self.member_procs.values() if m.popen is not None and m.popen.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for p in running:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- LocalTarget ----------------------------------------------------------------

    @property
    def target(self) -> str:
        return "etcd://" + ",".join(m.client_address for m in self.member_procs.values())

    @property
    def endpoints(self) -> list[str]:
        return [m.client_address for m in self.member_procs.values()]

    def leader_for(self, key: bytes) -> str:
        """etcd has one Raft group: the leader leads every key. Waits up to 10 s for one."""
        deadline = time.monotonic() + 10
        while True:
            leader = self._leader()
            if leader is not None:
                return leader.name
            if time.monotonic() > deadline:
                raise TimeoutError("the etcd cluster has no leader")
            time.sleep(0.05)

    def leaders(self) -> dict[str, int]:
        return {self.leader_for(b""): 1}

    def kill(self, member: str) -> None:
        """SIGKILL ``member`` and reap it."""
        p = self.member_procs[member].popen
        assert p is not None
        p.kill()
        p.wait()

    def restart(self, member: str, timeout: float = 30.0) -> None:
        """Start ``member`` again on its data dir and ports; it rejoins the running cluster.
        Waits until it answers Status."""
        m = self.member_procs[member]
        if m.alive:
            raise RuntimeError(f"{member} is running")
        self._spawn(etcd_binary(), m, "existing")
        deadline = time.monotonic() + timeout
        while True:
            if m.popen is not None and m.popen.poll() is not None:
                raise RuntimeError(f"{member} exited on restart (status {m.popen.returncode}): {_tail(m.log_path)}")
            try:
                self._status(m)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def move_leader(self, to: str, timeout: float = 10.0) -> None:
        """Ask the leader to hand leadership to member ``to`` (etcd's MoveLeader) and wait until
        ``to`` says it leads."""
        target = self.member_procs[to]
        if not target.member_id:
            self._status(target)
        leader = self.member_procs[self.leader_for(b"")]
        if leader is not target:
            with grpc.insecure_channel(leader.client_address) as ch:
                etcd_rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(
                    etcd_rpc_pb2.MoveLeaderRequest(targetID=target.member_id), timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.leader_for(b"") != to:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{to} does not lead {timeout:g} s after MoveLeader")
            time.sleep(0.05)

    def elections(self) -> int:
        """Leader changes since :meth:`start` finished: the highest
        ``etcd_server_leader_changes_seen_total`` any live member has reported (a restarted
        member counts from 0 again, so the highest value ever seen is kept), less its value then."""
        self._elections_seen = max(self._elections_seen, self._leader_changes_seen())
        return self._elections_seen - self._elections_at_start

    def _leader_changes_seen(self) -> int:
        seen = 0
        for m in self.member_procs.values():
            if not m.alive:
                continue
            try:
                with urllib.request.urlopen(f"http://{m.client_address}/metrics", timeout=2) as r:
                    text = r.read()
            except OSError:
                continue
            if found := _LEADER_CHANGES.search(text):
                seen = max(seen, int(float(found.group(1))))
        return seen

    def pids(self) -> dict[str, int]:
        """Each live member's process id (for CPU and memory readings)."""
        return {m.name: m.popen.pid for m in self.member_procs.values() if m.popen is not None and m.alive}


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            said = [ln.decode(errors="replace").strip() for ln in f.read().splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(said[-lines:]) or "(it printed nothing)"
