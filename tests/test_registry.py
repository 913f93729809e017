"""The phase registry is the one place a phase is declared: notebooks, CLI and README agree with it."""
from __future__ import annotations

import ast

import nbformat
import papermill
import pytest
from dbrunbook.errors import SpecError
from dbrunbook.phases import registry
from dbrunbook.phases.base import PhaseRun, phase_class
from dbrunbook.phases.notebooks import phase_notebook

from .conftest import ROOT, cli

_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


@pytest.mark.parametrize("phase", registry.PHASE_NAMES)
def test_each_notebook_declares_exactly_the_registered_parameters(phase: str) -> None:
    declared = papermill.inspect_notebook(str(phase_notebook(phase)))
    registered = registry.phase_info(phase).all_params()
    assert list(declared) == list(registered)
    for name, param in registered.items():
        default = ast.literal_eval(declared[name]["default"])
        kind = type(default)
        assert default == param.default and (kind is param.type or (kind, param.type) == (int, float)), \
            (phase, name, default)
        assert declared[name]["help"] == param.help, (phase, name)


@pytest.mark.parametrize("phase", registry.PHASE_NAMES)
def test_each_phase_is_a_phase_run_in_the_module_named_after_it(phase: str) -> None:
    """A phase is one module named after it (a dialect's own class may live beside it, named
    ``<phase>_<dialect>``), holding a PhaseRun the registry points at."""
    info = registry.phase_info(phase)
    for dialect in info.dialects:
        cls = phase_class(phase, dialect)
        assert issubclass(cls, PhaseRun) and cls is not PhaseRun, (phase, dialect, cls)
        assert cls.__module__ in (f"dbrunbook.phases.{phase}", f"dbrunbook.phases.{phase}_{dialect}"), \
            (phase, dialect, cls.__module__)


@pytest.mark.parametrize("phase", registry.PHASE_NAMES)
def test_each_notebook_opens_its_own_phase_with_its_parameters_and_calls_only_what_the_phase_has(phase: str) -> None:
    """The notebook's calls against the registry and the phase's class: ``open_phase`` names this
    phase and hands on every parameter the registry declares (each as itself), and every
    ``run.<step>()`` the page calls is a method of the phase's class on every dialect it runs on."""
    node = nbformat.read(phase_notebook(phase), as_version=4)
    tree = ast.parse("\n".join(c.source for c in node.cells if c.cell_type == "code"))
    opens = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "dbrunbook.open_phase"]
    assert len(opens) == 1, phase
    call = opens[0]
    assert [ast.literal_eval(a) if isinstance(a, ast.Constant) else ast.unparse(a) for a in call.args] == \
        [phase, "runbook", "target"]
    passed = {k.arg: ast.unparse(k.value) for k in call.keywords}
    expected = {name: name for name in registry.phase_info(phase).all_params() if name not in ("runbook", "target")}
    assert passed == expected, phase
    steps = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "run"}
    assert "finish" in steps
    for dialect in registry.phase_info(phase).dialects:
        cls = phase_class(phase, dialect)
        missing = sorted(step for step in steps if not callable(getattr(cls, step, None)))
        assert not missing, (phase, dialect, missing)


def test_a_phase_that_does_not_run_on_a_dialect_refuses_before_it_connects() -> None:
    """The registry's ``dialects`` is checked when a phase opens: one line saying what the phase
    needs, raised before a connection is made (nothing is recorded on the wrong database)."""
    import sqlalchemy as sa
    from dbrunbook.errors import GuardRefused
    from dbrunbook.runbook.spec import load_runbook
    from dbrunbook.targets.resolve import Target

    book = load_runbook(ROOT / "runbooks" / "solution_type_analytics")
    nowhere = Target("a_file", sa.make_url("sqlite:////nonexistent/dir/never.db"), production=False)
    for phase in [p for p in registry.PHASE_NAMES if registry.Dialect.SQLITE not in registry.phase_info(p).dialects]:
        with pytest.raises(GuardRefused, match=f"^{phase} .*; target a_file is sqlite$"):
            phase_class(phase, "postgresql")(phase, book, nowhere)
    assert [p for p in registry.PHASE_NAMES if registry.Dialect.SQLITE not in registry.phase_info(p).dialects] == \
        ["review", "clean_slate", "backfill"]


def test_the_readme_phase_table_is_the_registry() -> None:
    assert registry.phase_table_markdown() in (ROOT / "README.md").read_text()


def test_parameters_are_typed_and_a_bad_value_names_the_parameter() -> None:
    assert registry.check_parameters(["deploy"], {"lock_timeout_ms": 200, "run_lock_wait_s": 1}) == \
        {"lock_timeout_ms": 200, "run_lock_wait_s": 1.0}
    assert registry.check_parameters(["clean_slate"], {"confirm": 2024}) == {"confirm": "2024"}
    with pytest.raises(SpecError, match=r"-p: lock_timeout_ms: lock_timeout_ms='soon': phase deploy takes a int"):
        registry.check_parameters(["deploy"], {"lock_timeout_ms": "soon"})
    with pytest.raises(SpecError, match=r"max_batches=True: phase backfill takes a int"):
        registry.check_parameters(["backfill"], {"max_batches": True})
    with pytest.raises(SpecError, match="unknown parameter.* lock_timeout for phase"):
        registry.check_parameters(["schema", "deploy"], {"lock_timeout": 5})


def test_the_cli_refuses_a_bad_value_in_one_line_before_anything_runs() -> None:
    done = cli("run", "event_message_fk", "--target", "dev", "--phases", "deploy", "-p", "lock_attempts=many")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "dbrunbook: error: -p: lock_attempts: lock_attempts='many': phase deploy takes a int (attempts per step, "
        "with exponential backoff between them)"]
    assert "archive" not in done.stdout
