"""deploy: run lock, preflight, online steps under the lock policy, verification, ledger."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.errors import DriftError, StatementFailed
from dbrunbook.phases.deploy import RunLockBusy
from dbrunbook.sql.online import LockRetriesExhausted
from dbrunbook.state import ledger, storage

from .conftest import ROOT, Blocker, apply_schema, cli, connect, prepared_pair
from .test_run import archive_of

RUNBOOK = "event_message_fk"


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """A rehearsal target and a production target, both prepared from the seed-000 fixture."""
    with prepared_pair(RUNBOOK) as targets:
        yield targets


def deploy(target: str, rehearsal: str, tmp_path: Path, runbook: str | Path = RUNBOOK, **options: object):  # type: ignore[no-untyped-def]
    run = open_phase("deploy", runbook, target, rehearsal=rehearsal, archive_dir=tmp_path, **options)
    run.acquire_run_lock()
    run.preflight()
    run.plan()
    run.apply()
    run.verify()
    run.finish()
    return run


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def events(target: str) -> list[tuple[str, str, str]]:
    with connect(target) as conn:
        frame = ledger.events_frame(conn, RUNBOOK)
    return [(r.phase, r.action, r.status) for r in frame.itertuples()][::-1]


def last_detail(target: str) -> dict[str, Any]:
    with connect(target) as conn:
        t = storage.tables("postgresql")
        detail = conn.execute(sa.select(t.events.c.detail).order_by(t.events.c.id.desc()).limit(1)).scalar_one()
    return dict(detail)


def test_deploy_after_rehearsal(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    run = deploy(prod, rehearsal, tmp_path)
    assert [s.kind for s in run.steps] == ["add column", "create index concurrently", "add foreign key NOT VALID",
                                           "validate constraint"]
    assert [a.outcome for a in run.log.attempts] == ["applied"] * 4
    # The online form ends in exactly the schema the rehearsal's one transaction produced.
    assert fingerprint(prod) == fingerprint(rehearsal)
    dump = (tmp_path / "schema_before.sql").read_text()
    assert 'CREATE TABLE public."Event"' in dump and "messageId" not in dump
    report = commands.status(RUNBOOK, prod)
    assert report.state == "applied (up to date)"
    assert events(prod)[-1] == ("deploy", "deploy", "passed")
    with connect(prod) as conn:
        state = ledger.read_state(conn, RUNBOOK)
    assert state is not None and state.run_id == run.run_id and state.operator == run.operator
    # Again: verified, nothing applied.
    again = deploy(prod, rehearsal, tmp_path)
    assert again.decision == "noop" and again.applied == 0
    assert events(prod)[-1] == ("deploy", "verify", "noop")


def test_refused_when_not_rehearsed_or_drifted(pair: tuple[str, str], tmp_path: Path, runbook_copy: Path) -> None:
    rehearsal, prod = pair
    before = fingerprint(prod)
    with pytest.raises(DriftError, match=f"is not applied on the rehearsal target {rehearsal}"):
        deploy(prod, rehearsal, tmp_path)
    assert fingerprint(prod) == before
    apply_schema(rehearsal)
    deploy(prod, rehearsal, tmp_path)
    (runbook_copy / "migration.sql").write_text((runbook_copy / "migration.sql").read_text() + "\n-- edited\n")
    with pytest.raises(DriftError, match="changed since it was applied on"):
        deploy(prod, rehearsal, tmp_path, runbook=runbook_copy)
    assert events(prod)[-1][2] == "failed"


def test_run_lock_connection_stays_idle(pair: tuple[str, str], tmp_path: Path) -> None:
    # The Flyway #1654 shape: a lock held inside an open transaction would make CREATE INDEX
    # CONCURRENTLY wait for it. Ours is a session lock on an idle autocommit connection.
    rehearsal, prod = pair
    run = open_phase("deploy", RUNBOOK, prod, rehearsal=rehearsal, archive_dir=tmp_path)
    run.acquire_run_lock()
    with connect(prod) as conn:
        state, xid = conn.execute(sa.text(
            "SELECT state, backend_xid FROM pg_stat_activity WHERE application_name LIKE :name"),
            {"name": f"dbrunbook deploy {run.run_id} %"}).one()
    assert (state, xid) == ("idle", None)
    run.abandon()


def test_lock_policy_gives_up_and_leaves_the_schema_unchanged(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    before = fingerprint(prod)
    with Blocker(prod, 'SELECT count(*) FROM "Event"'):  # ACCESS SHARE, held: ADD COLUMN must wait
        with pytest.raises(LockRetriesExhausted, match=r"migration.sql:5: step 1 of 4 \(add column\) could not take "
                                                       r"its ACCESS EXCLUSIVE lock on Event in 3 attempts of 100 ms"):
            deploy(prod, rehearsal, tmp_path, lock_timeout_ms=100, lock_attempts=3)
    assert fingerprint(prod) == before
    assert events(prod)[-1][2] == "failed"
    assert commands.status(RUNBOOK, prod).state == "pending"
    # Every attempt is in the ledger, with who held the lock.
    attempts = last_detail(prod)["attempts"]
    assert [(a["step"], a["outcome"]) for a in attempts] == [(1, "lock timeout")] * 3
    assert all(a["waited_ms"] >= 90 for a in attempts)
    assert "holds AccessShareLock" in attempts[0]["detail"] and "retry in" in attempts[0]["detail"]


def test_statement_timeout_stops_a_step(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    before = fingerprint(prod)
    with Blocker(prod, 'SELECT count(*) FROM "Event"'):
        with pytest.raises(StatementFailed, match=r"migration.sql:5: statement 1 of 4 failed \[57014\]"):
            deploy(prod, rehearsal, tmp_path, lock_timeout_ms=60_000, statement_timeout_s=0.3)
    assert fingerprint(prod) == before
    assert [a["outcome"] for a in last_detail(prod)["attempts"]] == ["statement timeout"]


def test_partial_deploy_resumes(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    # Holds a lock on Message that conflicts with the FK step only; steps 1 and 2 get through.
    with Blocker(prod, 'LOCK TABLE "Message" IN ROW EXCLUSIVE MODE'):
        with pytest.raises(LockRetriesExhausted, match=r"step 3 of 4 .*2 earlier step\(s\) stay applied"):
            deploy(prod, rehearsal, tmp_path, lock_timeout_ms=100, lock_attempts=2)
    assert commands.status(RUNBOOK, prod).state == "partial"
    run = deploy(prod, rehearsal, tmp_path)
    assert run.decision == "resume"
    assert [a.outcome for a in run.log.attempts] == ["already done", "already done", "applied", "applied"]
    assert fingerprint(prod) == fingerprint(rehearsal)
    assert commands.status(RUNBOOK, prod).state == "applied (up to date)"


def test_dry_run_plans_and_applies_nothing(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    before = fingerprint(prod)
    run = deploy(prod, rehearsal, tmp_path, dry_run=True)
    assert len(run.steps) == 4 and run.applied == 0
    assert fingerprint(prod) == before
    assert commands.status(RUNBOOK, prod).state == "pending"


def test_two_concurrent_deploys_one_applies_the_other_reports_the_lock(pair: tuple[str, str]) -> None:
    rehearsal, prod = pair
    apply_schema(rehearsal)
    blocker = Blocker(prod, 'SELECT count(*) FROM "Event"')  # keeps the first deploy retrying
    first = subprocess.Popen(
        [sys.executable, "-m", "dbrunbook", "run", RUNBOOK, "--target", prod, "--phases", "deploy",
         "-p", f"rehearsal={rehearsal}", "-p", "lock_timeout_ms=200", "-p", "lock_attempts=30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # until the first deploy holds the run lock
            with connect(prod) as conn:
                holder = conn.execute(sa.text(
                    "SELECT application_name FROM pg_stat_activity a JOIN pg_locks l USING (pid) "
                    # Not the ledger's brief transaction-level lock, which any phase takes on start.
                    "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'dbrunbook deploy %'"
                    )).scalar()
            if holder or time.monotonic() > deadline or first.poll() is not None:
                break
            time.sleep(0.2)
        assert holder and holder.startswith("dbrunbook deploy ")
        second = cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}",
                     "-p", "run_lock_wait_s=1")
    finally:
        blocker.release()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 75  # busy: the same command works once the other has finished
    assert "deploy refused: another deploy holds the run lock on" in second.stderr
    assert holder.split()[2] in second.stderr  # names the run that holds it
    applied = [e for e in events(prod) if e[0] == "deploy"]
    assert applied.count(("deploy", "deploy", "passed")) == 1
    assert ("deploy", "deploy", "failed") in applied
    # The first deploy's retries are in its archived page, attempt by attempt.
    page = (archive_of(out) / "01_deploy.ipynb").read_text()
    assert "lock timeout" in page and "retry in" in page
    assert commands.status(RUNBOOK, prod).state == "applied (up to date)"


def test_deploy_refuses_a_second_deploy_in_process(pair: tuple[str, str], tmp_path: Path) -> None:
    rehearsal, prod = pair
    holder = open_phase("deploy", RUNBOOK, prod, rehearsal=rehearsal, archive_dir=tmp_path)
    holder.acquire_run_lock()
    from dbrunbook.phases.deploy import acquire_run_lock
    from dbrunbook.targets.resolve import resolve_target

    with pytest.raises(RunLockBusy, match=f"dbrunbook deploy {holder.run_id}"):
        acquire_run_lock(resolve_target(prod), "other", "someone", wait_s=0.5)
    holder.abandon()
    conn, _ = acquire_run_lock(resolve_target(prod), "other", "someone", wait_s=0.5)
    conn.close()
