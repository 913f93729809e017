"""The phase registry is the one place a phase is declared: notebooks, CLI and README agree with it."""
from __future__ import annotations

import ast

import papermill
import pytest
from dbrunbook.errors import SpecError
from dbrunbook.paths import phase_notebook
from dbrunbook.phases import registry
from dbrunbook.phases.base import phase_class

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
def test_each_phase_class_exists(phase: str) -> None:
    for dialect in ("postgresql", "sqlite"):
        assert phase_class(phase, dialect).__name__


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
