"""Stand-ins for the nemesis's cluster and network, so its fault executor runs without processes."""

from __future__ import annotations


class FakeNet:
    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], str]] = []

    def set(self, pairs, mode, delay_s=0.0):  # type: ignore[no-untyped-def]
        self.calls.append((sorted(pairs), mode))

    def heal(self) -> None:
        self.calls.append(([], "heal"))


class FakeProc:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path


class FakeCluster:
    router = None

    def __init__(self, tmp_path, nodes: int = 3) -> None:  # type: ignore[no-untyped-def]
        self.node_procs = {n: FakeProc(str(tmp_path / f"node{n}.log")) for n in range(1, nodes + 1)}


def fake_nemesis(tmp_path, nodes: int = 3):  # type: ignore[no-untyped-def]
    from tools.nemesis.faults import Nemesis

    files = {n: str(tmp_path / f"f{n}.json") for n in range(1, nodes + 1)}
    return Nemesis(FakeCluster(tmp_path, nodes), FakeNet(), files, [11, 12, 13, 14], log=lambda _line: None)  # type: ignore[arg-type]
