"""The schema and rollback phases through the lib (the notebooks make these same calls)."""
from __future__ import annotations

from pathlib import Path

import pytest
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.errors import ChecksFailed, DriftError, GuardRefused, StatementFailed
from dbrunbook.phases.base import PhaseRun, open_phase
from dbrunbook.state import ledger
from dbrunbook.state.status import Status

from .conftest import add_target, connect


def play(phase: str, runbook: str | Path, target: str, **options: object) -> PhaseRun:
    """Every step of a phase notebook, in order."""
    run = open_phase(phase, runbook, target, **options)
    run.plan()
    run.snapshot()
    run.apply()
    run.check_expectations()
    if phase == "rollback":
        run.verify_restored()
    run.show_diff()
    run.finish()
    return run


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def events(target: str) -> list[tuple[str, str, str, bool]]:
    with connect(target) as conn:
        frame = ledger.events_frame(conn, "event_message_fk")
    return list(zip(frame["phase"], frame["action"], frame["status"], frame["dry_run"], strict=True))[::-1]


def state(target: str) -> ledger.State | None:
    with connect(target) as conn:
        return ledger.read_state(conn, "event_message_fk")


def test_schema_then_rollback_restores_the_fingerprint(target: str) -> None:
    commands.prepare("event_message_fk", target)
    before = fingerprint(target)
    play("schema", "event_message_fk", target)
    applied = state(target)
    assert applied is not None and applied.state == Status.APPLIED
    assert applied.fingerprint_before == before != fingerprint(target)
    play("rollback", "event_message_fk", target)
    assert fingerprint(target) == before
    assert state(target).state == Status.ROLLED_BACK
    assert events(target)[-2:] == [("schema", "apply", "passed", False), ("rollback", "rollback", "passed", False)]


def test_skipping_the_fingerprint_cell_still_records_the_schema_before(target: str) -> None:
    commands.prepare("event_message_fk", target)
    before = fingerprint(target)
    run = open_phase("schema", "event_message_fk", target)
    run.plan()
    run.apply()
    run.finish()
    assert state(target).fingerprint_before == before


def test_bad_statement_after_good_ones_changes_nothing(target: str, runbook_copy: Path) -> None:
    migration = runbook_copy / "migration.sql"
    good = migration.read_text()
    migration.write_text(good + '\n-- a typo in a type name\nALTER TABLE "Event" ADD COLUMN "broken" NO_SUCH_TYPE;\n')
    bad_line = good.count("\n") + 3
    commands.prepare(runbook_copy, target)
    before = fingerprint(target)
    run = open_phase("schema", runbook_copy, target)
    run.plan()
    with pytest.raises(StatementFailed) as err:
        run.apply()
    assert (err.value.file, err.value.line, err.value.index, err.value.sqlstate) == (
        "event_message_fk/migration.sql", bad_line, 4, "42704")
    assert f"event_message_fk/migration.sql:{bad_line}: statement 4 of 4 failed" in str(err.value)
    assert "NO_SUCH_TYPE" in str(err.value)
    assert fingerprint(target) == before  # statements 1-3 were rolled back with it
    assert state(target) is None
    assert events(target)[-1] == ("schema", "apply", "failed", False)


def test_rerun_with_same_checksum_is_a_verified_noop(target: str) -> None:
    commands.prepare("event_message_fk", target)
    play("schema", "event_message_fk", target)
    after = fingerprint(target)
    run = play("schema", "event_message_fk", target)
    assert run.executed == []
    assert fingerprint(target) == after
    assert events(target)[-1] == ("schema", "verify", "noop", False)


def test_dry_run_commits_nothing(target: str) -> None:
    commands.prepare("event_message_fk", target)
    before = fingerprint(target)
    run = play("schema", "event_message_fk", target, dry_run=True)
    assert len(run.executed) == 3
    assert fingerprint(target) == before
    assert state(target) is None
    assert events(target)[-1] == ("schema", "apply", "passed", True)


def test_changed_migration_after_apply_is_drift(target: str, runbook_copy: Path) -> None:
    commands.prepare(runbook_copy, target)
    play("schema", runbook_copy, target)
    (runbook_copy / "migration.sql").write_text(
        (runbook_copy / "migration.sql").read_text() + '\nCREATE INDEX "x" ON "Event"("eventType");\n')
    run = open_phase("schema", runbook_copy, target)
    with pytest.raises(DriftError, match="changed since it was applied"):
        run.plan()
    assert events(target)[-1] == ("schema", "apply", "failed", False)


def test_failed_expectation_rolls_everything_back(target: str, runbook_copy: Path) -> None:
    spec = runbook_copy / "runbook.yaml"
    spec.write_text(spec.read_text().replace("on_delete: cascade", "on_delete: set null"))
    commands.prepare(runbook_copy, target)
    before = fingerprint(target)
    run = open_phase("schema", runbook_copy, target)
    run.plan()
    run.apply()
    frame = run.check_expectations().value
    assert list(frame["result"]).count("FAIL") == 1
    with pytest.raises(ChecksFailed, match="expected .*ON DELETE SET NULL.*, found .*ON DELETE CASCADE"):
        run.finish()
    assert fingerprint(target) == before and state(target) is None


def test_incomplete_rollback_is_caught_by_the_fingerprint(target: str, runbook_copy: Path) -> None:
    rollback = runbook_copy / "rollback.sql"
    rollback.write_text(rollback.read_text().replace('ALTER TABLE "Event" DROP COLUMN "messageId";', ""))
    spec = runbook_copy / "runbook.yaml"
    spec.write_text(spec.read_text().replace("- {table: Event, column: messageId, present: false}\n", ""))
    commands.prepare(runbook_copy, target)
    play("schema", runbook_copy, target)
    run = open_phase("rollback", runbook_copy, target)
    run.plan()
    run.apply()
    run.check_expectations()
    diff = run.verify_restored().value
    assert list(diff["object"]) == ['public."Event"."messageId"', 'public."Event"']
    with pytest.raises(ChecksFailed, match="fingerprint .* differs"):
        run.finish()
    assert state(target).state == Status.APPLIED


def test_rollback_where_nothing_was_applied_is_a_noop(target: str) -> None:
    commands.prepare("event_message_fk", target)
    run = play("rollback", "event_message_fk", target)
    assert run.executed == []
    assert events(target)[-1] == ("rollback", "verify", "noop", False)


def test_prepare_is_refused_on_production(target: str) -> None:
    add_target("prodlike", {"embedded": target, "production": True})
    with pytest.raises(GuardRefused, match="marked production"):
        commands.prepare("event_message_fk", "prodlike")
    with connect(target) as conn:
        assert not any(key.startswith("relation") for key in introspect.snapshot(conn).objects)


LEFTOVERS = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA reports;
CREATE TABLE reports.daily (day date PRIMARY KEY, n bigint);
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE SEQUENCE invoice_no;
CREATE VIEW recent AS SELECT 1 AS one;
CREATE FUNCTION messages_dual_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TABLE "Event" (id text PRIMARY KEY, note citext);
CREATE TRIGGER event_dual_write BEFORE INSERT ON "Event" FOR EACH ROW EXECUTE FUNCTION messages_dual_write();
GRANT USAGE ON SCHEMA public TO PUBLIC;
"""


def test_prepare_brings_any_target_to_exactly_the_fixture(target: str) -> None:
    """Whatever a target held (what an earlier run or another runbook left: functions, triggers,
    types, sequences, views, extensions, schemas), prepare makes it the fixture's fingerprint; the
    other runbook's ledger state goes with its objects, and says so."""
    fresh = f"{target}_fresh"
    add_target(fresh, {"embedded": fresh})
    commands.prepare("event_message_fk", fresh)
    expected = fingerprint(fresh)
    commands.prepare("conversation_integrity", target)
    play("schema", "conversation_integrity", target)
    with connect(target) as conn, conn.begin():
        conn.exec_driver_sql(LEFTOVERS)
    assert fingerprint(target) != expected
    prepared = commands.prepare("event_message_fk", target)
    assert fingerprint(target) == expected
    assert prepared.reset == ["conversation_integrity"] and "extension citext" in prepared.cleared, prepared.render()
    assert "reset too" in prepared.render()
    assert commands.status("conversation_integrity", target).state == "pending"
    with connect(target) as conn:
        frame = ledger.events_frame(conn, "conversation_integrity")
        public_usage = conn.exec_driver_sql("SELECT has_schema_privilege('public', 'public', 'USAGE')").scalar()
    assert frame.iloc[0]["action"] == "target cleared by prepare of event_message_fk"
    assert public_usage  # public is there again with the privileges it had
    # And the phases run on it as on a fresh one.
    play("schema", "event_message_fk", target)


def test_runbook_engine_must_match_target(target: str, runbook_copy: Path) -> None:
    spec = runbook_copy / "runbook.yaml"
    spec.write_text(spec.read_text().replace("engine: postgresql", "engine: sqlite"))
    with pytest.raises(GuardRefused, match="written for sqlite"):
        open_phase("schema", runbook_copy, target)


def test_concurrent_index_runs_outside_a_transaction_and_says_so(target: str, runbook_copy: Path) -> None:
    migration = runbook_copy / "migration.sql"
    migration.write_text(migration.read_text().replace(
        'CREATE INDEX "Event_messageId_idx"', 'CREATE INDEX CONCURRENTLY "Event_messageId_idx"'))
    commands.prepare(runbook_copy, target)
    dry = open_phase("schema", runbook_copy, target, dry_run=True)
    with pytest.raises(GuardRefused, match=r"migration.sql:8: statement 2 cannot run inside a transaction"):
        dry.plan()
    run = open_phase("schema", runbook_copy, target)
    plan = run.plan().value
    assert not plan.in_transaction and [s.transactional for s in plan.statements] == [True, False, True]
    run.apply()
    assert list(run.check_expectations().value["result"]) == ["pass"] * 5
    run.finish()
    assert state(target).state == Status.APPLIED
