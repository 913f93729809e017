"""The rollback phase: apply ``rollback.sql`` (from applied, or from a part-way state: what is already
gone is skipped) and prove the schema is back to the fingerprint recorded before the first attempt.

It never destroys data silently: before a statement drops a table or a column or changes a type,
the values it takes are counted and copied into the run's archive, with the command that restores
them. After a backfill's cleanup the rollback window is closed, and the phase refuses.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..catalog import introspect
from ..catalog.expectations import Expectations
from ..errors import GuardRefused
from ..runbook.spec import Runbook
from ..sql.statements import Statement
from ..state import checkpoints, ledger, toolhistory
from ..state.status import Status
from ..targets.resolve import Target
from . import report, salvage
from .evidence import step
from .script import ScriptRun


class RollbackRun(ScriptRun):
    in_flight_state, done_state, action, done = Status.ROLLING_BACK, Status.ROLLED_BACK, "rollback", "rolled back"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, dry_run: bool = False,
                 run_id: str = "", archive_dir: str | Path = "", confirm: str = "") -> None:
        if not runbook.rollback_files:
            reasons = "; ".join(runbook.spec.irreversible) or "no rollback is declared"
            raise GuardRefused(f"rollback refused: {runbook.name} is forward-only ({reasons}); nothing was changed")
        super().__init__(phase, runbook, target, dry_run=dry_run, run_id=run_id, archive_dir=archive_dir,
                         confirm=confirm)

    @property
    def expectations(self) -> Expectations:
        return self.runbook.rollback_expectations

    def _check_before_applying(self, decision: ledger.Decision) -> None:
        closed = checkpoints.cleaned_up_migrations(self.conn, self.runbook.name)
        if closed:
            self._fail(GuardRefused(
                f"rollback refused: the cleanup of {', '.join(closed)} is done on {self.target.name}, so the data "
                "the rollback would need is gone (the rollback window closed with the cleanup); nothing was changed"))

    def _before_statements(self, statements: list[Statement]) -> None:
        self._salvage(statements)

    def _record_done(self) -> str | None:
        origin = self.runbook.spec.origin
        kept = toolhistory.record_rolled_back(self.conn, origin, origin.previous if origin else None)
        checkpoints.mark_migrations_rolled_back(self.conn, self.runbook.name)
        return kept

    @step
    def verify_restored(self) -> pd.DataFrame:
        """Prove the schema equals the one the ledger recorded just before the migration was applied."""
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
