"""The test phase: behaviour cases in savepoints, and the performance probe."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.cli import commands
from dbrunbook.errors import ChecksFailed
from dbrunbook.phases import test
from dbrunbook.phases.probes import CHART_FILE, plan_indexes
from dbrunbook.runbook.sections import CaseOutcome
from dbrunbook.state import ledger

from .conftest import apply_schema, connect


def counts(target: str) -> tuple[int, int]:
    with connect(target) as conn:
        return (conn.execute(sa.text('SELECT count(*) FROM "Event"')).scalar_one(),
                conn.execute(sa.text('SELECT count(*) FROM "Message"')).scalar_one())


def test_cases_and_probe_pass_and_leave_no_data(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    apply_schema(target)
    before = counts(target)
    run = open_phase("test", "event_message_fk", target, rows=3000, archive_dir=tmp_path)
    cases = run.behaviour().value
    assert list(cases["result"]) == ["pass"] * 8  # the seed's eight test cases
    assert "23503" in cases.iloc[-1]["actual"]
    generated = run.generate().value
    assert int(generated.set_index("table").loc["Event", "rows"]) == before[0] + 3000
    timings = run.time_access_paths().value
    assert timings.iloc[0]["rows found"] == timings.iloc[1]["rows found"] > 0
    [probe] = run.probes
    assert probe.speedup > 0 and probe.value is not None
    assert (tmp_path / CHART_FILE).stat().st_size > 1000
    plans = run.explain().value
    assert plans.set_index("path").loc["after", "result"] == "pass"
    sizes = run.index_sizes().value
    assert sizes.iloc[0]["index"] == "Event_messageId_idx" and sizes.iloc[0]["bytes"] > 0
    run.finish()
    assert counts(target) == before
    with connect(target) as conn:
        event = ledger.events_frame(conn, "event_message_fk", limit=1).iloc[0]
    assert (event["phase"], event["status"]) == ("test", "passed")


def test_cases_fail_against_a_schema_without_the_fk(target: str) -> None:
    commands.prepare("event_message_fk", target)
    with connect(target) as conn:  # the column and index, as if the FK statement had been forgotten
        conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "messageId" TEXT'))
        conn.execute(sa.text('CREATE INDEX "Event_messageId_idx" ON "Event"("messageId")'))
        conn.commit()
    run = open_phase("test", "event_message_fk", target)
    frame = run.behaviour().value.set_index("case")
    assert frame.loc["cascade delete when the message is deleted", "actual"] == "value = 2"
    assert frame.loc["invalid messageId rejected by the FK", "actual"] == "no error; 0 row(s)"
    assert list(frame[frame["result"] == "FAIL"].index) == [
        "cascade delete when the message is deleted", "invalid messageId rejected by the FK"]
    with pytest.raises(ChecksFailed, match=r"test: 2 check\(s\) failed: case 'cascade delete"):
        run.finish()


def test_case_6_asks_the_stored_events_so_a_write_path_that_keeps_the_copy_fails_it(target: str) -> None:
    """Seed 000's case 6 is not a re-read of its own insert: it asks the events in the database.
    The 14 old events (messageId only in the metadata) pass it; one written with the FK that still
    carries the copy, as a write path the code change missed would, fails it."""
    commands.prepare("event_message_fk", target)
    apply_schema(target)
    case = "no event with the FK carries messageId in its metadata"
    run = open_phase("test", "event_message_fk", target)
    assert run.behaviour().value.set_index("case").loc[case, "result"] == "pass"
    run.abandon()
    with connect(target) as conn:
        conn.execute(sa.text("""INSERT INTO "Event" ("id", "messageId", "eventType", "metadata")
            VALUES ('missed', 'msg_002', 'copy', '{"messageId": "msg_002"}')"""))
        conn.commit()
    run = open_phase("test", "event_message_fk", target)
    frame = run.behaviour().value.set_index("case")
    assert frame.loc[case, "actual"] == "value = 1"
    assert list(frame[frame["result"] == "FAIL"].index) == [case]
    run.abandon()


def test_probe_fails_when_the_index_is_not_used(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    apply_schema(target)
    with connect(target) as conn:
        conn.execute(sa.text('DROP INDEX "Event_messageId_idx"'))
        conn.commit()
    run = open_phase("test", "event_message_fk", target, rows=2000, archive_dir=tmp_path)
    run.generate()
    run.time_access_paths()
    run.explain()
    run.index_sizes()
    with pytest.raises(ChecksFailed, match="the after plan does not use Event_messageId_idx.*index Event_messageId_idx does not exist"):
        run.finish()


# -- judging outcomes, as plain functions ---------------------------------------------------------

def fk_error() -> test.DbError:
    return test.DbError("23503", "ForeignKeyViolation", "insert violates foreign key")


@pytest.mark.parametrize("declared", ["23503", "23", "foreign_key_violation"])
def test_sqlstate_by_code_class_or_name(declared: str) -> None:
    passed, actual = test.judge(CaseOutcome(sqlstate=declared), None, fk_error())
    assert passed and actual.startswith("error 23503")


def test_a_different_error_or_no_error_fails() -> None:
    assert not test.judge(CaseOutcome(sqlstate="unique_violation"), None, fk_error())[0]
    assert test.judge(CaseOutcome(sqlstate="23503"), [], None) == (False, "no error; 0 row(s)")
    assert not test.judge(CaseOutcome(count=1), None, fk_error())[0]


def test_rows_value_and_count() -> None:
    rows = [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    assert test.judge(CaseOutcome(rows=[{"id": "a", "n": 1}, {"id": "b", "n": 2}]), rows, None)[0]
    assert not test.judge(CaseOutcome(rows=[{"id": "b", "n": 2}, {"id": "a", "n": 1}]), rows, None)[0]
    assert test.judge(CaseOutcome(value="a"), rows, None)[0]
    assert test.judge(CaseOutcome(count=2), rows, None) == (True, "count = 2")


def test_outcome_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one of rows, value, count or sqlstate"):
        CaseOutcome(count=1, sqlstate="23503")
    with pytest.raises(ValueError, match="exactly one"):
        CaseOutcome()


def test_plan_indexes_walks_the_tree() -> None:
    plan = [{"Plan": {"Node Type": "Nested Loop", "Plans": [
        {"Node Type": "Index Scan", "Index Name": "a_idx"},
        {"Node Type": "Bitmap Heap Scan", "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "b_idx"}]}]}}]
    assert sorted(plan_indexes(plan)) == ["a_idx", "b_idx"]


def test_sqlite_errors_match_by_result_code_name() -> None:
    error = test.DbError("SQLITE_CONSTRAINT_FOREIGNKEY", "IntegrityError", "FOREIGN KEY constraint failed")
    assert test.judge(CaseOutcome(sqlstate="SQLITE_CONSTRAINT_FOREIGNKEY"), None, error)[0]
    assert test.judge(CaseOutcome(sqlstate="SQLITE_CONSTRAINT"), None, error)[0]
    assert not test.judge(CaseOutcome(sqlstate="SQLITE_CONSTRAINT_UNIQUE"), None, error)[0]
