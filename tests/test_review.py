"""The review phase on seed 001: the proposed plan is rejected with the seed's findings, the
corrected 022/023 pass review, apply, behave and roll back; the live preflight sees what is on
the target (lock holders, long transactions, invalid indexes, preconditions); and the lock
levels it predicts are the ones PostgreSQL takes."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.catalog import preflight
from dbrunbook.cli import commands
from dbrunbook.runbook.spec import load_runbook
from dbrunbook.sql import locks
from dbrunbook.state import ledger

from .conftest import Blocker, cli, connect, prepared_target

RUNBOOK = "saved_insights_customer"


@pytest.fixture
def baseline() -> Iterator[str]:
    """A target holding migrations 000-021 and the fixture data."""
    with prepared_target(RUNBOOK, "si") as name:
        yield name


def review(target: str, **options: object):  # type: ignore[no-untyped-def]
    """Every cell of the review notebook up to the verdict (not finish)."""
    run = open_phase("review", RUNBOOK, target, **options)
    run.scripts()
    run.lint()
    run.locks_taken()
    run.tables()
    run.activity()
    run.invalid_indexes()
    run.preconditions()
    run.verdict()
    return run


def own_rules(run) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(f.severity, f.rule, f.message.split(":")[0]) for f in run.findings if not f.rule.startswith("squawk:")]


def test_the_proposed_plan_gets_the_seeds_findings(baseline: str) -> None:
    run = review(baseline, variant="proposed")
    errors = [(f.rule, f.where, f.fix) for f in run.findings if f.severity == "error"]
    proposed = "saved_insights_customer/proposed/"
    assert errors == [
        # "Proposed migrations 018 and 019 already exist" -> 022 and 023.
        ("migration-numbering", proposed + "018_add_customer_to_saved_insights.sql",
         "rename to 022_add_customer_to_saved_insights.sql"),
        ("migration-numbering", proposed + "019_create_conversation_tables.sql",
         "rename to 023_create_conversation_tables.sql"),
        # "SavedInsights.customerId should use UUID foreign key, not VARCHAR", twice, and userId.
        ("fk-type-mismatch", proposed + "018_add_customer_to_saved_insights.sql:4",
         '"customerId" UUID REFERENCES "Customer"(id)'),
        ("fk-type-mismatch", proposed + "019_create_conversation_tables.sql:5",
         '"customerId" UUID REFERENCES "Customer"(id)'),
        ("fk-type-mismatch", proposed + "019_create_conversation_tables.sql:5", '"userId" INTEGER REFERENCES "Users"(id)'),
        # Recommendation 6: "Create rollback scripts for both migrations".
        ("rollback-missing", "(no rollback declared)", "write the statements that undo the migration, in reverse order"),
    ]
    assert "Users.id is integer" in run.findings[4].message or any(
        'ConversationThreads."userId" is character varying(255) but Users.id is integer' in f.message for f in run.findings)
    # "No referential integrity enforcement", for the same three columns.
    assert sorted(m for s, r, m in own_rules(run) if r == "reference-without-fk") == [
        'ConversationThreads."customerId" looks like a reference to Customer but has no foreign key',
        'ConversationThreads."userId" looks like a reference to Users but has no foreign key',
        'SavedInsights."customerId" looks like a reference to Customer but has no foreign key']
    assert run.detail["verdict"] == "NO-GO"
    with pytest.raises(Exception, match=r"review: no-go, 6 finding\(s\) at error or above"):
        run.finish()
    with connect(baseline) as conn:
        latest = ledger.events_frame(conn, RUNBOOK).iloc[0]
    assert (latest["phase"], latest["status"]) == ("review", "failed")


def test_the_corrected_migration_passes_review(baseline: str) -> None:
    run = review(baseline)
    assert [f for f in run.findings if f.severity == "error"] == []
    # What remains are warnings, each true of the seed's corrected SQL.
    assert ("warning", "fk-without-index", "ConversationThreads(customerId) references Customer but no index starts "
            "with customerId") in own_rules(run)
    assert {f.rule for f in run.findings} >= {"squawk:adding-foreign-key-constraint",
                                              "squawk:require-concurrent-index-creation"}
    # The seed's CHECK note: VARCHAR(10) holds 'semantic' (8 characters), so no finding.
    assert not [f for f in run.findings if f.rule == "check-literal-too-long"]
    run.finish()
    with connect(baseline) as conn:
        latest = ledger.events_frame(conn, RUNBOOK).iloc[0]
    assert (latest["phase"], latest["action"], latest["status"]) == ("review", "review", "passed")


def test_review_schema_test_rollback_end_to_end(baseline: str) -> None:
    """The real notebooks through the real runner: review, apply, behaviour (trigger included),
    then the seed's two rollback scripts, proven back to the exact fingerprint."""
    done = cli("run", RUNBOOK, "--target", baseline, "--phases", "review,schema,test,rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    for phase in ("review", "schema", "test", "rollback"):
        assert f"{phase}" in done.stdout and "failed" not in done.stdout
    assert commands.status(RUNBOOK, baseline).state == "rolled back"
    with connect(baseline) as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert "ConversationThreads" not in tables and "SavedInsights" in tables
    rejected = cli("run", RUNBOOK, "--target", baseline, "--phases", "review", "-p", "variant=proposed")
    assert rejected.returncode == 1
    assert "review: no-go, 6 finding(s) at error or above" in rejected.stderr.strip().splitlines()[-1]


def test_preflight_sees_lock_holders_and_long_transactions(baseline: str) -> None:
    with Blocker(baseline, 'SELECT * FROM "SavedInsights" FOR UPDATE'):
        run = review(baseline, long_transaction_s=0)
    found = {f.rule: f for f in run.findings if f.rule.startswith("preflight:")}
    assert "RowShareLock on SavedInsights, which the migration's ACCESS EXCLUSIVE lock must wait for" in \
        found["preflight:lock-held"].message
    assert "has had a transaction open for" in found["preflight:long-transaction"].message
    assert found["preflight:lock-held"].severity == "warning"
    run.abandon()
    # A lock that does not conflict is no finding: ACCESS SHARE against SHARE ROW EXCLUSIVE on Users.
    with Blocker(baseline, 'SELECT * FROM "Users"'):
        run = review(baseline)
    assert not [f for f in run.findings if f.rule == "preflight:lock-held"]
    run.abandon()


def test_an_invalid_index_with_the_migrations_name_is_an_error(baseline: str) -> None:
    with connect(baseline) as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        # A unique build over duplicates fails half-way and leaves the index behind, invalid.
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text('CREATE UNIQUE INDEX CONCURRENTLY idx_saved_insights_customer ON "SavedInsights" (scope)'))
    run = review(baseline)
    invalid = [f for f in run.findings if f.rule == "preflight:invalid-index"]
    assert [(f.severity, f.fix) for f in invalid] == [("error", 'DROP INDEX CONCURRENTLY "idx_saved_insights_customer"')]
    assert run.detail["verdict"] == "NO-GO"
    run.abandon()


def test_a_failing_precondition_is_an_error(target: str) -> None:
    commands.prepare("conversation_integrity", target)
    with connect(target) as conn:
        conn.execute(sa.text("""INSERT INTO "Conversation" (lead_id) VALUES ('lead-dup'), ('lead-dup')"""))
        conn.commit()
    run = open_phase("review", "conversation_integrity", target, squawk=False)
    run.scripts()
    frame = run.preconditions().value
    assert list(frame["result"]) == ["FAIL"]
    run.verdict()
    assert [(f.severity, f.rule, f.statement) for f in run.findings] == [
        ("error", "precondition", "no lead with more than one open conversation")]
    run.abandon()


def test_a_variant_that_does_not_exist_is_refused(baseline: str) -> None:
    with pytest.raises(Exception, match="no variant 'nope' in saved_insights_customer \\(proposed\\)"):
        open_phase("review", RUNBOOK, baseline, variant="nope")


# -- lock levels: predicted against what PostgreSQL takes ------------------------------------------------

LOCK_CASES = [
    'ALTER TABLE "SavedInsights" ADD COLUMN "customerId" UUID NULL REFERENCES "Customer"(id) ON DELETE SET NULL',
    'CREATE INDEX IF NOT EXISTS idx_si ON "SavedInsights" ("customerId", "isActive")',
    'ALTER TABLE "SavedInsights" DROP CONSTRAINT IF EXISTS "SavedInsights_scope_check"',
    """ALTER TABLE "SavedInsights" ADD CONSTRAINT "SavedInsights_scope_check" CHECK (scope IN ('form', 'schema'))""",
    'COMMENT ON COLUMN "SavedInsights"."customerId" IS \'x\'',
    'CREATE TABLE "T" (id UUID PRIMARY KEY, "userId" INTEGER REFERENCES "Users"(id), "c" UUID REFERENCES "Customer"(id))',
    'ALTER TABLE "Submission" ADD CONSTRAINT submission_form_fk FOREIGN KEY ("formId") REFERENCES "Form"(id) NOT VALID',
    'ALTER TABLE "Submission" VALIDATE CONSTRAINT submission_form_fk',
    'ALTER TABLE "Form" ALTER COLUMN name SET STATISTICS 500',
    'CREATE OR REPLACE FUNCTION f() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql',
    'CREATE TRIGGER tr AFTER INSERT ON "Form" FOR EACH ROW EXECUTE FUNCTION f()',
    'DROP TRIGGER tr ON "Form"',
    'UPDATE "Users" SET name = name',
    'DROP INDEX idx_si',
    'TRUNCATE "AuditLog"',
    'DROP TABLE "T"',
]


def _locks_taken(conn: sa.Connection) -> dict[str, str]:
    rows = conn.execute(sa.text(
        "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' "
        "AND c.relkind IN ('r', 'p') AND n.nspname = 'public'")).all()
    out: dict[str, str] = {}
    for table, mode in rows:
        out[table] = locks.stronger(out.get(table, locks.ACCESS_SHARE), locks.pg_mode(mode))
    return out


def _still_there(conn: sa.Connection, locks: dict[str, str]) -> dict[str, str]:
    """The locks on tables that still exist: a dropped table is gone from pg_class, so its own
    lock cannot be seen in pg_locks."""
    return {t: m for t, m in locks.items()
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{t}"'}).scalar() is not None}


def test_predicted_locks_are_the_ones_postgresql_takes(baseline: str) -> None:
    from dbrunbook.sql.statements import split_postgresql

    statements = split_postgresql(";\n".join(LOCK_CASES) + ";", "cases.sql")
    with connect(baseline) as conn:
        raw = conn.connection.driver_connection
        for n, statement in enumerate(statements):
            # The statements before it are context (a VALIDATE needs its ADD CONSTRAINT).
            predicted = {lock.table: lock.mode for lock in locks.statement_locks(
                statements[:n + 1], preflight.index_tables(raw), preflight.fk_parents(raw)) if lock.statement is statement}
            conn.execute(sa.text("SELECT 1"))  # opens the transaction the statement runs in
            conn.exec_driver_sql(statement.text)
            predicted = _still_there(conn, predicted)
            taken = {t: m for t, m in _locks_taken(conn).items() if t in predicted or m != locks.ACCESS_SHARE}
            conn.commit()
            assert predicted == taken, statement.text


def test_the_seeds_migrations_and_rollbacks_lock_as_predicted(baseline: str) -> None:
    book = load_runbook(RUNBOOK)
    with connect(baseline) as conn:
        raw = conn.connection.driver_connection
        for kind in ("migration", "rollback"):
            statements, _ = book.read_script(kind, "postgresql")
            parents = preflight.fk_parents(raw)
            for n, statement in enumerate(statements):
                predicted = locks.strongest_locks(
                    [lock for lock in locks.statement_locks(statements[:n + 1], fk_parents=parents)
                     if lock.statement is statement])
                conn.exec_driver_sql(statement.text)
                taken = _locks_taken(conn)
                conn.commit()
                existing = _still_there(conn, predicted)
                assert {t: taken.get(t) for t in existing} == existing, statement.text
            if kind == "rollback":  # the parents of the dropped conversation tables were locked
                assert locks.strongest_locks(locks.statement_locks(statements, fk_parents=parents))[
                    "Customer"] == locks.ACCESS_EXCLUSIVE
