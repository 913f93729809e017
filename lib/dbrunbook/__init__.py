"""dbrunbook: database migrations run as Jupyter runbooks."""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# jsonschema's format checkers import rfc3987_syntax when it is installed, and that module builds
# a grammar at import time (about 1.1 s, in the CLI and again in every kernel). nbformat's
# validation uses none of its IRI formats: mark it absent, so jsonschema skips that checker.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from .errors import DbrunbookError
    from .phases.base import PhaseRun, open_phase
    from .runbook.spec import Runbook, load_runbook
    from .targets.resolve import Target, resolve_target

# Where each public name lives. They load on first use (PEP 562), so that `dbrunbook run` can
# start its kernel before paying for pandas and SQLAlchemy (see dbrunbook.run.kernel).
_PUBLIC = {"DbrunbookError": "errors", "PhaseRun": "phases.base", "open_phase": "phases.base",
           "Runbook": "runbook.spec", "load_runbook": "runbook.spec", "Target": "targets.resolve",
           "resolve_target": "targets.resolve"}

__all__ = ["DbrunbookError", "PhaseRun", "Runbook", "Target", "load_runbook", "open_phase", "resolve_target"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
