"""Splitting SQL files into located statements (pglast for PostgreSQL, sqlite3 for SQLite)."""
from __future__ import annotations

from pathlib import Path

import pytest
from dbrunbook.errors import SpecError
from dbrunbook.sql.statements import (
    author_transactions,
    read_statements,
    split_sqlite,
)

SCRIPT = """-- Migration 022 — with a non-ASCII comment
BEGIN;

ALTER TABLE "SavedInsights"
ADD COLUMN "customerId" UUID NULL;

CREATE OR REPLACE FUNCTION touch() RETURNS TRIGGER AS $$
BEGIN
  NEW."updatedAt" = NOW(); -- a ';' inside a body
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE INDEX CONCURRENTLY idx_a ON t (a) WHERE b LIKE 'x%';
COMMIT;
"""


def test_statements_carry_start_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_text(SCRIPT)
    stmts = read_statements(path, "postgresql")
    assert [(s.index, s.line, s.kind) for s in stmts] == [
        (1, 2, "TransactionStmt"), (2, 4, "AlterTableStmt"), (3, 7, "CreateFunctionStmt"),
        (4, 13, "IndexStmt"), (5, 14, "TransactionStmt"),
    ]
    assert stmts[2].text.endswith("LANGUAGE plpgsql")
    assert [s.transactional for s in stmts] == [True, True, True, False, True]
    # A position inside a statement maps back to the file line.
    assert stmts[2].line_of(stmts[2].text.index("RETURN NEW") + 1) == 10


def test_the_authors_transaction_is_kept_as_a_group_and_a_stray_commit_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_text(SCRIPT)
    body, grouped = author_transactions(read_statements(path, "postgresql"))
    assert grouped and [(s.index, s.group) for s in body] == [(2, 1), (3, 1), (4, 1)]
    path.write_text("ALTER TABLE a ADD COLUMN b int;\nCOMMIT;\nALTER TABLE a ADD COLUMN c int;\n")
    with pytest.raises(SpecError, match=r"m.sql:2: COMMIT without a BEGIN"):
        author_transactions(read_statements(path, "postgresql"))


def test_a_group_in_the_middle_of_a_file_and_what_lies_around_it(tmp_path: Path) -> None:
    """Prisma's enum rewrite: its own BEGIN ... COMMIT between statements of no group."""
    path = tmp_path / "migration.sql"
    path.write_text("CREATE TABLE t (id int);\n-- AlterEnum\nBEGIN;\nCREATE TYPE r AS ENUM ('a');\n"
                    "SAVEPOINT s;\nRELEASE SAVEPOINT s;\nCOMMIT;\nCREATE INDEX t_id ON t (id);\n"
                    "START TRANSACTION;\nALTER TABLE t ADD COLUMN x int;\nEND;\n")
    body, grouped = author_transactions(read_statements(path, "postgresql"))
    assert grouped
    assert [(s.kind, s.group) for s in body] == [("CreateStmt", None), ("CreateEnumStmt", 1), ("TransactionStmt", 1),
                                                 ("TransactionStmt", 1), ("IndexStmt", None), ("AlterTableStmt", 2)]
    assert not any(s.transaction_control for s in body)  # a savepoint is an ordinary statement inside a group


@pytest.mark.parametrize(("text", "message"), [
    ("BEGIN;\nCREATE TABLE a (id int);\n", r"m.sql:1: BEGIN without a COMMIT"),
    ("BEGIN;\nBEGIN;\nCOMMIT;\n", r"m.sql:2: BEGIN inside the transaction the file opened at line 1"),
    ("BEGIN;\nCREATE TABLE a (id int);\nROLLBACK;\n", r"m.sql:3: ROLLBACK: the file undoes its own transaction"),
    ("BEGIN;\nPREPARE TRANSACTION 'x';\n", r"m.sql:2: PREPARE TRANSACTION 'x': two-phase commit"),
])
def test_transaction_control_that_cannot_mean_what_it_says_is_refused_with_its_line(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.sql"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        author_transactions(read_statements(path, "postgresql"))


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.sql"
    path.write_text("SELECT 1;\n\nALTER TABLE x ADD COLUM y int;\n")
    with pytest.raises(SpecError, match=r"bad.sql:3: syntax error"):
        read_statements(path, "postgresql")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.sql"
    path.write_text("-- nothing here\n")
    with pytest.raises(SpecError, match="no SQL statement"):
        read_statements(path, "postgresql")


def test_sqlite_split_keeps_semicolons_in_strings() -> None:
    stmts = split_sqlite("-- c\nCREATE TABLE a (x TEXT);\n\nINSERT INTO a VALUES ('a;b');\n", "f.sql")
    assert [(s.line, s.text) for s in stmts] == [(2, "CREATE TABLE a (x TEXT)"), (4, "INSERT INTO a VALUES ('a;b')")]
    with pytest.raises(SpecError, match="unterminated"):
        split_sqlite("CREATE TABLE a (x TEXT)\n", "f.sql")
