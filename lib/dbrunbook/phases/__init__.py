"""The phases: the registry (each phase's facts, registered once), the base every phase builds on,
one module per phase named after it, and what phases show their evidence with.

A phase is added in one module here plus its notebook, and registered in :mod:`.registry`.
``__all__`` is what a notebook or another program may use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import PhaseRun, open_phase, phase_class
    from .evidence import Evidence
    from .registry import PHASE_NAMES, PHASES, PhaseInfo, phase_info

# Loaded on first use, as in the package above: the registry is read by the CLI before the
# kernel starts, the phase classes only where a phase runs.
_PUBLIC = {"PhaseRun": "base", "open_phase": "base", "phase_class": "base", "Evidence": "evidence",
           "PHASES": "registry", "PHASE_NAMES": "registry", "PhaseInfo": "registry", "phase_info": "registry"}

__all__ = ["Evidence", "PHASES", "PHASE_NAMES", "PhaseInfo", "PhaseRun", "open_phase", "phase_class", "phase_info"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
