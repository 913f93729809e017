"""Generated expectations describe exactly what a migration made: a property over every corpus in the
tests and a seeded random one.

For every member of every corpus: imported (expectations derived on the import's scratch database,
its rollback tried there too), then on a real target applied statement by statement, its own
``expect`` passes; its rollback (where it has one) applied, its ``expect_after_rollback`` passes and
the schema's fingerprint is the one before; then applied again for the next member. And the other
way: an edit of what was made (an index's order, a default, an enum label, a view's body) fails them.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook.catalog import expect, introspect
from dbrunbook.cli import commands
from dbrunbook.runbook import sets
from dbrunbook.runbook.authoring import apply
from dbrunbook.runbook.spec import load_runbook
from dbrunbook.targets.connect import psycopg_connect
from dbrunbook.targets.resolve import resolve_target

from .conftest import connect, write_files
from .test_import import LAYOUT_FOLDERS, PRISMA
from .test_layouts import FOLDERS


def random_corpus(seed: int, members: int = 14) -> dict[str, str]:
    """A numbered folder of migrations drawing on what exact expectations must tell apart: index
    order, NULLS, opclasses, expressions, INCLUDE and predicates; constraints of every kind with their
    options; typmods, defaults, identity and generated columns; enums and their labels; views and
    functions replaced; schemas; triggers."""
    rng = random.Random(seed)
    files: dict[str, str] = {}
    tables: list[str] = []
    number = 0

    def add(sql: str) -> None:
        nonlocal number
        number += 1
        files[f"{number:03d}_step.sql"] = sql

    for _ in range(members):
        choice = rng.choice(["table", "index", "constraint", "column", "enum", "view", "function", "schema",
                             "trigger"] if tables else ["table"])
        n = number + 1
        if choice == "table":
            name = f"t{n}"
            tables.append(name)
            add(f"CREATE TABLE {name} (id bigint GENERATED {rng.choice(['ALWAYS', 'BY DEFAULT'])} AS IDENTITY PRIMARY "
                f"KEY, a integer NOT NULL DEFAULT {rng.randint(0, 9)}, b text COLLATE \"C\", "
                f"c numeric({rng.randint(5, 12)},{rng.randint(0, 4)}), d timestamptz DEFAULT now(), "
                f"e varchar({rng.randint(10, 200)}), g integer GENERATED ALWAYS AS (a * {rng.randint(2, 5)}) STORED);\n")
        elif choice == "index":
            table = rng.choice(tables)
            keys = rng.sample([f"a {rng.choice(['', 'DESC', 'DESC NULLS LAST', 'NULLS FIRST'])}",
                               f"b {rng.choice(['text_pattern_ops', 'DESC', ''])}", "lower(e)", "(a + 1)"], 2)
            include = " INCLUDE (c)" if rng.random() < 0.5 else ""
            where = f" WHERE a > {rng.randint(0, 5)}" if rng.random() < 0.5 else ""
            unique = "UNIQUE " if rng.random() < 0.3 else ""
            add(f"CREATE {unique}INDEX {table}_i{n} ON {table} ({', '.join(keys)}){include}{where};\n")
        elif choice == "constraint":
            table = rng.choice(tables)
            kind = rng.choice([f"CHECK (a >= {rng.randint(-5, 0)})", "UNIQUE (e) DEFERRABLE INITIALLY DEFERRED",
                               "EXCLUDE USING gist (box(point(a, a), point(a, a)) WITH &&)",
                               f"FOREIGN KEY (a) REFERENCES {rng.choice(tables)}(id) ON DELETE "
                               f"{rng.choice(['CASCADE', 'SET NULL', 'RESTRICT'])} NOT VALID"])
            if kind.startswith("FOREIGN KEY"):
                add(f"ALTER TABLE {table} ADD COLUMN r{n} bigint;\nALTER TABLE {table} ADD CONSTRAINT "
                    f"{table}_k{n} {kind.replace('(a)', f'(r{n})')};\n")
            else:
                add(f"ALTER TABLE {table} ADD CONSTRAINT {table}_k{n} {kind};\n")
        elif choice == "column":
            table = rng.choice(tables)
            add(rng.choice([f"ALTER TABLE {table} ALTER COLUMN a SET DEFAULT {rng.randint(10, 99)};\n",
                            f"ALTER TABLE {table} ALTER COLUMN d DROP DEFAULT;\n",
                            f"ALTER TABLE {table} ALTER COLUMN e TYPE varchar({rng.randint(201, 400)});\n",
                            f"ALTER TABLE {table} ADD COLUMN f{n} smallint DEFAULT {rng.randint(1, 9)} NOT NULL;\n",
                            f"ALTER TABLE {table} ALTER COLUMN b SET NOT NULL;\n"]))
        elif choice == "enum":
            labels = rng.sample(["low", "mid", "high", "top", "none", "odd"], 3)
            add(f"CREATE TYPE e{n} AS ENUM ({', '.join(repr(x) for x in labels)});\n"
                f"ALTER TABLE {rng.choice(tables)} ADD COLUMN m{n} e{n} DEFAULT {labels[0]!r};\n")
        elif choice == "view":
            table = rng.choice(tables)
            add(f"CREATE VIEW v{n} AS SELECT id, a * {rng.randint(2, 9)} AS x FROM {table} WHERE a > "
                f"{rng.randint(0, 3)};\nCREATE OR REPLACE VIEW v{n} AS SELECT id, a * {rng.randint(10, 19)} AS x "
                f"FROM {table} WHERE a > {rng.randint(0, 3)};\n")
        elif choice == "function":
            add(f"CREATE FUNCTION f{n}(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT x + "
                f"{rng.randint(1, 9)} $$;\nCREATE OR REPLACE FUNCTION f{n}(x integer) RETURNS integer LANGUAGE sql "
                f"IMMUTABLE AS $$ SELECT x * {rng.randint(2, 9)} $$;\n")
        elif choice == "schema":
            add(f"CREATE SCHEMA s{n};\nCREATE TABLE s{n}.log (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
                f"DEFAULT clock_timestamp(), note text CHECK (length(note) < {rng.randint(50, 500)}));\n"
                f"CREATE INDEX log_at{n} ON s{n}.log (at DESC);\n")
        else:
            table = rng.choice(tables)
            add(f"CREATE FUNCTION touch{n}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.d := now(); RETURN NEW; "
                f"END $$;\nCREATE TRIGGER {table}_touch{n} BEFORE UPDATE OF a ON {table} FOR EACH ROW WHEN (OLD.a IS "
                f"DISTINCT FROM NEW.a) EXECUTE FUNCTION touch{n}();\n")
    return files


def corpora() -> dict[str, dict[str, str]]:
    found = {f"layout-{kind}": files for kind, (files, _) in FOLDERS.items()}
    found.update({f"import-{kind}": files for kind, files in LAYOUT_FOLDERS.items()})
    found["prisma"] = PRISMA
    return found


def check_member_by_member(set_folder: Path, target: str, context: str) -> int:
    """The property, on a target: returns how many members were rolled back and checked."""
    rolled = 0
    with psycopg_connect(resolve_target(target), "property") as raw:
        for member in sets.load_members(set_folder):
            book = load_runbook(member)
            forward, _ = book.read_script("migration", "postgresql")
            before = _fingerprint(target)
            assert apply(raw, forward) is None, f"{context}: {member.name} does not apply"
            _assert_pass(target, book.spec.expect, f"{context}: {member.name} after its migration")
            if not book.rollback_files:
                continue
            backward, _ = book.read_script("rollback", "postgresql")
            assert apply(raw, backward) is None, f"{context}: {member.name}'s rollback fails"
            _assert_pass(target, book.rollback_expectations, f"{context}: {member.name} after its rollback")
            assert _fingerprint(target) == before, f"{context}: {member.name}'s rollback leaves the schema changed"
            rolled += 1
            assert apply(raw, forward) is None, f"{context}: {member.name} does not apply again"
    return rolled


def _assert_pass(target: str, expectations: expect.Expectations, context: str) -> None:
    with connect(target) as conn:
        frame = expect.check_expectations(conn, expectations)
    assert not expect.failures(frame), f"{context}: {expect.failures(frame)}"


def _fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def _reset(target: str) -> None:
    """The target empty again for the next corpus."""
    with connect(target) as conn, conn.begin():
        schemas = conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname "
                                       "NOT IN ('information_schema', 'public')")).scalars().all()
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))


def test_every_corpus_in_the_tests_passes_its_own_generated_expectations(tmp_path: Path, target: str) -> None:
    rolled = 0
    for name, files in corpora().items():
        commands.import_set(str(write_files(tmp_path / name, files)), str(tmp_path / f"{name}_set"))
        rolled += check_member_by_member(tmp_path / f"{name}_set", target, name)
        _reset(target)
    assert rolled >= 20  # most members have a way back, and it was checked


@pytest.mark.parametrize("corpus", [1, 2])
def test_a_random_corpus_passes_its_own_generated_expectations(corpus: int, tmp_path: Path, target: str) -> None:
    # A new seed each run (named in every message); the test's id stays the same on every worker.
    seed = random.randrange(1 << 30)
    files = random_corpus(seed)
    result = commands.import_set(str(write_files(tmp_path / "m", files)), str(tmp_path / "set"))
    assert len(result.added) == len(files), f"seed {seed}: {result.render()}"
    assert not [m for m in result.added if m.note or m.down_error], f"seed {seed}: {result.render()}"
    check_member_by_member(tmp_path / "set", target, f"seed {seed}")


def test_an_edit_of_what_was_made_fails_the_generated_expectations(tmp_path: Path, target: str) -> None:
    """Each kind of exactness, proven by a change it must notice."""
    made = ("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int NOT NULL DEFAULT 1, b text, "
            "g int GENERATED ALWAYS AS (a * 2) STORED);\n"
            "CREATE INDEX t_ab ON t (a DESC, b text_pattern_ops) INCLUDE (id) WHERE a > 0;\n"
            "ALTER TABLE t ADD CONSTRAINT t_a CHECK (a >= 0);\n"
            "CREATE TYPE mood AS ENUM ('sad', 'ok');\n"
            "CREATE VIEW v AS SELECT id, a FROM t;\n"
            "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$;\n")
    commands.import_set(str(write_files(tmp_path / "m", {"001_made.sql": made})), str(tmp_path / "set"))
    book = load_runbook(sets.load_members(tmp_path / "set")[0])
    edits = {
        "index order": "DROP INDEX t_ab; CREATE INDEX t_ab ON t (a, b text_pattern_ops) INCLUDE (id) WHERE a > 0",
        "index opclass": "DROP INDEX t_ab; CREATE INDEX t_ab ON t (a DESC, b) INCLUDE (id) WHERE a > 0",
        "index include": "DROP INDEX t_ab; CREATE INDEX t_ab ON t (a DESC, b text_pattern_ops) WHERE a > 0",
        "index predicate": "DROP INDEX t_ab; CREATE INDEX t_ab ON t (a DESC, b text_pattern_ops) INCLUDE (id) "
                           "WHERE a > 1",
        "default": "ALTER TABLE t ALTER COLUMN a SET DEFAULT 2",
        "identity": "ALTER TABLE t ALTER COLUMN id SET GENERATED BY DEFAULT",
        "generated": "ALTER TABLE t DROP COLUMN g; ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 3) STORED",
        "constraint": "ALTER TABLE t DROP CONSTRAINT t_a; ALTER TABLE t ADD CONSTRAINT t_a CHECK (a >= 1)",
        "enum labels": "ALTER TYPE mood ADD VALUE 'happy'",
        "view": "CREATE OR REPLACE VIEW v AS SELECT id, a + 0 AS a FROM t",
        "function": "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql AS $$ SELECT x + 2 $$",
    }
    with psycopg_connect(resolve_target(target), "edits") as raw:
        assert apply(raw, book.read_script("migration", "postgresql")[0]) is None
    _assert_pass(target, book.spec.expect, "as made")
    with connect(target) as conn:
        for what, sql in edits.items():
            edit = conn.begin()
            conn.exec_driver_sql(sql)
            failed = expect.failures(expect.check_expectations(conn, book.spec.expect))
            edit.rollback()
            assert failed, f"an edit of the {what} went unnoticed"
