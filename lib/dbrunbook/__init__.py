"""dbrunbook: database migrations run as Jupyter runbooks."""
from __future__ import annotations

from .errors import DbrunbookError
from .phase import PhaseRun, open_phase
from .spec import Runbook, load_runbook
from .targets import Target, resolve_target

__all__ = ["DbrunbookError", "PhaseRun", "Runbook", "Target", "load_runbook", "open_phase", "resolve_target"]
__version__ = "0.1.0"
