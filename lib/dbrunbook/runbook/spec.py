"""The runbook: ``runbooks/<name>/runbook.yaml`` plus its SQL files, loaded and validated (its
sections are in :mod:`.sections`, its expectations in :mod:`dbrunbook.catalog.expectations`).

Loading is strict: an unknown key, a wrong type or a missing file is one :class:`SpecError`
naming the file and the field, so a typo never silently turns a check off.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from ..catalog.expectations import Expectations, Precondition
from ..errors import SpecError
from ..files import Strict, digest, file_checksums, folder_files, read_yaml, sha256_file
from ..paths import resolve_runbook_dir
from ..sql.statements import Statement, author_transactions, read_statements
from .sections import (
    BackfillSpec,
    BehaviourSpec,
    CleanSlateSpec,
    CodeVerifySpec,
    KeptColumn,
    Origin,
    ReviewSpec,
)

SPEC_NAME = "runbook.yaml"


class RunbookSpec(Strict):
    """The schema of runbook.yaml."""

    title: str
    engine: Literal["postgresql", "sqlite"] = "postgresql"
    source: str = ""
    summary: str = ""
    # One file, or several applied in order as one migration (seed 001: 022 then 023); a
    # rollback lists its files in the order they run (023's rollback before 022's).
    migration: str | list[str] = "migration.sql"
    rollback: str | list[str] = "rollback.sql"
    # A file, or several loaded in order; a folder stands for its *.sql files in name order
    # (seed 001: the project's migrations 000-021 are the baseline).
    fixture: str | list[str] | None = None
    expect: Expectations = Field(default_factory=Expectations)
    expect_after_rollback: Expectations | None = None
    clean_slate: CleanSlateSpec | None = None
    code_verify: CodeVerifySpec | None = None
    test: BehaviourSpec | None = None
    preconditions: list[Precondition] = []
    review: ReviewSpec = Field(default_factory=ReviewSpec)
    backfill: BackfillSpec | None = None
    kept_on_rollback: list[KeptColumn] = []
    # What the rollback cannot undo without losing data, with the reason: a runbook with
    # ``rollback: []`` is forward-only, and its rollback phase refuses with this list.
    irreversible: list[str] = []
    origin: Origin | None = None
    # False: the source tool runs it outside a transaction (goose's NO TRANSACTION, dbmate's
    # transaction:false): one statement at a time in autocommit, written ahead in the ledger.
    in_transaction: bool = True
    # Applied again whenever its checksum changes (Flyway's R__ scripts), instead of refused as drift.
    repeatable: bool = False
    # Scripts that must run without error once the migration is applied (Sqitch's verify): run in a
    # savepoint that is rolled back, so a verify script changes nothing.
    verify: list[str] = []


@dataclass(frozen=True)
class Runbook:
    """A loaded runbook: its folder, validated spec and file helpers."""

    name: str
    path: Path
    spec: RunbookSpec

    def file(self, relative: str) -> Path:
        return self.path / relative

    def display(self, relative: str) -> str:
        """How a runbook file is named in messages: ``<runbook>/<file>``."""
        return f"{self.name}/{relative}"

    @property
    def migration_files(self) -> list[str]:
        return _as_list(self.spec.migration)

    @property
    def rollback_files(self) -> list[str]:
        return _as_list(self.spec.rollback)

    @property
    def fixture_files(self) -> list[str]:
        """The fixture's files in load order, a folder expanded to its ``*.sql`` files."""
        out: list[str] = []
        for relative in _as_list(self.spec.fixture or []):
            folder = self.file(relative)
            out += ([str(p.relative_to(self.path)) for p in sorted(folder.glob("*.sql"))]
                    if folder.is_dir() else [relative])
        return out

    @property
    def existing_migrations(self) -> list[Path]:
        """The project's migrations already applied (``review.existing``), in name order."""
        existing = self.spec.review.existing
        return sorted(self.file(existing).glob("*.sql")) if existing else []

    def review_scripts(self, variant: str = "") -> tuple[list[str], list[str], str]:
        """(migration files, rollback files, why) of the migration, or of a declared variant."""
        if not variant:
            return self.migration_files, self.rollback_files, ""
        variants = self.spec.review.variants
        if variant not in variants:
            known = ", ".join(variants) or "none declared"
            raise SpecError("variant", f"no variant {variant!r} in {self.name} ({known})")
        chosen = variants[variant]
        return _as_list(chosen.migration), _as_list(chosen.rollback or []), chosen.why

    def script_files(self, kind: str) -> list[str]:
        """The files of the ``migration``, the ``rollback`` or the ``fixture``, in the order
        they run."""
        return {"migration": self.migration_files, "rollback": self.rollback_files,
                "fixture": self.fixture_files}[kind]

    def script_name(self, kind: str) -> str:
        """How a script is named in messages: ``migration.sql``, or ``022_a.sql + 023_b.sql``."""
        return " + ".join(self.script_files(kind))

    def read_script(self, kind: str, dialect: str) -> tuple[list[Statement], bool]:
        """Every statement of the script's files, in order, each statement of an author's own
        ``BEGIN ... COMMIT`` marked with its group (:func:`dbrunbook.sql.statements.author_transactions`);
        and whether any file had one."""
        statements: list[Statement] = []
        grouped = False
        for relative in self.script_files(kind):
            body, had = author_transactions(read_statements(self.file(relative), dialect, self.display(relative),
                                                            empty=True))
            statements += body
            grouped = grouped or had
        return statements, grouped

    def read_verify(self, dialect: str) -> list[Statement]:
        """The statements of the verify scripts, in order, without their transaction control: Sqitch's
        own wrap them in ``BEGIN`` ... ``ROLLBACK``, and here each runs in a savepoint rolled back."""
        return [stmt for relative in self.spec.verify
                for stmt in read_statements(self.file(relative), dialect, self.display(relative), empty=True)
                if not stmt.transaction_control]

    def migration_checksum(self) -> str:
        """The checksum the ledger records: the file's sha256, or for several files the sha256
        of their names and digests, so renaming, reordering or editing any one of them shows."""
        files = self.migration_files
        if len(files) == 1:
            return self.checksum(files[0])
        return digest((name, self.checksum(name)) for name in files)

    @property
    def rollback_expectations(self) -> Expectations:
        """Declared explicitly: what a migration created cannot be told apart, in general, from
        what was there before it. With none declared, the fingerprint comparison is the proof."""
        return self.spec.expect_after_rollback or Expectations()

    def checksum(self, relative: str) -> str:
        return sha256_file(self.file(relative))

    def sql_checksums(self) -> dict[str, str]:
        """sha256 of every SQL file the spec names."""
        names = [*self.migration_files, *self.rollback_files, *self.fixture_files, *self.spec.verify]
        return {name: self.checksum(name) for name in names}

    def files(self) -> list[Path]:
        return folder_files(self.path)

    def file_checksums(self) -> dict[str, str]:
        """sha256 of every file of the runbook (what a run's manifest and an approval record)."""
        return file_checksums(self.path)

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def members(self) -> list[Runbook]:
        """A runbook runs as a set of one: wherever a set is accepted, a runbook is too."""
        return [self]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return field, "unknown key"
    if err["type"] == "missing":
        return field, "required key is missing"
    return field, err["msg"]


def _inside(folder: Path, relative: str, key: str, spec_path: Path) -> None:
    """A runbook's files live in its folder: a path that leaves it (``..``, an absolute path, a
    symlink pointing out) is refused, so what runs is what the folder's checksums cover."""
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise SpecError(spec_path, f"{relative} resolves outside the runbook folder (to {resolved}); a runbook's "
                                   "files must live in its folder", key)


def load_runbook(ref: str | Path) -> Runbook:
    """Load and validate a runbook folder (a path, or a name under ``runbooks/``)."""
    folder = resolve_runbook_dir(ref)
    spec_path = folder / SPEC_NAME
    try:
        raw = read_yaml(spec_path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SpecError(spec_path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise SpecError(spec_path, f"cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpecError(spec_path, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SpecError(spec_path, "must be a mapping of keys to values")
    try:
        spec = RunbookSpec.model_validate(raw)
    except ValidationError as exc:
        field, message = _describe(exc.errors()[0])
        more = len(exc.errors()) - 1
        raise SpecError(spec_path, message + (f" (and {more} more problem(s))" if more else ""), field) from None
    declared: list[tuple[str, str | list[str] | None]] = [(k, getattr(spec, k)) for k in ("migration", "rollback")]
    declared += [(f"review.variants.{name}.{k}", getattr(v, k)) for name, v in spec.review.variants.items()
                 for k in ("migration", "rollback")]
    if spec.backfill is not None:
        declared += [("backfill.batch", spec.backfill.batch), ("backfill.cleanup", spec.backfill.cleanup),
                     ("backfill.dual_write", spec.backfill.dual_write)]
        dual_write = spec.backfill.dual_write
        if dual_write is not None and dual_write not in _as_list(spec.migration):
            raise SpecError(spec_path, f"{dual_write} must also be one of the migration's files: the dual-write is "
                                       "installed with the schema", "backfill.dual_write")
    for key, value in declared:
        for relative in [] if value is None else _as_list(value):
            _inside(folder, relative, key, spec_path)
            if not (folder / relative).is_file():
                raise SpecError(spec_path, f"file not found: {folder / relative}", key)
        if value == [] and key != "rollback":  # rollback: [] is a forward-only runbook
            raise SpecError(spec_path, "names no file", key)
    for relative in spec.verify:
        _inside(folder, relative, "verify", spec_path)
        if not (folder / relative).is_file():
            raise SpecError(spec_path, f"file not found: {folder / relative}", "verify")
    for key, value in (("fixture", spec.fixture), ("review.existing", spec.review.existing)):
        for relative in [] if value is None else _as_list(value):
            _inside(folder, relative, key, spec_path)
            if not (folder / relative).exists():
                raise SpecError(spec_path, f"not found: {folder / relative}", key)
    return Runbook(name=folder.name, path=folder, spec=spec)
