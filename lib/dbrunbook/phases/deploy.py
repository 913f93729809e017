"""The deploy phase: apply a rehearsed migration to a target that may be production.

In order: a run lock (a session-level advisory lock on an idle autocommit connection, so that
two deploys of one target serialize and CREATE INDEX CONCURRENTLY never waits on the lock's own
transaction, the bug class of Flyway #1654); a preflight (drift against this target's ledger and
the rehearsal target's, the pending or applied state, ``pg_dump --schema-only`` into the
archive); the online plan (:mod:`dbrunbook.sql.online`); each step under the lock policy; post-deploy
verification (expectations, ``indisvalid``, index sizes, ``pg_stat_user_indexes``); the ledger.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import psycopg
import sqlalchemy as sa

from ..catalog import introspect, preflight
from ..catalog.dump import dump_schema
from ..errors import DbrunbookError, DriftError, GuardRefused, RunLockBusy
from ..runbook.spec import Runbook
from ..sql.online import (
    LockPolicy,
    LockRetriesExhausted,
    Step,
    StepLog,
    attempts_frame,
    derive_steps,
    run_step,
    steps_frame,
)
from ..sql.statements import Statement
from ..state import ledger, schemas, toolhistory
from ..state.approvals import ApprovalRequired, approvals_required, valid_approval
from ..state.status import Direction, Status
from ..targets.connect import engine, psycopg_connect
from ..targets.resolve import Target, resolve_target
from . import report
from .base import PhaseRun
from .evidence import step

RUN_LOCK_KEY = "dbrunbook.deploy"  # a lock name: every version of dbrunbook takes the same one
SCHEMA_DUMP = "schema_before.sql"
APPLY, NOOP, RESUME = "apply", "noop", "resume"


# -- the run lock -------------------------------------------------------------------------------------

def lock_holder(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
        (RUN_LOCK_KEY,)).fetchone()
    if row is None:
        return "another session"
    pid, app, since = row
    return f"pid {pid} ({app or 'no application name'}, connected {since:%Y-%m-%d %H:%M:%S %Z})"


def acquire_run_lock(target: Target, run_id: str, operator: str, wait_s: float,
                     poll_s: float = 0.2) -> tuple[psycopg.Connection[Any], float]:
    """Take the target's run lock, waiting at most ``wait_s``; returns the connection holding
    it (autocommit, idle: it never holds a transaction open) and the seconds waited."""
    conn = psycopg_connect(target, f"dbrunbook deploy {run_id} {operator}")
    started = time.monotonic()
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (RUN_LOCK_KEY,)).fetchone()
        if got and got[0]:
            return conn, time.monotonic() - started
        if time.monotonic() - started >= wait_s:
            holder = lock_holder(conn)
            conn.close()
            raise RunLockBusy(f"deploy refused: another deploy holds the run lock on {target.name} ({holder}); "
                              f"waited {wait_s:g} s; nothing was changed")
        time.sleep(poll_s)


def release_run_lock(conn: psycopg.Connection[Any]) -> None:
    if not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (RUN_LOCK_KEY,))
        conn.close()


# -- the phase ---------------------------------------------------------------------------------------------

class DeployRun(PhaseRun):
    """Deploy: run lock, preflight, online plan, lock policy, verification, ledger."""

    default_action = "deploy"
    dialects: tuple[str, ...] = ("postgresql",)

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, rehearsal: str = "dev",
                 lock_timeout_ms: int = 500, lock_attempts: int = 8, statement_timeout_s: float = 900,
                 run_lock_wait_s: float = 30, accept_drift: str = "", **kwargs: Any) -> None:
        super().__init__(phase, runbook, target, **kwargs)
        self.accept_drift = accept_drift
        if target.dialect not in self.dialects:
            self._fail(GuardRefused(f"deploy needs PostgreSQL for its run lock, lock policy and pg_dump; "
                                    f"target {target.name} is {target.dialect}"))
        self.rehearsal = rehearsal
        self.policy = LockPolicy(lock_timeout_ms=int(lock_timeout_ms), attempts=int(lock_attempts),
                                 statement_timeout_s=float(statement_timeout_s))
        self.run_lock_wait_s = float(run_lock_wait_s)
        self.lock_conn: psycopg.Connection[Any] | None = None
        self.decision: str | None = None
        self.steps: list[Step] = []
        self.log = StepLog(echo=None if report.in_notebook() else print)
        self.applied = 0
        self.found_done = 0
        self.recovery = False
        self.before: introspect.Snapshot | None = None
        self.verified = False
        self.detail["policy"] = {"lock_timeout_ms": self.policy.lock_timeout_ms, "attempts": self.policy.attempts,
                                 "statement_timeout_s": self.policy.statement_timeout_s}

    # -- cells -----------------------------------------------------------------------------------

    @step
    def acquire_run_lock(self) -> pd.DataFrame:
        """Serialize deploys of this target: wait at most ``run_lock_wait_s`` for the run lock."""
        self._guard_open()
        try:
            self.lock_conn, waited = acquire_run_lock(self.target, self.run_id, self.operator, self.run_lock_wait_s)
        except DbrunbookError as exc:
            self._fail(exc)
        frame = pd.DataFrame([{"lock": f"pg_advisory_lock(hashtext('{RUN_LOCK_KEY}'))", "target": self.target.name,
                               "waited s": round(waited, 2), "held by": f"dbrunbook deploy {self.run_id}"}])
        report.say(f"**Run lock taken** after {waited:.2f} s. It is a session-level advisory lock on a connection "
                   "of its own that never holds a transaction open, so CREATE INDEX CONCURRENTLY does not wait on it.")
        report.show(frame)
        return frame

    @step
    def preflight(self) -> pd.DataFrame:
        """Drift, state and rehearsal checks, then a schema-only dump of the target into the archive."""
        self._guard_open()
        self._require_lock()
        self.conn.rollback()  # read the ledger as it is now, under the lock
        self.conn.begin()
        self.state = ledger.read_state(self.conn, self.runbook.name)
        self.checksums = self.runbook.sql_checksums()
        checksum = self.runbook.migration_checksum()
        rows: list[dict[str, str]] = []
        problems: list[DbrunbookError] = []

        state = self.state
        live = ledger.lock_held(self.conn, ledger.runbook_lock_key(self.runbook.name))
        migration = self.runbook.display(self.runbook.script_name("migration"))
        decision = ledger.decide(Direction.FORWARD, state, checksum, live=live, script=migration, target=self.target.name,
                                 repeatable=self.runbook.spec.repeatable)
        self.recovery = decision.recovery
        seen = "pending" if state is None else f"{decision.state} {str(state.checksum)[:12]} by {state.operator}"
        if decision.error is not None:
            rows.append(_row("state on " + self.target.name, seen, f"{self.runbook.script_name('migration')} is now "
                             f"{checksum[:12]}", "FAIL"))
            problems.append(type(decision.error)(f"deploy refused: {decision.error}; nothing was changed"))
        else:
            self.decision = {ledger.APPLY: APPLY, ledger.RESUME: RESUME, Status.NOOP: NOOP}[decision.action]
            todo = {APPLY: "apply", RESUME: "resume: steps already done are skipped", NOOP: "up to date: verify only"}
            rows.append(_row("state on " + self.target.name, seen, todo[self.decision], "pass"))

        drift_row, drifted = self._drift_gate()
        rows.append(drift_row)
        if drifted is not None:
            problems.append(drifted)
        approval_row, refused = self._approval()
        rows.append(approval_row)
        if refused is not None:
            problems.append(refused)
        if not self.rehearsal:
            rows.append(_row("rehearsal", "(no rehearsal target given)", "not checked", "skip"))
        elif self.rehearsal == self.target.name:
            problems.append(GuardRefused("deploy refused: the rehearsal target must be another target than "
                                         f"{self.target.name}"))
            rows.append(_row("rehearsal", self.rehearsal, "must differ from the target", "FAIL"))
        else:
            rehearsed = self._rehearsal_state()
            ok = rehearsed is not None and rehearsed.state == Status.APPLIED and rehearsed.checksum == checksum
            seen = "nothing recorded" if rehearsed is None else f"{rehearsed.state} {str(rehearsed.checksum)[:12]}"
            rows.append(_row(f"rehearsed on {self.rehearsal}", seen, f"applied {checksum[:12]}", "pass" if ok else "FAIL"))
            if not ok:
                problems.append(DriftError(
                    f"deploy refused: {self.runbook.name} with {self.runbook.script_name('migration')} {checksum[:12]} is not applied on the "
                    f"rehearsal target {self.rehearsal} ({seen}); run the schema phase there first; nothing was changed"))
        frame = pd.DataFrame(rows, columns=["check", "found", "expected", "result"])
        report.show(frame, caption="preflight", status_column="result")
        if problems:
            self._fail(problems[0])
        if self.decision == APPLY:
            self._check_preconditions()
        self._backup()
        self.before = introspect.snapshot(self.conn)
        self.detail["decision"] = self.decision
        return frame

    def _drift_gate(self) -> tuple[dict[str, str], DbrunbookError | None]:
        """The target must be what its ledger says dbrunbook made it: a schema changed out of band is
        named and refused, unless ``accept_drift`` names the target (consent, recorded)."""
        found = schemas.schema_drift(self.conn)
        if not found.drifted:
            return _row("drift from the ledger", found.line(), "none", "pass"), None
        objects = ", ".join(f"{r.change} {r.kind} {r.object}" for r in found.differences.head(5).itertuples())
        more = len(found.differences) - 5
        named = f" ({objects}{f', and {more} more' if more > 0 else ''})" if objects else ""
        if self.accept_drift == self.target.name:
            self.detail["accepted_drift"] = {"by": self.operator, "what": found.line(),
                                             "objects": [f"{r.change} {r.kind} {r.object}"
                                                         for r in found.differences.itertuples()]}
            report.say(f"**Drift accepted** by {self.operator} (`accept_drift={self.target.name}`): {found.line()}"
                       f"{named}.")
            return _row("drift from the ledger", found.line() + named, f"accepted by {self.operator}", "pass"), None
        return (_row("drift from the ledger", found.line() + named, "none", "FAIL"),
                DriftError(f"deploy refused: {self.target.name} drifted from its ledger: {found.line()}{named}; "
                           f"`dbrunbook drift --target {self.target.name}` lists it; give -p "
                           f"accept_drift={self.target.name} to deploy anyway (recorded); nothing was changed"))

    def _approval(self) -> tuple[dict[str, str], DbrunbookError | None]:
        """A production deploy that changes something needs an approval of these exact files, by
        someone other than the operator (unless the project allows self-approval)."""
        found, why = valid_approval(self.conn, self.runbook, self.operator)
        needed = (self.target.production and not self.dry_run and self.decision in (APPLY, RESUME)
                  and approvals_required())
        if found is not None:
            self.detail["approval"] = {"approver": found.approver, "approved_at": found.approved_at.isoformat(),
                                       "plan_sha256": found.plan_sha256, "review_run_id": found.review_run_id,
                                       "note": found.note}
            review = f", review {found.review_run_id}" if found.review_run_id else ""
            report.say(f"**Approved** by {found.approver} at {found.approved_at:%Y-%m-%d %H:%M} UTC (plan "
                       f"{found.plan_sha256[:12]}{review})" + (f": {found.note}" if found.note else "") + ".")
            return _row("approval", f"{found.approver}, plan {found.plan_sha256[:12]}", "these files", "pass"), None
        if not needed:
            why_not = ("not production" if not self.target.production else "dry run" if self.dry_run else
                       "nothing to apply" if self.decision not in (APPLY, RESUME) else
                       "the project's dbrunbook.yaml sets approvals.required: false")
            return _row("approval", why or "-", f"not needed ({why_not})", "skip"), None
        return (_row("approval", why, "an approval of these files by someone else", "FAIL"),
                ApprovalRequired(f"deploy refused: {why} for {self.runbook.name} on {self.target.name}; run `dbrunbook "
                                 f"approve {self.runbook.name} --target {self.target.name}` as someone other than "
                                 f"{self.operator}; nothing was changed"))

    @step
    def plan(self) -> pd.DataFrame:
        """The online steps derived from the migration, with the lock each one takes."""
        statements = self._migration()
        self.steps = derive_steps(statements, preflight.index_tables(self.raw), preflight.partitions_of(self.raw))
        self.conn.rollback()  # the catalog reads leave no transaction open while the steps run
        self.conn.begin()
        frame = steps_frame(self.steps)
        report.say(f"**Decision:** {self.decision}. **Lock policy:** lock_timeout {self.policy.lock_timeout_ms} ms "
                   f"per attempt, up to {self.policy.attempts} attempts with exponential backoff, statement_timeout "
                   f"{self.policy.statement_timeout_s:g} s.")
        report.show(frame, caption=f"{len(statements)} statement(s) of {self.runbook.script_name('migration')} -> {len(self.steps)} online step(s)")
        return frame

    @step
    def apply(self) -> pd.DataFrame:
        """Each step in order (see :meth:`_apply_steps`); every attempt is logged and shown."""
        self._guard_open()
        self._require_preflight()
        if not self.steps:
            self.plan()
        if self.decision == NOOP or self.dry_run:
            why = "already applied with this checksum" if self.decision == NOOP else "dry run: plan only"
            report.say(f"**Nothing applied:** {why}.")
            return attempts_frame([])
        summary = self._apply_steps()
        frame = attempts_frame(self.log.attempts)
        report.say(summary)
        report.show(frame, caption="attempts", status_column="outcome")
        self.detail.update({"steps": len(self.steps), "applied": self.applied,
                            "attempts": [asdict(a) for a in self.log.attempts]})
        return frame

    def _apply_steps(self) -> str:
        """The online steps on a connection of their own, each under the lock policy and written
        ahead in the ledger (intent before, outcome after)."""
        self.conn.commit()  # no transaction of ours stays open while the steps take their locks
        self._hold_runbook_lock()
        assert self.before is not None  # preflight took it
        name, total = self.runbook.name, len(self.steps)
        with self.engine.begin() as conn:
            ledger.move(conn, name, Status.APPLYING, checksum=self.runbook.migration_checksum(),
                        checksums=self.checksums, run_id=self.run_id, operator=self.operator, phase=self.phase,
                        snapshot_before=self.before.objects, step=0, steps=total, steps_done=0, step_sql=None,
                        error=None)
        self.in_flight = True
        ddl = psycopg_connect(self.target, f"dbrunbook deploy {self.run_id} ddl")
        try:
            for number, step in enumerate(self.steps, start=1):
                with self.engine.begin() as conn:
                    ledger.step_intent(conn, name, number, total, " ".join(step.sql.split()))
                if run_step(ddl, number, total, step, self.policy, self.log, skip_done=self.recovery):
                    self.applied += 1
                else:
                    self.found_done += 1
                with self.engine.begin() as conn:
                    ledger.step_outcome(conn, name, number)
        except DbrunbookError as exc:
            self.detail["attempts"] = [asdict(a) for a in self.log.attempts]
            self._fail_part_way(exc)
        except KeyboardInterrupt:
            self.detail["attempts"] = [asdict(a) for a in self.log.attempts]
            self.interrupted()
            raise
        finally:
            ddl.close()
        self.conn.begin()
        retries = sum(1 for a in self.log.attempts if a.outcome == "lock timeout")
        self.detail["retries"] = retries
        return (f"**Applied {self.applied} of {len(self.steps)} step(s)** with {retries} lock-timeout "
                f"retr{'y' if retries == 1 else 'ies'}.")

    @step
    def verify(self) -> dict[str, pd.DataFrame]:
        """Every expectation, then what the database says of the indexes (see :meth:`_verify_indexes`)."""
        self._guard_open()
        self._require_preflight()
        if self.dry_run:
            report.say("**Dry run:** nothing was applied, so there is nothing new to verify.")
            return {}
        checks = self._check(self.runbook.spec.expect, verify=True)
        indexes = self._verify_indexes()
        self.verified = True
        return {"expectations": checks, "indexes": indexes}

    def _verify_indexes(self) -> pd.DataFrame:
        """Index validity and sizes, and a pg_stat_user_indexes snapshot of the new ones."""
        indexes = self._indexes()
        invalid = indexes[indexes["valid"] == "FAIL"]
        self.failures += [f"index {name} is not valid (indisvalid = false)" for name in invalid["index"]]
        report.show(indexes, caption="indexes on the tables this deploy touched (new ones marked)", status_column="valid")
        stats = indexes[indexes["new"] == "yes"][["index", "idx_scan", "idx_tup_read", "idx_tup_fetch"]]
        report.say("**pg_stat_user_indexes** for the new index(es), the starting point for seed 003's monitoring "
                   "query (`idx_scan` should grow once the application uses them):")
        report.show(stats)
        return indexes

    @step
    def finish(self) -> None:
        """Record who deployed which checksum when, release the run lock, raise on any failure."""
        self._guard_open()
        self._require_preflight()
        self._raise_for_failures()
        if not self.verified and not self.dry_run:
            self._fail(DbrunbookError("deploy: the verification step was never run (run.verify())"))
        if self.decision in (APPLY, RESUME) and not self.dry_run:
            assert self.before is not None
            ledger.move(self.conn, self.runbook.name, Status.APPLIED, checksum=self.runbook.migration_checksum(),
                        checksums=self.checksums, run_id=self.run_id, operator=self.operator, phase=self.phase,
                        snapshot_before=self.before.objects, schema_after=introspect.snapshot(self.conn))
            kept = toolhistory.record_applied(self.conn, self.runbook.spec.origin,
                                              self.runbook.file(self.runbook.migration_files[0]), self.operator)
            if kept:
                self.detail["tool_history"] = kept
        status = Status.NOOP if self.decision == NOOP else Status.PASSED
        self._commit("deploy" if self.decision != NOOP else "verify", status)
        what = {APPLY: "deployed", RESUME: "deployed (resumed)", NOOP: "already up to date, verified"}[self.decision or NOOP]
        if self.dry_run:
            what = "planned (dry run, nothing applied)"
        report.say(f"**deploy passed:** {self.runbook.name} {what} on {self.target.name}, recorded in its ledger "
                   f"by {self.operator} (run {self.run_id}); the run lock is released.")

    # -- internals -------------------------------------------------------------------------------

    def _backup(self) -> Path:
        path = dump_schema(self.target, self.archive_dir / SCHEMA_DUMP)
        report.say(f"**Schema backup:** `pg_dump --schema-only` of {self.target.name} written to `{path.name}` "
                   f"in the run's archive folder ({path.stat().st_size:,} bytes).")
        return path

    def _rehearsal_state(self) -> ledger.State | None:
        rehearsal = resolve_target(self.rehearsal)
        with engine(rehearsal).connect() as conn:
            return ledger.read_state(conn, self.runbook.name)

    def _fail_part_way(self, exc: DbrunbookError) -> NoReturn:
        """Steps already applied stay applied (each committed on its own): say so. The ledger says
        ``partial`` after a lock timeout and ``failed`` after an error (the next deploy resumes
        either); an attempt that applied nothing and found nothing done goes back where it was."""
        if self.applied or self.recovery or self.found_done:
            exc.args = (f"{exc} ({self.applied} earlier step(s) stay applied; deploy again to resume, "
                        "or run the rollback phase)",)
        else:
            with self.engine.begin() as conn:
                ledger.restore(conn, self.state, self.runbook.name)
            self.in_flight = False
        report.show(attempts_frame(self.log.attempts), caption="attempts", status_column="outcome")
        self._fail(exc)

    def _failed_state(self, exc: DbrunbookError) -> str:
        return Status.PARTIAL if isinstance(exc, LockRetriesExhausted) else Status.FAILED

    def _indexes(self) -> pd.DataFrame:
        tables = sorted({t for step in self.steps for t in step.tables})
        new = {e.name.rpartition(".")[2] for step in self.steps if step.kind.startswith("create index")
               for e in step.effects or () if e.kind == "index"}
        rows = self.conn.execute(sa.text(
            "SELECT s.relname AS table, s.indexrelname AS index, i.indisvalid AS valid, "
            "pg_relation_size(s.indexrelid) AS bytes, pg_size_pretty(pg_relation_size(s.indexrelid)) AS size, "
            "s.idx_scan, s.idx_tup_read, s.idx_tup_fetch FROM pg_stat_user_indexes s "
            "JOIN pg_index i ON i.indexrelid = s.indexrelid "
            "WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables) ORDER BY s.relname, s.indexrelname"),
            {"tables": [t.rpartition(".")[2] for t in tables]}).mappings().all()
        frame = pd.DataFrame(rows, columns=["table", "index", "valid", "bytes", "size", "idx_scan", "idx_tup_read",
                                            "idx_tup_fetch"])
        frame["valid"] = ["pass" if v else "FAIL" for v in frame["valid"]]
        frame.insert(2, "new", ["yes" if name in new else "" for name in frame["index"]])
        return frame

    def _migration(self) -> list[Statement]:
        self._guard_open()
        self._require_preflight()
        statements, _ = self.runbook.read_script("migration", self.target.dialect)
        return statements

    def _holds_run_lock(self) -> bool:
        return self.lock_conn is not None

    def _require_lock(self) -> None:
        if not self._holds_run_lock():
            self.acquire_run_lock()

    def _require_preflight(self) -> None:
        if self.decision is None:
            self.preflight()

    def _close(self) -> None:
        if self.lock_conn is not None:
            release_run_lock(self.lock_conn)
            self.lock_conn = None
        super()._close()


def _row(check: str, found: str, expected: str, result: str) -> dict[str, str]:
    return {"check": check, "found": found, "expected": expected, "result": result}


# -- SQLite -------------------------------------------------------------------------------------------

