"""dbrunbook: database migrations run as Jupyter runbooks.

What a notebook or another program may use is here, in ``__all__`` (and the phases' own names in
:mod:`dbrunbook.phases`); the commands, as plain typed functions, are :mod:`dbrunbook.cli.commands`.
Everything else is internal and may change between releases.
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# jsonschema's format checkers import rfc3987_syntax when it is installed, and that module builds
# a grammar at import time (about 1.1 s, in the CLI and again in every kernel). nbformat's
# validation uses none of its IRI formats: mark it absent, so jsonschema skips that checker.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from .archive.chain import Verification, verify_archive
    from .archive.fleet import LoadedFleet, load_fleet
    from .archive.history import Overview, overview
    from .errors import (
        ChecksFailed,
        DbrunbookError,
        GuardRefused,
        SpecError,
        StatementFailed,
        TargetError,
    )
    from .phases.base import PhaseRun, open_phase
    from .phases.evidence import Evidence
    from .runbook.sets import RunbookSet
    from .runbook.spec import Runbook, load_runbook
    from .targets.resolve import Target, resolve_target

# Where each public name lives. They load on first use (PEP 562), so that `dbrunbook run` can
# start its kernel before paying for pandas and SQLAlchemy (see dbrunbook.run.kernel).
_PUBLIC = {
    "open_phase": "phases.base", "PhaseRun": "phases.base", "Evidence": "phases.evidence",
    "Runbook": "runbook.spec", "load_runbook": "runbook.spec", "RunbookSet": "runbook.sets",
    "Target": "targets.resolve", "resolve_target": "targets.resolve",
    "overview": "archive.history", "Overview": "archive.history",
    "verify_archive": "archive.chain", "Verification": "archive.chain",
    "load_fleet": "archive.fleet", "LoadedFleet": "archive.fleet",
    **{name: "errors" for name in ("DbrunbookError", "SpecError", "TargetError", "GuardRefused",
                                   "StatementFailed", "ChecksFailed")},
}

__all__ = ["ChecksFailed", "DbrunbookError", "Evidence", "GuardRefused", "LoadedFleet", "Overview", "PhaseRun",
           "Runbook", "RunbookSet", "SpecError", "StatementFailed", "Target", "TargetError", "Verification",
           "load_fleet", "load_runbook", "open_phase", "overview", "resolve_target", "verify_archive"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
