"""A phase run: the object a phase notebook steps through, one method per cell.

:class:`PhaseRun` is what every phase shares: the runbook and the target (checked against each
other, and against the phase's production guard), one connection and its transaction, the ledger
(a failure is recorded ``failed`` on a separate connection, then raised as one readable line; a
signal is recorded ``interrupted``), the banner, the archive folder. Each phase is a subclass, in
the module named after it, registered in :mod:`.registry`; :func:`open_phase` is how a notebook
starts one.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..catalog import expect
from ..catalog.expectations import Expectations
from ..errors import ChecksFailed, DbrunbookError, GuardRefused, TargetBusy
from ..paths import outputs_dir
from ..runbook.spec import Runbook, load_runbook
from ..state import identity, ledger, storage
from ..state.identity import new_run_id
from ..state.status import Status
from ..targets.connect import engine, psycopg_connect
from ..targets.resolve import Target, resolve_target
from ..targets.secrets import redact, refuse_password
from . import registry, report
from .evidence import Evidence, step
from .outcome import Outcome, write_outcome

_current: PhaseRun | None = None


def guard_production(phase: str, target: Target, confirm: str) -> dict[str, str] | None:
    """Refuse a phase that changes a production target, unless the operator named the target in
    ``confirm``; the consent goes into the ledger event. Enforced here, so JupyterLab is guarded
    as much as ``dbrunbook run``."""
    info = registry.phase_info(phase)
    if not target.production or info.production != "consent":
        return None
    if confirm != target.name:
        raise GuardRefused(f"{phase} refused: target {target.name} is marked production and {info.on_production}; "
                           f"to run {phase} there anyway, consent with -p confirm={target.name}; nothing was changed")
    return {"confirm": confirm, "by": identity.operator(), "at": identity.now().isoformat(timespec="seconds")}


class PhaseRun:
    """What every phase run shares: runbook, target, ledger, banner, archive folder, and how a
    failure is recorded (a ``failed`` event on a separate connection, then one readable line)."""

    #: The ledger action recorded when the phase fails before it has decided anything.
    default_action = "run"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, dry_run: bool = False,
                 run_id: str = "", archive_dir: str | Path = "", confirm: str = "") -> None:
        if runbook.spec.engine != target.dialect:
            raise GuardRefused(f"runbook {runbook.name} is written for {runbook.spec.engine}, "
                               f"but target {target.name} is {target.dialect}")
        info = registry.phase_info(phase)
        if target.dialect not in info.dialects:
            raise GuardRefused(f"{phase} {info.needs}; target {target.name} is {target.dialect}")
        consent = guard_production(phase, target, confirm)
        self.phase = phase
        self.runbook = runbook
        self.target = target
        self.dry_run = dry_run
        self.run_id = run_id or new_run_id()
        self._archive_dir = Path(archive_dir) if archive_dir else None
        self.operator = identity.operator()
        self.started_at = identity.now()
        self.engine: Engine = engine(target)
        self.conn: Connection = self.engine.connect()
        try:
            if target.dialect.sessions:
                # pg_stat_activity says whose session this is; a runner that must stop the run finds it by its id.
                self.conn.execute(sa.text("SELECT set_config('application_name', :name, false)"),
                                  {"name": f"dbrunbook {phase} {self.run_id}"[:63]})
            # On the phase's own session, committed apart: one connection less per phase (a fleet
            # opens it on every database).
            storage.ensure_ledger(self.conn)
            self.conn.commit()
        except BaseException:
            self.conn.close()
            raise
        self.conn.begin()
        self.state = ledger.read_state(self.conn, runbook.name)
        if target.dialect.file_lock:
            # A read transaction holds SQLite's SHARED lock, which stops every writer from
            # committing; start again (BEGIN is deferred: no lock until the next read).
            self.conn.commit()
            self.conn.begin()
        self.failures: list[str] = []
        # Hashed once, when the files are read, so the ledger records what actually ran.
        self.checksums: dict[str, str] = {}
        self.detail: dict[str, object] = {}
        if consent:
            self.detail["consent"] = consent
        self.closed = False
        self._ended: ledger.Event | None = None  # the event that said how the phase ended, once committed
        # True while this run has the runbook's state in a step-by-step attempt (applying, rolling back).
        self.in_flight = False
        self._runbook_lock: Any = None
        self.opening: Evidence[None] | None = None  # the banner, as open_phase showed it

    @property
    def archive_dir(self) -> Path:
        """This run's archive folder; stepping through by hand (no ``archive_dir`` parameter),
        ``outputs/<runbook>/adhoc_<run id>/``."""
        if self._archive_dir is None:
            self._archive_dir = outputs_dir() / self.runbook.name / f"adhoc_{self.run_id}"
        self._archive_dir.mkdir(parents=True, exist_ok=True)
        return self._archive_dir

    @step
    def banner(self) -> None:
        version = ".".join(str(p) for p in (self.conn.dialect.server_version_info or ())) or "?"
        rows = [
            ("runbook", f"{self.runbook.name}: {self.runbook.spec.title}"),
            ("phase", self.phase),
            ("source", self.runbook.spec.source or "-"),
            ("target", f"{self.target.name} ({self.target.display_url})"
                       + (" - PRODUCTION" if self.target.production else "")),
            ("server", f"{self.target.dialect} {version}"),
            ("operator", self.operator),
            ("run id", self.run_id),
            ("started", self.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ]
        if self.dry_run:
            report.say("## DRY RUN: nothing below is committed\nEvery step runs in one transaction "
                       "that is rolled back at the end, whatever happens. The ledger records the dry "
                       "run as an event and nothing else.")
        report.say(report.table(rows))
        if self.runbook.spec.summary:
            report.say(self.runbook.spec.summary)

    def _ipython_display_(self) -> None:
        """A run shows itself as its banner: what runs, where, by whom (as it was opened)."""
        (self.opening or self.banner())._ipython_display_()

    # -- ledger and failures --------------------------------------------------------------

    def _checksums(self) -> dict[str, str]:
        return dict(self.checksums)

    def _event(self, action: str, status: str, error: str | None = None) -> ledger.Event:
        """The ledger event of how the phase ended (once committed, :meth:`_recorded` keeps it for
        the phase's outcome record)."""
        return ledger.Event(
            run_id=self.run_id, runbook=self.runbook.name, phase=self.phase, action=action,
            status=status, target=self.target.name, operator=self.operator,
            started_at=self.started_at, finished_at=identity.now(), dry_run=self.dry_run,
            error=error, checksums=self._checksums(),
            detail={**self.detail, "failures": self.failures[:20]},
        )

    def _recorded(self, event: ledger.Event) -> None:
        """The event is committed: it is how this phase ended (written as its outcome on close)."""
        self._ended = event

    def _record(self, action: str, status: str, error: str | None = None) -> None:
        # A separate connection: the phase's own transaction is gone (or about to be).
        event = self._event(action, status, error)
        with self.engine.begin() as conn:
            ledger.record_event(conn, event)
        self._recorded(event)

    def _failed_action(self) -> str:
        return self.default_action

    def _failed_state(self, exc: DbrunbookError) -> str:
        return Status.FAILED

    def interrupted(self, why: str = "KeyboardInterrupt") -> None:
        """A signal stopped the phase (Stop in JupyterLab, SIGINT, SIGTERM): roll back the open
        transaction, mark a step-by-step attempt ``interrupted``, record the event, release locks."""
        if self.closed:
            return
        message = f"interrupted ({why})"
        try:
            self.conn.rollback()
            self._settle(Status.INTERRUPTED, message)
            self._record("interrupted", Status.INTERRUPTED, message)
        finally:
            self._close()

    def _hold_runbook_lock(self) -> Any:
        """A connection of its own holding the runbook's session advisory lock while this run moves
        the runbook step by step: ``status`` tells a live attempt from a killed one by it. It never
        holds a transaction open (CREATE INDEX CONCURRENTLY would wait on one: Flyway #1654)."""
        if self._runbook_lock is not None:
            return self._runbook_lock
        conn = psycopg_connect(self.target, f"dbrunbook {self.phase} {self.run_id} lock")
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                           (ledger.runbook_lock_key(self.runbook.name),)).fetchone()
        if not (got and got[0]):
            conn.close()
            self._fail(TargetBusy(f"refused: another run is moving {self.runbook.name} on {self.target.name} "
                                    "right now (it holds the runbook's lock); nothing was changed"))
        self._runbook_lock = conn
        return conn

    def _settle(self, new: str, message: str) -> None:
        """After a failure or an interrupt: move the runbook's state when this run had moved it
        into a step-by-step attempt (the steps done stay done); a phase that only ever held one
        transaction leaves the state as it was, which is the truth."""
        if not self.in_flight:
            return
        with self.engine.begin() as conn:
            ledger.move(conn, self.runbook.name, new, error=message, run_id=self.run_id)
        self.in_flight = False

    def _fail(self, exc: DbrunbookError) -> NoReturn:
        message = redact(str(exc))
        if not self.closed:
            self.conn.rollback()
            try:
                self._settle(self._failed_state(exc), message)
                self._record(self._failed_action(), Status.FAILED, message)
            except sa.exc.DBAPIError as unrecorded:
                # The failure itself must not be masked (e.g. a locked SQLite file): say both.
                exc.args = (f"{exc} (and the ledger could not record it: {redact(str(unrecorded.orig))})",)
            self._close()
        raise exc

    @property
    def raw(self) -> Any:
        """The psycopg connection under the phase's connection: same session, same transaction."""
        driver = self.conn.connection.driver_connection
        assert driver is not None
        return driver

    def _check_preconditions(self) -> None:
        """Stop before anything changes when a precondition query finds offending rows."""
        if not self.runbook.spec.preconditions:
            return
        results = expect.check_preconditions(self.conn, self.runbook.spec.preconditions)
        report.show(expect.preconditions_frame(results), caption="preconditions", status_column="result")
        for result in results:
            if not result.ok:
                report.say(f"**Offending rows for '{result.precondition.name}'**"
                           + (f": {result.precondition.why}" if result.precondition.why else ""))
                report.show(result.offenders)
        try:
            expect.raise_for_preconditions(results)
        except DbrunbookError as exc:
            self._fail(exc)

    def _check(self, expectations: Expectations, *, verify: bool = False) -> pd.DataFrame:
        """Check expectations against the schema now (and, with ``verify``, run the runbook's verify
        scripts); failures count against the phase."""
        frame = expect.check_expectations(self.conn, expectations)
        if verify and self.runbook.spec.verify:
            scripts = expect.check_verify_scripts(self.conn, self.runbook.read_verify(self.target.dialect))
            frame = pd.concat([frame, scripts], ignore_index=True) if len(frame) else scripts
        self.failures += expect.failures(frame)
        passed = int((frame["result"] == expect.PASS).sum())
        report.say(f"**Expectations:** {passed} of {len(frame)} passed.")
        report.show(frame, status_column="result")
        return frame

    def _raise_for_failures(self) -> None:
        if self.failures:
            self._fail(ChecksFailed(self.phase, self.failures))

    def _commit(self, action: str, status: str = Status.PASSED) -> None:
        """Commit the phase's transaction with its ledger event; a dry run rolls back and
        records the event alone."""
        if self.dry_run:
            self.conn.rollback()
            self._record(action, status)
        else:
            event = self._event(action, status)
            ledger.record_event(self.conn, event)
            self.conn.commit()
            self._recorded(event)
        self._close()

    def _guard_open(self) -> None:
        if self.closed:
            raise DbrunbookError(f"this {self.phase} run ({self.run_id}) is finished; open a new one")

    def _close(self) -> None:
        global _current
        self.closed = True
        self.conn.close()
        event = self._ended
        if event is not None and self._archive_dir is not None:
            # After the event is committed: what the runner, the fleet or rehearse read of it.
            write_outcome(self._archive_dir, Outcome(event.runbook, event.phase, event.run_id, event.action,
                                                     str(event.status), event.error, dict(event.detail or {})))
        if self._runbook_lock is not None:
            self._runbook_lock.close()  # the session lock goes with its session
            self._runbook_lock = None
        if _current is self:
            _current = None

    def abandon(self) -> None:
        """Roll back and release the connection without recording anything."""
        if not self.closed:
            self.conn.rollback()
            self._close()


def phase_class(phase: str, dialect: str = "postgresql") -> type[PhaseRun]:
    """The class that runs a phase on a dialect, from the phase registry (imported on demand, so
    that phase modules can build on this one)."""
    module, _, name = registry.phase_info(phase).class_path(dialect).partition(":")
    cls: type[PhaseRun] = getattr(importlib.import_module(module), name)
    return cls


def open_phase(phase: str, runbook: str | Path, target: str, *, dry_run: bool = False,
               run_id: str = "", archive_dir: str | Path = "", **options: Any) -> Any:
    """Start a phase run from notebook parameters; it shows itself as its banner.

    ``options`` are the phase's own parameters (e.g. ``confirm`` for clean_slate). Opening a
    new run abandons (rolls back) one left open earlier in the same kernel, so re-running a
    notebook from the top in JupyterLab never leaves a transaction holding locks."""
    global _current
    report.install_error_display()
    for name, value in {"target": target, "runbook": str(runbook), **options}.items():
        refuse_password(name, value)
    if _current is not None:
        _current.abandon()
    resolved = resolve_target(target)
    cls = phase_class(phase, resolved.dialect)
    args: dict[str, Any] = {"dry_run": bool(dry_run), "run_id": run_id, "archive_dir": archive_dir, **options}
    run = cls(phase, load_runbook(runbook), resolved, **args)
    _current = run
    run.opening = run.banner()
    return run


def abandon_current() -> None:
    """Roll back and close the run this process opened last, if it is still open (a fleet worker
    runs many databases in one process, one after the other)."""
    if _current is not None:
        _current.abandon()
