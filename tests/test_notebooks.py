"""The phase notebooks as files: committed clean, parameterized, one step per code cell."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The phase pages; notebooks/overview.ipynb reads ledgers and the archive and changes nothing.
PHASE_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem != "overview"]


def test_the_spine_phases_exist() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"schema", "rollback", "clean_slate", "code_verify", "test", "deploy"}


def test_the_overview_is_a_page_of_its_own() -> None:
    nb = nbformat.read(ROOT / "notebooks" / "overview.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks clean"
    assert "parameters" in code[0].metadata.get("tags", []) and "targets = None" in code[0].source
    for cell in code[1:]:
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("import ")]
        assert len(lines) <= 2, cell.source
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell is not code[0]:
            assert nb.cells[index - 1].cell_type == "markdown"


@pytest.mark.parametrize("path", PHASE_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_a_runbook_page(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks clean"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and code[0] is params[0]
    for name in ("runbook", "target", "dry_run", "run_id", "archive_dir"):
        assert f"{name} = " in params[0].source
    # Stepping through with the defaults is safe: phases default to dev; deploy, the one phase meant
    # for production, defaults to prod rehearsed on dev.
    expected = 'target = "prod"' if path.stem == "deploy" else 'target = "dev"'
    assert expected in params[0].source
    # Logic lives in the lib: after the parameters, each code cell is one step, and it ends with
    # the step's result, which renders itself (the library prints nothing).
    for cell in code[1:]:
        statements = [s for s in ast.parse(cell.source).body if not isinstance(s, ast.Import | ast.ImportFrom)]
        assert len(statements) <= 2, cell.source
        assert isinstance(statements[-1], ast.Expr), f"the cell does not end with its result: {cell.source}"
        if len(statements) == 2:
            assigned = statements[0]
            assert isinstance(assigned, ast.Assign) and ast.unparse(assigned.targets[0]) == ast.unparse(
                statements[-1].value), cell.source
    assert code[-1].source.strip() == "run.finish()"
    # Each step is explained: a markdown cell stands before every code cell.
    cells = nb.cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and cell is not params[0]:
            assert cells[index - 1].cell_type == "markdown"
