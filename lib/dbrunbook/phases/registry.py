"""The phase registry: each phase is registered once, here.

A phase's class (and a class per dialect where one differs), its notebook, its parameters with
their types, defaults and help, and the ``runbook.yaml`` section it reads. The CLI's ``-p``
validation, the check that each notebook's parameters cell declares exactly these, the classes
:func:`dbrunbook.open_phase` instantiates and the README's phase table all come from it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..dialects import Dialect
from ..durations import parse_duration
from ..errors import SpecError
from ..state.status import Direction
from ..targets.secrets import refuse_password

M = TypeVar("M")


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    #: Checks a value of the right type (raises :class:`SpecError`): a duration that must parse.
    check: Callable[[Any], object] | None = None

    def coerce(self, value: object, phase: str) -> object:
        """The value as this parameter's type, or a :class:`SpecError` naming the parameter."""
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # -p confirm=2024 names a target "2024"
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            if self.check is not None and value != self.default:
                try:
                    self.check(value)
                except SpecError as exc:
                    raise SpecError("-p", f"{self.name}={value!r}: {exc.message}", self.name) from None
            return value
        raise SpecError("-p", f"{self.name}={value!r}: phase {phase} takes a {kind.__name__} ({self.help})",
                        self.name)


#: What every phase notebook takes; ``dbrunbook run`` sets them.
COMMON = (
    Param("runbook", str, "event_message_fk", "a runbook name under runbooks/, or a path to a runbook folder"),
    Param("target", str, "dev", "a target NAME (dev, prod, ...) or env:VAR; never a URL with a password"),
    Param("dry_run", bool, False, "True: one transaction, always rolled back; nothing is committed"),
    Param("run_id", str, "", "set by `dbrunbook run`; empty: a new id"),
    Param("archive_dir", str, "", "the run's archive folder, set by `dbrunbook run`"),
)
COMMON_NAMES = frozenset(p.name for p in COMMON)


@dataclass(frozen=True)
class PhaseInfo:
    name: str
    cls: str                        # "module:Class"
    summary: str                    # what it does, for the README's table
    section: str | None             # the runbook.yaml section it reads
    params: tuple[Param, ...] = ()
    by_dialect: dict[str, str] = field(default_factory=dict)
    target_default: str = "dev"
    dry_run_help: str = ""
    #: On a production target: "made for it" (deploy, backfill), "read-only" (review, code_verify),
    #: "consent" (refused unless ``confirm`` names the target), or "own guard" (clean_slate).
    production: str = "consent"
    #: Why the phase needs consent there, and what to use instead.
    on_production: str = ""
    #: Which way it moves the runbook's state (None: it does not move it). A set runs a backward
    #: phase over its members in reverse, and only over those applied on the target.
    direction: Direction | None = None
    #: The runbook script it applies as written (``migration`` or ``rollback``), if it applies one.
    script: str | None = None
    #: The dialects it runs on, and (when not all) what it needs of them, said when it refuses.
    dialects: tuple[Dialect, ...] = tuple(Dialect)
    needs: str = ""

    @property
    def guarded_on_production(self) -> bool:
        """Whether a production target needs the operator's consent for it (``confirm``, or the
        phase's own guard): a fleet asks for it once, as ``-p confirm=fleet``."""
        return self.production in ("consent", "own guard")

    @property
    def changes_target(self) -> bool:
        """Whether what it does on the target stays there: a production target needs consent for it
        (or the phase is made for production, or guards itself)."""
        return self.production != "read-only"

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    def all_params(self) -> dict[str, Param]:
        common = {p.name: p for p in COMMON}
        common["target"] = Param("target", str, self.target_default, common["target"].help)
        if self.dry_run_help:
            common["dry_run"] = Param("dry_run", bool, False, self.dry_run_help)
        return {**common, **{p.name: p for p in self.params}}

    def class_path(self, dialect: str) -> str:
        return self.by_dialect.get(dialect, self.cls)


PHASES: dict[str, PhaseInfo] = {info.name: info for info in (
    PhaseInfo("review", "dbrunbook.phases.review:ReviewRun",
              "lint (squawk + own rules) and live preflight (locks, table sizes, lock holders, long transactions, "
              "invalid indexes, preconditions); GO / NO-GO", "review", (
                  Param("variant", str, "", "a variant declared under review.variants; empty: the runbook's migration"),
                  Param("existing", str, "", "the project's migrations folder; empty: review.existing from the runbook"),
                  Param("fail_on", str, "error", "the severity that makes the verdict no-go: error, warning or info"),
                  Param("squawk", bool, True, "False: our own rules only"),
                  Param("long_transaction_s", float, 60.0,
                        "a transaction open longer than this on the target is a finding")), production="read-only",
              dialects=(Dialect.POSTGRESQL,), needs="reads PostgreSQL's parser, catalog and locks"),
    PhaseInfo("schema", "dbrunbook.phases.schema:SchemaRun",
              "applies `migration.sql` in one transaction with its checks (one statement at a time, written ahead in "
              "the ledger, when a statement cannot run in a transaction); proves the expectations", "expect",
              (Param("confirm", str, "", "on a production target: must equal its name (consent, recorded in the ledger)"),),
              on_production="production changes go through the deploy phase (run lock, rehearsal check, lock policy): "
                            "--phases deploy", direction=Direction.FORWARD, script="migration"),
    PhaseInfo("clean_slate", "dbrunbook.phases.clean_slate:CleanSlateRun",
              "deletes the rows the runbook declares disposable; backs every deleted row up first", "clean_slate", (
                  Param("confirm", str, "", "must equal the target's name, or nothing is deleted"),
                  Param("allow_production", bool, False, "also required when the target is marked production"),
                  Param("reset", bool, False, "also run the optional reset the runbook declares")),
              production="own guard", dialects=(Dialect.POSTGRESQL,), needs="backs up rows with PostgreSQL's COPY"),
    PhaseInfo("backfill", "dbrunbook.phases.backfill:BackfillRun",
              "checkpointed, resumable batches; a `max_batches` slice pauses; verification (counts, checksum, "
              "dual-write parity) at the end; cleanup only after a passed verification", "backfill", (
                  Param("restart", bool, False, "True: ignore the checkpoint and start from the first key"),
                  Param("batch_size", int, 0, "the first batch's size; 0: the runbook's"),
                  Param("target_batch_ms", float, 0, "the batch duration the size adapts to; 0: the runbook's"),
                  Param("pause_ms", float, 0, "a pause between batches, to leave the application room"),
                  Param("max_batches", int, 0, "stop after this many batches (paused, resumable); 0: run to the end"),
                  Param("max_duration", str, "", "a time window (30m, 2h, 1h30m): stop at the first batch boundary "
                        "after it (paused, resumable); empty: no window", parse_duration),
                  Param("generate", int, 0, "first add this many generated rows (never on a production target)"),
                  Param("parity_recent", int, 100, "the dual-write parity check looks at this many latest rows"),
                  Param("cleanup", bool, False, "True: drop the deprecated columns, if the verification passed")),
              production="made for it", dialects=(Dialect.POSTGRESQL,),
              needs="runs on PostgreSQL (keyset batches, FOR SHARE, xid8 parity)"),
    PhaseInfo("code_verify", "dbrunbook.phases.code_verify:CodeVerifyRun",
              "checks an application tree against the plan's BEFORE/AFTER code and the Prisma schema", "code_verify", (
                  Param("app", str, "", "the application tree to verify; empty: the runbook's sample app"),),
              production="read-only"),
    PhaseInfo("test", "dbrunbook.phases.test:BehaviourRun",
              "behaviour cases in rolled-back savepoints; a performance probe with timings, chart and EXPLAIN", "test", (
                  Param("rows", int, 100000, "rows the performance probe generates (rolled back afterwards)"),
                  Param("confirm", str, "", "on a production target: must equal its name (consent, recorded in the ledger)")),
              on_production="it generates rows and takes locks on live tables (all rolled back, but the load is real)"),
    PhaseInfo("deploy", "dbrunbook.phases.deploy:DeployRun",
              "run lock, preflight (drift, rehearsal, `pg_dump --schema-only`), online steps under a lock policy, "
              "each written ahead in the ledger, verification", "expect", (
                  Param("rehearsal", str, "dev",
                        "the target the migration was rehearsed on (schema phase); \"\" skips the check"),
                  Param("lock_timeout_ms", int, 500,
                        "how long one attempt may wait for a lock before it gives up and retries"),
                  Param("lock_attempts", int, 8, "attempts per step, with exponential backoff between them"),
                  Param("statement_timeout_s", float, 900, "the longest any one step may run"),
                  Param("run_lock_wait_s", float, 30, "how long to wait for another deploy of this target to finish"),
                  Param("accept_drift", str, "",
                        "the target's name: deploy although its schema drifted from its ledger (consent, recorded)")),
              by_dialect={"sqlite": "dbrunbook.phases.deploy_sqlite:SqliteDeployRun"}, target_default="prod",
              dry_run_help="True: run lock, preflight and plan only; nothing is applied", production="made for it",
              direction=Direction.FORWARD),
    PhaseInfo("rollback", "dbrunbook.phases.rollback:RollbackRun",
              "applies `rollback.sql` (from applied, or from a part-way state: what is already gone is skipped); "
              "proves the schema fingerprint is back to the one recorded before the first attempt",
              "expect_after_rollback",
              (Param("confirm", str, "", "on a production target: must equal its name (consent, recorded in the ledger)"),),
              on_production="it drops what the migration made", direction=Direction.BACKWARD, script="rollback"),
)}
PHASE_NAMES: tuple[str, ...] = tuple(PHASES)


def in_order(members: Sequence[M], phases: Sequence[str]) -> list[tuple[M, str]]:
    """(member, phase) in the order they run: each phase over the members in order, a backward
    phase over them in reverse (a set's rollback undoes the newest member first)."""
    return [(member, phase) for phase in phases
            for member in (list(reversed(members)) if phase_info(phase).direction == Direction.BACKWARD else members)]


def takes_back(phases: Sequence[str]) -> bool:
    """Whether any of the phases moves a runbook backward (a set then runs over its applied members)."""
    return any(phase_info(p).direction == Direction.BACKWARD for p in phases)


def only(direction: Direction, phases: Sequence[str]) -> bool:
    """Whether every phase moves runbooks ``direction``."""
    return bool(phases) and all(phase_info(p).direction == direction for p in phases)


def phase_info(phase: str) -> PhaseInfo:
    if phase not in PHASES:
        raise SpecError("--phases", f"unknown phase {phase!r}; phases are {', '.join(PHASE_NAMES)}")
    return PHASES[phase]


def check_parameters(phases: list[str], parameters: dict[str, object]) -> dict[str, object]:
    """The ``-p`` values checked against the phases that take them and coerced to their types;
    a parameter no phase takes, or a value of the wrong type, is refused naming the parameter."""
    infos = [phase_info(p) for p in phases]
    out: dict[str, object] = {}
    for name, value in parameters.items():
        refuse_password(name, value)
        owners = [(info, info.all_params()[name]) for info in infos
                  if name in info.all_params() and name not in COMMON_NAMES]
        if not owners:
            takes = sorted({p for info in infos for p in info.all_params() if p not in COMMON_NAMES})
            raise SpecError("-p", f"unknown parameter(s) {name} for phase(s) {', '.join(phases)}; "
                                  f"they take: {', '.join(takes) or 'no -p parameters'}", name)
        info, param = owners[0]
        out[name] = param.coerce(value, info.name)
    return out


def phase_table_markdown() -> str:
    """The README's phase table."""
    rows = ["| phase | what it does | its own parameters |", "|---|---|---|"]
    for info in PHASES.values():
        params = ", ".join(f"`{p.name}`" for p in info.params) or "-"
        rows.append(f"| `{info.name}` | {info.summary} | {params} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m dbrunbook.phases.registry: the README's phase table, regenerated
    print(phase_table_markdown())
