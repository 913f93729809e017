"""Migration folders as teams already have them: which layout, which files, in which order.

Layouts, detected from the files (or forced):

- ``prisma``: ``<timestamp>_<name>/migration.sql`` folders (no down files);
- ``updown``: ``<version>_<name>.up.sql`` / ``.down.sql`` pairs (golang-migrate, dbmate-like), also
  ``_up.sql`` / ``_down.sql`` and ``V<n>.<Name>.up.sql``;
- ``flyway``: ``V<version>__<desc>.sql``, with ``U<version>__<desc>.sql`` undo files when present;
- ``numbered``: plain ``<number>_<name>.sql`` files.

An up file and its own down are a pair (by version), not a conflict; two ups with one version, a
down with no up and a pair whose names differ are reported as :class:`Issue` s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..sql import lint
from .sets import load_members

LAYOUTS = ("prisma", "updown", "flyway", "numbered")

_PRISMA_DIR = re.compile(r"^(\d{6,})_(.+)$")
_UPDOWN = re.compile(r"^(?:[Vv])?(\d+(?:[._]\d+)*?)[._-](.+?)[._](up|down)\.sql$", re.I)
_FLYWAY = re.compile(r"^([VU])(\d+(?:[._]\d+)*)__(.+)\.sql$")
_NUMBERED = re.compile(r"^(\d+)[_-](.+)\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    """One migration of a folder: its version, name, forward file and (when there is one) down file."""

    version: str
    name: str
    up: Path
    down: Path | None
    layout: str

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


@dataclass(frozen=True)
class Issue:
    """Something wrong with the folder's numbering (a finding for lint)."""

    file: str
    message: str
    fix: str


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.split(r"[._]", version) if part.isdigit())


def detect_layout(folder: Path) -> str:
    """The layout the folder's files follow (the most files win); ``set`` for a runbook set."""
    if not folder.is_dir():
        raise SpecError(folder, "not a folder of migrations")
    if (folder / "set.yaml").is_file():
        return "set"
    counts = {
        "prisma": sum(1 for p in folder.iterdir() if p.is_dir() and _PRISMA_DIR.match(p.name)
                      and (p / "migration.sql").is_file()),
        "updown": sum(1 for p in folder.glob("*.sql") if _UPDOWN.match(p.name)),
        "flyway": sum(1 for p in folder.glob("*.sql") if _FLYWAY.match(p.name)),
        "numbered": sum(1 for p in folder.glob("*.sql") if _NUMBERED.match(p.name) and not _UPDOWN.match(p.name)),
    }
    best = max(LAYOUTS, key=lambda k: counts[k])
    if counts[best] == 0:
        raise SpecError(folder, "no migrations found (expected <timestamp>_<name>/migration.sql, NNNN_name.up.sql "
                                "and .down.sql, V<n>__name.sql, or NNN_name.sql)")
    return best


def read_folder(folder: Path, layout: str | None = None) -> tuple[list[MigrationFile], list[Issue]]:
    """The folder's migrations in order, and what is wrong with their numbering."""
    folder = Path(folder)
    chosen = layout or detect_layout(folder)
    if chosen == "set":
        return _set(folder), []
    if chosen not in LAYOUTS:
        raise SpecError("--format", f"unknown layout {chosen!r}; layouts are {', '.join(LAYOUTS)}")
    reader = {"prisma": _prisma, "updown": _updown, "flyway": _flyway, "numbered": _numbered}[chosen]
    members, issues = reader(folder)
    members.sort(key=lambda m: (m.key, m.name))
    seen: dict[tuple[int, ...], MigrationFile] = {}
    for member in members:
        if member.key in seen:
            other = seen[member.key]
            issues.append(Issue(member.up.name, f"version {member.version} is used twice ({other.up.name} and "
                                                f"{member.up.name}): the order between them is undefined",
                                f"renumber {member.up.name} after the latest version"))
        seen[member.key] = member
    return members, issues


def _set(folder: Path) -> list[MigrationFile]:
    """A runbook set's members (``dbrunbook import``'s output), in the set's order."""
    out = []
    for number, member in enumerate(load_members(folder), start=1):
        down = member / "rollback.sql"
        out.append(MigrationFile(str(number), member.name, member / "migration.sql", down if down.is_file() else None,
                                 "set"))
    return out


def _prisma(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out = []
    for path in sorted(folder.iterdir()):
        found = _PRISMA_DIR.match(path.name) if path.is_dir() else None
        if found and (path / "migration.sql").is_file():
            down = path / "down.sql"
            out.append(MigrationFile(found.group(1), found.group(2), path / "migration.sql",
                                     down if down.is_file() else None, "prisma"))
    return out, []


def _updown(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    ups: dict[str, list[tuple[str, Path]]] = {}
    downs: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(folder.glob("*.sql")):
        found = _UPDOWN.match(path.name)
        if not found:
            continue
        version, name, direction = found.group(1), found.group(2), found.group(3).lower()
        (ups if direction == "up" else downs).setdefault(version, []).append((name, path))
    out, issues = [], []
    for version, entries in ups.items():
        pair = downs.get(version, [])
        for name, up in entries:
            # By name; a down named differently pairs by version only when the version has one of each.
            down = next((p for n, p in pair if n == name), pair[0][1] if len(pair) == len(entries) == 1 else None)
            if down is not None and down.name.replace("down", "up") != up.name:
                issues.append(Issue(down.name, f"{down.name} is the down of {up.name} (same version {version}) but "
                                                "is named differently", f"rename it to {up.name.replace('up', 'down')}"))
            out.append(MigrationFile(version, name, up, down, "updown"))
    for version, entries in downs.items():
        if version not in ups:
            for _, down in entries:
                issues.append(Issue(down.name, f"{down.name} has no up file with version {version}",
                                    "add the up file, or remove the stray down"))
    return out, issues


def _flyway(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    ups: dict[str, tuple[str, Path]] = {}
    undos: dict[str, Path] = {}
    for path in sorted(folder.glob("*.sql")):
        found = _FLYWAY.match(path.name)
        if not found:
            continue
        if found.group(1) == "V":
            ups[found.group(2)] = (found.group(3), path)
        else:
            undos[found.group(2)] = path
    issues = [Issue(p.name, f"{p.name} undoes version {v}, which has no V file", "remove it, or add the V file")
              for v, p in undos.items() if v not in ups]
    return [MigrationFile(v, n, p, undos.get(v), "flyway") for v, (n, p) in ups.items()], issues


def _numbered(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out = []
    for path in sorted(folder.glob("*.sql")):
        found = _NUMBERED.match(path.name)
        if found and not _UPDOWN.match(path.name):
            out.append(MigrationFile(found.group(1), found.group(2), path, None, "numbered"))
    return out, []


def lint_folder(folder: Path, layout: str | None = None, **options: Any) -> lint.LintResult:
    """A team's migration folder, in any layout read here, linted as one chain in order (see
    :func:`dbrunbook.sql.lint.lint_chain`), with the folder's numbering problems as findings."""
    folder = Path(folder)
    members, issues = read_folder(folder, layout)
    links = [lint.ChainLink(m.up, str(m.up.relative_to(folder)), m.down,
                            str(m.down.relative_to(folder)) if m.down is not None else "") for m in members]
    return lint.lint_chain(links, [lint.numbering_finding(i.file, i.message, i.fix) for i in issues], **options)
