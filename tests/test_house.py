"""The house: which package may import which, read from the code's own imports.

Every import in lib/dbrunbook counts, those made inside functions too (Python never complains
about a cycle closed by one: that is how the old flat package hid two). The direction is written
down once, in ``LAYERS``.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from .conftest import ROOT

LIB = ROOT / "lib" / "dbrunbook"

#: Top to bottom: a package may import its own modules and those of any package below it, never
#: one above. The bottom row holds the modules every layer may use.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("run",),
    ("phases",),
    ("archive",),
    ("state",),
    ("runbook",),
    ("catalog",),
    ("sql",),
    ("targets",),
    ("config", "files", "paths", "dialects", "durations", "errors"),
)
#: The package's face (__init__: the public names) and ``python -m dbrunbook`` stand above it all.
FACES = ("dbrunbook", "dbrunbook.__main__")
#: The most lines a module may hold without saying, in its docstring, why it holds more.
MOST_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dbrunbook modules ``name`` imports (``from x import y`` counts y when y is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dbrunbook"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "dbrunbook":
                continue
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for number, row in enumerate(LAYERS):
        if parts[1] in row:
            return number
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a module's own packages are left out (Python has run
    their ``__init__`` before the module, whatever it imports)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        parts = name.split(".")
        own = {".".join(parts[:n]) for n in range(1, len(parts))}
        graph[name] = _imports(name, path, known) - own
    return graph


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for module, imported in sorted(_graph().items()):
        if module in FACES:
            continue
        mine = _layer(module)
        for other in sorted(imported):
            theirs = _layer(other)
            if mine is not None and theirs is not None and theirs < mine:
                upward.append(f"{module} -> {other}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_two_modules_import_each_other_in_a_circle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_reader_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The reader itself: an upward import made inside a function, relative, is found."""
    source = "def f():\n    from ..cli import commands\n    from . import base\n"
    module = tmp_path / "x.py"
    module.write_text(source)
    found = _imports("dbrunbook.phases.x", module, {"dbrunbook.cli", "dbrunbook.cli.commands",
                                                      "dbrunbook.phases", "dbrunbook.phases.base"})
    assert found == {"dbrunbook.cli", "dbrunbook.cli.commands", "dbrunbook.phases", "dbrunbook.phases.base"}
    assert _layer("dbrunbook.cli.commands") < _layer("dbrunbook.phases.x")  # type: ignore[operator]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_a_long_module_says_why_it_is_long(name: str) -> None:
    path = _modules()[name]
    lines = len(path.read_text().splitlines())
    if lines <= MOST_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Why this module is long:" in doc, f"{name}: {lines} lines and no 'Why this module is long:' in its docstring"


def test_the_notebooks_use_only_public_names() -> None:
    """A phase notebook, or the overview, imports ``dbrunbook`` (and ``dbrunbook.phases``) and
    uses only the names those declare in ``__all__``."""
    import dbrunbook
    import dbrunbook.phases

    public = {"dbrunbook": set(dbrunbook.__all__), "dbrunbook.phases": set(dbrunbook.phases.__all__)}
    problems = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            tree = ast.parse("".join(cell["source"]))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    problems += [f"{notebook.name}: import {n}" for n in names
                                 if n.startswith("dbrunbook") and n not in public]
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id == "dbrunbook" and node.attr not in public["dbrunbook"]:
                    problems.append(f"{notebook.name}: dbrunbook.{node.attr}")
    assert not problems, problems
