"""A phase run: the object a phase notebook steps through, one method per cell.

``schema`` applies the migration and proves the expectations; ``rollback`` applies the rollback
and proves the schema is back to the fingerprint recorded before the migration. Both hold one
transaction from the first look at the schema to :meth:`PhaseRun.finish`, which commits only
when every check passed (and never in a dry run). A failure rolls back, records ``failed`` in
the ledger on a separate connection, and raises one readable line.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..catalog import expect, introspect
from ..errors import (
    ChecksFailed,
    DbrunbookError,
    GuardRefused,
    SpecError,
    StatementFailed,
)
from ..paths import outputs_dir
from ..run import startup
from ..runbook.spec import Expectations, Runbook, load_runbook
from ..sql import effects
from ..sql.execute import (
    Executed,
    executed_frame,
    run_autocommit_statement,
    run_statement,
    statements_frame,
)
from ..sql.statements import Statement
from ..state import ledger, toolhistory
from ..state.ledger import new_run_id
from ..targets.resolve import Target, engine, redact, refuse_password, resolve_target
from . import registry, report, salvage
from .evidence import Evidence, step

APPLY = "apply"
NOOP = "noop"
SCRIPT_PHASES = {"schema": "migration", "rollback": "rollback"}

_current: BasePhase | None = None


@dataclass(frozen=True)
class Plan:
    decision: str
    statements: list[Statement]
    in_transaction: bool
    reason: str


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
    return {"confirm": confirm, "by": ledger.operator(), "at": ledger.now().isoformat(timespec="seconds")}


class BasePhase:
    """What every phase run shares: runbook, target, ledger, banner, archive folder, and how a
    failure is recorded (a ``failed`` event on a separate connection, then one readable line)."""

    #: The ledger action recorded when the phase fails before it has decided anything.
    default_action = "run"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, dry_run: bool = False,
                 run_id: str = "", archive_dir: str | Path = "", confirm: str = "") -> None:
        startup.settle()  # a CLI that runs phases in-process (rehearse) has done its imports
        if runbook.spec.engine != target.dialect:
            raise GuardRefused(f"runbook {runbook.name} is written for {runbook.spec.engine}, "
                               f"but target {target.name} is {target.dialect}")
        consent = guard_production(phase, target, confirm)
        self.phase = phase
        self.runbook = runbook
        self.target = target
        self.dry_run = dry_run
        self.run_id = run_id or new_run_id()
        self._archive_dir = Path(archive_dir) if archive_dir else None
        self.operator = ledger.operator()
        self.started_at = ledger.now()
        self.engine: Engine = engine(target)
        self.conn: Connection = self.engine.connect()
        try:
            if target.dialect == "postgresql":
                # pg_stat_activity says whose session this is; a runner that must stop the run finds it by its id.
                self.conn.execute(sa.text("SELECT set_config('application_name', :name, false)"),
                                  {"name": f"dbrunbook {phase} {self.run_id}"[:63]})
            # On the phase's own session, committed apart: one connection less per phase (a fleet
            # opens it on every database).
            ledger.ensure_ledger(self.conn)
            self.conn.commit()
        except BaseException:
            self.conn.close()
            raise
        self.conn.begin()
        self.state = ledger.read_state(self.conn, runbook.name)
        if target.dialect == "sqlite":
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
        return ledger.Event(
            run_id=self.run_id, runbook=self.runbook.name, phase=self.phase, action=action,
            status=status, target=self.target.name, operator=self.operator,
            started_at=self.started_at, finished_at=ledger.now(), dry_run=self.dry_run,
            error=error, checksums=self._checksums(),
            detail={**self.detail, "failures": self.failures[:20]},
        )

    def _record(self, action: str, status: str, error: str | None = None) -> None:
        # A separate connection: the phase's own transaction is gone (or about to be).
        with self.engine.begin() as conn:
            ledger.record_event(conn, self._event(action, status, error))

    def _failed_action(self) -> str:
        return self.default_action

    def _failed_state(self, exc: DbrunbookError) -> str:
        return ledger.FAILED

    def interrupted(self, why: str = "KeyboardInterrupt") -> None:
        """A signal stopped the phase (Stop in JupyterLab, SIGINT, SIGTERM): roll back the open
        transaction, mark a step-by-step attempt ``interrupted``, record the event, release locks."""
        if self.closed:
            return
        message = f"interrupted ({why})"
        try:
            self.conn.rollback()
            self._settle(ledger.INTERRUPTED, message)
            self._record("interrupted", ledger.INTERRUPTED, message)
        finally:
            self._close()

    def _hold_runbook_lock(self) -> Any:
        """A connection of its own holding the runbook's session advisory lock while this run moves
        the runbook step by step: ``status`` tells a live attempt from a killed one by it. It never
        holds a transaction open (CREATE INDEX CONCURRENTLY would wait on one: Flyway #1654)."""
        from ..targets.resolve import psycopg_connect

        if self._runbook_lock is not None:
            return self._runbook_lock
        conn = psycopg_connect(self.target, f"dbrunbook {self.phase} {self.run_id} lock")
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                           (ledger.runbook_lock_key(self.runbook.name),)).fetchone()
        if not (got and got[0]):
            conn.close()
            self._fail(GuardRefused(f"refused: another run is moving {self.runbook.name} on {self.target.name} "
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
                self._record(self._failed_action(), ledger.FAILED, message)
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

    def _check(self, expectations: Expectations) -> pd.DataFrame:
        """Check expectations against the schema now; failures count against the phase."""
        frame = expect.check_expectations(self.conn, expectations)
        self.failures += expect.failures(frame)
        passed = int((frame["result"] == expect.PASS).sum())
        report.say(f"**Expectations:** {passed} of {len(frame)} passed.")
        report.show(frame, status_column="result")
        return frame

    def _raise_for_failures(self) -> None:
        if self.failures:
            self._fail(ChecksFailed(self.phase, self.failures))

    def _commit(self, action: str, status: str = ledger.PASSED) -> None:
        """Commit the phase's transaction with its ledger event; a dry run rolls back and
        records the event alone."""
        if self.dry_run:
            self.conn.rollback()
            self._record(action, status)
        else:
            ledger.record_event(self.conn, self._event(action, status))
            self.conn.commit()
        self._close()

    def _guard_open(self) -> None:
        if self.closed:
            raise DbrunbookError(f"this {self.phase} run ({self.run_id}) is finished; open a new one")

    def _close(self) -> None:
        global _current
        self.closed = True
        self.conn.close()
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


class PhaseRun(BasePhase):
    """schema or rollback: apply a script in the phase's transaction and prove the result."""

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, dry_run: bool = False,
                 run_id: str = "", archive_dir: str | Path = "", confirm: str = "") -> None:
        if phase not in SCRIPT_PHASES:
            raise SpecError(phase, f"PhaseRun handles {', '.join(SCRIPT_PHASES)}")
        if phase == "rollback" and not runbook.rollback_files:
            reasons = "; ".join(runbook.spec.irreversible) or "no rollback is declared"
            raise GuardRefused(f"rollback refused: {runbook.name} is forward-only ({reasons}); nothing was changed")
        super().__init__(phase, runbook, target, dry_run=dry_run, run_id=run_id, archive_dir=archive_dir,
                         confirm=confirm)
        self.before: introspect.Snapshot | None = None
        self.plan_: Plan | None = None
        self.executed: list[Executed] | None = None
        self.decision: ledger.Decision | None = None

    # -- what the notebook calls, in order ------------------------------------------------

    @property
    def script(self) -> str:
        return self.runbook.script_name(SCRIPT_PHASES[self.phase])

    @property
    def expectations(self) -> Expectations:
        return self.runbook.spec.expect if self.phase == "schema" else self.runbook.rollback_expectations

    @step
    def plan(self) -> Plan:
        """Read the script, decide what to do from the ledger, and show both."""
        self._guard_open()
        try:
            statements, wrapped = self.runbook.read_script(SCRIPT_PHASES[self.phase], self.target.dialect)
        except DbrunbookError as exc:
            self._fail(exc)
        blocking = [s for s in statements if not s.transactional]
        in_transaction = not blocking
        self.checksums = self.runbook.sql_checksums()
        checksum = self.runbook.migration_checksum()
        state = self.state
        live = ledger.lock_held(self.conn, ledger.runbook_lock_key(self.runbook.name))
        self.decision = ledger.decide(
            ledger.FORWARD if self.phase == "schema" else ledger.BACKWARD, state, checksum, live=live,
            script=self.runbook.display(self.runbook.script_name("migration")), target=self.target.name)
        if self.decision.error is not None:
            self._fail(self.decision.error)
        decision = NOOP if self.decision.action == ledger.NOOP else APPLY
        reason = self.decision.reason + (": nothing to apply, the expectations are verified again"
                                         if self.phase == "schema" and decision == NOOP else "")
        if decision == APPLY and not self.decision.recovery:
            reason += f": run {self.script}"
        if blocking and self.dry_run:
            first = blocking[0]
            self._fail(GuardRefused(
                f"{first.file}:{first.line}: statement {first.index} cannot run inside a transaction "
                f"({first.summary}), so a dry run cannot rehearse it and roll it back"))
        if self.phase == "schema" and decision == APPLY and not self.decision.recovery:
            self._check_preconditions()
        if self.phase == "rollback" and decision == APPLY:
            closed = ledger.cleaned_up_migrations(self.conn, self.runbook.name)
            if closed:
                self._fail(GuardRefused(
                    f"rollback refused: the cleanup of {', '.join(closed)} is done on {self.target.name}, so the data "
                    "the rollback would need is gone (the rollback window closed with the cleanup); nothing was changed"))
        self.plan_ = Plan(decision, statements, in_transaction, reason)
        state_text = "none" if state is None else f"{self.decision.state} (checksum {(state.checksum or '')[:12]})"
        lines = [f"**Ledger state on {self.target.name}:** {state_text}", f"**Decision:** {reason}"]
        if wrapped:
            lines.append("The script's own `BEGIN` ... `COMMIT` is set aside: the phase runs the "
                         "statements in one transaction of its own, together with its checks and ledger entry.")
        if blocking:
            names = ", ".join(f"#{s.index} (line {s.line})" for s in blocking)
            lines.append(f"**Not in one transaction:** statement(s) {names} cannot run inside a "
                         "transaction block (e.g. CREATE INDEX CONCURRENTLY). The script runs one "
                         "statement at a time in autocommit; a failure part-way leaves the earlier "
                         f"statements applied, and {self.runbook.script_name('rollback')} is the way back.")
        else:
            lines.append("**Transaction:** all statements, the checks and the ledger entry run in one "
                         "transaction; nothing is committed unless every check passes.")
        report.say("\n\n".join(lines))
        report.show(statements_frame(statements), caption=self.script)
        return self.plan_

    @step
    def snapshot(self) -> introspect.Snapshot:
        """Fingerprint the schema before anything changes."""
        self._guard_open()
        self.before = introspect.snapshot(self.conn)
        report.say(f"**Schema fingerprint before:** `{self.before.fingerprint}`")
        report.show(self.before.summary(), caption="objects in the schema")
        return self.before

    @step
    def apply(self) -> pd.DataFrame:
        """Run the script (or nothing, for a verified no-op)."""
        self._guard_open()
        plan = self._require_plan()
        if self.before is None:
            # The ledger must hold the schema as it was before the script, even if the
            # fingerprint cell was skipped.
            self.before = introspect.snapshot(self.conn)
        if plan.decision == NOOP:
            self.executed = []
            report.say(f"**Nothing to run:** {plan.reason}.")
            return executed_frame([])
        if self.phase == "rollback":
            self._salvage(plan.statements)
        try:
            if plan.in_transaction:
                self.executed = self._run_in_transaction(plan.statements)
            else:
                self.executed = self._run_autocommit(plan.statements)
        except StatementFailed as exc:
            if not plan.in_transaction and exc.index > 1:
                exc.args = (f"{exc} (autocommit: statements 1 to {exc.index - 1} stay applied and the ledger says "
                            f"failed; fix and run {self.phase} again to resume, or run the rollback phase)",)
            self._fail(exc)
        except DbrunbookError as exc:
            self._fail(exc)
        except KeyboardInterrupt:
            self.interrupted()
            raise
        self.detail["statements"] = len(self.executed)
        frame = executed_frame(self.executed)
        total = sum(e.seconds for e in self.executed)
        report.say(f"**Ran {len(self.executed)} statement(s)** in {total * 1000:.1f} ms"
                   + (" (not committed yet)." if plan.in_transaction else " (autocommit)."))
        report.show(frame)
        return frame

    @step
    def check_expectations(self) -> pd.DataFrame:
        """Check every declared expectation against the schema as it is now."""
        self._guard_open()
        return self._check(self.expectations)

    @step
    def show_diff(self) -> pd.DataFrame:
        """What changed in the schema since :meth:`snapshot`."""
        self._guard_open()
        if self.before is None:
            raise DbrunbookError("take the snapshot (run.snapshot()) before asking for a diff")
        after = introspect.snapshot(self.conn)
        frame = introspect.diff(self.before, after)
        report.say(f"**Schema fingerprint now:** `{after.fingerprint}` "
                   f"({'unchanged' if after.fingerprint == self.before.fingerprint else f'{len(frame)} change(s)'})")
        report.show(frame, status_column="change")
        return frame

    @step
    def verify_restored(self) -> pd.DataFrame:
        """Rollback only: prove the schema equals the one recorded before the migration."""
        self._guard_open()
        now = introspect.snapshot(self.conn)
        recorded = self.state.snapshot_before if self.state is not None else None
        if self.state is None or recorded is None:
            report.say("**Fingerprint:** no forward run of this runbook is recorded on "
                       f"{self.target.name}, so there is no earlier fingerprint to compare with.")
            return introspect.diff(now, now)
        expected = introspect.Snapshot(dict(recorded))
        kept = self.runbook.spec.kept_on_rollback
        if kept:
            # Exactly the declared columns may differ: they are left out of both sides, and said so.
            expected, now = introspect.without_columns(expected, kept), introspect.without_columns(now, kept)
            report.say("**Kept on rollback (declared):** " + "; ".join(
                f"{k.table}.{k.column}" + (f" ({k.why})" if k.why else "") for k in kept)
                + ". The fingerprint comparison leaves exactly these columns out.")
        frame = introspect.diff(expected, now)
        if now.fingerprint == expected.fingerprint:
            report.say(f"**Fingerprint restored:** `{now.fingerprint}` equals the fingerprint the ledger "
                       "recorded just before the migration was applied.")
            if len(frame):
                report.say("**Information:** the same columns stand in another order (PostgreSQL adds a re-added "
                           "column at the end of its table; the fingerprint compares columns as a set):")
                report.show(frame, status_column="change")
        else:
            self.failures.append(f"schema fingerprint {now.fingerprint[:12]} differs from "
                                 f"{expected.fingerprint[:12]} recorded before the migration "
                                 f"({len(frame)} difference(s))")
            report.say(f"**Fingerprint NOT restored:** now `{now.fingerprint}`, before the migration "
                       f"`{expected.fingerprint}`. Differences (recorded before -> now):")
            report.show(frame, status_column="change")
        return frame

    @step
    def finish(self) -> None:
        """Commit (or roll back a dry run), record the outcome, and raise if anything failed."""
        self._guard_open()
        plan = self._require_plan()
        if self.executed is None:
            self._fail(DbrunbookError(f"{self.phase}: the script was never applied (run.apply())"))
        if self.failures:
            self._fail(ChecksFailed(self.phase, self.failures))
        action = self._action(plan)
        if self.dry_run:
            self.conn.rollback()
            self._record(action, ledger.PASSED)
            self._close()
            report.say(f"**Dry run passed and was rolled back:** nothing was committed to {self.target.name}.")
            return
        if not plan.in_transaction:
            self.conn.commit()
            self.conn.begin()
        if plan.decision == APPLY:
            self._move(ledger.APPLIED if self.phase == "schema" else ledger.ROLLED_BACK, self.conn)
            origin = self.runbook.spec.origin
            kept = toolhistory.record_applied(self.conn, origin, self.runbook.file(self.runbook.migration_files[0]),
                                              self.operator) if self.phase == "schema" else \
                toolhistory.record_rolled_back(self.conn, origin, origin.previous if origin else None)
            if kept:
                self.detail["tool_history"] = kept
                report.say(f"**The source tool's history, kept in step:** {kept}.")
            if self.phase == "rollback":
                ledger.mark_migrations_rolled_back(self.conn, self.runbook.name)
        ledger.record_event(self.conn, self._event(action, ledger.PASSED if plan.decision == APPLY else ledger.NOOP))
        self.conn.commit()
        self._close()
        done = {"schema": "applied", "rollback": "rolled back"}[self.phase] if plan.decision == APPLY \
            else "verified (no-op)"
        report.say(f"**{self.phase} passed:** {self.runbook.name} {done} on {self.target.name} and recorded "
                   f"in its ledger (run {self.run_id}).")

    # -- internals ------------------------------------------------------------------------

    def _action(self, plan: Plan) -> str:
        if plan.decision == NOOP:
            return "verify"
        return "apply" if self.phase == "schema" else "rollback"

    def _move(self, new: str, conn: sa.Connection, **fields: object) -> ledger.State:
        """Move the runbook's state; the schema as it was before this attempt goes along, and the
        ledger keeps it only when this is the first attempt of the cycle."""
        assert self.before is not None  # apply() always takes it
        moved = ledger.move(
            conn, self.runbook.name, new, checksum=self.runbook.migration_checksum(), checksums=self.checksums,
            run_id=self.run_id, operator=self.operator, phase=self.phase, snapshot_before=self.before.objects,
            fingerprint_after=introspect.snapshot(conn).fingerprint, **fields)
        self.in_flight = new in ledger.IN_FLIGHT
        return moved

    def _salvage(self, statements: list[Statement]) -> None:
        """Before a rollback destroys stored values (DROP TABLE, DROP COLUMN, a type change), count
        them and copy them into the archive, hashed, with the command that restores them."""
        saved = salvage.salvage(self.raw, statements, self.archive_dir)
        self.detail["salvaged"] = [{k: v for k, v in vars(s).items() if k != "restore"} for s in saved]
        if not saved:
            report.say("**Data this rollback destroys:** none (no dropped table or column holds a value).")
            return
        total = sum(s.values for s in saved)
        report.say(f"**Data this rollback destroys: {total:,} value(s)**, each copied first into the run's archive "
                   f"(`{salvage.FOLDER}/`, gzip CSV, sha256 in `backup.json`) with the command that restores it "
                   "once the migration is applied again:")
        report.show(pd.DataFrame([{"what": f"{s.kind} {s.table}" + (f".{s.column}" if s.column else ""),
                                   "values": s.values, "statement": s.where, "file": s.file, "sha256": s.sha256[:16],
                                   "restore": s.restore} for s in saved]))

    def _skip_done(self, raw: Any, stmt: Statement) -> bool:
        """In recovery (the target is part-way), whether this statement's effect is in place; an
        invalid index a killed CONCURRENTLY build left is dropped so that it is built again."""
        if self.decision is None or not self.decision.recovery:
            return False
        found = effects.statement_effects(stmt.text)
        state = effects.state_of(raw, found)
        if state == effects.INVALID:
            for effect in found or ():
                if effect.kind == "index":
                    effects.drop_invalid_index(raw, effect, concurrently=not stmt.transactional)
            return False
        return state == effects.DONE

    def _run_in_transaction(self, statements: list[Statement]) -> list[Executed]:
        done: list[Executed] = []
        skipped = []
        for stmt in statements:
            if self._skip_done(self.raw, stmt):
                skipped.append(stmt.index)
                continue
            done.append(run_statement(self.conn, stmt, len(statements)))
        if skipped:
            report.say(f"**Already done, skipped:** statement(s) {', '.join(map(str, skipped))} (their effect is in "
                       "the catalog: an earlier attempt committed them).")
        return done

    def _checksums(self) -> dict[str, str]:
        """The SQL files this phase used (empty if it failed before reading them)."""
        names = {*self.runbook.migration_files, *self.runbook.script_files(SCRIPT_PHASES[self.phase])}
        return {name: digest for name, digest in self.checksums.items() if name in names}

    def _run_autocommit(self, statements: list[Statement]) -> list[Executed]:
        """One statement at a time, each committing on its own, written ahead in the ledger: the
        intent before each statement, the outcome after it, so a kill at any instant leaves a
        ledger naming the statement that may be half done."""
        self.conn.commit()  # nothing written yet; leaves no transaction holding locks
        auto = self._hold_runbook_lock()
        with self.engine.begin() as conn:
            self._move(ledger.APPLYING if self.phase == "schema" else ledger.ROLLING_BACK, conn,
                       step=0, steps=len(statements), steps_done=0, step_sql=None, error=None)
        done: list[Executed] = []
        for stmt in statements:
            with self.engine.begin() as conn:
                ledger.step_intent(conn, self.runbook.name, stmt.index, len(statements), stmt.summary)
            if self._skip_done(auto, stmt):
                report.say(f"**Already done, skipped:** statement {stmt.index} ({stmt.summary}).")
            else:
                done.append(run_autocommit_statement(auto, stmt, len(statements)))
            with self.engine.begin() as conn:
                ledger.step_outcome(conn, self.runbook.name, stmt.index)
        self.conn.begin()
        return done

    def _failed_action(self) -> str:
        if self.plan_ is not None:
            return self._action(self.plan_)
        return "apply" if self.phase == "schema" else "rollback"

    def _require_plan(self) -> Plan:
        if self.plan_ is None:
            self.plan()
        assert self.plan_ is not None
        return self.plan_


def phase_class(phase: str, dialect: str = "postgresql") -> type[BasePhase]:
    """The class that runs a phase on a dialect, from the phase registry (imported on demand, so
    that phase modules can build on this one)."""
    module, _, name = registry.phase_info(phase).class_path(dialect).partition(":")
    cls: type[BasePhase] = getattr(importlib.import_module(module), name)
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
