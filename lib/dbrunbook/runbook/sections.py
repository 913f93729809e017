"""The phase sections of runbook.yaml (``clean_slate``, ``code_verify``, ``test``, ``backfill``,
``review``) and the runbook's origin and kept columns, as strict models."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from ..catalog.expectations import Expectations
from ..files import Strict


class DeleteRows(Strict):
    """Rows the clean-slate phase deletes: ``where`` is a SQL predicate (none: every row)."""

    table: str
    where: str | None = None


class ResetColumns(Strict):
    """An optional reset (run only when the notebook's ``reset`` parameter is true)."""

    table: str
    set: dict[str, str | int | float | bool | None]
    where: str | None = None


class CleanSlateSpec(Strict):
    why: str = ""
    delete: list[DeleteRows] = []
    reset: list[ResetColumns] = []


class CodeRule(Strict):
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


class PrismaRelation(Strict):
    field: str
    model: str
    fields: list[str]
    references: list[str]
    on_delete: str | None = None


class PrismaModel(Strict):
    """What one model of the Prisma schema must declare: field types as written
    (``String?``), relations, and ``@@index`` column lists."""

    model: str
    fields: dict[str, str] = {}
    relations: list[PrismaRelation] = []
    indexes: list[list[str]] = []


class PrismaSpec(Strict):
    file: str = "prisma/schema.prisma"
    models: list[PrismaModel] = []


class CodeVerifySpec(Strict):
    why: str = ""
    app: str = ""
    rules: list[CodeRule] = []
    prisma: PrismaSpec | None = None


class CaseOutcome(Strict):
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


class BehaviourCase(Strict):
    name: str
    why: str = ""
    sql: str
    expect: CaseOutcome
    show: bool = False  # also show the rows the case returned, as a frame


class ProbeQuery(Strict):
    label: str
    sql: str
    # Keep only the rows whose JSON column holds the probed value under this key, in Python:
    # the application's "fetch all, filter in JavaScript" access path.
    client_filter: dict[str, str] | None = None
    # Run with these indexes dropped (in a savepoint that is rolled back): the query as it ran
    # before the migration created them, on the same data.
    without_indexes: list[str] = []
    uses_index: str | None = None


class ProbeSpec(Strict):
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


class ProbeData(Strict):
    """Generated data for the probes: SQL that may use ``%(rows)s``."""

    why: str = ""
    rows: int = 100_000
    generate: str


class IndexSize(Strict):
    """An index whose size the test phase reports; ``compare_full``: also build the same index
    without its WHERE clause (in a rolled-back savepoint) and compare."""

    index: str
    compare_full: bool = False
    # The plan's claim of how much smaller the partial index is than the full one (percent), e.g.
    # seed 003's "98%+ smaller"; a shortfall fails unless ``claim_warn`` says why it may.
    claim_smaller_pct: float | None = None
    claim_source: str = ""
    claim_warn: str = ""


class WriteCost(Strict):
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


class RaceOutcome(Strict):
    """How a race must end: how many sessions succeed, fail with ``sqlstate``, and fetch."""

    succeeded: int
    failed: int = 0
    sqlstate: str | None = None
    fetched: int = 0


class ConcurrentCase(Strict):
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


class BehaviourSpec(Strict):
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


class BackfillVerify(Strict):
    """Seed 002's "zero data loss", as queries: ``*_count`` return one number, ``*_checksum``
    one value; ``parity`` returns the mismatching rows among the ``%(recent)s`` most recent
    source rows (old arrays against new rows): it must return none."""

    source_count: str
    target_count: str
    source_checksum: str
    target_checksum: str
    parity: str


class ReferenceRate(Strict):
    """A rate the plan reported, shown beside the measured one (context, not a claim to fail on)."""

    rows_per_s: float = Field(gt=0)
    source: str = ""


class BackfillSpec(Strict):
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


class ReviewVariant(Strict):
    """Another version of the migration the review phase can be pointed at (``variant=<name>``),
    such as the plan as first proposed. No ``rollback``: the variant has none (a finding)."""

    why: str = ""
    migration: str | list[str]
    rollback: str | list[str] | None = None
    # The verdict the plan's own reviewers reached (seed 001: the proposal was sent back): the demo
    # archives the review of this variant as evidence, an expected refusal rather than a failure.
    verdict: Literal["go", "no-go"] | None = None


class ReviewSpec(Strict):
    """What the review phase needs beyond the migration: the project's existing migrations
    (numbering, and the schema they build) and the variants it may review instead."""

    why: str = ""
    existing: str | None = None
    variants: dict[str, ReviewVariant] = {}


class KeptColumn(Strict):
    """A column the rollback leaves in place on purpose (seed 000: "optional - can keep for future"):
    the fingerprint check accepts exactly that difference, and says so."""

    table: str
    column: str
    why: str = ""


class Origin(Strict):
    """Where an imported runbook came from: the tool, and the migration's name and version there,
    so its history table can be kept in step (``dbrunbook.state.toolhistory``)."""

    tool: Literal["prisma", "diesel", "sqitch", "flyway", "pop", "updown", "goose", "dbmate", "numbered", "set"]
    name: str
    version: str = ""
    script: str = ""
    previous: str = ""  # the version before this one (golang-migrate keeps only the current)
