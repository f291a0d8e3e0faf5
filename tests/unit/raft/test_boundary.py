"""The consensus core has one door: ``node.raft``'s exports, with RawNode as the driver's handle.

Everything outside ``node/raft/`` (the node, the router, the tools, the other tests) may use only
what ``node/raft/__init__.py`` exports, never a module behind it (``node.raft.raft``,
``node.raft.log``...), and never the ``Raft`` object a RawNode wraps. Only the core's own
white-box tests, in this folder, may look further in. Checked on the source with ``ast``, so a
violation anywhere in the tree fails here whether or not anything imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import node.raft
from node.raft import RawNode

REPO = Path(__file__).resolve().parents[3]
CORE = REPO / "node" / "raft"
WHITE_BOX = Path(__file__).resolve().parent
SCANNED = ("common", "node", "router", "tools", "tests")
PUBLIC = frozenset(node.raft.__all__)


def _outside_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if CORE in path.parents or WHITE_BOX in path.parents or path.parent == WHITE_BOX:
                continue
            files.append(path)
    return files


def _module_of(path: Path, root: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names, resolving ``from .x import`` by the file's package."""
    if node.level == 0:
        return node.module or ""
    package = list(path.relative_to(root).parent.parts)
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _violations(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(root)
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for alias in n.names:
                if alias.name.startswith("node.raft."):
                    found.append(f"{where}:{n.lineno}: import {alias.name} (a private module of the core)")
        elif isinstance(n, ast.ImportFrom):
            module = _module_of(path, root, n)
            if module.startswith("node.raft."):
                found.append(f"{where}:{n.lineno}: from {module} import ... (a private module of the core)")
            elif module == "node.raft":
                for alias in n.names:
                    if alias.name not in PUBLIC:
                        found.append(f"{where}:{n.lineno}: from node.raft import {alias.name} (not exported)")
        elif isinstance(n, ast.Attribute) and n.attr == "_raft":
            found.append(f"{where}:{n.lineno}: ._raft (the Raft object behind a RawNode)")
    return found


def test_nothing_outside_the_core_reaches_behind_its_exports() -> None:
    files = _outside_files()
    assert len(files) > 100, "the scan found too few files to mean anything"
    problems = [v for f in files for v in _violations(f)]
    assert not problems, "the core's boundary is crossed:\n" + "\n".join(problems)


def test_the_exports_are_the_surface_a_driver_needs_and_no_more() -> None:
    assert "Raft" not in PUBLIC, "the Raft state machine must stay behind RawNode"
    assert not hasattr(RawNode, "raft"), "RawNode must not hand out its Raft object"
    for name in PUBLIC:
        assert hasattr(node.raft, name), f"node.raft.__all__ names {name!r}, which it does not define"


def test_the_checker_sees_every_kind_of_crossing(tmp_path: Path) -> None:
    bad = tmp_path / "node" / "probe.py"
    bad.parent.mkdir()
    bad.write_text(
        "from node.raft.raft import Raft\n"
        "from node.raft import RawNode, Raft as R\n"
        "import node.raft.log\n"
        "from .raft.tracker import ProgressTracker\n"
        "def f(n): return n._raft.term\n"
    )
    problems = _violations(bad, root=tmp_path)
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3", "4", "5"], problems
