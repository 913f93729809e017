"""The commands, as plain typed functions; :mod:`dbrunbook.cli.main` is a thin shell over them.

Another program (a scheduler, a CI step) calls these as the command line does: each returns a
result that renders itself, or raises a :class:`~dbrunbook.errors.DbrunbookError` whose message is
one line."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..archive import manifest
from ..archive.history import passed_review
from ..catalog import introspect
from ..catalog.clear import clear_user_objects
from ..dialects import Dialect
from ..errors import DbrunbookError, GuardRefused, SpecError, TargetError
from ..files import sha256_file
from ..paths import project_root, state_dir
from ..phases import notebooks, registry
from ..phases.notebooks import phase_notebook
from ..phases.registry import PHASE_NAMES
from ..run import drift as drift_
from ..run import runner
from ..runbook import importer, layouts, scaffold, sets
from ..runbook.sets import RunbookSet, load_book
from ..runbook.spec import Runbook, load_runbook
from ..sql import lint as lint_
from ..sql.execute import run_statements
from ..state import approvals, checkpoints, identity, ledger, schemas, storage
from ..state.approvals import ApprovalRequired, plan_checksums, plan_sha256
from ..state.status import Status
from ..targets import embedded
from ..targets.connect import engine
from ..targets.resolve import Target, resolve_target
from ..targets.secrets import refuse_password

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
    cleared: list[str] = field(default_factory=list)   # what earlier runs had left, dropped
    reset: list[str] = field(default_factory=list)     # other runbooks' states, gone with their objects

    def render(self) -> str:
        left = f"; {len(self.cleared)} object(s) an earlier run left dropped first" if self.cleared else ""
        others = f"; the ledger states of {', '.join(self.reset)} reset too (their objects are gone)" \
            if self.reset else ""
        return (f"prepared {self.runbook} on {self.target}: {self.statements} fixture statements{left}; ledger "
                f"state reset{others}")


def prepare(runbook_ref: str, target_ref: str, *, allow_production: bool = False) -> PrepareResult:
    """Bring a target to exactly the runbook's "before" fixture: every user object dropped (whatever
    earlier runs left: :mod:`dbrunbook.catalog.clear`), the fixture loaded, and the ledger states
    of the runbooks whose objects went with them reset (their history stays), all in one
    transaction, so the phases start from the beginning. Refused on production targets."""
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
            cleared = clear_user_objects(conn, target.name, storage.SCHEMA)
            run_statements(conn, statements)
            others = [name for name in ledger.runbooks_with_state(conn) if name != book.name]
            for name in [book.name, *others]:
                ledger.reset(conn, name)
            for name in others:
                ledger.record_event(conn, replace(event(Status.PASSED), runbook=name,
                                                  action=f"target cleared by prepare of {book.name}"))
            ledger.record_event(conn, replace(event(Status.PASSED), detail={"cleared": len(cleared), "reset": others}))
            # The fixture is what the target holds now: drift compares against it.
            schemas.record_schema(conn, run_id=run_id, runbook=book.name, phase="prepare",
                                  snapshot=introspect.snapshot(conn))
    except DbrunbookError as exc:
        with eng.begin() as conn:
            ledger.record_event(conn, event(Status.FAILED, str(exc)))
        raise
    return PrepareResult(book.name, target.name, len(statements), run_id, cleared, others)


def target_refs(target: str | None, group: str | None) -> list[str]:
    """The targets a command names: one, or a group's (resolved as the fleet resolves it)."""
    if group is None:
        return [str(target)]
    from ..run.fleet import group_targets

    return group_targets(group)


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
    schema: schemas.SchemaDrift | None = None  # the target's schema against the ledger's last record

    @property
    def drifted(self) -> bool:
        """The migration changed since it was applied, or the schema out of band."""
        return "DRIFT" in self.state or (self.schema is not None and self.schema.drifted)

    @property
    def exit_code(self) -> int:
        return drift_.DRIFT_EXIT if self.drifted else 0

    def render(self) -> str:
        lines = [f"runbook {self.runbook} on {self.target}: {self.state}", self.detail]
        if self.schema is not None:
            lines.append(("SCHEMA DRIFT: " if self.schema.drifted else "schema: ") + self.schema.line()
                         + (" (dbrunbook drift lists each object)" if self.schema.drifted else ""))
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
        schema = schemas.schema_drift(conn) if state is not None else None
    if book.spec.backfill and migrations.empty:  # declared, not started: the seed's "pending"
        migrations = _frame([{"name": book.spec.backfill.name, "phase": "backfill", "status": "pending",
                                    "processed_records": 0, "checkpoint": {}, "updated_at": None, "error": None}])
    text, detail = ledger.describe_runbook(state, book, live=live)
    return StatusReport(book.name, target.name, text, detail, events, migrations, approval, schema)


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


# -- a team's own repository: init, new, notebooks, lab -------------------------------------------------

def init(folder: str = ".", import_from: str | None = None) -> scaffold.InitResult:
    """``dbrunbook init``: make ``folder`` a dbrunbook project (writing only what is missing)."""
    return scaffold.init_project(Path(folder), Path(import_from) if import_from else None)


def new(name: str, *, from_sql: str | None = None, rollback_sql: str | None = None,
        dev: str = "dev") -> scaffold.NewResult:
    """``dbrunbook new``: ``runbooks/NAME`` from a migration's SQL, its expectations generated."""
    return scaffold.new_runbook(name, project_root(), from_sql=Path(from_sql) if from_sql else None,
                                rollback_sql=Path(rollback_sql) if rollback_sql else None, dev=dev)


@dataclass(frozen=True)
class NotebooksReport:
    rows: list[tuple[str, str, str, str]]  # (name, kind, sha256, path)
    header: str = ""

    def render(self) -> str:
        width = max((len(r[0]) for r in self.rows), default=5)
        lines = [self.header] if self.header else []
        lines += [f"{name:<{width}}  {kind:<8}  {digest[:12]}  {path}" for name, kind, digest, path in self.rows]
        return "\n".join(lines)


def notebooks_list() -> NotebooksReport:
    """Each phase (and the overview page) with the notebook it runs: the project's or the packaged one."""
    return NotebooksReport([(s.phase, s.kind, s.sha256, str(s.path)) for s in notebooks.sources()],
                           f"phase notebooks (the project's notebooks/<phase>.ipynb wins; dbrunbook {__version__}):")


def notebook_path(phase: str) -> Path:
    """The notebook a phase runs: the file to give the Papermill CLI."""
    return notebooks.phase_notebook(phase)


def notebooks_eject(phases: list[str]) -> NotebooksReport:
    """Copy packaged notebooks into the project's ``notebooks/`` to customise (never overwriting)."""
    done = notebooks.eject(phases or None)
    return NotebooksReport([(e.phase, "kept" if e.kept else "ejected", sha256_file(e.path), str(e.path))
                            for e in done], "the project's own notebooks (each now runs instead of the packaged one):")


@dataclass(frozen=True)
class LabCopy:
    """A working copy of a phase notebook, runbook and target preset, under the project's local state."""

    path: Path
    phase: str
    runbook: str
    target: str
    kept: bool

    def command(self, *, no_browser: bool = False) -> list[str]:
        # As root (a container, a CI runner) JupyterLab refuses to start without being told.
        root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        return [sys.executable, "-m", "jupyter", "lab", str(self.path), *(["--no-browser"] if no_browser else []), *root]

    def render(self) -> str:
        state = "kept: your edits stay; remove it for a fresh copy" if self.kept else "written"
        return (f"{self.phase} for {self.runbook} on {self.target}: working copy {self.path} ({state})\n"
                f"  open with: {' '.join(self.command())}")

    def launch(self, *, no_browser: bool = False) -> int:
        import importlib.util
        import subprocess

        if importlib.util.find_spec("jupyterlab") is None:
            raise DbrunbookError("JupyterLab is not installed here: pip install 'dbrunbook[lab]' (or open the "
                                 f"working copy {self.path} in a JupyterLab of your own)")
        return subprocess.run(self.command(no_browser=no_browser)).returncode


def lab(runbook: str | None, phase: str, target: str | None) -> LabCopy:
    """``dbrunbook lab``: a working copy of the phase's notebook (the project's or the packaged one,
    never edited itself) with ``runbook`` and ``target`` set in an injected parameters cell, as
    Papermill injects them, under ``.dbrunbook/lab/<runbook>/<target>/``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    info = registry.phase_info(phase)
    defaults = info.all_params()
    chosen_runbook = runbook or str(defaults["runbook"].default)
    chosen_target = target or str(defaults["target"].default)
    refuse_password("target", chosen_target)
    book = load_book(chosen_runbook)  # a runbook that does not load is said now, not in the first cell
    folder = state_dir() / "lab" / book.name / chosen_target.replace("/", "__")
    path = folder / f"{phase}.ipynb"
    if path.exists():
        return LabCopy(path, phase, book.name, chosen_target, True)
    source = notebooks.notebook_source(phase)
    node = parameterize_notebook(load_notebook_node(str(source.path)),
                                 {"runbook": chosen_runbook, "target": chosen_target})
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(node, str(path))
    return LabCopy(path, phase, book.name, chosen_target, False)
