"""Seed 004's runbook on SQLite: schema, behaviour cases, rollback, deploy with a file backup."""
from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.errors import GuardRefused, StatementFailed
from dbrunbook.phases.deploy import RunLockBusy
from dbrunbook.phases.deploy_sqlite import SqliteDeployRun
from dbrunbook.runbook.spec import load_runbook
from dbrunbook.targets.resolve import resolve_target

from .conftest import ROOT, add_target, apply_schema, cli, connect
from .test_run import archive_of

RUNBOOK = "solution_type_analytics"


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A rehearsal and a production SQLite target, both prepared from the fixture."""
    suffix = uuid.uuid4().hex[:8]
    dev, prod = f"lite_dev_{suffix}", f"lite_prod_{suffix}"
    add_target(dev, {"url": f"sqlite:///{tmp_path / 'dev.db'}"})
    add_target(prod, {"url": f"sqlite:///{tmp_path / 'prod.db'}", "production": True})
    commands.prepare(RUNBOOK, dev)
    commands.prepare(RUNBOOK, prod, allow_production=True)
    yield dev, prod, tmp_path


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


def test_schema_test_rollback_with_the_ledger_in_the_file(lite: tuple[str, str, Path]) -> None:
    dev, _, folder = lite
    with connect(dev) as conn:
        before = introspect.snapshot(conn).fingerprint
    done = cli("run", RUNBOOK, "--target", dev, "--phases", "schema,test,rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    archive = archive_of(done.stdout)
    test_page = json.dumps(json.loads((archive / "02_test.ipynb").read_text()))
    assert "Behaviour:** 7 of 7 case(s) passed" in test_page
    assert "most popular solutions: the rows it returned" in test_page  # the analytics frames
    assert "Fingerprint restored" in (archive / "03_rollback.html").read_text()
    with connect(dev) as conn:
        assert introspect.snapshot(conn).fingerprint == before
    assert "solutionType" not in columns(folder / "dev.db", "conversations")
    # The ledger lives in the SQLite file itself.
    with sqlite3.connect(folder / "dev.db") as conn:
        phases = [r[0] for r in conn.execute(
            "SELECT phase FROM dbrunbook_events WHERE runbook = ? ORDER BY id", (RUNBOOK,))]
        state = conn.execute("SELECT state FROM dbrunbook_state WHERE runbook = ?", (RUNBOOK,)).fetchone()
    assert phases == ["prepare", "schema", "test", "rollback"]
    assert state == ("rolled_back",)


def test_a_failing_statement_leaves_the_sqlite_schema_unchanged(lite: tuple[str, str, Path], tmp_path: Path) -> None:
    dev, _, folder = lite
    book = tmp_path / "lite_copy"
    shutil.copytree(ROOT / "runbooks" / RUNBOOK, book)
    (book / "migration.sql").write_text((book / "migration.sql").read_text()
                                        + '\nALTER TABLE "conversations" ADD COLUMN "solutionType" TEXT;\n')
    run = open_phase("schema", book, dev)
    run.plan()
    with pytest.raises(StatementFailed, match=r"lite_copy/migration.sql:40: statement 10 of 10 failed: duplicate column"):
        run.apply()
    # SQLite runs DDL in the transaction: the nine statements before it were rolled back too.
    assert "solutionType" not in columns(folder / "dev.db", "conversations")
    with sqlite3.connect(folder / "dev.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'analytics_events'").fetchone() == (0,)


def test_deploy_with_a_file_backup(lite: tuple[str, str, Path], tmp_path: Path) -> None:
    dev, prod, folder = lite
    apply_schema(dev, RUNBOOK)
    archive = tmp_path / "archive"
    deploy = open_phase("deploy", RUNBOOK, prod, rehearsal=dev, archive_dir=archive)
    deploy.acquire_run_lock()
    # A second deploy of the same file (built directly: open_phase would abandon the first, as a
    # notebook re-run does) waits, then reports the lock.
    second = SqliteDeployRun("deploy", load_runbook(RUNBOOK), resolve_target(prod), rehearsal=dev,
                             archive_dir=tmp_path / "other", run_lock_wait_s=0.5)
    with pytest.raises(RunLockBusy, match=f"dbrunbook deploy {deploy.run_id}"):
        second.acquire_run_lock()
    deploy.preflight(), deploy.plan(), deploy.apply(), deploy.verify(), deploy.finish()
    assert "solutionType" in columns(folder / "prod.db", "conversations")
    # The backup is the database as it was: a SQLite file without the migration.
    assert "solutionType" not in columns(archive / "database_before.sqlite", "conversations")
    assert commands.status(RUNBOOK, prod).state == "applied (up to date)"


def test_phases_that_need_postgresql_say_so(lite: tuple[str, str, Path]) -> None:
    dev, _, _ = lite
    with pytest.raises(GuardRefused, match="clean_slate backs up rows with PostgreSQL's COPY; target .* is sqlite"):
        open_phase("clean_slate", RUNBOOK, dev, confirm=dev)
    with pytest.raises(GuardRefused, match="runbook event_message_fk is written for postgresql, but target .* is sqlite"):
        open_phase("schema", "event_message_fk", dev)
