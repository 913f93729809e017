"""The clean_slate phase: delete the rows a runbook declares disposable, with a backup first.

Seed 000 deletes every ``Event`` row (test data) instead of migrating it. Here the deletion is
guarded (``confirm`` must name the target; a production target also needs ``allow_production``),
and every deleted row is written to a gzip-compressed CSV in the run's archive folder by the
very statement that deletes it (``COPY (DELETE ... RETURNING *) TO STDOUT``), so the backup
holds exactly what went, even if rows arrive meanwhile. The deletes, the optional reset and the
ledger event commit together, after the counts prove the tables are empty.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg import sql

from ..errors import GuardRefused
from ..files import sha256_file
from ..runbook.sections import CleanSlateSpec, DeleteRows
from ..runbook.spec import Runbook
from ..state.status import Status
from ..targets.resolve import Target
from . import report
from .base import PhaseRun
from .evidence import step

BACKUP_FOLDER = "clean_slate_backup"
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Backup:
    table: str
    rows: int
    file: Path
    sha256: str

    def restore_command(self) -> str:
        return (f"gunzip -c {self.file.name} | psql -c '\\copy \"{self.table}\" FROM STDIN "
                "WITH (FORMAT csv, HEADER)'")


def _table(name: str) -> sql.Composable:
    schema, _, table = name.rpartition(".")
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def _where(predicate: str | None) -> sql.Composable:
    # The predicate is the runbook author's SQL, reviewed with the runbook like migration.sql.
    return sql.SQL(" WHERE ({})").format(sql.SQL(predicate)) if predicate else sql.SQL("")


def count_query(item: DeleteRows) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}{}").format(_table(item.table), _where(item.where))


def delete_copy_query(item: DeleteRows) -> sql.Composed:
    return sql.SQL("COPY (DELETE FROM {}{} RETURNING *) TO STDOUT WITH (FORMAT csv, HEADER)").format(
        _table(item.table), _where(item.where))


def copy_to_gzip(cursor: Any, query: sql.Composable, path: Path) -> int:
    """Stream a ``COPY ... TO STDOUT`` into a gzip file; returns the rows copied."""
    with gzip.open(path, "wb") as out, cursor.copy(query) as copy:
        for block in copy:
            out.write(block)
    return int(cursor.rowcount)


class CleanSlateRun(PhaseRun):
    """Guarded deletion of disposable rows, backed up into the archive."""

    default_action = "delete"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, confirm: str = "",
                 allow_production: bool = False, reset: bool = False, **kwargs: object) -> None:
        super().__init__(phase, runbook, target, **kwargs)  # type: ignore[arg-type]
        self.spec: CleanSlateSpec = runbook.spec.clean_slate or CleanSlateSpec()
        self.confirm = confirm
        self.allow_production = bool(allow_production)
        self.reset_requested = bool(reset)
        self.backups: list[Backup] = []
        self.deleted: dict[str, int] = {}
        self.guard_checked = False

    @property
    def declared(self) -> bool:
        return bool(self.spec.delete or self.spec.reset)

    # -- cells -------------------------------------------------------------------------------

    @step
    def check_guard(self) -> pd.DataFrame:
        """Refuse unless ``confirm`` names the target (and production is explicitly allowed)."""
        self._guard_open()
        rows = [
            ("confirm names the target", f"confirm={self.confirm!r}, target={self.target.name!r}",
             "pass" if self.confirm == self.target.name else "FAIL"),
            ("production needs allow_production",
             f"production={self.target.production}, allow_production={self.allow_production}",
             "pass" if (not self.target.production or self.allow_production) else "FAIL"),
        ]
        frame = pd.DataFrame(rows, columns=["guard", "values", "result"])
        if self.spec.why:
            report.say(self.spec.why)
        report.show(frame, caption="guards", status_column="result")
        if not self.declared:
            report.say("**Nothing declared:** this runbook has no `clean_slate` section, so the phase "
                       "deletes nothing and passes.")
            self.guard_checked = True
            return frame
        if self.confirm != self.target.name:
            self._fail(GuardRefused(
                f"clean_slate refused: set the confirm parameter to the target's name ({self.target.name!r}) "
                f"to delete rows there (got {self.confirm!r}); nothing was deleted"))
        if self.target.production and not self.allow_production:
            self._fail(GuardRefused(
                f"clean_slate refused: target {self.target.name} is marked production; set "
                "allow_production=True as well to delete rows there; nothing was deleted"))
        self.guard_checked = True
        report.say(f"**Guards passed:** deleting on {self.target.name} is confirmed.")
        return frame

    @step
    def counts(self, when: str = "before") -> pd.DataFrame:
        """Rows matching each delete rule (after the delete every count must be 0)."""
        self._guard_open()
        rows = []
        for item in self.spec.delete:
            count = self._count(count_query(item))
            row = {"table": item.table, "rows matching": count, "where": item.where or "(every row)"}
            if when == "after":
                ok = count == 0
                row["result"] = "pass" if ok else "FAIL"
                if not ok:
                    self.failures.append(f"{item.table}: {count} row(s) still match after the delete")
            rows.append(row)
        frame = pd.DataFrame(rows, columns=["table", "rows matching", "where"]
                             + (["result"] if when == "after" else []))
        report.show(frame, caption=f"counts {when}", status_column="result")
        return frame

    @step
    def sample(self, limit: int = SAMPLE_ROWS) -> dict[str, pd.DataFrame]:
        """A few of the rows about to be deleted, so a reviewer sees what kind of data went."""
        self._guard_open()
        frames = {}
        for item in self.spec.delete:
            query = sql.SQL("SELECT * FROM {}{} LIMIT {}").format(_table(item.table), _where(item.where),
                                                                 sql.Literal(limit))
            frame = self._frame(query)
            frames[item.table] = frame
            report.show(frame.astype(str), caption=f"{item.table}: sample of the rows to delete")
        return frames

    @step
    def delete(self) -> pd.DataFrame:
        """Back up and delete, in the phase's transaction (nothing is committed yet)."""
        self._guard_open()
        if not self.guard_checked:
            self.check_guard()
        folder = self.archive_dir / BACKUP_FOLDER
        cursor = self.raw.cursor()
        for item in self.spec.delete:
            path = folder / f"{item.table}.csv.gz"
            folder.mkdir(parents=True, exist_ok=True)
            rows = copy_to_gzip(cursor, delete_copy_query(item), path)
            self.deleted[item.table] = rows
            self.backups.append(Backup(item.table, rows, path, sha256_file(path)))
        self._write_backup_index(folder)
        frame = self.backups_frame()
        total = sum(self.deleted.values())
        report.say(f"**Deleted {total} row(s)** (not committed yet); every deleted row is in the "
                   f"backup below, written by the statement that deleted it.")
        report.show(frame, caption=f"backups in {BACKUP_FOLDER}/")
        self.detail["deleted"] = dict(self.deleted)
        return frame

    @step
    def reset(self) -> pd.DataFrame:
        """The optional reset (e.g. seed 000's Chunk_Performance counters), backed up first."""
        self._guard_open()
        if not self.spec.reset:
            report.say("**No reset declared** for this runbook.")
            return pd.DataFrame(columns=["table", "rows reset"])
        if not self.reset_requested:
            report.say("**Reset skipped:** the `reset` parameter is false (the seed skipped it too: "
                       "\"not required for this migration\").")
            return pd.DataFrame(columns=["table", "rows reset"])
        if not self.guard_checked:
            self.check_guard()
        folder = self.archive_dir / BACKUP_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        cursor = self.raw.cursor()
        rows = []
        for item in self.spec.reset:
            # EXCLUSIVE: readers go on, writers wait, so the backup is what the UPDATE changes.
            cursor.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_table(item.table)))
            path = folder / f"{item.table}.before_reset.csv.gz"
            select = sql.SQL("COPY (SELECT * FROM {}{}) TO STDOUT WITH (FORMAT csv, HEADER)").format(
                _table(item.table), _where(item.where))
            copy_to_gzip(cursor, select, path)
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(col), sql.Literal(value))
                for col, value in item.set.items())
            cursor.execute(sql.SQL("UPDATE {} SET {}{}").format(_table(item.table), assignments,
                                                               _where(item.where)))
            count = cursor.rowcount
            self.backups.append(Backup(item.table, count, path,
                                       sha256_file(path)))
            rows.append({"table": item.table, "rows reset": count,
                         "columns": ", ".join(item.set)})
        self._write_backup_index(folder)
        frame = pd.DataFrame(rows)
        report.show(frame, caption="reset (not committed yet)")
        self.detail["reset"] = {r["table"]: r["rows reset"] for r in rows}
        return frame

    @step
    def finish(self) -> None:
        """Commit the deletes with the ledger event when every count is 0 (a dry run rolls back)."""
        self._guard_open()
        if not self.guard_checked:
            self.check_guard()
        self._raise_for_failures()
        self._commit("delete" if self.declared else "verify",
                     Status.PASSED if self.declared else Status.NOOP)
        done = "rolled back (dry run)" if self.dry_run else "committed"
        report.say(f"**clean_slate passed:** {sum(self.deleted.values())} row(s) deleted and {done} on "
                   f"{self.target.name}; backups are in the run's archive folder (run {self.run_id}).")

    # -- internals -------------------------------------------------------------------------

    def backups_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"table": b.table, "rows": b.rows, "file": f"{BACKUP_FOLDER}/{b.file.name}",
              "bytes": b.file.stat().st_size, "sha256": b.sha256[:16], "restore": b.restore_command()}
             for b in self.backups],
            columns=["table", "rows", "file", "bytes", "sha256", "restore"])

    def _write_backup_index(self, folder: Path) -> None:
        index = [{"table": b.table, "rows": b.rows, "file": b.file.name, "sha256": b.sha256,
                  "restore": b.restore_command()} for b in self.backups]
        (folder / "backup.json").write_text(json.dumps(
            {"runbook": self.runbook.name, "target": self.target.name, "run_id": self.run_id,
             "dry_run": self.dry_run, "files": index}, indent=2) + "\n")

    def _frame(self, query: sql.Composable) -> pd.DataFrame:
        cursor = self.raw.cursor()
        cursor.execute(query)
        columns = [c.name for c in cursor.description or []]
        return pd.DataFrame(cursor.fetchall(), columns=columns)

    def _count(self, query: sql.Composable) -> int:
        row = self.raw.cursor().execute(query).fetchone()
        return int(row[0]) if row else 0
