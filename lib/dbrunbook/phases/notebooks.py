"""Which notebook a phase runs."""
from __future__ import annotations

from pathlib import Path

from ..errors import SpecError
from ..paths import notebooks_dir
from .registry import PHASE_NAMES


def phase_notebook(phase: str, root: Path | None = None) -> Path:
    if phase not in PHASE_NAMES:
        raise SpecError("--phases", f"unknown phase {phase!r}; phases are {', '.join(PHASE_NAMES)}")
    path = notebooks_dir(root) / f"{phase}.ipynb"
    if not path.is_file():
        raise SpecError(path, f"phase {phase!r} has no notebook yet")
    return path
