"""Migration folders as teams already have them: which layout, which migrations, in which order.

Each layout is one reader in :data:`LAYOUTS`, recognised from the folder's files without options:

- ``prisma``: ``<timestamp>_<name>/migration.sql`` folders (no down files);
- ``diesel``: ``<YYYY-MM-DD-HHMMSS>_<name>/up.sql`` and ``down.sql`` folders;
- ``sqitch``: ``sqitch.plan`` naming changes, with ``deploy/``, ``revert/`` and ``verify/`` scripts;
- ``flyway``: ``V<version>__<desc>.sql``, ``U<version>__<desc>.sql`` undo files, ``R__<desc>.sql``
  repeatables (applied after the versioned ones, again whenever they change);
- ``pop`` (gobuffalo): ``<version>_<name>.postgres.up.sql`` preferred over a dialect-neutral
  ``<version>_<name>.up.sql``, other dialects' files ignored;
- ``updown`` (golang-migrate and the like): ``<version>_<name>.up.sql`` / ``.down.sql`` pairs, also
  ``_up.sql`` / ``_down.sql`` and ``V<n>.<Name>.up.sql``;
- ``goose``: ``<version>_<name>.sql`` with ``-- +goose Up`` / ``-- +goose Down`` sections,
  ``StatementBegin`` / ``StatementEnd`` blocks and ``-- +goose NO TRANSACTION``;
- ``dbmate``: ``<version>_<name>.sql`` with ``-- migrate:up`` / ``-- migrate:down`` sections
  (``transaction:false`` honoured);
- ``numbered``: plain ``<number>_<name>.sql`` files.

An up file and its own down are a pair (by version), not a conflict; two ups with one version, a
down with no up and a pair whose names differ are reported as :class:`Issue` s. A folder mixing two
layouts, or matching none, is refused naming what it found and what is known.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..sql.statements import read_sql_text
from .sets import load_members

if TYPE_CHECKING:
    from ..sql import lint


@dataclass(frozen=True)
class MigrationFile:
    """One migration of a folder: its version, name, forward script and (when it has one) way back.

    ``up_sql`` / ``down_sql`` hold the scripts where the layout keeps both in one file (goose,
    dbmate); otherwise they are the files ``up`` and ``down``."""

    version: str
    name: str
    up: Path
    down: Path | None
    layout: str
    up_sql: str | None = None
    down_sql: str | None = None
    #: False: the source tool runs it outside a transaction (goose NO TRANSACTION, dbmate
    #: transaction:false), one statement at a time.
    in_transaction: bool = True
    #: Re-applied whenever it changes (Flyway's R__ scripts).
    repeatable: bool = False
    #: A script that must run without error once the migration is applied (Sqitch's verify).
    verify: Path | None = None

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}" if self.version else self.name

    def up_text(self) -> str:
        return self.up_sql if self.up_sql is not None else read_sql_text(self.up)

    def down_text(self) -> str | None:
        if self.down_sql is not None:
            return self.down_sql
        return read_sql_text(self.down) if self.down is not None else None

    def up_name(self, folder: Path) -> str:
        """How the forward script is named in findings (a section: its file and the section)."""
        name = str(self.up.relative_to(folder))
        return f"{name} (up)" if self.up_sql is not None else name

    def down_name(self, folder: Path) -> str:
        if self.down is None and self.down_sql is None:
            return ""
        name = str((self.down or self.up).relative_to(folder))
        return f"{name} (down)" if self.down_sql is not None else name


@dataclass(frozen=True)
class Issue:
    """Something wrong with the folder's numbering (a finding for lint)."""

    file: str
    message: str
    fix: str


Reader = Callable[[Path], tuple[list["MigrationFile"], list[Issue]]]


@dataclass(frozen=True)
class Layout:
    name: str
    shape: str                       # what its files look like, for a folder that matches none
    count: Callable[[Path], int]     # how many of the folder's entries this layout claims
    read: Reader


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.split(r"[._-]", version) if part.isdigit())


# -- the layouts ---------------------------------------------------------------------------------------------

_PRISMA_DIR = re.compile(r"^(\d{6,})_(.+)$")
_DIESEL_DIR = re.compile(r"^(\d{4}-\d{2}-\d{2}-\d{6}|\d{14})_(.+)$")
_UPDOWN = re.compile(r"^(?:[Vv])?(\d+(?:[._]\d+)*?)[._-](.+?)[._](up|down)\.sql$", re.I)
_POP = re.compile(r"^(\d+)_(.+?)(?:\.(postgres|postgresql|cockroach|mysql|mariadb|sqlite3?|mssql|sqlserver))?"
                  r"\.(up|down)\.sql$", re.I)
_POP_DIALECT = re.compile(r"\.(postgres|postgresql|cockroach|mysql|mariadb|sqlite3?|mssql|sqlserver)\.(up|down)\.sql$",
                          re.I)
_OURS = ("postgres", "postgresql")
_FLYWAY = re.compile(r"^([VU])(\d+(?:[._]\d+)*)__(.+)\.sql$")
_FLYWAY_REPEATABLE = re.compile(r"^R__(.+)\.sql$")
_NUMBERED = re.compile(r"^(\d+)[_-](.+)\.sql$")
_GOOSE = re.compile(r"^--\s*\+goose\s+(\w+)(.*)$", re.I)
_DBMATE = re.compile(r"^--\s*migrate:(up|down)\b(.*)$", re.I)


def _sql_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.sql") if p.is_file())


def _head(path: Path, lines: int = 400) -> str:
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            return "".join(handle.readline() for _ in range(lines))
    except OSError:
        return ""


def _is_goose(path: Path) -> bool:
    return any(_GOOSE.match(line.strip()) for line in _head(path).splitlines())


def _is_dbmate(path: Path) -> bool:
    return any(_DBMATE.match(line.strip()) for line in _head(path).splitlines())


def _prisma_count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_dir() and _PRISMA_DIR.match(p.name) and (p / "migration.sql").is_file())


def _prisma(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out = []
    for path in sorted(folder.iterdir()):
        found = _PRISMA_DIR.match(path.name) if path.is_dir() else None
        if found and (path / "migration.sql").is_file():
            down = path / "down.sql"
            out.append(MigrationFile(found.group(1), found.group(2), path / "migration.sql",
                                     down if down.is_file() else None, "prisma"))
    return out, []


def _diesel_count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_dir() and _DIESEL_DIR.match(p.name) and (p / "up.sql").is_file())


def _diesel(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out, issues = [], []
    for path in sorted(folder.iterdir()):
        found = _DIESEL_DIR.match(path.name) if path.is_dir() else None
        if not found or not (path / "up.sql").is_file():
            continue
        down = path / "down.sql"
        if not down.is_file():
            issues.append(Issue(f"{path.name}/up.sql", f"{path.name} has no down.sql (diesel writes one for every "
                                                       "migration)", "add down.sql, even an empty one"))
        out.append(MigrationFile(found.group(1).replace("-", ""), found.group(2), path / "up.sql",
                                 down if down.is_file() else None, "diesel"))
    return out, issues


def _pop_count(folder: Path) -> int:
    files = [p for p in _sql_files(folder) if _POP.match(p.name)]
    # Dialect-tagged files are pop's own mark; without any, plain .up.sql pairs are updown's.
    return len(files) if any(_POP_DIALECT.search(p.name) for p in files) else 0


def _pop(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    chosen: dict[tuple[str, str], dict[str, tuple[int, Path]]] = {}
    for path in _sql_files(folder):
        found = _POP.match(path.name)
        if not found:
            continue
        version, name, dialect, direction = found.group(1), found.group(2), (found.group(3) or "").lower(), \
            found.group(4).lower()
        if dialect and dialect not in _OURS:
            continue  # another database's migration
        rank = 0 if dialect in _OURS else 1  # the PostgreSQL file wins over the dialect-neutral one
        slot = chosen.setdefault((version, name), {})
        if direction not in slot or rank < slot[direction][0]:
            slot[direction] = (rank, path)
    out = []
    for (version, name), slot in chosen.items():
        if "up" in slot:
            out.append(MigrationFile(version, name, slot["up"][1], slot["down"][1] if "down" in slot else None, "pop"))
    return out, []


def _flyway_count(folder: Path) -> int:
    return sum(1 for p in _sql_files(folder) if _FLYWAY.match(p.name) or _FLYWAY_REPEATABLE.match(p.name))


def _flyway(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    ups: dict[str, tuple[str, Path]] = {}
    undos: dict[str, Path] = {}
    repeatables: list[MigrationFile] = []
    for path in _sql_files(folder):
        again = _FLYWAY_REPEATABLE.match(path.name)
        if again:
            repeatables.append(MigrationFile("", again.group(1), path, None, "flyway", repeatable=True))
            continue
        found = _FLYWAY.match(path.name)
        if not found:
            continue
        if found.group(1) == "V":
            ups[found.group(2)] = (found.group(3), path)
        else:
            undos[found.group(2)] = path
    issues = [Issue(p.name, f"{p.name} undoes version {v}, which has no V file", "remove it, or add the V file")
              for v, p in undos.items() if v not in ups]
    versioned = [MigrationFile(v, n, p, undos.get(v), "flyway") for v, (n, p) in ups.items()]
    return versioned + repeatables, issues


def _updown_count(folder: Path) -> int:
    return sum(1 for p in _sql_files(folder) if _UPDOWN.match(p.name))


def _updown(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    ups: dict[str, list[tuple[str, Path]]] = {}
    downs: dict[str, list[tuple[str, Path]]] = {}
    for path in _sql_files(folder):
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


def _numbered_candidates(folder: Path) -> list[tuple[Path, re.Match[str]]]:
    return [(p, m) for p in _sql_files(folder) if (m := _NUMBERED.match(p.name)) and not _UPDOWN.match(p.name)]


def _goose_count(folder: Path) -> int:
    return sum(1 for p, _ in _numbered_candidates(folder) if _is_goose(p))


def _goose(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out = []
    for path, found in _numbered_candidates(folder):
        if not _is_goose(path):
            continue
        up, down, in_transaction = _goose_sections(path)
        out.append(MigrationFile(found.group(1), found.group(2), path, None, "goose", up_sql=up, down_sql=down,
                                 in_transaction=in_transaction))
    return out, []


def _goose_sections(path: Path) -> tuple[str, str | None, bool]:
    """(the Up section, the Down section or None, whether it runs in a transaction). Lines keep
    their numbers: what is not in a section is blanked, so findings point at the file's lines."""
    text = read_sql_text(path, path.name)
    sections: dict[str, list[str]] = {"up": [], "down": []}
    current, in_transaction, opened = None, True, None
    for number, line in enumerate(text.splitlines(), start=1):
        marker = _GOOSE.match(line.strip())
        blank = ""
        if marker:
            word = marker.group(1).lower()
            if word in ("up", "down"):
                if opened is not None:
                    raise SpecError(f"{path.name}:{opened}", "goose StatementBegin without its StatementEnd")
                current = word
            elif word == "statementbegin":
                opened = number
            elif word == "statementend":
                if opened is None:
                    raise SpecError(f"{path.name}:{number}", "goose StatementEnd without a StatementBegin")
                opened = None
            elif word == "no" and marker.group(2).strip().upper().startswith("TRANSACTION"):
                in_transaction = False
        for name, lines in sections.items():
            lines.append(line if (current == name and not marker) else blank)
    if opened is not None:
        raise SpecError(f"{path.name}:{opened}", "goose StatementBegin without its StatementEnd: the file ends inside "
                                                 "the statement")
    if not any(line.strip() for line in sections["up"]) and current is None:
        raise SpecError(path.name, "a goose migration without a '-- +goose Up' section")
    down = "\n".join(sections["down"]) + "\n"
    return "\n".join(sections["up"]) + "\n", down if down.strip() else None, in_transaction


def _dbmate_count(folder: Path) -> int:
    return sum(1 for p, _ in _numbered_candidates(folder) if _is_dbmate(p))


def _dbmate(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    out = []
    for path, found in _numbered_candidates(folder):
        if not _is_dbmate(path):
            continue
        text = read_sql_text(path, path.name)
        sections: dict[str, list[str]] = {"up": [], "down": []}
        current, in_transaction = None, True
        for line in text.splitlines():
            marker = _DBMATE.match(line.strip())
            if marker:
                current = marker.group(1).lower()
                if current == "up" and "transaction:false" in marker.group(2).replace(" ", "").lower():
                    in_transaction = False
            for name, lines in sections.items():
                lines.append(line if (current == name and not marker) else "")
        down = "\n".join(sections["down"]) + "\n"
        out.append(MigrationFile(found.group(1), found.group(2), path, None, "dbmate",
                                 up_sql="\n".join(sections["up"]) + "\n", down_sql=down if down.strip() else None,
                                 in_transaction=in_transaction))
    return out, []


def _numbered_count(folder: Path) -> int:
    return sum(1 for p, _ in _numbered_candidates(folder) if not _is_goose(p) and not _is_dbmate(p))


def _numbered(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    return [MigrationFile(m.group(1), m.group(2), p, None, "numbered") for p, m in _numbered_candidates(folder)
            if not _is_goose(p) and not _is_dbmate(p)], []


_PLAN_CHANGE = re.compile(r"^(?P<name>[^\s@\[#:%]+)(?:\s+\[(?P<deps>[^\]]*)\])?\s+\S+\s+.*$")


def _sqitch_count(folder: Path) -> int:
    return 1 if (folder / "sqitch.plan").is_file() else 0


def _sqitch(folder: Path) -> tuple[list[MigrationFile], list[Issue]]:
    """The changes of ``sqitch.plan`` in its order (a reworked change is planned again under its name:
    the newest rework's scripts are ``deploy/<change>.sql``, earlier ones ``<change>@<tag>.sql``)."""
    plan = folder / "sqitch.plan"
    text = read_sql_text(plan, "sqitch.plan")
    out: list[MigrationFile] = []
    seen: dict[str, int] = {}
    planned: list[tuple[int, str]] = []
    tags: list[tuple[int, str]] = []  # (position in planned, tag)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("%", "#")):
            continue
        if line.startswith("@"):
            tags.append((len(planned), line.split()[0]))
            continue
        found = _PLAN_CHANGE.match(line)
        if not found:
            raise SpecError(f"sqitch.plan:{number}", f"not a change line: {line[:80]}")
        planned.append((number, found.group("name")))
    for position, (number, name) in enumerate(planned):
        seen[name] = seen.get(name, 0) + 1
        later = any(n == name for _, n in planned[position + 1:])
        # A change reworked later ran its scripts as they were at the tag after it.
        tag = next((t for at, t in tags if at > position), None) if later else None
        stem = f"{name}{tag}" if tag else name
        deploy, revert, verify = (folder / kind / f"{stem}.sql" for kind in ("deploy", "revert", "verify"))
        if not deploy.is_file():
            raise SpecError(f"sqitch.plan:{number}", f"plans change {name}, but {deploy.relative_to(folder)} is missing")
        out.append(MigrationFile(f"{position + 1:04d}", name if seen[name] == 1 else f"{name}_{seen[name]}", deploy,
                                 revert if revert.is_file() else None, "sqitch",
                                 verify=verify if verify.is_file() else None))
    return out, []


#: Every layout, in the order a folder is tried (the first that claims files and the order of
#: the most specific first: a pop folder's files would also look like updown's).
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("sqitch", "sqitch.plan with deploy/, revert/, verify/", _sqitch_count, _sqitch),
    Layout("prisma", "<timestamp>_<name>/migration.sql", _prisma_count, _prisma),
    Layout("diesel", "<YYYY-MM-DD-HHMMSS>_<name>/up.sql and down.sql", _diesel_count, _diesel),
    Layout("flyway", "V<n>__<desc>.sql, U<n>__<desc>.sql, R__<desc>.sql", _flyway_count, _flyway),
    Layout("pop", "<version>_<name>.postgres.up.sql (or .up.sql)", _pop_count, _pop),
    Layout("updown", "<version>_<name>.up.sql and .down.sql", _updown_count, _updown),
    Layout("goose", "<version>_<name>.sql with -- +goose Up / Down", _goose_count, _goose),
    Layout("dbmate", "<version>_<name>.sql with -- migrate:up / migrate:down", _dbmate_count, _dbmate),
    Layout("numbered", "<number>_<name>.sql", _numbered_count, _numbered),
)}
NAMES: tuple[str, ...] = tuple(LAYOUTS)
# Layouts whose files the reader of another takes as its own (not a mix): pop's files match
# updown's pattern, and a Sqitch project's scripts lie in subfolders.
_OVERLAPS = {("pop", "updown")}


def detect_layout(folder: Path) -> str:
    """The layout the folder's files follow; ``set`` for a runbook set. A folder whose migrations
    follow two layouts, or none, is refused saying so."""
    if not folder.is_dir():
        raise SpecError(folder, "not a folder of migrations")
    if (folder / "set.yaml").is_file():
        return "set"
    counts = {name: layout.count(folder) for name, layout in LAYOUTS.items()}
    found = [name for name, count in counts.items() if count]
    for a, b in _OVERLAPS:
        if a in found and b in found:
            found.remove(b)
    if not found:
        raise SpecError(folder, "no migrations found; the layouts known are: "
                                + "; ".join(f"{name} ({layout.shape})" for name, layout in LAYOUTS.items()))
    if len(found) > 1:
        raise SpecError(folder, "mixes layouts: " + ", ".join(f"{name} ({counts[name]} file(s))" for name in found)
                                + "; import each part from a folder of its own, or give --format")
    return found[0]


def read_folder(folder: Path, layout: str | None = None) -> tuple[list[MigrationFile], list[Issue]]:
    """The folder's migrations in order, and what is wrong with their numbering."""
    folder = Path(folder)
    chosen = layout or detect_layout(folder)
    if chosen == "set":
        return _set(folder), []
    if chosen not in LAYOUTS:
        raise SpecError("--format", f"unknown layout {chosen!r}; layouts are {', '.join(NAMES)}")
    members, issues = LAYOUTS[chosen].read(folder)
    if chosen != "sqitch":  # the plan's order is the order
        members.sort(key=lambda m: (m.repeatable, m.key, m.name))
    seen: dict[tuple[int, ...], MigrationFile] = {}
    for member in members:
        if member.repeatable or chosen == "sqitch":
            continue
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


def lint_folder(folder: Path, layout: str | None = None, **options: Any) -> lint.LintResult:
    """A team's migration folder, in any layout read here, linted as one chain in order (see
    :func:`dbrunbook.sql.lint.lint_chain`), with the folder's numbering problems as findings."""
    # The linter's weight is paid by lint alone, not by every command that reads a folder.
    from ..sql import lint

    folder = Path(folder)
    members, issues = read_folder(folder, layout)
    links = [lint.ChainLink(m.up, m.up_name(folder), m.down, m.down_name(folder), up_text=m.up_sql,
                            down_text=m.down_sql, in_transaction=m.in_transaction) for m in members]
    return lint.lint_chain(links, [lint.numbering_finding(i.file, i.message, i.fix) for i in issues], **options)
