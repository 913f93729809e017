"""Migration folders as other tools write them: recognised, read in order, imported, run and
rehearsed, their own transactions, verify scripts, repeatables and history tables honoured.

Each folder is written here in the shape its tool generates (goose's annotations, dbmate's
sections, diesel's timestamped folders with the initial setup, a Sqitch plan with tags and
dependencies, pop's dialect files, Flyway's repeatables); the rules that read them are general.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dbrunbook.cli import commands
from dbrunbook.errors import SpecError
from dbrunbook.runbook import layouts, sets
from dbrunbook.sql import lint

from .conftest import add_target, cli, connect, write_files

GOOSE = {
    "20230101120000_create_users.sql": """-- +goose Up
-- +goose StatementBegin
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DROP FUNCTION touch_updated_at();
DROP TABLE users;
-- +goose StatementEnd
""",
    "20230102090000_users_email_index.sql": """-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY users_email_idx ON users (email DESC);

-- +goose Down
DROP INDEX CONCURRENTLY users_email_idx;
""",
}

DBMATE = {
    "20230101120000_create_users.sql": """-- migrate:up
create table users (
  id bigserial primary key,
  email varchar(255) not null
);

-- migrate:down
drop table users;
""",
    "20230105083000_add_name.sql": """-- migrate:up
alter table users add column name text;

-- migrate:down
alter table users drop column name;
""",
}

DIESEL = {
    "00000000000000_diesel_initial_setup/up.sql": """-- This file was automatically created by Diesel to setup helper functions
-- and other internal bookkeeping. This file is safe to edit, any future
-- changes will be added to existing projects as new migrations.

-- Sets up a trigger for the given table to automatically set a column called
-- `updated_at` whenever the row is modified (unless `updated_at` was included
-- in the modified columns)
CREATE OR REPLACE FUNCTION diesel_manage_updated_at(_tbl regclass) RETURNS VOID AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER set_updated_at BEFORE UPDATE ON %s
                    FOR EACH ROW EXECUTE PROCEDURE diesel_set_updated_at()', _tbl);
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION diesel_set_updated_at() RETURNS trigger AS $$
BEGIN
    IF (
        NEW IS DISTINCT FROM OLD AND
        NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
    ) THEN
        NEW.updated_at := current_timestamp;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
""",
    "00000000000000_diesel_initial_setup/down.sql": """-- This file was automatically created by Diesel to setup helper functions
-- and other internal bookkeeping. This file is safe to edit, any future
-- changes will be added to existing projects as new migrations.

DROP FUNCTION IF EXISTS diesel_manage_updated_at(_tbl regclass);
DROP FUNCTION IF EXISTS diesel_set_updated_at();
""",
    "2023-01-01-120000_create_posts/up.sql": """-- Your SQL goes here
CREATE TABLE posts (
  id SERIAL PRIMARY KEY,
  title VARCHAR NOT NULL,
  body TEXT NOT NULL,
  published BOOLEAN NOT NULL DEFAULT FALSE
)
""",
    "2023-01-01-120000_create_posts/down.sql": "-- This file should undo anything in `up.sql`\nDROP TABLE posts\n",
    "2023-02-10-081500_posts_published_index/up.sql": "CREATE INDEX posts_published ON posts (published, id DESC);\n",
    "2023-02-10-081500_posts_published_index/down.sql": "DROP INDEX posts_published;\n",
}

SQITCH = {
    "sqitch.conf": "[core]\n\tengine = pg\n\tplan_file = sqitch.plan\n\ttop_dir = .\n",
    "sqitch.plan": """%syntax-version=1.0.0
%project=flipr
%uri=https://github.com/sqitchers/sqitch-intro/

appschema 2013-12-30T23:19:44Z Marge N. O'Vera <marge@example.com> # Add schema for all flipr objects.
users [appschema] 2013-12-30T23:49:00Z Marge N. O'Vera <marge@example.com> # Creates table to track our users.
@v1.0.0-dev1 2013-12-31T00:00:00Z Marge N. O'Vera <marge@example.com> # Tag v1.0.0-dev1.

flips [appschema users] 2014-01-02T18:09:27Z Marge N. O'Vera <marge@example.com> # Adds table for storing flips.
""",
    "deploy/appschema.sql": "-- Deploy flipr:appschema to pg\n\nBEGIN;\n\nCREATE SCHEMA flipr;\n\nCOMMIT;\n",
    "revert/appschema.sql": "-- Revert flipr:appschema from pg\n\nBEGIN;\n\nDROP SCHEMA flipr;\n\nCOMMIT;\n",
    "verify/appschema.sql": """-- Verify flipr:appschema on pg

BEGIN;

SELECT pg_catalog.has_schema_privilege('flipr', 'usage');

ROLLBACK;
""",
    "deploy/users.sql": """-- Deploy flipr:users to pg
-- requires: appschema

BEGIN;

SET client_min_messages = 'warning';

CREATE TABLE flipr.users (
    nickname  TEXT        PRIMARY KEY,
    password  TEXT        NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMIT;
""",
    "revert/users.sql": "-- Revert flipr:users from pg\n\nBEGIN;\n\nDROP TABLE flipr.users;\n\nCOMMIT;\n",
    "verify/users.sql": """-- Verify flipr:users on pg

BEGIN;

SELECT nickname, password, timestamp
  FROM flipr.users
 WHERE FALSE;

ROLLBACK;
""",
    "deploy/flips.sql": """-- Deploy flipr:flips to pg
-- requires: appschema
-- requires: users

BEGIN;

CREATE TABLE flipr.flips (
    id        BIGSERIAL   PRIMARY KEY,
    nickname  TEXT        NOT NULL REFERENCES flipr.users(nickname),
    body      TEXT        NOT NULL DEFAULT '' CHECK ( length(body) <= 180 ),
    timestamp TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

COMMIT;
""",
    "revert/flips.sql": "BEGIN;\n\nDROP TABLE flipr.flips;\n\nCOMMIT;\n",
    "verify/flips.sql": "BEGIN;\n\nSELECT id, nickname, body, timestamp\n  FROM flipr.flips\n WHERE FALSE;\n\nROLLBACK;\n",
}

POP = {
    "20230101120000_create_widgets.postgres.up.sql":
        "CREATE TABLE widgets (id uuid PRIMARY KEY, name varchar(255) NOT NULL, created_at timestamp NOT NULL);\n",
    "20230101120000_create_widgets.postgres.down.sql": "DROP TABLE widgets;\n",
    "20230101120000_create_widgets.mysql.up.sql":
        "CREATE TABLE widgets (id char(36) PRIMARY KEY, name varchar(255) NOT NULL) ENGINE=InnoDB;\n",
    "20230101120000_create_widgets.mysql.down.sql": "DROP TABLE widgets;\n",
    "20230201100000_widgets_name.up.sql": "CREATE UNIQUE INDEX widgets_name_idx ON widgets (name);\n",
    "20230201100000_widgets_name.down.sql": "DROP INDEX widgets_name_idx;\n",
}

FLYWAY = {
    "V1__create_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n",
    "U1__create_users.sql": "DROP TABLE users;\n",
    "V1.1__add_name.sql": "ALTER TABLE users ADD COLUMN name text;\n",
    "U1.1__add_name.sql": "ALTER TABLE users DROP COLUMN name;\n",
    "R__user_emails.sql": "CREATE OR REPLACE VIEW user_emails AS SELECT id, email FROM users;\n",
}

#: layout: (files, the members' labels in order)
FOLDERS: dict[str, tuple[dict[str, str], list[str]]] = {
    "goose": (GOOSE, ["20230101120000_create_users", "20230102090000_users_email_index"]),
    "dbmate": (DBMATE, ["20230101120000_create_users", "20230105083000_add_name"]),
    "diesel": (DIESEL, ["00000000000000_diesel_initial_setup", "20230101120000_create_posts",
                        "20230210081500_posts_published_index"]),
    "sqitch": (SQITCH, ["0001_appschema", "0002_users", "0003_flips"]),
    "pop": (POP, ["20230101120000_create_widgets", "20230201100000_widgets_name"]),
    "flyway": (FLYWAY, ["1_create_users", "1.1_add_name", "user_emails"]),
}


# -- reading ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(FOLDERS))
def test_each_layout_is_recognised_and_read_in_its_order(kind: str, tmp_path: Path) -> None:
    files, labels = FOLDERS[kind]
    folder = write_files(tmp_path / kind, files)
    assert layouts.detect_layout(folder) == kind
    members, issues = layouts.read_folder(folder)
    assert [m.label for m in members] == labels and issues == []
    assert all(m.down_text() for m in members if not m.repeatable), kind  # every one of them has its way back


def test_goose_sections_blocks_and_no_transaction(tmp_path: Path) -> None:
    members, _ = layouts.read_folder(_written("goose", tmp_path))
    first, second = members
    up = first.up_text()
    # Lines keep their numbers (what is outside the section is blanked), and a StatementBegin block
    # holding semicolons is one statement.
    assert up.splitlines()[3].startswith("    id bigserial") and "DROP TABLE" not in up
    assert "DROP FUNCTION touch_updated_at();" in (first.down_text() or "")
    assert first.in_transaction and not second.in_transaction
    assert "CREATE INDEX CONCURRENTLY" in second.up_text() and "DROP INDEX" not in second.up_text()


def test_goose_and_dbmate_refuse_what_their_tools_refuse(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "g", {"1_a.sql": "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n"})
    with pytest.raises(SpecError, match=r"1_a.sql:2.*StatementBegin without its StatementEnd"):
        layouts.read_folder(folder)
    dbmate = write_files(tmp_path / "d", {"1_a.sql": "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY "
                                                     "a_i ON a (x);\n-- migrate:down\nDROP INDEX a_i;\n"})
    (member,), _ = layouts.read_folder(dbmate)
    assert member.layout == "dbmate" and not member.in_transaction


def test_pop_prefers_the_postgres_file_and_ignores_other_databases(tmp_path: Path) -> None:
    members, _ = layouts.read_folder(_written("pop", tmp_path))
    assert [m.up.name for m in members] == ["20230101120000_create_widgets.postgres.up.sql",
                                           "20230201100000_widgets_name.up.sql"]


def test_sqitch_follows_the_plan_and_its_reworks(tmp_path: Path) -> None:
    files = dict(SQITCH)
    # A reworked change: planned again after a tag; the earlier scripts are kept as <change>@<tag>.sql.
    files["sqitch.plan"] += "users [users@v1.0.0-dev1] 2014-02-01T00:00:00Z Marge <m@example.com> # Add email.\n"
    for kind in ("deploy", "revert", "verify"):
        files[f"{kind}/users@v1.0.0-dev1.sql"] = files[f"{kind}/users.sql"]
    files["deploy/users.sql"] = "BEGIN;\nALTER TABLE flipr.users ADD COLUMN email text;\nCOMMIT;\n"
    files["revert/users.sql"] = "BEGIN;\nALTER TABLE flipr.users DROP COLUMN email;\nCOMMIT;\n"
    members, _ = layouts.read_folder(write_files(tmp_path / "s", files))
    assert [m.name for m in members] == ["appschema", "users", "flips", "users_2"]
    assert members[1].up.name == "users@v1.0.0-dev1.sql" and members[3].up.name == "users.sql"
    assert members[1].verify is not None and members[1].verify.name == "users@v1.0.0-dev1.sql"
    broken = dict(SQITCH)
    del broken["deploy/flips.sql"]
    with pytest.raises(SpecError, match=r"sqitch.plan:9: plans change flips, but deploy/flips.sql is missing"):
        layouts.read_folder(write_files(tmp_path / "b", broken))


def test_the_command_offers_every_layout() -> None:
    from dbrunbook.cli.main import LAYOUT_NAMES

    assert LAYOUT_NAMES == layouts.NAMES


def test_a_folder_mixing_layouts_or_matching_none_is_refused_naming_them(tmp_path: Path) -> None:
    mixed = write_files(tmp_path / "mixed", {**{k: v for k, v in FLYWAY.items() if k.startswith("V")},
                                             "2_posts.up.sql": "CREATE TABLE posts (id int);\n"})
    with pytest.raises(SpecError, match=r"mixes layouts: flyway \(2 file\(s\)\), updown \(1 file\(s\)\)"):
        layouts.detect_layout(mixed)
    none = write_files(tmp_path / "none", {"schema.sql": "CREATE TABLE a (id int);\n", "README.md": "notes\n"})
    with pytest.raises(SpecError, match=r"no migrations found; the layouts known are: sqitch .*goose .*dbmate"):
        layouts.detect_layout(none)


def test_an_authors_begin_commit_is_not_linted_as_a_nested_transaction(tmp_path: Path) -> None:
    """The phase runs the file in its own transaction and honours the author's BEGIN ... COMMIT as a
    group; squawk is shown the script as it runs, so it does not report a nested transaction."""
    found = layouts.lint_folder(_written("sqitch", tmp_path))
    rules = {f.rule for f in found.findings}
    assert "squawk:transaction-nesting" not in rules, rules
    assert not [f for f in found.findings if f.severity == lint.ERROR], found.findings


# -- importing, running, rehearsing --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(FOLDERS))
def test_each_layout_imports_and_every_member_round_trips(kind: str, tmp_path: Path, target: str) -> None:
    folder = _written(kind, tmp_path)
    result = commands.import_set(str(folder), str(tmp_path / "set"))
    assert result.layout == kind and len(result.added) == len(FOLDERS[kind][1]), result.render()
    assert all(m.rollback == "source" for m in result.added if not m.name.startswith("R__")), result.render()
    done = cli("rehearse", str(tmp_path / "set"), "--target", target)
    # A declared irreversible member (a repeatable keeps no earlier definition) is a verdict, not a failure.
    reversible = sum(1 for m in result.added if m.rollback != "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{reversible} round-trip" in done.stdout and "failed" not in done.stdout, done.stdout
    assert ("1 irreversible" in done.stdout) == (kind == "flyway"), done.stdout


def test_a_no_transaction_migration_runs_statement_by_statement(tmp_path: Path, target: str) -> None:
    """goose's NO TRANSACTION is kept: a new enum label used by the next statement fails inside one
    transaction ("unsafe use of new value") and works in autocommit, as goose runs it."""
    folder = write_files(tmp_path / "g", {
        "1_mood.sql": "-- +goose Up\nCREATE TYPE mood AS ENUM ('sad', 'happy');\n"
                      "CREATE TABLE people (id int PRIMARY KEY, mood mood NOT NULL DEFAULT 'sad');\n"
                      "-- +goose Down\nDROP TABLE people;\nDROP TYPE mood;\n",
        "2_ok.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nALTER TYPE mood ADD VALUE 'ok';\n"
                    "ALTER TABLE people ALTER COLUMN mood SET DEFAULT 'ok';\n"
                    "-- +goose Down\nALTER TABLE people ALTER COLUMN mood SET DEFAULT 'sad';\n"})
    commands.import_set(str(folder), str(tmp_path / "set"))
    second = sets.load_members(tmp_path / "set")[1]
    assert yaml.safe_load((second / "runbook.yaml").read_text())["in_transaction"] is False
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    with connect(target) as conn:
        assert conn.execute(sa.text("SELECT column_default FROM information_schema.columns WHERE table_name = "
                                    "'people' AND column_name = 'mood'")).scalar() == "'ok'::mood"
    # Without the annotation the same script runs in one transaction and fails as PostgreSQL says it
    # must, leaving the target as it was.
    (folder / "2_ok.sql").write_text((folder / "2_ok.sql").read_text().replace("-- +goose NO TRANSACTION\n", ""))
    commands.import_set(str(folder), str(tmp_path / "set2"))
    other = f"{target}_t"
    add_target(other, {"embedded": other})
    again = cli("run", str(tmp_path / "set2"), "--target", other, "--phases", "schema")
    assert again.returncode == 1 and "unsafe use of new value" in again.stderr, again.stdout + again.stderr
    with connect(other) as conn:
        assert conn.execute(sa.text("SELECT enum_range(NULL::mood)::text")).scalar() == "{sad,happy}"


def test_sqitch_verify_scripts_run_after_the_schema_and_fail_it_when_they_fail(tmp_path: Path, target: str) -> None:
    folder = _written("sqitch", tmp_path)
    commands.import_set(str(folder), str(tmp_path / "set"))
    members = sets.load_members(tmp_path / "set")
    assert yaml.safe_load((members[1] / "runbook.yaml").read_text())["verify"] == ["verify.sql"]
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "rollback").returncode == 0
    # A verify that does not hold (the column it selects is not there): the phase fails, nothing stays.
    (members[2] / "verify.sql").write_text("BEGIN;\nSELECT id, nickname, likes FROM flipr.flips WHERE FALSE;\n"
                                           "ROLLBACK;\n")
    failed = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "verify.sql:2" in failed.stderr and 'column "likes" does not exist' in failed.stderr, failed.stderr
    with connect(target) as conn:
        assert conn.execute(sa.text("SELECT to_regclass('flipr.flips')")).scalar() is None
    states = commands.status_set(str(tmp_path / "set"), target)
    # The phase ran in one transaction: the member stays as it was, its failed attempt in the events.
    assert states is not None and [s.state for s in states] == ["applied (up to date)"] * 2 + ["rolled back"]
    assert states[2].events.iloc[0][["phase", "status"]].tolist() == ["schema", "failed"]


def test_a_changed_repeatable_is_applied_again(tmp_path: Path, target: str) -> None:
    folder = _written("flyway", tmp_path)
    with connect(target) as conn, conn.begin():
        conn.execute(sa.text(FLYWAY_HISTORY))
    commands.import_set(str(folder), str(tmp_path / "set"))
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema").returncode == 0
    (folder / "R__user_emails.sql").write_text(
        "CREATE OR REPLACE VIEW user_emails AS SELECT id, email, name FROM users;\n")
    (folder / "V2__add_login.sql").write_text("ALTER TABLE users ADD COLUMN login text;\n")
    again = commands.import_set(str(folder), str(tmp_path / "set"))
    assert [(m.name, m.updated) for m in again.added] == [("0003_2_add_login", False), ("R__user_emails", True)]
    assert "1 repeatable(s) changed, rewritten" in again.render()
    names = [m.name for m in sets.load_members(tmp_path / "set")]
    assert names[-1] == "R__user_emails" and names[-2] == "0003_2_add_login"  # repeatables after versions
    states = commands.status_set(str(tmp_path / "set"), target)
    assert states is not None and states[-1].state == "applied (changed: runs again)", states
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    with connect(target) as conn:
        columns = conn.execute(sa.text("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                       "'user_emails' ORDER BY ordinal_position")).scalars().all()
        history = conn.execute(sa.text("SELECT version, script FROM flyway_schema_history ORDER BY installed_rank"
                                       )).all()
    assert columns == ["id", "email", "name"]
    assert [tuple(r) for r in history] == [("1", "V1__create_users.sql"), ("1.1", "V1.1__add_name.sql"),
                                           (None, "R__user_emails.sql"), ("2", "V2__add_login.sql"),
                                           (None, "R__user_emails.sql")]
    # A versioned migration edited after it was applied is still drift.
    (tmp_path / "set" / names[0] / "migration.sql").write_text(FLYWAY["V1__create_users.sql"] + "-- edited\n")
    drift = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert drift.returncode == 1 and "changed since it was applied" in drift.stderr, drift.stderr


HISTORY_TABLES = {
    "goose": "CREATE TABLE goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL, is_applied boolean "
             "NOT NULL, tstamp timestamp DEFAULT now()); INSERT INTO goose_db_version (version_id, is_applied) "
             "VALUES (0, true)",
    "dbmate": "CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)",
    "diesel": "CREATE TABLE __diesel_schema_migrations (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL "
              "DEFAULT CURRENT_TIMESTAMP)",
    "pop": "CREATE TABLE schema_migration (version varchar(14) NOT NULL PRIMARY KEY)",
}
HISTORY_ROWS = {
    "goose": "SELECT version_id::text FROM goose_db_version WHERE version_id > 0 ORDER BY id",
    "dbmate": "SELECT version FROM schema_migrations ORDER BY version",
    "diesel": "SELECT version FROM __diesel_schema_migrations ORDER BY version",
    "pop": "SELECT version FROM schema_migration ORDER BY version",
}
FLYWAY_HISTORY = (
    "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), description "
    "varchar(200) NOT NULL, type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int, installed_by "
    "varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(), execution_time int NOT NULL, "
    "success boolean NOT NULL)")


def test_each_tools_history_table_is_kept_in_step(tmp_path: Path, target: str) -> None:
    """Applied here, a migration is in its tool's own history as the tool would have written it (so
    ``goose status``, ``dbmate status``, ``diesel migration list``, ``soda`` agree); rolled back, gone."""
    for number, kind in enumerate(HISTORY_TABLES):
        files, labels = FOLDERS[kind]
        versions = [label.split("_", 1)[0] for label in labels]
        fresh = f"{target}_{number}"
        add_target(fresh, {"embedded": fresh})
        with connect(fresh) as conn, conn.begin():
            conn.execute(sa.text(HISTORY_TABLES[kind]))
        commands.import_set(str(write_files(tmp_path / kind, files)), str(tmp_path / f"{kind}_set"))
        done = cli("run", str(tmp_path / f"{kind}_set"), "--target", fresh, "--phases", "schema")
        assert done.returncode == 0, kind + done.stdout + done.stderr
        with connect(fresh) as conn:
            assert conn.execute(sa.text(HISTORY_ROWS[kind])).scalars().all() == versions, kind
        assert cli("run", str(tmp_path / f"{kind}_set"), "--target", fresh, "--phases", "rollback").returncode == 0
        with connect(fresh) as conn:
            assert conn.execute(sa.text(HISTORY_ROWS[kind])).scalars().all() == [], kind


# -- an author's own transactions ------------------------------------------------------------------------------

def test_an_authors_begin_commit_runs_whole_or_not_at_all(tmp_path: Path, target: str) -> None:
    """A file with its own BEGIN ... COMMIT around some statements and a CREATE INDEX CONCURRENTLY
    after them runs in autocommit, the author's group as one transaction: when its second statement
    fails, its first is not left behind; fixed, the run completes."""
    folder = write_files(tmp_path / "m", {
        "001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);\n",
        "002_plans.sql": "BEGIN;\nCREATE TABLE plans (id bigint PRIMARY KEY, name text NOT NULL);\n"
                         "INSERT INTO plans VALUES (1, NULL);\nCOMMIT;\n\n"
                         "CREATE INDEX CONCURRENTLY accounts_email ON accounts (email);\n",
    })
    commands.import_set(str(folder), str(tmp_path / "set"))
    failed = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = failed.stderr.strip().splitlines()
    assert len(line) == 1 and "migration.sql:3" in line[0] and "not-null constraint" in line[0], failed.stderr
    with connect(target) as conn:
        assert conn.execute(sa.text("SELECT to_regclass('plans')")).scalar() is None  # the group was undone
    states = commands.status_set(str(tmp_path / "set"), target)
    assert states is not None and states[1].state.startswith("failed at step 1 of 2 (0 done): BEGIN ... COMMIT of 2 statements"), states[1].state
    # Nothing of it stayed, so the fixed file is not drift: it runs.
    member = sets.load_members(tmp_path / "set")[1]
    (member / "migration.sql").write_text((member / "migration.sql").read_text().replace("(1, NULL)", "(1, 'free')"))
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    with connect(target) as conn:
        assert conn.execute(sa.text("SELECT name FROM plans")).scalar() == "free"
        assert conn.execute(sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_email'::regclass"
                                    )).scalar() is True
    # Edited once more after it was applied, it is drift again.
    (member / "migration.sql").write_text((member / "migration.sql").read_text() + "-- edited\n")
    drift = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert drift.returncode == 1 and "changed since it was applied" in drift.stderr, drift.stderr


def _written(kind: str, tmp_path: Path) -> Path:
    return write_files(tmp_path / kind, FOLDERS[kind][0])


PRISMA_ENUM_REMOVAL = {
    "20240101000000_init/migration.sql": """-- CreateEnum
CREATE TYPE "Role" AS ENUM ('USER', 'EDITOR', 'ADMIN');

-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'USER',
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);
""",
    # What `prisma migrate dev` writes when a value leaves an enum: its own transaction around the rewrite.
    "20240102000000_drop_editor/migration.sql": """/*
  Warnings:

  - The values [EDITOR] on the enum `Role` will be removed. If these variants are still used in the database, this will fail.

*/
-- AlterEnum
BEGIN;
CREATE TYPE "Role_new" AS ENUM ('USER', 'ADMIN');
ALTER TABLE "User" ALTER COLUMN "role" DROP DEFAULT;
ALTER TABLE "User" ALTER COLUMN "role" TYPE "Role_new" USING ("role"::text::"Role_new");
ALTER TYPE "Role" RENAME TO "Role_old";
ALTER TYPE "Role_new" RENAME TO "Role";
DROP TYPE "Role_old";
ALTER TABLE "User" ALTER COLUMN "role" SET DEFAULT 'USER';
COMMIT;
""",
    "migration_lock.toml": 'provider = "postgresql"\n',
}


def test_prismas_own_enum_rewrite_imports_runs_and_round_trips(tmp_path: Path, target: str) -> None:
    """The file holds BEGIN ... COMMIT (Prisma writes it): imported as written, its generated rollback
    puts the old enum back (labels in order), and the rehearsal proves it."""
    folder = write_files(tmp_path / "prisma", PRISMA_ENUM_REMOVAL)
    result = commands.import_set(str(folder), str(tmp_path / "set"))
    assert [m.rollback for m in result.added] == ["generated", "generated"], result.render()
    second = sets.load_members(tmp_path / "set")[1]
    assert "BEGIN;" in (second / "migration.sql").read_text()  # the author's file, as written
    spec = yaml.safe_load((second / "runbook.yaml").read_text())
    assert spec["expect"]["enums"] == [{"name": "Role", "labels": ["USER", "ADMIN"]}]
    assert spec["expect_after_rollback"]["enums"] == [{"name": "Role", "labels": ["USER", "EDITOR", "ADMIN"]}]
    done = cli("rehearse", str(tmp_path / "set"), "--target", target)
    assert done.returncode == 0 and "2 round-trip" in done.stdout, done.stdout + done.stderr
    lint_found = layouts.lint_folder(folder, squawk=True)
    assert "squawk:transaction-nesting" not in {f.rule for f in lint_found.findings}


def test_an_empty_member_is_a_recorded_no_op_and_an_empty_down_is_forward_only(tmp_path: Path, target: str) -> None:
    """pop: a member whose PostgreSQL up holds only a comment (its work is another dialect's) passes as
    a no-op, recorded in the ledger and said on its page; its empty down declares no way back."""
    folder = write_files(tmp_path / "pop", {
        **POP,
        "20230301000000_mysql_only.postgres.up.sql": "-- nothing to do on PostgreSQL: see the mysql file\n",
        "20230301000000_mysql_only.postgres.down.sql": "",
        "20230301000000_mysql_only.mysql.up.sql": "ALTER TABLE widgets ENGINE=InnoDB;\n",
    })
    result = commands.import_set(str(folder), str(tmp_path / "set"))
    empty = result.added[-1]
    assert empty.rollback == "none" and any("the source declares no way back" in r for r in empty.irreversible)
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    states = commands.status_set(str(tmp_path / "set"), target)
    assert states is not None and [s.state for s in states] == ["applied (up to date)"] * 3
    folder_out = Path(done.stdout.splitlines()[1].split("archive:", 1)[1].strip())
    page = next(p for p in folder_out.glob("*mysql_only*schema.ipynb")).read_text()
    assert "holds no statement" in page
