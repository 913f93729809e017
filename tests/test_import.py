"""Bring your own migrations: a team's folder imported as a runbook set, run, rolled back."""
from __future__ import annotations

from pathlib import Path

import yaml
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.runbook import sets

from .conftest import cli, connect, write_files

PRISMA = {
    "20240101000000_init/migration.sql": """-- CreateEnum
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');

-- CreateTable
CREATE TABLE "User" (
    "id" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'USER',
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Post" (
    "id" SERIAL NOT NULL,
    "title" VARCHAR(100) NOT NULL,
    "authorId" TEXT,
    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");

-- AddForeignKey
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE;
""",
    "20240102000000_title_longer/migration.sql": """-- AlterTable
ALTER TABLE "Post" ALTER COLUMN "title" SET DATA TYPE VARCHAR(200);
ALTER TABLE "Post" ADD COLUMN "published" BOOLEAN NOT NULL DEFAULT false;
""",
    "20240103000000_author_required/migration.sql": """-- AlterTable
ALTER TABLE "Post" ALTER COLUMN "authorId" SET NOT NULL;
""",
    "20240104000000_add_role/migration.sql": """-- AlterEnum
ALTER TYPE "Role" ADD VALUE 'EDITOR';
""",
    "20240105000000_backfill/migration.sql": """UPDATE "Post" SET "published" = true WHERE "title" <> '';
""",
    "migration_lock.toml": 'provider = "postgresql"\n',
}




def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def test_a_prisma_folder_becomes_a_set_with_rollbacks_and_expectations(tmp_path: Path) -> None:
    src = write_files(tmp_path / "prisma" / "migrations", PRISMA)
    done = cli("import", str(src), "--into", str(tmp_path / "set"))
    assert done.returncode == 0, done.stdout + done.stderr
    members = sets.load_members(tmp_path / "set")
    assert [m.name for m in members] == ["0001_20240101000000_init", "0002_20240102000000_title_longer",
                                         "0003_20240103000000_author_required", "0004_20240104000000_add_role",
                                         "0005_20240105000000_backfill"]
    first = yaml.safe_load((members[0] / "runbook.yaml").read_text())
    assert first["expect"]["tables"]["present"] == ["Post", "User"]
    assert {"table": "Post", "column": "title", "type": "character varying(100)", "nullable": False} in \
        first["expect"]["columns"]
    # Exactly what was made: definitions as the server writes them, the default with its cast, the enum's labels.
    assert {"table": "User", "column": "role", "type": '"Role"', "nullable": False,
            "default": "'USER'::\"Role\""} in first["expect"]["columns"]
    assert {"table": "Post", "column": "id", "type": "integer", "nullable": False,
            "default": "nextval('\"Post_id_seq\"'::regclass)"} in first["expect"]["columns"]
    assert first["expect"]["indexes"] == [{"table": "User", "name": "User_email_key",
                                           "definition": 'CREATE UNIQUE INDEX "User_email_key" ON public."User" (email)'}]
    assert {"table": "Post", "name": "Post_authorId_fkey", "definition": 'FOREIGN KEY ("authorId") REFERENCES '
            '"User"(id) ON UPDATE CASCADE ON DELETE SET NULL'} in first["expect"]["constraints"]
    assert {"table": "User", "name": "User_pkey", "definition": "PRIMARY KEY (id)"} in first["expect"]["constraints"]
    assert first["expect"]["enums"] == [{"name": "Role", "labels": ["USER", "ADMIN"]}]
    # And what its rollback undoes, tried on the scratch database right after.
    assert first["expect_after_rollback"]["tables"] == {"absent": ["Post", "User"]}
    assert first["expect_after_rollback"]["enums"] == [{"name": "Role", "present": False}]
    rollback = (members[0] / "rollback.sql").read_text()
    # In reverse order, each statement inverted: the FK first, the type last.
    assert rollback.index('DROP CONSTRAINT "Post_authorId_fkey"') < rollback.index('DROP TABLE "User"') \
        < rollback.index('DROP TYPE "Role"')
    second = (members[1] / "rollback.sql").read_text()
    assert 'TYPE character varying(100) USING "title"::character varying(100)' in second  # the type the catalog had
    assert 'DROP COLUMN "published"' in second
    assert 'DROP NOT NULL' in (members[2] / "rollback.sql").read_text()
    for member, reason in ((members[3], "cannot remove an enum value"), (members[4], "a data change has no inverse")):
        spec = yaml.safe_load((member / "runbook.yaml").read_text())
        assert spec["rollback"] == [] and any(reason in r for r in spec["irreversible"]), spec
        assert not (member / "rollback.sql").exists()


def test_a_set_runs_applies_in_order_rolls_back_in_reverse_and_refuses_at_an_irreversible_step(
        tmp_path: Path, target: str) -> None:
    src = write_files(tmp_path / "migrations", PRISMA)
    result = commands.import_set(str(src), str(tmp_path / "set"))
    assert len(result.added) == 5
    empty = fingerprint(target)
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines() if " passed " in line] == [
        f"{m.name}_schema" for m in sets.load_members(tmp_path / "set")]
    states = commands.status_set(str(tmp_path / "set"), target)
    assert states is not None and {s.state for s in states} == {"applied (up to date)"}
    # Rolling back stops at the first step that cannot be undone (the newest, a data change).
    back = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "rollback")
    assert back.returncode == 1 and "is forward-only (UPDATE: a data change has no inverse)" in back.stderr
    # A folder whose every step inverts rolls back to the empty schema.
    reversible = {k: v for k, v in PRISMA.items() if "add_role" not in k and "backfill" not in k}
    other = commands.import_set(str(write_files(tmp_path / "reversible", reversible)), str(tmp_path / "set2"))
    assert all(m.rollback == "generated" for m in other.added)
    fresh = f"{target}_b"
    from .conftest import add_target

    add_target(fresh, {"embedded": fresh})
    assert cli("run", str(tmp_path / "set2"), "--target", fresh, "--phases", "schema").returncode == 0
    undone = cli("run", str(tmp_path / "set2"), "--target", fresh, "--phases", "rollback")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert fingerprint(fresh) == empty


def test_generated_expectations_fail_when_the_migration_is_edited(tmp_path: Path, target: str) -> None:
    src = write_files(tmp_path / "migrations", {k: v for k, v in PRISMA.items() if "init" in k})
    commands.import_set(str(src), str(tmp_path / "set"))
    [member] = sets.load_members(tmp_path / "set")
    migration = member / "migration.sql"
    migration.write_text(migration.read_text().replace('"title" VARCHAR(100)', '"title" TEXT'))
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 1 and "Post.title" in done.stderr and "character varying(100)" in done.stderr


def test_re_import_adds_only_new_migrations(tmp_path: Path) -> None:
    first = {k: v for k, v in PRISMA.items() if "init" in k or "title" in k}
    src = write_files(tmp_path / "migrations", first)
    commands.import_set(str(src), str(tmp_path / "set"))
    kept = (tmp_path / "set" / "0001_20240101000000_init" / "runbook.yaml")
    kept.write_text(kept.read_text() + "# reviewed by hand\n")
    write_files(src, {k: v for k, v in PRISMA.items() if "author_required" in k})
    again = commands.import_set(str(src), str(tmp_path / "set"))
    assert [m.name for m in again.added] == ["0003_20240103000000_author_required"]
    assert kept.read_text().endswith("# reviewed by hand\n")
    assert len(sets.load_members(tmp_path / "set")) == 3


def test_up_down_pairs_keep_their_own_down_and_an_empty_down_is_irreversible(tmp_path: Path) -> None:
    src = write_files(tmp_path / "m", {
        "0001_users.up.sql": "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n",
        "0001_users.down.sql": "DROP TABLE users;\n",
        "0002_note.up.sql": "ALTER TABLE users ADD COLUMN note text;\n",
        "0002_note.down.sql": "-- nothing to do\n",
    })
    result = commands.import_set(str(src), str(tmp_path / "set"))
    assert [(m.rollback, m.down) for m in result.added] == [("source", "0001_users.down.sql"), ("none", None)]
    spec = yaml.safe_load((tmp_path / "set" / "0002_0002_note" / "runbook.yaml").read_text())
    assert "0002_note.down.sql is empty" in spec["irreversible"][-1]
    assert (tmp_path / "set" / "0001_0001_users" / "rollback.sql").read_text() == "DROP TABLE users;\n"
    lint = commands.lint([str(tmp_path / "set")], squawk=False)
    assert lint.files == ["0001_0001_users/migration.sql", "0002_0002_note/migration.sql"]


def test_rehearsal_gives_every_member_a_verdict(tmp_path: Path, target: str) -> None:
    """Up/down pairs with a good down, a broken down, an empty down, a down in MySQL's syntax and a
    down that leaves something behind, plus a declared irreversible step."""
    import json

    src = write_files(tmp_path / "m", {
        "0001_users.up.sql": "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);\n",
        "0001_users.down.sql": "DROP TABLE users;\n",
        "0002_idx.up.sql": "CREATE INDEX users_email ON users (email);\n",
        "0002_idx.down.sql": "DROP INDEX users_email ON users;\n",
        "0003_note.up.sql": "ALTER TABLE users ADD COLUMN note text;\n",
        "0003_note.down.sql": "",
        "0004_orders.up.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint REFERENCES users(id));\n",
        "0004_orders.down.sql": "DROP TABLE no_such_table;\n",
        "0005_tags.up.sql": "CREATE TABLE tags (id bigserial PRIMARY KEY);\nCREATE INDEX tags_id ON tags (id);\n",
        "0005_tags.down.sql": "DROP INDEX tags_id;\n",
        "0006_seed.up.sql": "INSERT INTO tags DEFAULT VALUES;\n",
    })
    commands.import_set(str(src), str(tmp_path / "set"))
    done = cli("rehearse", str(tmp_path / "set"), "--target", target, "--format", "json")
    assert done.returncode == 1, done.stdout + done.stderr  # not every member round-trips
    report = json.loads(done.stdout)
    verdicts = {m["member"].split("_", 2)[-1]: (m["verdict"], m["detail"]) for m in report["members"]}
    assert verdicts["users"][0] == "round-trip"
    assert verdicts["idx"][0] == "foreign-syntax" and "0002_idx" in verdicts["idx"][1]
    assert verdicts["note"][0] == "empty-down"
    assert verdicts["orders"][0] == "rollback-failed" and "no_such_table" in verdicts["orders"][1]
    assert verdicts["tags"][0] == "rollback-differs" and "tags" in verdicts["tags"][1]
    assert verdicts["seed"] == ("irreversible", "INSERT: a data change has no inverse")
    again = cli("rehearse", str(tmp_path / "set"), "--target", target)
    assert again.returncode == 1 and "already applied" in again.stderr  # a rehearsal needs a fresh target
    from .conftest import add_target

    fresh = f"{target}_r"
    add_target(fresh, {"embedded": fresh})
    table = cli("rehearse", str(tmp_path / "set"), "--target", fresh)
    assert "1 round-trip" in table.stdout and "1 rollback-differs" in table.stdout, table.stdout
    from .test_run import archive_of

    folder = archive_of(table.stdout)
    page = (folder / "01_rehearse.html").read_text()
    assert "rollback-differs" in page and "NOT every member passed" in page
    assert json.loads((folder / "rehearsal.json").read_text())["ok"] is False


def test_a_rehearsal_of_reversible_members_passes(tmp_path: Path, target: str) -> None:
    reversible = {k: v for k, v in PRISMA.items() if "add_role" not in k and "backfill" not in k}
    commands.import_set(str(write_files(tmp_path / "migrations", reversible)), str(tmp_path / "set"))
    done = cli("rehearse", str(tmp_path / "set"), "--target", target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 round-trip" in done.stdout


PRISMA_HISTORY = """CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0)"""


def test_the_source_tools_history_stays_in_step(tmp_path: Path, target: str) -> None:
    """Prisma's _prisma_migrations gets the row `prisma migrate deploy` would write (sha256 of the
    file as checksum); golang-migrate's schema_migrations the current version; both undone on rollback."""
    import hashlib

    import sqlalchemy as sa

    reversible = {k: v for k, v in PRISMA.items() if "init" in k or "title" in k}
    src = write_files(tmp_path / "migrations", reversible)
    commands.import_set(str(src), str(tmp_path / "set"))
    with connect(target) as conn, conn.begin():
        conn.execute(sa.text(PRISMA_HISTORY))
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema").returncode == 0
    with connect(target) as conn:
        rows = conn.execute(sa.text('SELECT migration_name, checksum, finished_at IS NOT NULL, applied_steps_count '
                                    'FROM "_prisma_migrations" ORDER BY migration_name')).all()
    assert [tuple(r) for r in rows] == [
        ("20240101000000_init", hashlib.sha256(PRISMA["20240101000000_init/migration.sql"].encode()).hexdigest(), True, 1),
        ("20240102000000_title_longer",
         hashlib.sha256(PRISMA["20240102000000_title_longer/migration.sql"].encode()).hexdigest(), True, 1)]
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "rollback").returncode == 0
    with connect(target) as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "_prisma_migrations"')).scalar() == 0

    other = f"{target}_g"
    from .conftest import add_target

    add_target(other, {"embedded": other})
    updown = write_files(tmp_path / "m", {"1_users.up.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n",
                                    "1_users.down.sql": "DROP TABLE users;\n",
                                    "2_note.up.sql": "ALTER TABLE users ADD COLUMN note text;\n",
                                    "2_note.down.sql": "ALTER TABLE users DROP COLUMN note;\n"})
    commands.import_set(str(updown), str(tmp_path / "set2"))
    with connect(other) as conn, conn.begin():
        conn.execute(sa.text("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)"))
    assert cli("run", str(tmp_path / "set2"), "--target", other, "--phases", "schema").returncode == 0
    with connect(other) as conn:
        assert conn.execute(sa.text("SELECT version, dirty FROM schema_migrations")).one() == (2, False)
    members = sets.load_members(tmp_path / "set2")
    from dbrunbook import open_phase

    run = open_phase("rollback", members[1], other)
    run.plan()
    run.apply()
    run.finish()
    with connect(other) as conn:
        assert conn.execute(sa.text("SELECT version, dirty FROM schema_migrations")).one() == (1, False)


def test_a_set_deploys_member_by_member(tmp_path: Path, target: str) -> None:
    from dbrunbook.targets import embedded

    from .conftest import add_target

    reversible = {k: v for k, v in PRISMA.items() if "init" in k or "title" in k}
    commands.import_set(str(write_files(tmp_path / "migrations", reversible)), str(tmp_path / "set"))
    rehearsal, prod = target, f"{target}_prod"
    add_target(prod, {"embedded": prod, "production": True})
    embedded.ensure_database(prod)
    try:
        assert cli("run", str(tmp_path / "set"), "--target", rehearsal, "--phases", "schema").returncode == 0
        done = cli("run", str(tmp_path / "set"), "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert fingerprint(prod) == fingerprint(rehearsal)
        states = commands.status_set(str(tmp_path / "set"), prod)
        assert states is not None and [s.state for s in states] == ["applied (up to date)"] * 2
    finally:
        embedded.drop_database(prod)


LAYOUT_FOLDERS = {
    "flyway": {"V1__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(100));\n",
               "U1__users.sql": "DROP TABLE users;\n",
               "V2__email_index.sql": "CREATE INDEX users_email ON users (email);\n",
               "V10__email_wider.sql": "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);\n"},
    "numbered": {"001_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(100));\n",
                 "002_email_index.sql": "CREATE INDEX users_email ON users (email);\n",
                 "010_email_wider.sql": "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);\n"},
    "updown": {"V1.Users.up.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email varchar(100));\n",
               "V1.Users.down.sql": "DROP TABLE users;\n",
               "V2.EmailIndex.up.sql": "CREATE INDEX users_email ON users (email);\n",
               "V10.EmailWider.up.sql": "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);\n"},
}


def test_every_layout_imports_in_order_and_rehearses(tmp_path: Path, target: str) -> None:
    from .conftest import add_target

    for number, (kind, files) in enumerate(LAYOUT_FOLDERS.items()):
        result = commands.import_set(str(write_files(tmp_path / kind, files)), str(tmp_path / f"{kind}_set"))
        assert result.layout == kind
        assert len(result.added) == 3
        members = sets.load_members(tmp_path / f"{kind}_set")
        assert [m.name.split("_", 1)[0] for m in members] == ["0001", "0002", "0003"]
        assert "email_wider" in members[2].name.lower() or "emailwider" in members[2].name.lower()  # 10 after 2
        fresh = f"{target}_{number}"
        add_target(fresh, {"embedded": fresh})
        done = cli("rehearse", str(tmp_path / f"{kind}_set"), "--target", fresh)
        assert done.returncode == 0, kind + done.stdout + done.stderr
        assert "3 round-trip" in done.stdout, kind + done.stdout


def test_a_member_needing_an_extension(tmp_path: Path, target: str) -> None:
    """citext ships with the embedded server's contrib: it imports, applies and rolls back; one the
    server lacks fails in one line naming it."""
    src = write_files(tmp_path / "m", {
        "001_citext.sql": "CREATE EXTENSION IF NOT EXISTS citext;\nCREATE TABLE emails (address citext PRIMARY KEY);\n",
        "002_missing.sql": 'CREATE EXTENSION IF NOT EXISTS "no_such_extension";\n'})
    result = commands.import_set(str(src), str(tmp_path / "set"))
    assert result.added[0].rollback == "generated" and "not applied on the scratch database" in result.added[1].note
    done = cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema")
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()
    assert len(line) == 1 and 'extension "no_such_extension" is not available' in line[0], done.stderr
    states = commands.status_set(str(tmp_path / "set"), target)
    assert states is not None and [s.state for s in states] == ["applied (up to date)", "pending"]


def test_flyway_history_gets_its_row_with_flyways_checksum(tmp_path: Path, target: str) -> None:
    import sqlalchemy as sa
    from dbrunbook.state.toolhistory import flyway_checksum

    src = write_files(tmp_path / "fw", {"V1__create_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n",
                                        "U1__create_users.sql": "DROP TABLE users;\n"})
    commands.import_set(str(src), str(tmp_path / "set"))
    with connect(target) as conn, conn.begin():
        conn.execute(sa.text(
            "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), description "
            "varchar(200) NOT NULL, type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int, installed_by "
            "varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(), execution_time int NOT NULL, "
            "success boolean NOT NULL)"))
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "schema").returncode == 0
    with connect(target) as conn:
        row = conn.execute(sa.text("SELECT installed_rank, version, description, script, checksum, success "
                                   "FROM flyway_schema_history")).one()
    assert tuple(row) == (1, "1", "create users", "V1__create_users.sql", flyway_checksum(src / "V1__create_users.sql"),
                          True)
    assert cli("run", str(tmp_path / "set"), "--target", target, "--phases", "rollback").returncode == 0
    with connect(target) as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM flyway_schema_history")).scalar() == 0
