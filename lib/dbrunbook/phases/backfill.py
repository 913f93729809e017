"""The backfill phase: a resumable, checkpointed, throttled data migration (seed 002).

The runbook declares the batch SQL (idempotent: running a batch twice inserts nothing twice),
the source table and its key. Batches walk the key in order (keyset pagination, never OFFSET);
each batch runs in one transaction that also advances the checkpoint in the ledger, so a kill at
any instant leaves either the whole batch and its checkpoint, or neither, and the next run
resumes where the checkpoint says. The batch size adapts to a target duration, and an optional
pause leaves room for the application's own writes. Verification (counts, a content checksum,
dual-write parity) is recorded in the ledger; the cleanup refuses to run without a passed one.
The state follows the seed's phases and statuses.

Why this module is long: it is one phase, the seed's steps (plan, batches, verify, dual-read,
cleanup, record) on one checkpoint, one lock and one connection; split, each step would reach into
the others' state. The batch mechanics (ranges, sizes, bisection) are in :mod:`.batches`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from pglast import ast
from psycopg import sql

from ..catalog import introspect
from ..catalog.expect import check_expectations
from ..catalog.expect import failures as expect_failures
from ..durations import parse_duration
from ..errors import (
    DbrunbookError,
    GuardRefused,
    SpecError,
    StatementFailed,
    TargetBusy,
)
from ..runbook.sections import BackfillSpec
from ..runbook.spec import Runbook
from ..sql.execute import describe_error
from ..sql.inverse import invert
from ..sql.statements import Statement, read_sql_text, render, split_postgresql
from ..state import checkpoints, identity, ledger, schemas
from ..state.checkpoints import Checkpoint, Migration, read_migration, write_migration
from ..state.status import Status
from ..targets.connect import psycopg_connect
from ..targets.resolve import Target
from . import report
from .base import PhaseRun
from .batches import (
    Batch,
    Throttle,
    _batch_summary,
    _progress_bar,
    batch_range,
    batch_statements,
    find_bad_key,
    run_batch,
)
from .evidence import step

# The seed's phases and statuses ("Stripe 6-phase pattern"), owned by the ledger.
PHASES = checkpoints.DATA_PHASES


class BackfillError(DbrunbookError):
    """A backfill could not go on; the message says where, and that the checkpoint holds."""


class BatchFailed(BackfillError):
    """A batch failed: nothing of it is committed; ``key`` is the first offending row, if found."""

    def __init__(self, number: int, first: Any, last: Any, key: Any, where: str, message: str) -> None:
        self.number, self.first, self.last, self.key = number, first, last, key
        at = f" at key {key}" if key is not None else ""
        super().__init__(f"{where}: batch {number} (keys {first}..{last}) failed{at}: {message}; nothing of the batch "
                         f"was committed and the checkpoint stays at {first!r} - 1; fix the row and run again to resume")


class CleanupRefused(GuardRefused):
    """The cleanup needs a passed verification recorded in the ledger."""




# -- the phase -----------------------------------------------------------------------------------------

class BackfillRun(PhaseRun):
    """Batches with checkpoints, verification, and the cleanup that verification unlocks."""

    default_action = "backfill"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, restart: bool = False,
                 batch_size: int = 0, target_batch_ms: float = 0, pause_ms: float = 0, max_batches: int = 0,
                 max_duration: str = "", generate: int = 0, parity_recent: int = 100, cleanup: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(phase, runbook, target, **kwargs)
        self.window_text = max_duration
        try:
            self.window = parse_duration(max_duration, "max_duration") if max_duration else None
        except SpecError as exc:
            self._fail(exc)
        if runbook.spec.backfill is None:
            self._fail(SpecError(runbook.path / "runbook.yaml", "declares no backfill", "backfill"))
        self.spec: BackfillSpec = runbook.spec.backfill
        self.restart, self.max_batches = bool(restart), int(max_batches)
        self.generate_rows, self.parity_recent, self.do_cleanup = int(generate), int(parity_recent), bool(cleanup)
        self.batch_size = int(batch_size) or self.spec.batch_size
        self.throttle = Throttle(float(target_batch_ms) or self.spec.target_batch_ms, float(pause_ms))
        self.batch_file = runbook.display(self.spec.batch)
        self.batch_sql = read_sql_text(runbook.file(self.spec.batch), self.batch_file)
        self.checksums = {self.spec.batch: runbook.checksum(self.spec.batch)}
        self.batches: list[Batch] = []
        self.migration: Migration | None = None
        self.done = False
        self.remaining = 0  # source rows after the checkpoint, counted once by plan()
        self.conn.commit()
        # A connection of its own: each batch is its own transaction, committed with its checkpoint.
        self.db: psycopg.Connection[Any] = psycopg_connect(target, f"dbrunbook backfill {self.run_id}", autocommit=False)
        try:  # a syntax error is reported now, with its line, not at the first batch
            batch_statements(self.db, self.batch_sql, self.batch_file, 0, 0)
        except SpecError as exc:
            self._fail(exc)
        self._take_lock()

    # -- one backfill at a time --------------------------------------------------------------

    def _lock_key(self) -> str:
        return checkpoints.backfill_lock_key(self.runbook.name, self.spec.name)

    def _take_lock(self) -> None:
        """A session advisory lock: a second run refuses; a killed run's lock goes with its session."""
        got = self.db.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._lock_key(),)).fetchone()
        self.db.commit()
        if not (got and got[0]):
            self._fail(TargetBusy(f"another backfill of {self.runbook.name} ({self.spec.name}) is running on "
                                     f"{self.target.name}; nothing was done"))

    # -- cells ----------------------------------------------------------------------------------

    @step
    def plan(self) -> pd.DataFrame:
        """Where the backfill stands, and what this run will do."""
        self._guard_open()
        if self.spec.why:
            report.say(self.spec.why)
        if self.generate_rows:
            self._generate()
        raw = self.db
        m = read_migration(raw, self.runbook.name, self.spec.name)
        raw.commit()
        state = ledger.read_state(self.conn, self.runbook.name)
        self.conn.commit()
        if state is None or state.state != Status.APPLIED:
            self._fail(GuardRefused(f"the schema of {self.runbook.name} is not applied on {self.target.name} "
                                    "(run the schema phase first); nothing was done"))
        if m is not None and m.phase in ("cleanup", "complete") and m.status == Status.COMPLETED:
            decision = "nothing to do: the cleanup is done, the arrays are gone"
        elif m is None or self.restart or m.status == Status.ROLLED_BACK:
            decision = "start from the beginning" if m is None else \
                "restart from the beginning (restart=True)" if self.restart else "start again: the schema was rolled back"
            m = Migration(self.runbook.name, self.spec.name, started_at=identity.now())
        else:
            decision = f"resume after key {m.checkpoint.cursor!r} (the checkpoint)" if m.checkpoint.cursor is not None \
                else "start from the beginning"
            if m.status == Status.RUNNING:
                decision += "; the previous run was interrupted (killed: it never recorded an end) and its lock is gone"
            elif m.status == Status.PAUSED:
                decision += "; the previous run paused there on purpose (max_batches or max_duration)"
        self.migration = m
        self.remaining = self._remaining(m.checkpoint.cursor)
        rows = [("data migration", self.spec.name), ("phase / status", f"{m.phase} / {m.status}"),
                ("checkpoint", _describe(m.checkpoint)),
                ("source", f"{self.spec.source}, in {self.spec.key} order: {self.remaining} rows after the checkpoint"),
                ("batch", f"{self.batch_file}, {self.batch_size} rows to start, adapting to "
                          f"{self.throttle.target_ms:g} ms per batch, pause {self.throttle.pause_ms:g} ms"),
                ("decision", decision)]
        report.say(report.table(rows))
        self.detail.update({"name": self.spec.name, "decision": decision})
        return pd.DataFrame(rows, columns=["what", "value"])

    @step
    def run(self, progress: Callable[..., Any] | None = None) -> pd.DataFrame:
        """The batches, each in one transaction with its checkpoint, until the source is done."""
        self._guard_open()
        m = self._require_plan()
        if m.phase != "backfill" and m.status == Status.COMPLETED:
            report.say(f"**Backfill already done** (phase {m.phase}): {_describe(m.checkpoint)}.")
            return self._batches_frame()
        raw, point = self.db, m.checkpoint
        bar = _progress_bar(progress, self.remaining, point.processed)
        m.status, m.error, m.run_id = Status.RUNNING, None, self.run_id
        if point.started_xid is None:
            row = raw.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
            point.started_xid = row[0] if row else None
        write_migration(raw, m)
        raw.commit()
        size, done, window_ended = self.batch_size, False, False
        # The window counts from the first batch: planning and verification are not the work it bounds.
        deadline = time.monotonic() + self.window.total_seconds() if self.window is not None else None
        try:
            while not self.max_batches or len(self.batches) < self.max_batches:
                if deadline is not None and time.monotonic() >= deadline:
                    window_ended = True
                    break
                started = time.perf_counter()
                first, last, rows = batch_range(raw, self.spec.source, self.spec.key, point.cursor, size)
                if rows == 0:
                    raw.rollback()
                    done = True
                    break
                number = point.batches + 1
                try:
                    written = run_batch(raw, self.batch_sql, self.batch_file, first, last)
                except psycopg.Error as exc:
                    raw.rollback()
                    self._batch_failed(m, number, first, last, rows, exc)
                point.cursor, point.last_id = last, last
                point.processed += rows
                point.succeeded += rows
                point.rows_written += written
                point.batches = number
                write_migration(raw, m)
                raw.commit()  # the batch and its checkpoint, together
                ms = (time.perf_counter() - started) * 1000
                self.batches.append(Batch(number, first, last, rows, written, size, ms))
                bar.update(rows)
                size = self.throttle.next_size(size, rows, ms)
                if self.throttle.pause_ms:
                    time.sleep(self.throttle.pause_ms / 1000)
        except KeyboardInterrupt:
            raw.rollback()  # the batch in flight, never its predecessors
            m.status, m.error = Status.PAUSED, "interrupted (KeyboardInterrupt)"
            write_migration(raw, m)
            raw.commit()
            self.interrupted()
            raise
        finally:
            bar.close()
        # Stopped by max_batches on purpose: paused at the checkpoint, resumable, not a failure.
        m.status, m.completed_at = (Status.COMPLETED, identity.now()) if done else (Status.PAUSED, None)
        write_migration(raw, m)
        raw.commit()
        self.done = done
        frame = self._batches_frame()
        left = 0 if done else self._remaining(point.cursor)
        self.detail["remaining"] = left
        why = f"the window of {self.window_text} ended" if window_ended else f"max_batches={self.max_batches}"
        self.detail["paused_by"] = None if done else ("max_duration" if window_ended else "max_batches")
        report.say(f"**Backfill complete:** {_describe(point)}." if done else
                   f"**Paused: {why}**, at a batch boundary: {_describe(point)}; **{left} source rows "
                   "remain**. Run the same command again to resume at the checkpoint; verification runs when the "
                   "backfill reaches the end.")
        if len(frame):
            summary = _batch_summary(frame)
            report.show(summary, caption="this run")
            self._compare_rate(summary)
        self.detail.update({"checkpoint": asdict(point), "batches_this_run": len(self.batches),
                            "worst_batch_ms": round(max((b.ms for b in self.batches), default=0.0), 1)})
        return frame

    @step
    def verify(self) -> pd.DataFrame:
        """Counts, content checksums and dual-write parity; the result goes to the ledger."""
        self._guard_open()
        m = self._require_plan()
        if m.phase in ("cleanup", "complete") and m.verification:
            report.say("**Verified before the cleanup** (the arrays are gone now): the recorded result is shown.")
            return pd.DataFrame(m.verification.get("checks", []))
        if m.status != Status.COMPLETED:
            report.say(f"**Verification not run yet:** the backfill is {m.status} at {_describe(m.checkpoint)}; it "
                       "runs when the keyset reaches the end (a paused slice is not a failure).")
            return pd.DataFrame(columns=["check", "source", "target", "result"])
        raw, v = self.db, self.spec.verify

        def one(query: str, **params: Any) -> Any:
            row = raw.execute(render(raw, query, params).encode()).fetchone()
            return row[0] if row else None

        try:
            # One snapshot for every query: the application keeps writing, and counts taken a
            # moment apart would differ without anything being lost.
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            within = self._changed_within(m.checkpoint)
            source_count, target_count = one(v.source_count), one(v.target_count)
            source_sum, target_sum = one(v.source_checksum), one(v.target_checksum)
            changed = int(one(sql.SQL("SELECT count(*) FROM {} WHERE age(xmin) <= %(w)s")
                              .format(sql.Identifier(self.spec.source)).as_string(raw), w=within) or 0)
            cursor = raw.execute(render(raw, v.parity, {"recent": self.parity_recent,
                                                        "changed_within": within}).encode())
            mismatches = pd.DataFrame(cursor.fetchall(), columns=[d.name for d in cursor.description or []])
        except psycopg.Error as exc:
            raw.rollback()
            self._fail(BackfillError(f"{self.runbook.display('runbook.yaml')} backfill.verify: {describe_error(exc)[0]}"))
        raw.rollback()
        complete = m.status == Status.COMPLETED
        checks: list[dict[str, Any]] = [
            {"check": "backfill complete", "source": m.status, "target": Status.COMPLETED, "result": _ok(complete)},
            {"check": "array elements = rows", "source": int(source_count or 0), "target": int(target_count or 0),
             "result": _ok(int(source_count or 0) == int(target_count or 0))},
            {"check": "content checksum", "source": str(source_sum), "target": str(target_sum),
             "result": _ok(source_sum == target_sum)},
            {"check": f"dual-write parity: {changed} row(s) written since the backfill began, and the latest "
                      f"{self.parity_recent}", "source": f"{len(mismatches)} mismatch(es)",
             "target": "0 mismatches",
             "result": _ok(mismatches.empty)},
        ]
        passed = all(c["result"] == "pass" for c in checks)
        m.verification = {"passed": passed, "at": identity.now().isoformat(), "run_id": self.run_id,
                          "checks": [{k: (str(v) if k != "result" else v) for k, v in c.items()} for c in checks]}
        if passed:
            m.phase = "dual-write"  # the backfill is proven; the application's dual-writes are in parity
        write_migration(raw, m)
        raw.commit()
        frame = pd.DataFrame(checks, columns=["check", "source", "target", "result"])
        report.show(frame, caption="verification (zero data loss)", status_column="result")
        if not mismatches.empty:
            report.show(mismatches.head(20), caption=f"{len(mismatches)} message(s) whose arrays and rows differ")
        self.failures += [f"verification: {c['check']}: {c['source']} vs {c['target']}" for c in checks
                          if c["result"] != "pass"]
        self.detail["verification"] = m.verification
        return frame

    @step
    def dual_read(self) -> pd.DataFrame:
        """Seed 002's dual-read: every source row read through the new shape equals its old shape.
        Passing records the phase ``dual-read``; the cleanup needs it when the runbook declares it."""
        self._guard_open()
        m = self._require_plan()
        empty = pd.DataFrame(columns=["check", "rows", "mismatches", "result"])
        if self.spec.dual_read is None:
            report.say("**No dual-read check declared** (`backfill.dual_read`): the cleanup needs only the verification.")
            return empty
        if m.phase in ("dual-read", "cleanup", "complete") and m.verification and "dual_read" in m.verification:
            report.say(f"**Dual-read recorded** ({m.verification['dual_read']['at']}): "
                       f"{m.verification['dual_read']['rows']} row(s), 0 mismatches.")
            return pd.DataFrame([m.verification["dual_read"] | {"check": "dual-read", "result": "pass"}],
                                columns=empty.columns)
        if not (m.verification and m.verification.get("passed")):
            report.say("**Dual-read not run:** it needs a passed verification first.")
            return empty
        raw = self.db
        try:
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = raw.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.spec.source))).fetchone()
            cursor = raw.execute(render(raw, self.spec.dual_read, {}).encode())
            mismatches = pd.DataFrame(cursor.fetchall(), columns=[d.name for d in cursor.description or []])
        except psycopg.Error as exc:
            raw.rollback()
            self._fail(BackfillError(f"{self.runbook.display('runbook.yaml')} backfill.dual_read: "
                                     f"{describe_error(exc)[0]}"))
        raw.rollback()
        total = int(rows[0]) if rows else 0
        passed = mismatches.empty
        frame = pd.DataFrame([{"check": "dual-read", "rows": total, "mismatches": len(mismatches),
                               "result": _ok(passed)}], columns=empty.columns)
        report.show(frame, caption="dual-read: the new tables read as the old arrays", status_column="result")
        if passed:
            m.phase = "dual-read"
            m.verification = {**(m.verification or {}),
                              "dual_read": {"rows": total, "mismatches": 0, "at": identity.now().isoformat(),
                                            "run_id": self.run_id}}
            write_migration(raw, m)
            raw.commit()
        else:
            report.show(mismatches.head(20), caption=f"{len(mismatches)} row(s) read differently")
            self.failures.append(f"dual-read: {len(mismatches)} of {total} row(s) read differently through the new "
                                 "tables")
        self.detail["dual_read"] = {"rows": total, "mismatches": len(mismatches)}
        return frame

    @step
    def cleanup(self) -> pd.DataFrame:
        """Drop the deprecated arrays, only with a passed verification in the ledger."""
        self._guard_open()
        m = self._require_plan()
        if not self.do_cleanup:
            report.say("**Cleanup not requested** (`cleanup = False`): the arrays stay, and the rollback window "
                       "stays open. Run again with `cleanup = True` once the application reads the new tables.")
            return pd.DataFrame(columns=["step", "result"])
        if m.phase == "complete" and m.status == Status.COMPLETED:
            report.say("**Cleanup already done.**")
            return pd.DataFrame(columns=["step", "result"])
        recorded = read_migration(self.db, self.runbook.name, self.spec.name)
        self.db.commit()
        verification = recorded.verification if recorded else None
        if self.spec.cleanup is None:
            self._fail(SpecError(self.runbook.path / "runbook.yaml", "declares no cleanup script", "backfill.cleanup"))
        if not verification or not verification.get("passed"):
            why = "no verification is recorded" if not verification else "the last verification failed"
            self._fail(CleanupRefused(f"cleanup refused: {why} for {self.spec.name} on {self.target.name}; "
                                      "run the backfill phase's verification until it passes; nothing was dropped"))
        if self.spec.dual_read is not None and "dual_read" not in verification:
            self._fail(CleanupRefused(f"cleanup refused: no passed dual-read is recorded for {self.spec.name} on "
                                      f"{self.target.name}; the arrays stay until reading the new tables is proven"))
        removal = self._dual_write_removal()
        statements = removal + split_postgresql(read_sql_text(self.runbook.file(self.spec.cleanup)),
                                                self.runbook.display(self.spec.cleanup))
        self.checksums[self.spec.cleanup] = self.runbook.checksum(self.spec.cleanup)
        # On the phase's own connection: the final schema's expectations are checked inside the
        # cleanup's transaction, so a miss rolls the cleanup back with the ledger's phase.
        self.conn.execute(sa.text("SELECT 1"))  # the phase's transaction is open, so commit() ends it
        raw = self.raw
        m.phase, m.status = "cleanup", Status.RUNNING
        try:
            raw.execute("SET LOCAL lock_timeout = '5s'")
            for statement in statements:
                raw.execute(statement.text.encode())
        except psycopg.Error as exc:
            self.conn.rollback()
            message, sqlstate, _ = describe_error(exc)
            self._fail(StatementFailed(statement.file, statement.line, statement.index, len(statements),
                                       statement.text, message, sqlstate))
        steps = pd.DataFrame([{"step": s.summary, "result": "pass"} for s in statements], columns=["step", "result"])
        final = self.spec.expect_after_cleanup
        if final is not None:
            checked = check_expectations(self.conn, final)
            report.show(checked, caption="the final schema (inside the cleanup's transaction)", status_column="result")
            missed = expect_failures(checked)
            if missed:
                self.conn.rollback()
                self._fail(BackfillError(f"cleanup rolled back: the final schema misses {len(missed)} expectation(s): "
                                         f"{'; '.join(missed)}; nothing was dropped"))
        m.phase, m.status, m.completed_at = "complete", Status.COMPLETED, identity.now()
        write_migration(raw, m)
        # The cleanup changed the schema: drift compares against it from now on.
        schemas.record_schema(self.conn, run_id=self.run_id, runbook=self.runbook.name, phase="backfill cleanup",
                              snapshot=introspect.snapshot(self.conn))
        self.conn.commit()
        removed = f" (the dual-write first: {len(removal)} statement(s))" if removal else ""
        report.say(f"**Cleanup done:** {len(statements)} statement(s){removed} and `{self.spec.cleanup}` committed "
                   "with the ledger's phase `complete`. The rollback window is closed.")
        return steps

    def _dual_write_statements(self) -> tuple[str, list[Statement]]:
        """The dual-write file's statements, and how messages name it (none declared: no statements)."""
        if self.spec.dual_write is None:
            return "", []
        where = self.runbook.display(self.spec.dual_write)
        return where, split_postgresql(read_sql_text(self.runbook.file(self.spec.dual_write), where), where)

    def _dual_write_removal(self) -> list[Statement]:
        """What the dual-write file created (its triggers, functions), dropped in reverse order."""
        where, created = self._dual_write_statements()
        drops: list[Statement] = []
        for statement in reversed(created):
            inverse = invert(statement)
            if inverse.irreversible:
                self._fail(SpecError(self.runbook.path / "runbook.yaml", f"{where} line {statement.line}: cannot be "
                                     f"removed at cleanup: {inverse.irreversible}", "backfill.dual_write"))
            drops += [replace(statement, text=text, kind="DROP") for text in inverse.statements]
        return drops

    def _changed_within(self, point: Checkpoint) -> int:
        """How many transactions back ``age(xmin)`` must reach to cover every row written since
        the backfill began (0 when the checkpoint predates that record: the latest rows only).
        Takes the caller's transaction an xid, so that ``age`` counts from it."""
        row = self.db.execute("SELECT pg_current_xact_id()::text").fetchone()
        if point.started_xid is None or row is None:
            return 0
        return max(int(row[0]) - int(point.started_xid), 0)

    def _compare_rate(self, summary: pd.DataFrame) -> None:
        reference = self.spec.reference_rate
        value = summary["rows/s"].iloc[0]
        if value is None or pd.isna(value):
            return
        measured = int(value)
        self.detail["rows_per_s"] = measured
        if reference is None:
            return
        ratio = float(measured) / reference.rows_per_s
        report.say(f"**Rate:** {measured} rows/s measured in this run; the plan reported {reference.rows_per_s:g} rows/s "
                   f"({reference.source}): {ratio:.1f}x.")
        self.detail["reference_rows_per_s"] = reference.rows_per_s

    @step
    def finish(self) -> None:
        """Record the run (``paused`` when it stopped at ``max_batches``); raise when verification failed."""
        self._guard_open()
        self._raise_for_failures()
        paused = self.migration is not None and self.migration.status == Status.PAUSED
        self._commit("backfill", Status.PAUSED if paused else Status.PASSED)
        if paused:
            report.say(f"**backfill paused** at its checkpoint on {self.target.name} with {self.detail.get('remaining')} "
                       f"source rows remaining; recorded (run {self.run_id}). Run it again to go on.")
        else:
            report.say(f"**backfill passed** and was recorded on {self.target.name} (run {self.run_id}).")

    # -- internals ------------------------------------------------------------------------------

    def _require_plan(self) -> Migration:
        if self.migration is None:
            self.plan()
        assert self.migration is not None
        return self.migration

    def _remaining(self, after: Any) -> int:
        ident = sql.Identifier(self.spec.key)
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.spec.source))
        if after is not None:
            query = sql.SQL("{} WHERE {} > %s").format(query, ident)
        row = self.db.execute(query, (after,) if after is not None else ()).fetchone()
        self.db.commit()
        return int(row[0]) if row else 0

    def _batch_failed(self, m: Migration, number: int, first: Any, last: Any, rows: int, exc: psycopg.Error) -> None:
        message, sqlstate, _ = describe_error(exc)
        key = find_bad_key(self.db, self.batch_sql, self.batch_file, self.spec.source, self.spec.key, first, last)
        self.db.rollback()
        m.status, m.checkpoint.failed = Status.FAILED, m.checkpoint.failed + rows
        error = BatchFailed(number, first, last, key, self.batch_file, message + (f" [{sqlstate}]" if sqlstate else ""))
        m.error = str(error)
        write_migration(self.db, m)
        self.db.commit()
        self._fail(error)

    def _batches_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(b) for b in self.batches],
                            columns=["number", "first", "last", "rows", "written", "size", "ms"])

    def _generate(self) -> None:
        if self.target.production:
            self._fail(GuardRefused(f"generate refused: {self.target.name} is a production target"))
        if self.spec.generate is None:
            self._fail(SpecError(self.runbook.path / "runbook.yaml", "declares no generator", "backfill.generate"))
        started = time.perf_counter()
        raw = self.db
        # Generated rows stand for the history the backfill moves, written before the schema: the
        # dual-write triggers stay off while they are written (in this transaction only).
        triggers = self._dual_write_triggers()
        for name, table in triggers:
            raw.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.SQL(table), sql.Identifier(name)))
        for statement in split_postgresql(render(raw, self.spec.generate.generate, {"rows": self.generate_rows}),
                                          "runbook.yaml backfill.generate"):
            raw.execute(statement.text.encode())
        for name, table in triggers:
            raw.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(sql.SQL(table), sql.Identifier(name)))
        raw.execute("ANALYZE")
        raw.commit()
        off = " as history (the dual-write trigger off while they were written)" if triggers else ""
        report.say(f"**Generated** {self.generate_rows} rows{off} in {time.perf_counter() - started:.1f} s.")

    def _dual_write_triggers(self) -> list[tuple[str, str]]:
        """(trigger, its table as written in SQL) for each trigger the dual-write file creates."""
        found: list[tuple[str, str]] = []
        for statement in self._dual_write_statements()[1]:
            node: Any = statement.node
            if isinstance(node, ast.CreateTrigStmt) and node.relation is not None:
                relation = node.relation
                table = ".".join(sql.Identifier(str(p)).as_string(self.db) for p in (relation.schemaname, relation.relname)
                                 if p)
                found.append((str(node.trigname), table))
        return found

    def _close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None and not db.closed:
            db.close()  # its session-level lock goes with it
        super()._close()


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def _describe(point: Checkpoint) -> str:
    return (f"cursor {point.cursor!r}, {point.processed} processed, {point.succeeded} succeeded, {point.failed} failed, "
            f"{point.rows_written} rows written in {point.batches} batch(es)")


