"""The consensus core stays sans-I/O: no module under node/raft imports I/O, time or randomness."""

from __future__ import annotations

import ast
import pathlib

FORBIDDEN = {"asyncio", "grpc", "socket", "time", "random", "threading", "os", "select", "selectors"}
CORE = pathlib.Path(__file__).resolve().parents[3] / "node" / "raft"


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_no_io_time_or_randomness() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        bad = _imports(f) & FORBIDDEN
        assert not bad, f"{f.name} imports {sorted(bad)}"
