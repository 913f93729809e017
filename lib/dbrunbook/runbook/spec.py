"""The runbook: ``runbooks/<name>/runbook.yaml`` plus its SQL files, loaded and validated.

Loading is strict: an unknown key, a wrong type or a missing file is one :class:`SpecError`
naming the file and the field, so a typo never silently turns a check off.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import SpecError
from ..paths import resolve_runbook_dir
from ..sql.statements import Statement, read_statements, strip_transaction_wrapper

SPEC_NAME = "runbook.yaml"
# libyaml's parser where PyYAML has it (its wheels do): the same documents, about 7 times faster
# than the pure-Python parser on a runbook.yaml, which every CLI and kernel process reads.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FK_ACTIONS = ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnExpect(_Strict):
    """A column, its type and nullability (``present: false``: the column must not exist)."""

    table: str
    column: str
    type: str | None = None
    nullable: bool | None = None
    present: bool = True


class IndexExpect(_Strict):
    """An index by name; ``columns`` may carry ``DESC``; ``where`` is a partial predicate
    (an empty string means the index must not be partial)."""

    table: str
    name: str
    columns: list[str] | None = None
    unique: bool | None = None
    where: str | None = None
    present: bool = True


class Reference(_Strict):
    table: str
    columns: list[str]


class ForeignKeyExpect(_Strict):
    table: str
    name: str | None = None
    columns: list[str]
    references: Reference | None = None
    on_delete: str | None = None
    on_update: str | None = None
    present: bool = True

    @field_validator("on_delete", "on_update")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is None:
            return None
        norm = " ".join(value.replace("_", " ").upper().split())
        if norm not in FK_ACTIONS:
            raise ValueError(f"must be one of {', '.join(a.lower() for a in FK_ACTIONS)}")
        return norm


class CheckExpect(_Strict):
    """A CHECK constraint by name; ``contains`` lists fragments its definition must hold."""

    table: str
    name: str
    contains: list[str] = []
    present: bool = True


class TriggerExpect(_Strict):
    """A trigger by name on a table (seed 002's dual-write trigger, there and then gone)."""

    table: str
    name: str
    present: bool = True


class TablesExpect(_Strict):
    present: list[str] = []
    absent: list[str] = []


class Expectations(_Strict):
    tables: TablesExpect = TablesExpect()
    columns: list[ColumnExpect] = []
    indexes: list[IndexExpect] = []
    foreign_keys: list[ForeignKeyExpect] = []
    checks: list[CheckExpect] = []
    triggers: list[TriggerExpect] = []

    def is_empty(self) -> bool:
        return not (self.tables.present or self.tables.absent or self.columns or self.indexes
                    or self.foreign_keys or self.checks or self.triggers)


class DeleteRows(_Strict):
    """Rows the clean-slate phase deletes: ``where`` is a SQL predicate (none: every row)."""

    table: str
    where: str | None = None


class ResetColumns(_Strict):
    """An optional reset (run only when the notebook's ``reset`` parameter is true)."""

    table: str
    set: dict[str, str | int | float | bool | None]
    where: str | None = None


class CleanSlateSpec(_Strict):
    why: str = ""
    delete: list[DeleteRows] = []
    reset: list[ResetColumns] = []


class CodeRule(_Strict):
    """A regular expression the application tree must not (``forbid``) or must (``require``,
    at least ``min`` times over the matching files) contain. Matched over whole files, so a
    pattern may span lines."""

    id: str
    forbid: str | None = None
    require: str | None = None
    files: list[str] = ["**/*"]
    min: int = 1
    message: str

    @model_validator(mode="after")
    def _one_pattern(self) -> CodeRule:
        patterns = [p for p in (self.forbid, self.require) if p is not None]
        if len(patterns) != 1:
            raise ValueError(f"rule {self.id}: give exactly one of forbid or require")
        try:
            re.compile(patterns[0])
        except re.error as exc:
            raise ValueError(f"rule {self.id}: not a valid regular expression: {exc}") from None
        return self


class PrismaRelation(_Strict):
    field: str
    model: str
    fields: list[str]
    references: list[str]
    on_delete: str | None = None


class PrismaModel(_Strict):
    """What one model of the Prisma schema must declare: field types as written
    (``String?``), relations, and ``@@index`` column lists."""

    model: str
    fields: dict[str, str] = {}
    relations: list[PrismaRelation] = []
    indexes: list[list[str]] = []


class PrismaSpec(_Strict):
    file: str = "prisma/schema.prisma"
    models: list[PrismaModel] = []


class CodeVerifySpec(_Strict):
    why: str = ""
    app: str = ""
    rules: list[CodeRule] = []
    prisma: PrismaSpec | None = None


class CaseOutcome(_Strict):
    """What a behaviour case must produce, from its last statement: exactly these ``rows``, a
    single ``value``, a row ``count``, or an error with this ``sqlstate``: on PostgreSQL a
    5-character code, a 2-character class, or a condition name such as ``foreign_key_violation``;
    on SQLite an extended result code name such as ``SQLITE_CONSTRAINT_FOREIGNKEY`` (or a prefix)."""

    rows: list[dict[str, Any]] | None = None
    value: Any = None
    count: int | None = None
    sqlstate: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CaseOutcome:
        given = [k for k in ("rows", "value", "count", "sqlstate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of rows, value, count or sqlstate")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("rows", "value", "count", "sqlstate") if getattr(self, k) is not None)


class BehaviourCase(_Strict):
    name: str
    why: str = ""
    sql: str
    expect: CaseOutcome
    show: bool = False  # also show the rows the case returned, as a frame


class ProbeQuery(_Strict):
    label: str
    sql: str
    # Keep only the rows whose JSON column holds the probed value under this key, in Python:
    # the application's "fetch all, filter in JavaScript" access path.
    client_filter: dict[str, str] | None = None
    # Run with these indexes dropped (in a savepoint that is rolled back): the query as it ran
    # before the migration created them, on the same data.
    without_indexes: list[str] = []
    uses_index: str | None = None


class ProbeSpec(_Strict):
    """Two access paths to the same rows, timed on the same generated data."""

    name: str
    why: str = ""
    pick: str
    before: ProbeQuery
    after: ProbeQuery
    claim: float | None = None
    claim_source: str = ""
    # A claim falling short fails the phase, unless the runbook says why it may: then it is a
    # warning, shown at the top of the page and in the CLI summary.
    claim_warn: str = ""
    repeat: int = 5


class ProbeData(_Strict):
    """Generated data for the probes: SQL that may use ``%(rows)s``."""

    why: str = ""
    rows: int = 100_000
    generate: str


class IndexSize(_Strict):
    """An index whose size the test phase reports; ``compare_full``: also build the same index
    without its WHERE clause (in a rolled-back savepoint) and compare."""

    index: str
    compare_full: bool = False
    # The plan's claim of how much smaller the partial index is than the full one (percent), e.g.
    # seed 003's "98%+ smaller"; a shortfall fails unless ``claim_warn`` says why it may.
    claim_smaller_pct: float | None = None
    claim_source: str = ""
    claim_warn: str = ""


class WriteCost(_Strict):
    """What the new indexes cost the application's writes (seed 003: "Write overhead +5-10%"):
    ``sql`` (a write that may use ``%(rows)s``) timed with the indexes and with them hidden (dropped
    in a savepoint), each run rolled back, alternating, the median of ``repeat``."""

    name: str
    why: str = ""
    sql: str
    indexes: list[str]
    rows: int = Field(default=5000, gt=0)
    repeat: int = Field(default=7, gt=0)
    claim_max_pct: float | None = None
    claim_source: str = ""
    claim_warn: str = ""


class RaceOutcome(_Strict):
    """How a race must end: how many sessions succeed, fail with ``sqlstate``, and fetch."""

    succeeded: int
    failed: int = 0
    sqlstate: str | None = None
    fetched: int = 0


class ConcurrentCase(_Strict):
    """A case run by several real sessions at once (seed 003: "multiple app instances"): each runs
    ``sql`` in its own transaction, holds it ``hold_ms`` so the others meet it, then commits; a
    session that fails with ``sqlstate`` runs ``fallback`` (create-or-fetch). What they committed is
    removed by ``cleanup`` afterwards, since other sessions only meet committed rows."""

    name: str
    why: str = ""
    sessions: int = 2
    sql: str
    fallback: str = ""
    hold_ms: int = 300
    cleanup: str
    expect: RaceOutcome


class BehaviourSpec(_Strict):
    setup: str = ""
    cases: list[BehaviourCase] = []
    concurrency: list[ConcurrentCase] = []
    data: ProbeData | None = None
    probes: list[ProbeSpec] = []
    index_sizes: list[IndexSize] = []
    write_costs: list[WriteCost] = []

    @model_validator(mode="after")
    def _probes_need_data(self) -> BehaviourSpec:
        if self.probes and self.data is None:
            raise ValueError("probes need data: {rows, generate}")
        return self


class Precondition(_Strict):
    """A query that must return no rows before the migration may run; the rows it returns are
    the offenders, listed when it fails."""

    name: str
    why: str = ""
    sql: str


class BackfillVerify(_Strict):
    """Seed 002's "zero data loss", as queries: ``*_count`` return one number, ``*_checksum``
    one value; ``parity`` returns the mismatching rows among the ``%(recent)s`` most recent
    source rows (old arrays against new rows): it must return none."""

    source_count: str
    target_count: str
    source_checksum: str
    target_checksum: str
    parity: str


class ReferenceRate(_Strict):
    """A rate the plan reported, shown beside the measured one (context, not a claim to fail on)."""

    rows_per_s: float = Field(gt=0)
    source: str = ""


class BackfillSpec(_Strict):
    """A resumable data migration: ``batch`` (a file of statements using ``%(first)s`` and
    ``%(last)s``, the batch's first and last key) runs over ``source`` in ``key`` order."""

    name: str
    why: str = ""
    source: str
    key: str = "id"
    batch: str
    batch_size: int = Field(default=1000, gt=0)
    target_batch_ms: int = Field(default=250, gt=0)
    generate: ProbeData | None = None
    verify: BackfillVerify
    cleanup: str | None = None
    # Seed 002's transition: a file of the migration (CREATE FUNCTION / CREATE TRIGGER) that keeps
    # the new tables in step with writes to the old shape; the cleanup drops what it created first.
    dual_write: str | None = None
    # The dual-read check: a query returning the source rows whose read through the new shape
    # differs from the old; passing it records the phase ``dual-read``, which the cleanup needs.
    dual_read: str | None = None
    reference_rate: ReferenceRate | None = None
    # The final schema, checked inside the cleanup's transaction (a miss rolls the cleanup back).
    expect_after_cleanup: Expectations | None = None


class ReviewVariant(_Strict):
    """Another version of the migration the review phase can be pointed at (``variant=<name>``),
    such as the plan as first proposed. No ``rollback``: the variant has none (a finding)."""

    why: str = ""
    migration: str | list[str]
    rollback: str | list[str] | None = None
    # The verdict the plan's own reviewers reached (seed 001: the proposal was sent back): the demo
    # archives the review of this variant as evidence, an expected refusal rather than a failure.
    verdict: Literal["go", "no-go"] | None = None


class ReviewSpec(_Strict):
    """What the review phase needs beyond the migration: the project's existing migrations
    (numbering, and the schema they build) and the variants it may review instead."""

    why: str = ""
    existing: str | None = None
    variants: dict[str, ReviewVariant] = {}


class KeptColumn(_Strict):
    """A column the rollback leaves in place on purpose (seed 000: "optional - can keep for future"):
    the fingerprint check accepts exactly that difference, and says so."""

    table: str
    column: str
    why: str = ""


class Origin(_Strict):
    """Where an imported runbook came from: the tool, and the migration's name and version there,
    so its history table can be kept in step (``dbrunbook.state.toolhistory``)."""

    tool: Literal["prisma", "updown", "flyway", "numbered", "set"]
    name: str
    version: str = ""
    script: str = ""
    previous: str = ""  # the version before this one (golang-migrate keeps only the current)


class RunbookSpec(_Strict):
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
        """Every statement of the script's files, in order, each file's own BEGIN ... COMMIT set
        aside (the phase owns the transaction); and whether any file had one."""
        statements: list[Statement] = []
        wrapped = False
        for relative in self.script_files(kind):
            body, had = strip_transaction_wrapper(read_statements(self.file(relative), dialect, self.display(relative)))
            statements += body
            wrapped = wrapped or had
        return statements, wrapped

    def wrapped_files(self, kind: str, dialect: str = "postgresql") -> set[str]:
        """The script's files (as shown in messages) whose author wrapped them in BEGIN ... COMMIT:
        deploy keeps what the author grouped in one transaction."""
        return {self.display(relative) for relative in self.script_files(kind)
                if strip_transaction_wrapper(read_statements(self.file(relative), dialect, self.display(relative)))[1]}

    def migration_checksum(self) -> str:
        """The checksum the ledger records: the file's sha256, or for several files the sha256
        of their names and digests, so renaming, reordering or editing any one of them shows."""
        files = self.migration_files
        if len(files) == 1:
            return self.checksum(files[0])
        return hashlib.sha256("".join(f"{name}:{self.checksum(name)}\n" for name in files).encode()).hexdigest()

    @property
    def rollback_expectations(self) -> Expectations:
        """Declared explicitly: what a migration created cannot be told apart, in general, from
        what was there before it. With none declared, the fingerprint comparison is the proof."""
        return self.spec.expect_after_rollback or Expectations()

    def checksum(self, relative: str) -> str:
        return sha256_file(self.file(relative))

    def sql_checksums(self) -> dict[str, str]:
        """sha256 of every SQL file the spec names."""
        names = [*self.migration_files, *self.rollback_files, *self.fixture_files]
        return {name: self.checksum(name) for name in names}

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


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


def read_yaml(text: str) -> Any:
    """A YAML document as plain data (safe loading: no Python objects)."""
    return yaml.load(text, Loader=_YAML_LOADER)


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
    for key, value in (("fixture", spec.fixture), ("review.existing", spec.review.existing)):
        for relative in [] if value is None else _as_list(value):
            _inside(folder, relative, key, spec_path)
            if not (folder / relative).exists():
                raise SpecError(spec_path, f"not found: {folder / relative}", key)
    return Runbook(name=folder.name, path=folder, spec=spec)
