"""Runbook sets: an ordered folder of runbooks (``set.yaml`` names the members), as ``import``
writes one (:mod:`dbrunbook.runbook.importer`). Wherever a runbook is accepted a set is too; its
members run in order, a rollback in reverse."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import SpecError
from ..files import file_checksums, folder_files, read_yaml
from ..paths import project_root
from .spec import Runbook, load_runbook

SET_FILE = "set.yaml"


# -- the set -----------------------------------------------------------------------------------



def load_members(folder: Path) -> list[Path]:
    """A set's member runbook folders, in order (``set.yaml``)."""
    spec = folder / SET_FILE
    try:
        raw = read_yaml(spec.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(spec, f"cannot be read: {exc}") from None
    members = raw.get("members") or []
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise SpecError(spec, "members must be a list of runbook folder names", "members")
    return [folder / m for m in members]


def is_set(path: str | Path) -> bool:
    return (Path(path) / SET_FILE).is_file()


@dataclass(frozen=True)
class RunbookSet:
    """A loaded set: its folder and its member runbooks, in order."""

    name: str
    path: Path
    members: list[Runbook]

    @property
    def title(self) -> str:
        return f"runbook set {self.name} ({len(self.members)} members)"

    def files(self) -> list[Path]:
        return folder_files(self.path)

    def file_checksums(self) -> dict[str, str]:
        """sha256 of every file of the set, its members' included."""
        return file_checksums(self.path)


def load_set(ref: str | Path) -> RunbookSet:
    """A set by its folder (or its name under ``runbooks/``)."""
    folder = Path(ref).expanduser()
    if not is_set(folder):
        folder = project_root() / "runbooks" / str(ref)
    if not is_set(folder):
        raise SpecError(ref, f"not a runbook set (no {SET_FILE})")
    folder = folder.resolve()
    return RunbookSet(folder.name, folder, [load_runbook(member) for member in load_members(folder)])


def load_book(ref: str | Path) -> Runbook | RunbookSet:
    """The set ``ref`` names, or else the runbook."""
    return resolve_set(ref) or load_runbook(ref)


def resolve_set(ref: str | Path) -> RunbookSet | None:
    """The set ``ref`` names, or None when it names a single runbook."""
    for candidate in (Path(ref).expanduser(), project_root() / "runbooks" / str(ref)):
        if is_set(candidate):
            return load_set(candidate)
    return None


