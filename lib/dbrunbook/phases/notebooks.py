"""Which notebook a phase runs: the project's own ``notebooks/<phase>.ipynb`` when it has one, else
the one packaged with dbrunbook (the wheel carries every phase notebook and the overview).

A project notebook is the project's to customise (``dbrunbook notebooks eject`` copies the packaged
one to start from), and is checked before it runs: it must have a parameters cell, and declare no
parameter the runner does not know. Which notebook ran, and its sha256, goes into each run's
manifest, so a reviewer knows what code produced a page.
"""
from __future__ import annotations

import ast
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import SpecError
from ..files import sha256_file
from ..paths import notebooks_dir, packaged_dir
from .registry import PHASE_NAMES, phase_info

PROJECT, PACKAGED = "project", "packaged"
#: The monitor pages that are not phases (their parameters are their own).
PAGES = ("overview",)
PARAMETERS_TAG = "parameters"


@dataclass(frozen=True)
class NotebookSource:
    """The notebook a phase runs: whose (``project`` or ``packaged``), where, and its sha256."""

    phase: str
    kind: str
    path: Path
    sha256: str

    def record(self) -> dict[str, str]:
        """What a run's manifest says of it."""
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "dbrunbook": __version__}


def packaged_notebook(name: str) -> Path:
    return packaged_dir() / "notebooks" / f"{name}.ipynb"


def _known(name: str) -> None:
    if name not in PHASE_NAMES and name not in PAGES:
        raise SpecError("--phases", f"unknown phase {name!r}; phases are {', '.join(PHASE_NAMES)}")


def notebook_source(name: str, root: Path | None = None) -> NotebookSource:
    """Where the phase's (or page's) notebook is: the project's, checked, else the packaged one."""
    _known(name)
    own = notebooks_dir(root) / f"{name}.ipynb"
    if own.is_file():
        if name in PHASE_NAMES:
            check_project_notebook(name, own)
        return NotebookSource(name, PROJECT, own, sha256_file(own))
    packaged = packaged_notebook(name)
    if not packaged.is_file():
        raise SpecError(packaged, f"phase {name!r} has no notebook (neither the project's nor a packaged one)")
    return NotebookSource(name, PACKAGED, packaged, sha256_file(packaged))


def phase_notebook(name: str, root: Path | None = None) -> Path:
    """The notebook the phase runs (see :func:`notebook_source`)."""
    return notebook_source(name, root).path


def declared_parameters(path: Path) -> list[str]:
    """The names the notebook's parameters cell assigns; a :class:`SpecError` when it has none."""
    try:
        node = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in node["cells"] if c.get("cell_type") == "code"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(path, f"not a notebook dbrunbook can read: {exc}") from None
    tagged = [c for c in cells if PARAMETERS_TAG in (c.get("metadata", {}).get("tags") or [])]
    if not tagged:
        raise SpecError(path, "has no parameters cell (a code cell tagged 'parameters'): the runner could not "
                              "give it the runbook and the target; start from `dbrunbook notebooks eject`")
    source = "".join(tagged[0].get("source") or [])
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise SpecError(f"{path}:{exc.lineno}", f"its parameters cell is not Python: {exc.msg}") from None
    return [t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]


def check_project_notebook(phase: str, path: Path) -> None:
    """A project's notebook for ``phase`` may run: it has a parameters cell, and every parameter it
    declares is one the runner knows for the phase."""
    known = phase_info(phase).all_params()
    unknown = [name for name in declared_parameters(path) if name not in known]
    if unknown:
        raise SpecError(path, f"declares parameter(s) {', '.join(unknown)}, which phase {phase} does not take "
                              f"(it takes: {', '.join(known)}); the runner could never set them")


@dataclass(frozen=True)
class Ejected:
    phase: str
    path: Path
    kept: bool  # the project had its own already: left as it was


def eject(names: list[str] | None = None, root: Path | None = None) -> list[Ejected]:
    """Copy packaged notebooks into the project's ``notebooks/`` to customise; one the project has
    already is kept, never overwritten."""
    chosen = names or [*PHASE_NAMES, *PAGES]
    for name in chosen:
        _known(name)
    folder = notebooks_dir(root)
    out = []
    for name in chosen:
        target = folder / f"{name}.ipynb"
        if target.exists():
            out.append(Ejected(name, target, True))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packaged_notebook(name), target)
        out.append(Ejected(name, target, False))
    return out


def sources(root: Path | None = None) -> list[NotebookSource]:
    """Every phase's (and page's) notebook, as it would run now."""
    return [notebook_source(name, root) for name in (*PHASE_NAMES, *PAGES)]
