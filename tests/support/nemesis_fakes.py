"""Stand-ins for the nemesis's cluster and network, so its fault executor runs without processes.

:func:`nemesis_over` builds a :class:`~tools.nemesis.faults.Nemesis` over one of the fake
clusters and a :class:`FakeNet`, and hands back both: the test asserts on the network changes
the nemesis made (``net.calls``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tools.nemesis.faults import Nemesis


class FakeNet:
    """Records every change to the network, in order: ``(sorted links, mode)``, ``([], "heal")``."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], str]] = []

    def set(self, pairs: Iterable[tuple[int, int]], mode: str, delay_s: float = 0.0) -> None:
        self.calls.append((sorted(pairs), mode))

    def heal(self) -> None:
        self.calls.append(([], "heal"))


class FakeProc:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path


class FakeCluster:
    """Nodes that never run (their logs stay empty) and no router."""

    router = None
    router_addresses = ""

    def __init__(self, tmp_path: Path, nodes: int = 3) -> None:
        self.router_procs: dict[int, FakeProc] = {}
        self.node_procs = {n: FakeProc(str(tmp_path / f"node{n}.log")) for n in range(1, nodes + 1)}


class LiveProc:
    """A process that is up at ``address``: a fake server the test serves on loopback."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.alive = True
        self.log_path = "/dev/null"


class LiveCluster:
    """A router and nodes that the test serves as fakes, at these addresses."""

    def __init__(self, router: str, addresses: dict[int, str]) -> None:
        self.router = LiveProc(router)
        self.router_procs = {1: self.router}
        self.router_addresses = router
        self.node_procs = {n: LiveProc(a) for n, a in addresses.items()}


def nemesis_over(
    cluster: FakeCluster | LiveCluster, partitions: list[int], fault_files: dict[int, str] | None = None
) -> tuple[Nemesis, FakeNet]:
    """A nemesis over ``cluster`` and a fresh :class:`FakeNet` (also returned), logging nowhere."""
    net = FakeNet()
    # Nemesis's fields are typed as the real tools.cluster.Cluster and ProxyNet, not as what it
    # uses of them; these fakes have that much, no more.
    nem = Nemesis(cluster, net, fault_files or {}, partitions, log=lambda _line: None)  # type: ignore[arg-type]
    return nem, net


def fake_nemesis(tmp_path: Path, nodes: int = 3) -> tuple[Nemesis, FakeNet]:
    """A nemesis over a :class:`FakeCluster` of ``nodes`` nodes, with a fault file per node under ``tmp_path``."""
    files = {n: str(tmp_path / f"f{n}.json") for n in range(1, nodes + 1)}
    return nemesis_over(FakeCluster(tmp_path, nodes), [11, 12, 13, 14], files)
