"""The package's shape: data flows one way and no two medseg modules import each other.

``src/medseg`` is parsed with :mod:`ast` (nothing is imported), every ``import medseg…`` /
``from medseg… import …`` / relative import is resolved to the module it names, and imports
inside functions (and under ``TYPE_CHECKING``) count like top-level ones: a lazy import that
dodges a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medseg"
LOWER = ("data", "models", "losses", "metrics", "optim")
UPPER = ("engine", "report", "export", "cli")


def module_name(path: Path, root: Path) -> str:
    """``medseg.engine.train`` for ``root/engine/train.py``; a package is its ``__init__``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _known(name: str, known: dict[str, Path]) -> str | None:
    """``name`` or the nearest enclosing module that exists (``medseg.x.func`` → ``medseg.x``)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def imported_modules(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(imported medseg module, line)`` for every import statement of ``module``, wherever it is."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from medseg import models`` names the module medseg.models, not the package medseg
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        for target in targets:
            if target.split(".")[0] != SRC.name:
                continue
            resolved = _known(target, known)
            if resolved is not None and resolved != module:
                yield resolved, node.lineno


def import_graph(root: Path = SRC) -> dict[str, dict[str, int]]:
    """Module → {imported module: first line that imports it}."""
    known = modules(root)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges = graph.setdefault(module, {})
        for target, line in imported_modules(module, path, known):
            edges.setdefault(target, line)
    return graph


def layer(module: str) -> str | None:
    """``data`` for ``medseg.data.io``, ``cli`` for ``medseg.cli``; ``None`` for top-level helpers."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def backward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``a:line -> b`` for every import from a lower layer into an upper one."""
    return [
        f"{source}:{line} -> {target}"
        for source, edges in graph.items()
        for target, line in edges.items()
        if layer(source) in LOWER and layer(target) in UPPER
    ]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe_cycle(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    """The imports inside one cycle, ``a:line -> b`` each."""
    members = set(component)
    edges = [
        f"{source}:{line} -> {target}"
        for source in component
        for target, line in graph[source].items()
        if target in members
    ]
    return "cycle " + " ↔ ".join(component) + ": " + "; ".join(edges)


# --------------------------------------------------------------------------- the package itself


def test_lower_layers_import_nothing_from_the_upper_ones() -> None:
    offending = backward_imports(import_graph())
    assert not offending, "data/models/losses/metrics/optim import engine/report/export/cli:\n" + "\n".join(
        offending
    )


def test_no_import_cycles_between_medseg_modules() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(describe_cycle(component, graph) for component in found)


def test_the_parser_sees_the_package() -> None:
    graph = import_graph()
    assert {"medseg.engine.train", "medseg.models.base", "medseg.cli"} <= set(graph)
    assert "medseg.models.base" in graph["medseg.models.unet"]


# --------------------------------------------------------------------------- the checker on a toy package


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "medseg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return root


def test_lazy_relative_and_package_imports_are_resolved(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "engine/a.py": "def f():\n    from .b import g\n",
            "engine/b.py": "from medseg.engine import a\n",
            "data/c.py": "from ..report import d\n",
            "report/d.py": "import medseg.data.c\n",
            "models/e.py": "import typing\nif typing.TYPE_CHECKING:\n    from medseg.export.f import X\n",
            "export/f.py": "X = 1\n",
        },
    )
    graph = import_graph(root)
    assert graph["medseg.engine.a"] == {"medseg.engine.b": 2}
    assert graph["medseg.engine.b"] == {"medseg.engine.a": 1}
    assert graph["medseg.data.c"] == {"medseg.report.d": 1}
    assert sorted(map(sorted, cycles(graph))) == [
        ["medseg.data.c", "medseg.report.d"],
        ["medseg.engine.a", "medseg.engine.b"],
    ]
    assert backward_imports(graph) == [
        "medseg.data.c:1 -> medseg.report.d",
        "medseg.models.e:3 -> medseg.export.f",
    ]
    message = describe_cycle(["medseg.engine.a", "medseg.engine.b"], graph)
    assert message == (
        "cycle medseg.engine.a ↔ medseg.engine.b: "
        "medseg.engine.a:2 -> medseg.engine.b; medseg.engine.b:1 -> medseg.engine.a"
    )


@pytest.mark.parametrize("statement", ["import os\n", "from torch import nn\n", "from .x import y\n"])
def test_imports_outside_the_package_or_of_itself_are_not_edges(tmp_path: Path, statement: str) -> None:
    root = _package(tmp_path, {"data/x.py": statement})
    assert import_graph(root)["medseg.data.x"] == {}
