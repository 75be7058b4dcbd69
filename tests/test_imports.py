"""The import graph of ``tunebench``, lazy imports inside functions included: data flows one way.

Read with ``ast``, not by importing, so an import inside a function body counts as much as one at
the top of a module. The stage rule: a module never imports one of a higher stage (``STAGES``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tunebench

PACKAGE = Path(tunebench.__file__).parent

# Lowest first. The log format sits under search, which writes it, and serving, which reads it;
# search and serving never import each other (one stage number each, so either way would fail).
STAGES = {
    "tunebench.errors": 0,
    "tunebench.files": 0,
    "tunebench.preflight": 1,
    "tunebench.target": 1,
    "tunebench.threads": 1,
    "tunebench.zoo": 1,
    "tunebench.lowering": 2,
    "tunebench.logs": 3,
    "tunebench.search": 4,
    "tunebench.serve": 5,
    "tunebench.bench": 6,
    "tunebench.api": 7,
    "tunebench.cli": 8,
    "tunebench": 9,  # the package itself: the lazy public API over everything
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``tunebench.x.y`` for ``root/x/y.py`` (``root/x/__init__.py`` is ``tunebench.x``)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it (function bodies too), relative imports resolved
    against ``module``. ``from a import b`` counts ``a.b`` as well as ``a``: ``b`` may be a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_package else module.split(".")[:-1]
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's own modules it imports (the standard library and others left out)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = imports_of(path.read_text(), name, is_package=path.name == "__init__.py")
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_lazy_and_relative_imports_are_seen() -> None:
    source = "from ..errors import E\n\ndef f():\n    from ..lowering import layout\n    import tunebench.api\n    from .records import read_log\n"
    assert imports_of(source, "tunebench.logs.share") >= {"tunebench.errors", "tunebench.lowering.layout", "tunebench.api", "tunebench.logs.records"}
    assert "tunebench.sub.x" in imports_of("from .x import y\n", "tunebench.sub", is_package=True)
    assert "tunebench.x" in imports_of("from ..x import y\n", "tunebench.sub.mod")


def test_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "tunebench.logs.records" in graph["tunebench.logs.share"]  # a top-level import
    assert "tunebench.lowering.tasks" in graph["tunebench.logs.share"]  # one inside a function


def stage(module: str) -> int:
    """The stage of ``module``: that of the longest ``STAGES`` name it is, or lies in."""
    owner = max((name for name in STAGES if module == name or module.startswith(name + ".")), key=len)
    return STAGES[owner]


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower stage to a higher one. An import of the package itself (``from .. import
    __version__``) is left out: Python runs ``tunebench/__init__.py`` before any module in it anyway."""
    return sorted((src, dst) for src, dsts in graph.items() for dst in dsts if dst != "tunebench" and stage(dst) > stage(src))


def test_every_module_has_a_stage() -> None:
    assert all(stage(m) >= 0 for m in import_graph())


def test_no_import_runs_back_up() -> None:
    found = upward(import_graph())
    assert not found, f"imports from a lower stage to a higher one: {found}"


def test_the_stage_rule_sees_a_lazy_upward_import() -> None:
    graph = import_graph()
    graph["tunebench.logs.records"] = graph["tunebench.logs.records"] | {"tunebench.serve.cache"}  # as a lazy import would add it
    assert upward(graph) == [("tunebench.logs.records", "tunebench.serve.cache")]
    assert ("tunebench.search.driver", "tunebench.serve.choose") in upward({"tunebench.search.driver": {"tunebench.serve.choose"}})
