"""Lint, fingerprint and deploy on migrations shaped like real folders: long chains with renames and
comment-only files, up/down pairs in several layouts, width mismatches, partitioned tables.

The folders are written here, in the shapes real ORMs and teams produce; the rules are general.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook.cli import commands
from dbrunbook.runbook import layouts
from dbrunbook.sql import lint

from .conftest import cli, write_files


def rules(result: lint.LintResult, *names: str) -> list[lint.Finding]:
    return [f for f in result.findings if f.rule in names]


# -- 1. widths ------------------------------------------------------------------------------------

def test_foreign_keys_of_another_width_are_findings(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "m", {
        "001_accounts.sql": "CREATE TABLE accounts (id serial PRIMARY KEY, name text);\n",
        "002_events.sql": "CREATE TABLE events (id bigserial PRIMARY KEY,\n"
                          "  account_id bigint NOT NULL REFERENCES accounts(id));\n",
        "003_big.sql": "CREATE TABLE big (id bigint PRIMARY KEY);\n",
        "004_small.sql": "CREATE TABLE small (id serial PRIMARY KEY, big_id integer REFERENCES big(id));\n",
    })
    found = rules(layouts.lint_folder(folder, squawk=False), "fk-width-mismatch", "fk-type-mismatch")
    by_file = {f.file: f for f in found}
    assert set(by_file) == {"002_events.sql", "004_small.sql"}
    wider = by_file["002_events.sql"]
    assert wider.severity == lint.WARNING and wider.line == 1
    assert 'events."account_id" is bigint but references accounts.id, which is serial' in wider.message
    assert "make accounts.id bigint" in wider.fix
    narrower = by_file["004_small.sql"]
    assert narrower.severity == lint.ERROR and "declare big_id as bigint" in narrower.fix


# -- 2. empty and unparsable files ------------------------------------------------------------------

def test_comment_only_and_foreign_syntax_files_are_findings_and_the_chain_goes_on(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "m", {
        "0001_users.up.sql": "CREATE TABLE users (id uuid PRIMARY KEY);\n",
        "0001_users.down.sql": "DROP TABLE users;\n",
        "0002_backfill.up.sql": "-- data is migrated in code.\n",
        "0002_backfill.down.sql": "",
        "0003_idx.up.sql": "CREATE INDEX users_idx ON users (id);\n",
        "0003_idx.down.sql": "\n\nDROP INDEX users_idx ON users;\n",
        "0004_orders.up.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id text REFERENCES users(id));\n",
        "0004_orders.down.sql": "DROP TABLE orders;\n",
    })
    result = layouts.lint_folder(folder, squawk=False)
    empty = rules(result, "empty-migration")
    assert [(f.file, f.severity) for f in empty] == [("0002_backfill.up.sql", lint.WARNING)]
    assert [f.file for f in rules(result, "irreversible")] == ["0002_backfill.down.sql"]
    syntax = rules(result, "syntax-error")
    assert [(f.file, f.line, f.severity) for f in syntax] == [("0003_idx.down.sql", 3, lint.ERROR)]
    assert "another database" in syntax[0].message
    # ...and the rest of the chain is still linted: 0004's FK type against 0001's users.id.
    assert [f.file for f in rules(result, "fk-type-mismatch")] == ["0004_orders.up.sql"]
    done = cli("lint", str(folder), "--format", "json", "--no-squawk")
    assert done.returncode == 1  # the syntax error and the FK type are errors
    payload = json.loads(done.stdout)
    assert {f["rule"] for f in payload["findings"]} >= {"empty-migration", "syntax-error", "fk-type-mismatch"}


# -- 3. chains in every layout, renames followed ------------------------------------------------------

CHAIN = ["CREATE TABLE users_temp (id uuid PRIMARY KEY, email text);",
         "ALTER TABLE users_temp RENAME TO users;",
         *[f"CREATE TABLE t{n} (id bigserial PRIMARY KEY);" for n in range(3, 43)],
         "CREATE TABLE sessions (id bigserial PRIMARY KEY, user_ref text);",
         "ALTER TABLE sessions ADD CONSTRAINT sessions_user_fkey FOREIGN KEY (user_ref) REFERENCES users(id);"]


def _layouts(root: Path) -> dict[str, Path]:
    out = {}
    out["numbered"] = write_files(root / "numbered", {f"{n:03d}_step{n}.sql": sql + "\n" for n, sql in enumerate(CHAIN, 1)})
    out["updown"] = write_files(root / "updown", {
        **{f"{n:04d}_step{n}.up.sql": sql + "\n" for n, sql in enumerate(CHAIN, 1)},
        **{f"{n:04d}_step{n}.down.sql": "SELECT 1;\n" for n in range(1, len(CHAIN) + 1)}})
    out["updown-V"] = write_files(root / "updown_v", {f"V{n}.Step{n}.up.sql": sql + "\n" for n, sql in enumerate(CHAIN, 1)})
    out["prisma"] = write_files(root / "prisma", {f"2024010112{n:04d}_step{n}/migration.sql": sql + "\n"
                                            for n, sql in enumerate(CHAIN, 1)})
    out["flyway"] = write_files(root / "flyway", {f"V{n}__step{n}.sql": sql + "\n" for n, sql in enumerate(CHAIN, 1)})
    return out


@pytest.mark.parametrize("kind", ["numbered", "updown", "updown-V", "prisma", "flyway"])
def test_a_chain_is_linted_in_order_following_renames_in_every_layout(kind: str, tmp_path: Path) -> None:
    folder = _layouts(tmp_path)[kind]
    members, issues = layouts.read_folder(folder)
    assert len(members) == len(CHAIN) and not issues
    assert [m.key for m in members] == sorted(m.key for m in members)  # 10 after 9, not after 1
    result = layouts.lint_folder(folder, squawk=False)
    mismatch = rules(result, "fk-type-mismatch")
    # 44 files on, the foreign key meets users (created as users_temp, renamed): text against uuid.
    assert len(mismatch) == 1 and 'sessions."user_ref" is text but references users.id, which is uuid' in \
        mismatch[0].message, [str(f) for f in result.findings]


def test_numbering_understands_the_layouts(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "m", {
        "0001_init.up.sql": "CREATE TABLE a (id int);\n", "0001_init.down.sql": "DROP TABLE a;\n",
        "0002_b.up.sql": "CREATE TABLE b (id int);\n", "0002_add_b.down.sql": "DROP TABLE b;\n",
        "0003_c_up.sql": "CREATE TABLE c (id int);\n", "0003_c_down.sql": "DROP TABLE c;\n",
        "0003_d.up.sql": "CREATE TABLE d (id int);\n",
        "0009_orphan.down.sql": "DROP TABLE z;\n",
    })
    members, issues = layouts.read_folder(folder)
    assert [(m.version, m.up.name, m.down.name if m.down else None) for m in members] == [
        ("0001", "0001_init.up.sql", "0001_init.down.sql"), ("0002", "0002_b.up.sql", "0002_add_b.down.sql"),
        ("0003", "0003_c_up.sql", "0003_c_down.sql"), ("0003", "0003_d.up.sql", None)]
    messages = " | ".join(i.message for i in issues)
    assert "0002_add_b.down.sql is the down of 0002_b.up.sql" in messages
    assert "version 0003 is used twice" in messages
    assert "0009_orphan.down.sql has no up file" in messages
    # An up and its own down are a pair, not a conflict.
    assert "0001" not in messages


# -- 4. drop order of a down ----------------------------------------------------------------------------

def test_a_down_dropping_a_parent_before_its_child_is_a_finding(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "m", {
        "0001_shop.up.sql": "CREATE TABLE customers (id bigint PRIMARY KEY);\n"
                            "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers(id));\n"
                            "CREATE INDEX orders_customer ON orders (customer_id);\n",
        "0001_shop.down.sql": "DROP TABLE customers;\nDROP TABLE orders;\n",
        "0002_ok.up.sql": "CREATE TABLE a (id bigint PRIMARY KEY);\n"
                          "CREATE TABLE b (id bigint PRIMARY KEY, a_id bigint REFERENCES a(id));\n"
                          "CREATE INDEX b_a ON b (a_id);\n",
        "0002_ok.down.sql": "DROP TABLE b;\nDROP TABLE a;\n",
        "0003_cascade.up.sql": "CREATE TABLE p (id bigint PRIMARY KEY);\n"
                               "CREATE TABLE c (id bigint PRIMARY KEY, p_id bigint REFERENCES p(id));\n"
                               "CREATE INDEX c_p ON c (p_id);\n",
        "0003_cascade.down.sql": "DROP TABLE p CASCADE;\nDROP TABLE c;\n",
    })
    found = rules(layouts.lint_folder(folder, squawk=False), "rollback-drop-order")
    assert [(f.file, f.line) for f in found] == [("0001_shop.down.sql", 1)]
    assert "drops customers while orders still reference(s) it" in found[0].message


# -- 5. squawk's view of transactions ---------------------------------------------------------------------

def test_squawk_is_told_the_script_runs_in_a_transaction(tmp_path: Path) -> None:
    path = tmp_path / "001_add.sql"
    path.write_text("CREATE TABLE t (id bigint PRIMARY KEY);\nALTER TABLE t ADD COLUMN c bigint;\n")
    auto = {f.rule for f in lint.lint_files([path]).findings}
    assert "squawk:prefer-robust-stmts" not in auto  # "can't be rerun": the transaction makes it atomic
    told_not = {f.rule for f in lint.lint_files([path], squawk_options=lint.SquawkOptions(
        assume_in_transaction=False)).findings}
    assert "squawk:prefer-robust-stmts" in told_not
    excluded = {f.rule for f in lint.lint_files([path], squawk_options=lint.SquawkOptions(
        exclude=("require-lock-timeout",), assume_in_transaction=False)).findings}
    assert "squawk:require-lock-timeout" not in excluded and "squawk:prefer-robust-stmts" in excluded
    # A script that cannot run in a transaction is linted as the phase runs it: statement by statement.
    concurrent = tmp_path / "002_idx.sql"
    concurrent.write_text("CREATE INDEX CONCURRENTLY t_c ON t (c);\n")
    assert "squawk:prefer-robust-stmts" in {f.rule for f in lint.lint_files([concurrent]).findings}
    done = cli("lint", str(path), "--no-assume-in-transaction", "--squawk-exclude", "require-lock-timeout",
               "--format", "json")
    assert {f["rule"] for f in json.loads(done.stdout)["findings"]} >= {"squawk:prefer-robust-stmts"}


# -- 6. reference-without-fk false positives ---------------------------------------------------------------

def test_a_partitions_own_key_and_a_renamed_tables_own_key_are_not_references(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "m", {
        "001_payment.sql": "CREATE TABLE payment (payment_id bigint NOT NULL, amount numeric,\n"
                           "  paid_at timestamptz NOT NULL) PARTITION BY RANGE (paid_at);\n",
        "002_p2022.sql": "CREATE TABLE payment_p2022_01 (payment_id bigint NOT NULL, amount numeric,\n"
                         "  paid_at timestamptz NOT NULL);\n"
                         "ALTER TABLE payment ATTACH PARTITION payment_p2022_01\n"
                         "  FOR VALUES FROM ('2022-01-01') TO ('2022-02-01');\n",
        "003_of.sql": "CREATE TABLE payment_p2022_02 PARTITION OF payment\n"
                      "  FOR VALUES FROM ('2022-02-01') TO ('2022-03-01');\n",
        "004_film.sql": "CREATE TABLE film (film_id bigint PRIMARY KEY);\n",
        "005_film_temp.sql": "CREATE TABLE film_temp (film_id bigint PRIMARY KEY, title text);\n",
        "006_actor.sql": "CREATE TABLE film_actor (actor_id bigint, film_id bigint);\n",
    })
    result = layouts.lint_folder(folder, squawk=False)
    flagged = {(f.statement.split()[2], f.message.split('"')[1]) for f in rules(result, "reference-without-fk")}
    # film_actor.film_id is a real reference without a foreign key; the others are own keys.
    assert flagged == {("film_actor", "film_id")}, flagged


def test_lint_of_a_folder_from_the_cli(tmp_path: Path) -> None:
    folder = _layouts(tmp_path)["prisma"]
    done = cli("lint", str(folder), "--no-squawk")
    assert done.returncode == 1 and "fk-type-mismatch" in done.stdout
    files = commands.lint([str(folder)], squawk=False).files
    assert files[0] == "20240101120001_step1/migration.sql" and len(files) == len(CHAIN)


# -- 7. a column dropped from the middle can be rolled back -------------------------------------------

def test_a_column_dropped_from_the_middle_rolls_back_and_its_order_is_information(tmp_path: Path, target: str) -> None:
    from dbrunbook import open_phase
    from dbrunbook.catalog import introspect

    from .conftest import connect

    book = write_files(tmp_path / "drop_middle", {
        "runbook.yaml": "title: Drop a column from the middle of a table\nfixture: before.sql\n"
                        "expect:\n  columns: [{table: t, column: b, present: false}]\n",
        "before.sql": "DROP TABLE IF EXISTS t;\nCREATE TABLE t (a bigint PRIMARY KEY, b text, c bigint);\n",
        "migration.sql": "ALTER TABLE t DROP COLUMN b;\n",
        "rollback.sql": "ALTER TABLE t ADD COLUMN b text;\n",
    })
    commands.prepare(str(book), target)
    with connect(target) as conn:
        before = introspect.snapshot(conn)
    for phase in ("schema", "rollback"):
        run = open_phase(phase, book, target)
        run.plan()
        run.apply()
        run.check_expectations()
        if phase == "rollback":
            changes = run.verify_restored().value
            assert list(changes["change"]) == ["column order"], changes
        run.finish()  # the rollback passes: the fingerprint compares columns as a set
    with connect(target) as conn:
        after = introspect.snapshot(conn)
    assert after.fingerprint == before.fingerprint
    assert after.objects["columns public.t"] == "a, c, b" and before.objects["columns public.t"] == "a, b, c"


# -- 8. deploy on a partitioned table -----------------------------------------------------------------

PARTITIONED = {
    "runbook.yaml": "title: Index a partitioned table\nfixture: before.sql\n"
                    "expect:\n  indexes: [{table: payment, name: payment_paid_at_idx, columns: [paid_at]}]\n",
    "before.sql": "DROP TABLE IF EXISTS payment;\n"
                  "CREATE TABLE payment (payment_id bigint NOT NULL, amount numeric, paid_at timestamptz NOT NULL)\n"
                  "  PARTITION BY RANGE (paid_at);\n"
                  "CREATE TABLE payment_p2022_01 PARTITION OF payment FOR VALUES FROM ('2022-01-01') TO ('2022-02-01');\n"
                  "CREATE TABLE payment_p2022_02 PARTITION OF payment FOR VALUES FROM ('2022-02-01') TO ('2022-03-01');\n"
                  "INSERT INTO payment SELECT g, g, timestamptz '2022-01-01' + g * interval '1 hour'\n"
                  "  FROM generate_series(1, 1000) g;\n",
    "migration.sql": "CREATE INDEX payment_paid_at_idx ON payment (paid_at);\n",
    "rollback.sql": "DROP INDEX payment_paid_at_idx;\n",
}


def test_deploy_indexes_a_partitioned_table_online(tmp_path: Path) -> None:
    from dbrunbook import open_phase
    from dbrunbook.catalog import introspect

    from .conftest import apply_schema, connect, prepared_pair

    book = write_files(tmp_path / "partitioned", PARTITIONED)
    with prepared_pair("event_message_fk", "pt") as (rehearsal, prod):
        for name in (rehearsal, prod):
            commands.prepare(str(book), name, allow_production=True)
        apply_schema(rehearsal, book)
        run = open_phase("deploy", book, prod, rehearsal=rehearsal, archive_dir=tmp_path)
        run.acquire_run_lock()
        run.preflight()
        run.plan()
        assert [s.kind for s in run.steps] == ["create index on only", "create index concurrently",
                                               "attach index partition", "create index concurrently",
                                               "attach index partition"]
        assert run.steps[0].sql == "CREATE INDEX payment_paid_at_idx ON ONLY payment (paid_at)"
        run.apply()
        run.verify()
        run.finish()
        with connect(prod) as conn:
            valid = conn.execute(sa.text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'payment_paid_at_idx'::regclass")).scalar()
            assert valid is True
            prod_objects = introspect.snapshot(conn).objects
        with connect(rehearsal) as conn:
            rehearsed = introspect.snapshot(conn).objects
    # The same index on the parent as the rehearsal's plain CREATE INDEX (partition index names differ).
    assert prod_objects["index public.payment.payment_paid_at_idx"] == rehearsed["index public.payment.payment_paid_at_idx"]


def test_review_and_lint_say_what_deploy_does_with_a_partitioned_table(tmp_path: Path, target: str) -> None:
    from dbrunbook import open_phase

    book = write_files(tmp_path / "partitioned", PARTITIONED)
    commands.prepare(str(book), target)
    run = open_phase("review", book, target, archive_dir=tmp_path, squawk=False)
    run.scripts()
    run.lint()
    info = [f for f in run.findings if f.rule == "partitioned-index"]
    assert len(info) == 1 and "ON ONLY payment" in info[0].message and "2 partition(s)" in info[0].message
    run.abandon()
    chain = write_files(tmp_path / "chain", {"001_payment.sql": PARTITIONED["before.sql"].split("INSERT")[0],
                                       "002_idx.sql": PARTITIONED["migration.sql"]})
    found = rules(layouts.lint_folder(chain, squawk=False), "partitioned-index")
    assert [f.file for f in found] == ["002_idx.sql"]


# -- 9. extensions the server lacks -------------------------------------------------------------------

def test_an_extension_the_server_lacks_is_one_line_at_review_and_at_schema(tmp_path: Path, target: str) -> None:
    from dbrunbook import open_phase
    from dbrunbook.errors import StatementFailed

    book = write_files(tmp_path / "ext", {
        "runbook.yaml": "title: Needs an extension\n",
        "migration.sql": 'CREATE EXTENSION IF NOT EXISTS "no_such_extension";\nCREATE EXTENSION IF NOT EXISTS citext;\n',
        "rollback.sql": "DROP EXTENSION IF EXISTS citext;\n",
    })
    run = open_phase("review", book, target, archive_dir=tmp_path, squawk=False)
    run.scripts()
    run.lint()
    missing = [f for f in run.findings if f.rule == "extension-unavailable"]
    assert [(f.severity, f.line) for f in missing] == [(lint.ERROR, 1)]  # citext ships with the wheel
    assert "extension no_such_extension is not available on" in missing[0].message
    run.abandon()
    schema = open_phase("schema", book, target)
    schema.plan()
    with pytest.raises(StatementFailed, match=r'migration.sql:1: statement 1 of 2 failed \[0A000\]: extension '
                                              r'"no_such_extension" is not available'):
        schema.apply()
