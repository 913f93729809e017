"""dbrunbook: database migrations run as Jupyter runbooks."""
from __future__ import annotations

import sys

# jsonschema's format checkers import rfc3987_syntax when it is installed, and that module builds
# a grammar at import time (about 1.1 s, in the CLI and again in every kernel). nbformat's
# validation uses none of its IRI formats: mark it absent, so jsonschema skips that checker.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from .errors import DbrunbookError  # noqa: E402
from .phase import PhaseRun, open_phase  # noqa: E402
from .spec import Runbook, load_runbook  # noqa: E402
from .targets import Target, resolve_target  # noqa: E402

__all__ = ["DbrunbookError", "PhaseRun", "Runbook", "Target", "load_runbook", "open_phase", "resolve_target"]
__version__ = "0.1.0"
