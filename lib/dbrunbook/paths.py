"""Where things live: the project root, runbooks, notebooks, the archive and local state."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SpecError

PROJECT_FILE = "dbrunbook.yaml"
HOME_ENV = "DBRUNBOOK_HOME"


def project_root(start: Path | None = None) -> Path:
    """The project: $DBRUNBOOK_HOME, else the nearest folder at or above ``start`` (default: the
    working directory) holding ``dbrunbook.yaml``, the way git finds its repository. Outside a
    project this refuses, so that no command ever starts a server or writes an archive in an
    unrelated folder (a cron job's working directory is usually one)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise SpecError(here, f"not inside a dbrunbook project (no {PROJECT_FILE} here or in any folder above); "
                          f"cd into the project, or set {HOME_ENV} to its folder")


def state_dir(root: Path | None = None) -> Path:
    """Project-local, gitignored state (the embedded server's data lives here)."""
    return (root or project_root()) / ".dbrunbook"


def packaged_dir() -> Path:
    """The installed package's own folder: the phase notebooks and the example runbooks it ships."""
    return Path(__file__).resolve().parent


def examples_dir() -> Path:
    """The example runbooks the demo plays (seeds 000 to 004), as the package ships them."""
    return packaged_dir() / "examples"


def notebooks_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "notebooks"


def outputs_dir(root: Path | None = None) -> Path:
    env = os.environ.get("DBRUNBOOK_OUTPUTS")
    return Path(env).resolve() if env else (root or project_root()) / "outputs"


def resolve_runbook_dir(ref: str | Path, root: Path | None = None) -> Path:
    """A runbook reference is a folder path or the name of a folder under ``runbooks/``."""
    candidate = Path(ref).expanduser()
    if (candidate / "runbook.yaml").is_file():
        return candidate.resolve()
    named = (root or project_root()) / "runbooks" / str(ref)
    if (named / "runbook.yaml").is_file():
        return named.resolve()
    raise SpecError(ref, "no runbook here: expected a folder with runbook.yaml, "
                         f"or the name of one under {(root or project_root()) / 'runbooks'}")
