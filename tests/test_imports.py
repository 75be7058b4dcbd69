"""The import graph of ``tunebench``, lazy imports inside functions included: data flows one way.

Read with ``ast``, not by importing, so an import inside a function body counts as much as one at
the top of a module. Today it holds the edges a stage split must not find running back up;
``FORBIDDEN`` can become a stage rule (a module of a lower stage never imports a higher one) once
the modules live in stage packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tunebench

PACKAGE = Path(tunebench.__file__).parent

# (importer, imported): each one a decision that lives in the lower module now, not the higher one.
FORBIDDEN = {
    ("tunebench.target", "tunebench.records"),  # the measurement-class name is built in target; records stores its parts
    ("tunebench.logs", "tunebench.api"),  # ``logs show --model`` lowers the model in api; logs counts tasks it is given
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
    source = "from .errors import E\n\ndef f():\n    from . import layout\n    import tunebench.api\n    from .records import read_log\n"
    assert imports_of(source, "tunebench.logs") >= {"tunebench.errors", "tunebench.layout", "tunebench.api", "tunebench.records"}
    assert "tunebench.sub.x" in imports_of("from .x import y\n", "tunebench.sub", is_package=True)
    assert "tunebench.x" in imports_of("from ..x import y\n", "tunebench.sub.mod")


def test_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "tunebench.records" in graph["tunebench.logs"]  # a top-level import
    assert "tunebench.tasks" in graph["tunebench.logs"]  # one inside a function


def test_no_import_runs_back_up() -> None:
    graph = import_graph()
    found = sorted((src, dst) for src, dst in FORBIDDEN if dst in graph[src])
    assert not found, f"imports a stage split would trip on: {found}"
