"""Who may import whom, checked by parsing every module with ``ast`` (nothing is imported).

    common/         what node, router and client share: imports none of them, nor tools/
    router/client/  the client library, usable without a router or a node: imports only
                    itself, common/, tesserapb, grpc and protobuf, and the standard library
    node/           the data plane: never the control plane (router/) nor tools/

Imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is still a
dependency. (The Raft core's own boundary is tests/unit/test_core_purity.py.)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules under ``folder`` may not import ``forbidden`` modules (or their submodules)
    except ``exempt`` ones; when ``only`` is set, they may import nothing but those and the
    standard library."""

    folder: str
    why: str
    forbidden: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    only: tuple[str, ...] = ()

    def refuses(self, module: str) -> bool:
        if _within(module, self.exempt):
            return False
        if _within(module, self.forbidden):
            return True
        stdlib = module.split(".")[0] in sys.stdlib_module_names
        return bool(self.only) and not _within(module, self.only) and not stdlib


RULES = (
    Rule("common", "common/ is shared by node, router and client, so it depends on none of them",
         forbidden=("node", "router", "tools")),
    Rule("router/client", "the client library works without a router or a node, so it uses no internals of either",
         forbidden=("router", "node", "tools"), exempt=("router.client",),
         only=("router.client", "common", "tesserapb", "grpc", "grpc_status", "google.protobuf", "google.rpc")),
    Rule("node", "the data plane does not depend on the control plane or the tools",
         forbidden=("router", "tools")),
)


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    statement: str
    module: str
    rule: Rule

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.statement}` imports {self.module}: {self.rule.why}"


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: str, source: str) -> Iterator[tuple[int, str, str]]:
    """(line, statement, module) for every module ``source`` (the file at repo-relative
    ``path``) imports. ``from a import b`` yields ``a.b``, which is ``a``'s submodule or, if
    ``b`` is an attribute, a name inside ``a``: rules match by prefix, so either way it is
    judged as a part of ``a``."""
    package = _module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, ast.unparse(node), alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                name = module if alias.name == "*" else f"{module}.{alias.name}"
                yield node.lineno, ast.unparse(node), name


def violations(path: str, source: str) -> list[Violation]:
    found = []
    for rule in RULES:
        if not path.startswith(rule.folder + "/"):
            continue
        for line, statement, module in imported_modules(path, source):
            if rule.refuses(module):
                found.append(Violation(path, line, statement, module, rule))
    return found


def test_every_module_keeps_to_its_layer() -> None:
    found: list[Violation] = []
    for rule in RULES:
        files = sorted((REPO / rule.folder).rglob("*.py"))
        assert files, f"no modules under {rule.folder}/: the rule checks nothing"
        for f in files:
            found += violations(f.relative_to(REPO).as_posix(), f.read_text())
    assert not found, "imports across layers:\n" + "\n".join(map(str, found))


def test_the_check_sees_every_form_of_import() -> None:
    source = "\n".join(
        [
            "import grpc",
            "import asyncio",
            "from router import client",
            "from router.client.retry import classify",
            "from . import routes",
            "import node.raft",
            "from router import placement",
            "from ..placement.model import Epoch",
            "import uvloop",
            "def later():",
            "    from tools.cluster import Cluster",
        ]
    )
    got = [(v.line, v.module) for v in violations("router/client/routes.py", source)]
    assert got == [(6, "node.raft"), (7, "router.placement"), (8, "router.placement.model.Epoch"),
                   (9, "uvloop"), (11, "tools.cluster.Cluster")]
    (first,) = violations("common/x.py", "from router.placement.model import StoreInfo")
    assert str(first) == (
        "common/x.py:1: `from router.placement.model import StoreInfo` imports router.placement.model.StoreInfo: "
        "common/ is shared by node, router and client, so it depends on none of them"
    )
    assert violations("node/kv_service.py", "from common.wire.errors import WireError") == []
