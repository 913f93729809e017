"""The commands, as plain typed functions; :mod:`dbrunbook.cli.main` is a thin shell over them."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..archive import manifest
from ..archive.history import passed_review
from ..config import TARGETS_ENV
from ..dialects import Dialect
from ..errors import DbrunbookError, GuardRefused, SpecError, TargetError
from ..paths import project_root
from ..phases import registry
from ..phases.notebooks import phase_notebook
from ..phases.registry import PHASE_NAMES
from ..run import runner
from ..run.kernel import kept_kernels
from ..runbook import importer, layouts, sets
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook, load_runbook
from ..sql import lint as lint_
from ..sql.execute import run_statements
from ..state import approvals, checkpoints, identity, ledger, storage
from ..state.approvals import ApprovalRequired, plan_checksums, plan_sha256
from ..state.status import Status
from ..targets import embedded
from ..targets.connect import engine
from ..targets.resolve import Target, resolve_target

DEMO_RUNBOOK = "event_message_fk"
# The seed-000 flow: rehearse everything on dev (clean_slate confirmed for dev only; the rollback
# rehearsal proves the way back), then deploy to prod, rehearsed on dev.
APPROVE = "approve"  # a flow step that records an approval instead of running phases
DEMO_APPROVER = "reviewer (demo)"
DEMO_FLOW: tuple[tuple[str, tuple[str, ...], dict[str, object]], ...] = (
    ("dev", ("review", "schema", "clean_slate", "code_verify", "test", "rollback", "schema"), {"confirm": "dev"}),
    ("prod", (APPROVE,), {}),
    ("prod", ("deploy",), {"rehearsal": "dev"}),
)

if TYPE_CHECKING:
    import pandas as pd


# -- the embedded server ------------------------------------------------------------------

def db_start() -> embedded.ServerStatus:
    embedded.ensure_running()
    return embedded.status()


def db_stop() -> bool:
    return embedded.stop()


def db_status() -> embedded.ServerStatus:
    return embedded.status()


def db_url(target_ref: str = "dev") -> str:
    """The URL of a target as psql and libpq take it, password hidden; starts the embedded server
    if the target is on it."""
    target = resolve_target(target_ref)
    url = engine(target).url
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql")
    return url.render_as_string(hide_password=True)


def db_psql(target_ref: str = "dev", args: list[str] | None = None) -> int:
    """Open the bundled psql on a target (PostgreSQL); the password travels in PGPASSWORD."""
    import subprocess

    target = resolve_target(target_ref)
    if target.dialect != Dialect.POSTGRESQL:  # psql is PostgreSQL's own client
        raise GuardRefused(f"db psql: target {target.name} is {target.dialect}, not PostgreSQL")
    url = engine(target).url.set(drivername="postgresql")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    shown = url.render_as_string(hide_password=True).replace(":***@", "@")
    binary = embedded.client_binary("psql")
    if not binary.is_file():
        raise TargetError(f"psql not found beside pg_dump ({binary.parent})")
    return subprocess.run([str(binary), shown, *(args or [])], env=env).returncode


# -- prepare --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrepareResult:
    runbook: str
    target: str
    statements: int
    run_id: str


def prepare(runbook_ref: str, target_ref: str, *, allow_production: bool = False) -> PrepareResult:
    """Load the runbook's "before" fixture into a target and forget the runbook's ledger state
    there, so the phases start from the beginning. Refused on production targets."""
    book = load_runbook(runbook_ref)
    target = resolve_target(target_ref)
    if target.production and not allow_production:
        raise GuardRefused(f"prepare refused: target {target.name} is marked production, and prepare "
                           "replaces tables with fixture data")
    fixture = book.spec.fixture
    if not fixture:
        raise SpecError(book.path / "runbook.yaml", "no fixture declared to prepare from", "fixture")
    if book.spec.engine != target.dialect:
        raise GuardRefused(f"runbook {book.name} is written for {book.spec.engine}, "
                           f"but target {target.name} is {target.dialect}")
    statements, _ = book.read_script("fixture", target.dialect)
    run_id = identity.new_run_id()
    started = identity.now()
    eng = engine(target)
    with eng.begin() as conn:
        storage.ensure_ledger(conn)

    def event(status: str, error: str | None = None) -> ledger.Event:
        return ledger.Event(run_id=run_id, runbook=book.name, phase="prepare", action="load fixture",
                            status=status, target=target.name, operator=identity.operator(),
                            started_at=started, finished_at=identity.now(), error=error,
                            checksums={name: book.checksum(name) for name in book.fixture_files})

    try:
        with eng.begin() as conn:
            run_statements(conn, statements)
            ledger.reset(conn, book.name)
            ledger.record_event(conn, event(Status.PASSED))
    except DbrunbookError as exc:
        with eng.begin() as conn:
            ledger.record_event(conn, event(Status.FAILED, str(exc)))
        raise
    return PrepareResult(book.name, target.name, len(statements), run_id)


# -- status ---------------------------------------------------------------------------------

def _frame(rows: Any = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A frame, with pandas imported when a command first needs one (``run`` does not)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class StatusReport:
    runbook: str
    target: str
    state: str
    detail: str
    events: pd.DataFrame
    migrations: pd.DataFrame = field(default_factory=lambda: _frame())
    approval: str = ""

    def render(self) -> str:
        lines = [f"runbook {self.runbook} on {self.target}: {self.state}", self.detail]
        if self.approval:
            lines.append(self.approval)
        for row in self.migrations.to_dict("records"):
            point = row["checkpoint"] or {}
            lines.append(f"data migration {row['name']}: phase {row['phase']}, status {row['status']}; checkpoint: "
                         f"cursor {point.get('cursor')}, processed {point.get('processed', 0)}, succeeded "
                         f"{point.get('succeeded', 0)}, failed {point.get('failed', 0)}, last id {point.get('last_id')}"
                         + (f"; error: {row['error']}" if row.get("error") else ""))
        if not self.events.empty:
            import pandas as pd

            shown = self.events.copy()
            shown["started_at"] = pd.to_datetime(shown["started_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
            shown["duration_s"] = shown["duration_s"].round(3)
            shown["error"] = shown["error"].fillna("").str.slice(0, 80)
            lines += ["", shown.to_string(index=False)]
        return "\n".join(line for line in lines if line is not None)


def status_set(runbook_ref: str, target_ref: str) -> list[StatusReport] | None:
    """Every member's status, in order, when ``runbook_ref`` names a set."""
    found = sets.resolve_set(runbook_ref)
    if found is None:
        return None
    return [status(str(member.path), target_ref) for member in found.members]


def status(runbook_ref: str, target_ref: str) -> StatusReport:
    """The ledger's view of one runbook on one target: current state, drift, latest events."""
    book = load_runbook(runbook_ref)
    target = resolve_target(target_ref)
    with engine(target).connect() as conn:
        state = ledger.read_state(conn, book.name)
        live = ledger.lock_held(conn, ledger.runbook_lock_key(book.name))
        events = ledger.events_frame(conn, book.name)
        migrations = checkpoints.migrations_frame(conn, book.name) if book.spec.backfill else _frame()
        approval = _approval_line(conn, book, target)
    if book.spec.backfill and migrations.empty:  # declared, not started: the seed's "pending"
        migrations = _frame([{"name": book.spec.backfill.name, "phase": "backfill", "status": "pending",
                                    "processed_records": 0, "checkpoint": {}, "updated_at": None, "error": None}])
    text, detail = ledger.describe(state, book.migration_checksum(), live=live, script=book.script_name("migration"))
    return StatusReport(book.name, target.name, text, detail, events, migrations, approval)


def _approval_line(conn: Any, book: Runbook, target: Any) -> str:
    """The newest approval on the target and whether it still covers the runbook's files."""
    recorded = approvals.recorded_approvals(conn, book.name)
    if not recorded:
        return "approval: none recorded" + (" (a production deploy needs one)" if target.production else "")
    last = recorded[0]
    valid = "covers the files as they are now" if last.plan_sha256 == plan_sha256(plan_checksums(book)) else \
        "VOID: the files changed since"
    return (f"approval: {last.approver} at {last.approved_at:%Y-%m-%d %H:%M} UTC, plan {last.plan_sha256[:12]}"
            + (f", review {last.review_run_id}" if last.review_run_id else "") + f"; {valid}")


# -- run --------------------------------------------------------------------------------------

def parse_phases(text: str) -> list[str]:
    phases = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASE_NAMES]
    if not phases or unknown:
        raise SpecError("--phases", f"unknown phase(s) {', '.join(unknown) or '(none given)'}; "
                                    f"phases are {', '.join(PHASE_NAMES)}")
    return phases


def run(runbook_ref: str, target_ref: str, phases: list[str], *,
        parameters: dict[str, object] | None = None, dry_run: bool = False,
        echo: Callable[[str], None] | None = None) -> manifest.RunResult:
    """Execute phase notebooks with Papermill into a new archive folder; stops at the first
    failed phase. The result's ``ok`` is True only when every phase passed."""
    book = sets.load_book(runbook_ref)
    target = resolve_target(target_ref)
    for phase in phases:
        phase_notebook(phase)
    checked = registry.check_parameters(phases, parameters or {})
    if isinstance(book, sets.RunbookSet) and registry.takes_back(phases):
        book = _applied_members(book, target)
    return runner.run_phases(book, target, target_ref, phases, checked, dry_run=dry_run, echo=echo)


def _applied_members(book: sets.RunbookSet, target: Target) -> sets.RunbookSet:
    """A set's rollback undoes the members applied (or part-way) on the target, newest first."""
    with engine(target).connect() as conn:
        states = {m.name: ledger.read_state(conn, m.name) for m in book.members}
    keep = [m for m in book.members if (s := states[m.name]) is not None and s.state != Status.ROLLED_BACK]
    return sets.RunbookSet(book.name, book.path, keep)


def import_set(src: str, dest: str, layout: str | None = None) -> importer.ImportResult:
    """``dbrunbook import``: a team's migration folder as a runbook set."""
    return importer.import_folder(Path(src), Path(dest), layout)


# -- demo ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoStep:
    target: str
    phases: list[str]
    result: manifest.RunResult
    #: "passed", or "refused (expected)" for a review whose no-go is the evidence (seed 001's proposal).
    outcome: str = "passed"

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


# (target, phases, parameters[, the review verdict expected: "no-go" makes a refusal the evidence])
Flow = list[tuple[str, list[str], dict[str, object]] | tuple[str, list[str], dict[str, object], str]]


def play_flow(runbook: str, flow: Flow, echo: Callable[[str], None] = print) -> list[DemoStep]:
    """Prepare every target of the flow from the runbook's fixture, then run each target's phases
    in order, archiving every run; stops at the first failed run. A step expecting a no-go passes
    when the review refuses with its verdict, and fails otherwise."""
    for target_ref in dict.fromkeys(step[0] for step in flow):
        prepared = prepare(runbook, target_ref, allow_production=True)
        echo(f"prepared {prepared.target}: {prepared.statements} fixture statements loaded")
    steps: list[DemoStep] = []
    for target_ref, phases, parameters, *expected in flow:
        if phases == [APPROVE]:
            # A second person approves the plan the dev run reviewed, as seed 001 asks ("Get team
            # approval before proceeding"); the production deploy then finds it in the ledger.
            echo(approve(runbook, target_ref, approver=DEMO_APPROVER, note="demo: reviewed and rehearsed on dev").render())
            continue
        shown = "".join(f" {k}={v}" for k, v in parameters.items())
        echo(f"running {runbook} on {target_ref}: {', '.join(phases)}" + (f" ({shown.strip()})" if shown else "")
             + (" - the plan's reviewers said no-go: a refusal is expected" if expected == ["no-go"] else ""))
        result = run(runbook, target_ref, phases, parameters=parameters)
        if expected == ["no-go"]:
            refused = not result.ok and "ReviewRejected" in (result.phases[-1].error or "")
            outcome = "refused (expected)" if refused else "failed"
        else:
            outcome = "passed" if result.ok else "failed"
        steps.append(DemoStep(target_ref, phases, result, outcome))
        echo(result.render() + (f"\n  {outcome}" if expected else ""))
        if outcome == "failed":
            break
    return steps


def demo(echo: Callable[[str], None] = print) -> list[DemoStep]:
    """The seed-000 flow on the embedded dev and prod databases, its runs in one kernel."""
    with kept_kernels():
        return play_flow(DEMO_RUNBOOK, [(t, list(phases), params) for t, phases, params in DEMO_FLOW], echo)


# -- demo --all ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoRow:
    runbook: str
    target: str
    phases: str
    status: str
    duration_s: float
    archive: str


def runbook_flow(book: Runbook) -> Flow:
    """A runbook's demo flow on its own two databases: review (PostgreSQL runbooks), every
    declared phase rehearsed on ``<name>_dev`` (with a rollback rehearsal), then deploy on
    ``<name>_prod``."""
    dev, prod = f"{book.name}_dev", f"{book.name}_prod"
    spec = book.spec
    declared = [phase for phase, section in (("clean_slate", spec.clean_slate), ("backfill", spec.backfill),
                                             ("code_verify", spec.code_verify), ("test", spec.test))
                if section is not None]
    dev_params: dict[str, object] = {"confirm": dev} if spec.clean_slate else {}
    review = ["review"] if Dialect(spec.engine) in registry.phase_info("review").dialects else []
    # Production gets the data migration too, as in seed 002 ("Production deployed | Cleanup
    # complete"): backfill, verification, dual-read, then the cleanup and the final schema.
    # A variant the plan's reviewers sent back is reviewed first: its no-go is archived as evidence.
    refused: Flow = [(dev, ["review"], {"variant": name}, "no-go") for name, variant in spec.review.variants.items()
                     if variant.verdict == "no-go" and review]
    deploy_params: dict[str, object] = {"rehearsal": dev}
    if spec.backfill is not None and spec.backfill.cleanup is not None:
        deploy_params["cleanup"] = True
    return [*refused, (dev, [*review, "schema", *declared, "rollback", "schema"], dev_params), (prod, [APPROVE], {}),
            (prod, ["deploy", *(["backfill"] if spec.backfill else [])], deploy_params)]


def demo_runbooks() -> list[Runbook]:
    folder = project_root() / "runbooks"
    return [load_runbook(path) for path in sorted(folder.iterdir()) if (path / "runbook.yaml").is_file()]


def demo_all(echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Every example runbook, each on its own embedded databases; one summary row per run."""
    books = demo_runbooks()
    extra = json.loads(os.environ.get(TARGETS_ENV) or "{}")
    # The project's dbrunbook.yaml names these targets too (so status knows them afterwards);
    # they are set here as well for a project, or a test session, whose config does not.
    for book in books:
        for suffix, production in (("dev", False), ("prod", True)):
            name = f"{book.name}_{suffix}"
            entry: dict[str, object] = {"sqlite_file": name} if Dialect(book.spec.engine).file \
                else {"embedded": f"demo_{name}"}
            extra.setdefault(name, {**entry, "production": production})
    # The kernels Papermill starts inherit this: the notebooks resolve the same names.
    os.environ[TARGETS_ENV] = json.dumps(extra)
    rows: list[DemoRow] = []
    with kept_kernels():  # one kernel for every runbook's runs
        for book in books:
            for step in play_flow(book.name, runbook_flow(book), echo):
                result = step.result
                rows.append(DemoRow(book.name, step.target, ",".join(p.phase for p in result.phases),
                                    "no-go(expected)" if step.outcome == "refused (expected)" else step.outcome,
                                    round(sum(p.duration_s for p in result.phases), 1), str(result.folder)))
    return rows


def demo_table(rows: list[DemoRow]) -> str:
    frame = _frame([vars(r) for r in rows], columns=list(DemoRow.__dataclass_fields__))
    frame = frame.rename(columns={"duration_s": "duration s"})
    return frame.to_string(index=False)


# -- lint -----------------------------------------------------------------------------------------

def lint(paths: list[str], *, target_ref: str | None = None, existing: str | None = None,
         rollback: str | None = None, pg_version: str | None = None, squawk: bool = True,
         variant: str | None = None, layout: str | None = None,
         squawk_options: lint_.SquawkOptions | None = None) -> lint_.LintResult:
    """Lint migration files, a runbook (its migration and rollback, or a declared ``variant``,
    numbered after its ``review.existing`` migrations), or a team's migration folder in any layout
    :mod:`dbrunbook.runbook.layouts` reads, as one chain. With a target, the rules also see its live catalog
    (column types, indexes) and squawk its server version."""
    files: list[Path] = []
    back: list[Path] | None = [Path(rollback)] if rollback else None
    earlier = sorted(Path(existing).glob("*.sql")) if existing else None
    names: dict[Path, str] = {}
    folders: list[Path] = []
    for ref in paths:
        path = Path(ref)
        if path.is_file():
            files.append(path)
            continue
        if path.is_dir() and not (path / "runbook.yaml").is_file():
            folders.append(path)
            continue
        book = load_runbook(ref)
        migration, rollbacks, _ = book.review_scripts(variant or "")
        files += [book.file(name) for name in migration]
        names.update({book.file(name): name for name in [*migration, *rollbacks]})
        back = back if back is not None else [book.file(name) for name in rollbacks]
        earlier = earlier if earlier is not None else book.existing_migrations
    if not files and not folders:
        raise SpecError("lint", "no files, runbook or migration folder given")
    if folders and files:
        raise SpecError("lint", "give a migration folder alone, or files and runbooks, not both")
    live, live_indexes = None, None
    if target_ref:
        target = resolve_target(target_ref)
        with engine(target).connect() as conn:
            live, live_indexes = lint_.live_catalog(conn)
            if pg_version is None and conn.dialect.server_version_info:
                pg_version = ".".join(str(p) for p in conn.dialect.server_version_info[:2])
    if folders:
        results = [layouts.lint_folder(folder, layout, live=live, live_indexes=live_indexes, pg_version=pg_version,
                                        squawk=squawk, squawk_options=squawk_options) for folder in folders]
        return lint_.LintResult([f for r in results for f in r.findings], [n for r in results for n in r.files])
    return lint_.lint_files(files, existing=earlier or [], live=live, live_indexes=live_indexes, rollback=back,
                            pg_version=pg_version, squawk=squawk, names=names, squawk_options=squawk_options)


def needs_review(book: Runbook | RunbookSet) -> bool:
    """The review phase is PostgreSQL's: a SQLite runbook is approved on its files alone."""
    members = book.members
    return any(Dialect(m.spec.engine) in registry.phase_info("review").dialects for m in members)


@dataclass(frozen=True)
class Approved:
    runbook: str
    target: str
    approver: str
    plan_sha256: str
    review_run_id: str | None
    members: list[str]

    def render(self) -> str:
        review = f"review run {self.review_run_id}" if self.review_run_id else "no review phase (SQLite)"
        members = f" ({len(self.members)} members)" if len(self.members) > 1 else ""
        return (f"approved {self.runbook}{members} for {self.target} by {self.approver}: plan {self.plan_sha256[:12]}, "
                f"{review}; editing any of its files voids this approval")


def approve(ref: str, target_ref: str, *, approver: str | None = None, note: str | None = None) -> Approved:
    """Record an approval of the runbook (each member of a set) as its files are now."""
    target = resolve_target(target_ref)
    book = sets.load_book(ref)
    checksums = plan_checksums(book)
    review = passed_review(book, checksums)
    if review is None and needs_review(book):
        raise ApprovalRequired(f"approve refused: no passed review of {book.name} as its files are now is in the "
                               f"archive; run `dbrunbook run {ref} --target <rehearsal> --phases review` first")
    who = approver or identity.operator()
    members = book.members
    with engine(target).begin() as conn:
        for member in members:
            own = plan_checksums(member)
            approvals.record_approval(conn, approvals.Approval(member.name, target.name, who, plan_sha256(own), own,
                                                               review, identity.now(), note))
    return Approved(book.name, target.name, who, plan_sha256(checksums), review, [m.name for m in members])
