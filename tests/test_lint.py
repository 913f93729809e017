"""dbrunbook lint: our rules (pglast), squawk's (the real binary), and the command line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook.sql import lint

from .conftest import SEED_000, cli, connect

LIVE: lint.LiveColumns = {
    "Customer": {"id": ("uuid", None), "code": ("character varying", 50)},
    "Users": {"id": ("integer", None)},
    "SavedInsights": {"id": ("integer", None), "scope": ("character varying", 10)},
}


def sql_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def own(tmp_path: Path, text: str, **kwargs: object) -> list[lint.Finding]:
    path = sql_file(tmp_path, "022_change.sql", text)
    return lint.lint_files([path], squawk=False, **kwargs).findings  # type: ignore[arg-type]


def rules(findings: list[lint.Finding]) -> list[tuple[str, str]]:
    return [(f.severity, f.rule) for f in findings]


# -- numbering --------------------------------------------------------------------------------------

def test_numbering_collision_and_suggestion(tmp_path: Path) -> None:
    existing = [tmp_path / f"{n:03d}_m.sql" for n in range(22)]
    proposed = [tmp_path / "018_add_customer.sql", tmp_path / "019_create_threads.sql"]
    found = lint.check_numbering(proposed, existing)
    assert [(f.file, f.fix) for f in found] == [
        ("018_add_customer.sql", "rename to 022_add_customer.sql"),
        ("019_create_threads.sql", "rename to 023_create_threads.sql")]
    assert "018 already exists (018_m.sql); the latest is 021_m.sql" in found[0].message
    assert lint.check_numbering([tmp_path / "022_add_customer.sql"], existing) == []


# -- references ------------------------------------------------------------------------------------

def test_varchar_reference_to_a_uuid_key(tmp_path: Path) -> None:
    found = own(tmp_path, 'ALTER TABLE "SavedInsights" ADD COLUMN "customerId" VARCHAR(50) NULL;', live=LIVE)
    assert rules(found) == [("error", "fk-type-mismatch"), ("warning", "reference-without-fk")]
    assert found[0].message.startswith('SavedInsights."customerId" is character varying(50) but Customer.id is uuid')
    assert found[0].line == 1


def test_fk_type_mismatch_against_a_table_created_earlier_in_the_migration(tmp_path: Path) -> None:
    found = own(tmp_path, """
        CREATE TABLE "Threads" ("id" UUID PRIMARY KEY);
        CREATE TABLE "Messages" ("id" UUID PRIMARY KEY, "threadId" INTEGER REFERENCES "Threads"("id"));
        CREATE INDEX ON "Messages" ("threadId");""")
    assert rules(found) == [("error", "fk-type-mismatch")]
    assert found[0].line == 3 and "references Threads.id, which is uuid" in found[0].message


def test_corrected_references_pass(tmp_path: Path) -> None:
    found = own(tmp_path, """
        ALTER TABLE "SavedInsights" ADD COLUMN "customerId" UUID NULL REFERENCES "Customer"(id) ON DELETE SET NULL;
        CREATE INDEX IF NOT EXISTS idx_saved_insights_customer ON "SavedInsights" ("customerId", "isActive");
        CREATE TABLE "Threads" ("id" UUID PRIMARY KEY,
          "userId" INTEGER NOT NULL REFERENCES "Users"(id) ON DELETE CASCADE);
        CREATE INDEX ON "Threads" ("userId");""", live=LIVE)
    assert found == []


def test_fk_without_index(tmp_path: Path) -> None:
    text = 'ALTER TABLE "SavedInsights" ADD COLUMN "customerId" UUID REFERENCES "Customer"(id);'
    assert rules(own(tmp_path, text, live=LIVE)) == [("warning", "fk-without-index")]
    # An index that already exists on the live target counts too.
    indexed = {"SavedInsights": [["customerId", "isActive"]]}
    assert own(tmp_path, text, live=LIVE, live_indexes=indexed) == []


# -- CHECK literals -------------------------------------------------------------------------------------

def test_check_literal_longer_than_the_varchar(tmp_path: Path) -> None:
    too_long = """ALTER TABLE "SavedInsights" ADD CONSTRAINT "SavedInsights_scope_check"
                  CHECK (scope IN ('form', 'schema', 'semantic_layer'));"""
    found = own(tmp_path, too_long, live=LIVE)
    assert rules(found) == [("error", "check-literal-too-long")]
    assert "'semantic_layer' (14 characters)" in found[0].message
    fits = too_long.replace("'semantic_layer'", "'semantic'")  # the seed's own: 8 <= 10
    assert own(tmp_path, fits, live=LIVE) == []


def test_check_literal_on_a_column_created_in_the_migration(tmp_path: Path) -> None:
    found = own(tmp_path, """CREATE TABLE "M" ("id" UUID PRIMARY KEY,
                             "role" VARCHAR(5) NOT NULL CHECK (role IN ('user', 'assistant')));""")
    assert rules(found) == [("error", "check-literal-too-long")]


# -- rollback -----------------------------------------------------------------------------------------------

FORWARD_023 = """
CREATE TABLE "ConversationThreads" ("id" UUID PRIMARY KEY);
CREATE TABLE "ConversationMessages" ("id" UUID PRIMARY KEY,
  "threadId" UUID NOT NULL REFERENCES "ConversationThreads"("id") ON DELETE CASCADE);
CREATE INDEX idx_conversation_messages_thread ON "ConversationMessages" ("threadId");
CREATE OR REPLACE FUNCTION update_conversation_thread_timestamp() RETURNS TRIGGER AS $$
BEGIN UPDATE "ConversationThreads" SET "id" = "id" WHERE "id" = NEW."threadId"; RETURN NEW; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trigger_update_thread_timestamp AFTER INSERT ON "ConversationMessages"
FOR EACH ROW EXECUTE FUNCTION update_conversation_thread_timestamp();
"""

ROLLBACK_023 = """
DROP TRIGGER IF EXISTS trigger_update_thread_timestamp ON "ConversationMessages";
DROP FUNCTION IF EXISTS update_conversation_thread_timestamp();
DROP TABLE IF EXISTS "ConversationMessages" CASCADE;
DROP TABLE IF EXISTS "ConversationThreads" CASCADE;
"""


def rollback_findings(tmp_path: Path, forward: str, rollback: str | None) -> list[lint.Finding]:
    fwd = sql_file(tmp_path, "023_create.sql", forward)
    back = tmp_path / "rollback.sql"
    if rollback is not None:
        back.write_text(rollback)
    return [f for f in lint.lint_files([fwd], rollback=[back], squawk=False).findings if f.rule.startswith("rollback")]


def test_the_seeds_rollback_passes(tmp_path: Path) -> None:
    assert rollback_findings(tmp_path, FORWARD_023, ROLLBACK_023) == []


def test_missing_or_empty_rollback(tmp_path: Path) -> None:
    assert rules(rollback_findings(tmp_path, FORWARD_023, None)) == [("error", "rollback-missing")]
    assert "has no statements" in rollback_findings(tmp_path, FORWARD_023, "-- nothing\n")[0].message


def test_rollback_that_forgets_something(tmp_path: Path) -> None:
    found = rollback_findings(tmp_path, FORWARD_023, ROLLBACK_023.replace(
        "DROP FUNCTION IF EXISTS update_conversation_thread_timestamp();\n", ""))
    assert [f.message for f in found] == [
        "the migration creates function update_conversation_thread_timestamp and rollback.sql does not remove it"]
    assert found[0].line == 6


def test_rollback_that_drops_the_function_before_the_trigger(tmp_path: Path) -> None:
    wrong = """
        DROP FUNCTION IF EXISTS update_conversation_thread_timestamp();
        DROP TRIGGER IF EXISTS trigger_update_thread_timestamp ON "ConversationMessages";
        DROP TABLE IF EXISTS "ConversationMessages" CASCADE;
        DROP TABLE IF EXISTS "ConversationThreads" CASCADE;"""
    found = rollback_findings(tmp_path, FORWARD_023, wrong)
    assert rules(found) == [("error", "rollback-order")]
    assert "dropped before trigger trigger_update_thread_timestamp" in found[0].message


def test_seed_000_runbook_rollback_is_complete() -> None:
    result = lint.lint_files([SEED_000 / "migration.sql"], rollback=[SEED_000 / "rollback.sql"], squawk=False)
    assert [f for f in result.findings if f.rule.startswith("rollback")] == []


# -- squawk, the real binary ------------------------------------------------------------------------------

def test_squawk_findings_carry_file_and_line() -> None:
    found = lint.squawk_findings([SEED_000 / "migration.sql"], pg_version="18")
    by_rule = {f.rule: f for f in found}
    assert by_rule["squawk:require-concurrent-index-creation"].line == 8
    assert "CREATE INDEX" in by_rule["squawk:require-concurrent-index-creation"].statement
    assert by_rule["squawk:adding-foreign-key-constraint"].line == 11
    assert all(f.file == "migration.sql" for f in found)
    # What the deploy phase does about it is said beside squawk's own advice.
    assert by_rule["squawk:require-concurrent-index-creation"].fix == (
        "Use `concurrently` to avoid blocking writes. (the deploy phase does this: an index on an existing table "
        "is built CONCURRENTLY)")


# -- the command line -------------------------------------------------------------------------------------

def test_cli_json_and_fail_on(target: str, tmp_path: Path) -> None:
    with connect(target) as conn:  # a live catalog: the Customer table with a UUID key
        conn.execute(sa.text('CREATE TABLE "Customer" (id UUID PRIMARY KEY, code VARCHAR(50))'))
        conn.commit()
    bad = sql_file(tmp_path, "030_bad.sql", 'ALTER TABLE "Customer" ADD COLUMN "parentCustomerId" VARCHAR(50);\n'
                                          'CREATE TABLE "Report" ("id" UUID PRIMARY KEY, "customerId" TEXT);\n')
    done = cli("lint", str(bad), "--target", target, "--format", "json", "--no-squawk")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [(f["rule"], f["where"]) for f in report["findings"] if f["severity"] == "error"] == [
        ("fk-type-mismatch", "030_bad.sql:2")]
    good = sql_file(tmp_path, "031_good.sql", 'CREATE TABLE "Report" ("id" UUID PRIMARY KEY, '
                                            '"customerId" UUID REFERENCES "Customer"(id));\n'
                                            'CREATE INDEX ON "Report" ("customerId");\n')
    clean = cli("lint", str(good), "--target", target, "--no-squawk")
    assert clean.returncode == 0 and "no findings" in clean.stdout
    # squawk's warnings fail the run only when asked to.
    warned = cli("lint", str(good), "--target", target)
    assert warned.returncode == 0 and "squawk:" in warned.stdout
    strict = cli("lint", str(good), "--target", target, "--fail-on", "warning")
    assert strict.returncode == 1


def test_cli_lints_a_runbook() -> None:
    done = cli("lint", "event_message_fk", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr  # squawk warns; nothing reaches "error"
    report = json.loads(done.stdout)
    assert report["files"] == ["migration.sql"]
    assert {"squawk:require-concurrent-index-creation", "squawk:adding-foreign-key-constraint"} <= {
        f["rule"] for f in report["findings"]}
    assert not [f for f in report["findings"] if f["rule"].startswith("rollback")]  # its rollback is complete


@pytest.mark.parametrize("severity", ["info", "warning", "error"])
def test_reaches(severity: str) -> None:
    finding = lint.Finding(severity, "r", "f.sql", 1, "", "m")
    assert lint.reaches([finding], "info")
    assert lint.reaches([finding], severity)
    assert lint.reaches([finding], "error") == (severity == "error")


def test_cli_lints_seed_001_both_variants_without_a_database() -> None:
    """The existing migrations are context enough: 008, 012 and 014 give the key types."""
    proposed = cli("lint", "saved_insights_customer", "--variant", "proposed", "--format", "json", "--no-squawk")
    assert proposed.returncode == 1
    errors = [(f["rule"], f["where"]) for f in json.loads(proposed.stdout)["findings"] if f["severity"] == "error"]
    assert errors == [("migration-numbering", "proposed/018_add_customer_to_saved_insights.sql"),
                      ("migration-numbering", "proposed/019_create_conversation_tables.sql"),
                      ("fk-type-mismatch", "proposed/018_add_customer_to_saved_insights.sql:4"),
                      ("fk-type-mismatch", "proposed/019_create_conversation_tables.sql:5"),
                      ("fk-type-mismatch", "proposed/019_create_conversation_tables.sql:5"),
                      ("rollback-missing", "(no rollback declared)")]
    corrected = cli("lint", "saved_insights_customer")
    assert corrected.returncode == 0, corrected.stdout
    assert "error" not in corrected.stdout.splitlines()[-1]
