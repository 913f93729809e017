"""The deploy phase on SQLite: the same page as :class:`~dbrunbook.phases.deploy.DeployRun`, with
SQLite's own means (a lock file, a copy of the database file, the script in one transaction)."""
from __future__ import annotations

import fcntl
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DbrunbookError, GuardRefused
from ..runbook.spec import Runbook
from ..sql.execute import run_statements
from ..sql.online import Attempt, Step, steps_frame
from ..targets.resolve import Target
from . import report
from .base import PhaseRun
from .deploy import DeployRun, RunLockBusy
from .evidence import step


class SqliteDeployRun(DeployRun):
    """Deploy on SQLite, the same page with SQLite's own means: a lock file serializes deploys,
    a copy of the database file (SQLite's online backup API) replaces pg_dump, and the script
    runs as written in the phase's one transaction. SQLite has no CREATE INDEX CONCURRENTLY and
    locks the whole database for any write, so there are no online steps to derive: the lock
    policy is ``busy_timeout`` (``lock_timeout_ms``) and a failure rolls everything back."""

    dialects = ("sqlite",)

    def __init__(self, phase: str, runbook: Runbook, target: Target, **kwargs: Any) -> None:
        super().__init__(phase, runbook, target, **kwargs)
        self.lock_file: Any = None
        database = self.engine.url.database
        if not database or database == ":memory:":
            self._fail(GuardRefused(f"deploy needs a SQLite database file; target {target.name} has none"))
        self.database = Path(database).resolve()

    @step
    def acquire_run_lock(self) -> pd.DataFrame:
        """Serialize deploys of this database file with an exclusive lock on a file beside it."""
        self._guard_open()
        path = self.database.with_name(self.database.name + ".dbrunbook-deploy.lock")
        handle = path.open("a+")
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - started >= self.run_lock_wait_s:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    self._fail(RunLockBusy(
                        f"deploy refused: another deploy holds the run lock on {self.target.name} ({holder}); "
                        f"waited {self.run_lock_wait_s:g} s; nothing was changed"))
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"dbrunbook deploy {self.run_id} {self.operator}")
        handle.flush()
        self.lock_file = handle
        waited = time.monotonic() - started
        frame = pd.DataFrame([{"lock": f"flock {path.name}", "target": self.target.name, "waited s": round(waited, 2),
                               "held by": f"dbrunbook deploy {self.run_id}"}])
        report.say(f"**Run lock taken** after {waited:.2f} s: an exclusive lock on a file beside the database.")
        report.show(frame)
        return frame

    @step
    def preflight(self) -> pd.DataFrame:
        frame = super().preflight().value
        # Release SQLite's SHARED lock until the apply step: the application's writers go on.
        self.conn.commit()
        self.conn.begin()
        return frame

    @step
    def plan(self) -> pd.DataFrame:
        """The script as written: one transaction, SQLite's database-wide write lock."""
        statements = self._migration()
        self.steps = [Step(s, s.text, s.kind, "database write lock", [], "as written, in the phase's one transaction")
                      for s in statements]
        report.say(f"**Decision:** {self.decision}. On SQLite the whole script runs in one transaction: a write "
                   f"waits at most `busy_timeout` = {self.policy.lock_timeout_ms} ms for the database lock, and "
                   "any failure rolls every statement back.")
        frame = steps_frame(self.steps)
        report.show(frame, caption=f"{len(self.steps)} statement(s) of {self.runbook.script_name('migration')}")
        return frame

    def _apply_steps(self) -> str:
        """Every statement in the phase's transaction (committed with the ledger entry)."""
        self.conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(self.policy.lock_timeout_ms)}")
        try:
            done = run_statements(self.conn, [step.source for step in self.steps])
        except DbrunbookError as exc:
            self._fail(exc)
        for number, executed in enumerate(done, start=1):
            self.log(Attempt(number, 1, "applied", executed.seconds * 1000, "not committed yet"))
        self.applied = len(done)
        return (f"**Applied {self.applied} statement(s)** in the phase's transaction (committed with the ledger "
                "entry in the last step).")

    def _verify_indexes(self) -> pd.DataFrame:
        """SQLite has no invalid-index state and no usage counters: ``PRAGMA quick_check`` and the list."""
        quick = [r[0] for r in self.conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        if quick != ["ok"]:
            self.failures.append(f"PRAGMA quick_check: {'; '.join(quick[:3])}")
        indexes = pd.DataFrame(self.conn.exec_driver_sql(
            "SELECT tbl_name AS \"table\", name AS \"index\" FROM sqlite_master WHERE type = 'index' "
            "AND sql IS NOT NULL AND name NOT LIKE 'dbrunbook%' ORDER BY tbl_name, name").fetchall(),
            columns=["table", "index"])
        report.say(f"**PRAGMA quick_check:** {', '.join(quick[:3])}. SQLite has no invalid-index state and no "
                   "per-index usage counters; the indexes now declared:")
        report.show(indexes)
        return indexes

    def _backup(self) -> Path:
        """A consistent copy of the database file, through SQLite's online backup API."""
        path = self.archive_dir / "database_before.sqlite"
        self.conn.commit()  # the backup reads the file; our read transaction must not be open
        source = sqlite3.connect(str(self.database))
        target = sqlite3.connect(str(path))
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        self.conn.begin()
        report.say(f"**Backup:** a copy of `{self.database.name}` (SQLite's online backup API) written to "
                   f"`{path.name}` in the run's archive folder ({path.stat().st_size:,} bytes); restore by "
                   "copying it back while nothing is connected.")
        return path

    def _holds_run_lock(self) -> bool:
        return self.lock_file is not None

    def _close(self) -> None:
        if self.lock_file is not None:
            fcntl.flock(self.lock_file, fcntl.LOCK_UN)
            self.lock_file.close()
            self.lock_file = None
        PhaseRun._close(self)
