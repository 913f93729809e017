"""SQL files split into located statements, by a real parser (pglast) for PostgreSQL.

Each :class:`Statement` knows its file and starting line, so a failure can be reported as
``file:line``, and whether it can run inside a transaction block.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..dialects import Dialect
from ..errors import SpecError

# Statements PostgreSQL refuses inside a transaction block ("cannot run inside a transaction block").
_NEVER_IN_TRANSACTION = {
    "VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt",
    "CreateTableSpaceStmt", "DropTableSpaceStmt",
}
_LEADING_NOISE = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)


@dataclass(frozen=True)
class Statement:
    """One statement of a file: where it is, its text, its kind, and (PostgreSQL) its parse tree,
    parsed once when the file is split: every module reads :attr:`node` instead of parsing again."""

    file: str
    index: int
    line: int
    text: str
    kind: str
    transactional: bool = True
    transaction_control: bool = False
    #: The author's own transaction this statement is in (the file's ``BEGIN`` ... ``COMMIT``,
    #: counted from 1 in its file), or None (see :func:`author_transactions`).
    group: int | None = None
    _node: Any = field(default=None, compare=False, repr=False)

    @property
    def node(self) -> Any:
        """The statement's pglast node (parsed from :attr:`text` the first time, for a statement
        that was not split from a file)."""
        if self._node is None:
            object.__setattr__(self, "_node", parse_one(self.text))
        return self._node

    @property
    def summary(self) -> str:
        head = " ".join(self.text.split())
        return head if len(head) <= 100 else head[:97] + "..."

    def line_of(self, position: int | None) -> int:
        """The file line of a 1-based character position inside this statement."""
        if not position:
            return self.line
        return self.line + self.text[: max(position - 1, 0)].count("\n")


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _why_not_transactional(node: object) -> str | None:
    kind = type(node).__name__
    if kind in _NEVER_IN_TRANSACTION:
        return kind
    if kind in ("IndexStmt", "DropStmt") and getattr(node, "concurrent", False):
        return "CONCURRENTLY"
    if kind == "ReindexStmt":
        params = getattr(node, "params", None) or ()
        if any(getattr(p, "defname", "") == "concurrently" for p in params):
            return "CONCURRENTLY"
    return None


def parse_one(text: str) -> Any:
    """The pglast node of one statement's text (SQL that is not a file's statement: a generated
    ALTER, a predicate wrapped in a SELECT, an index definition from the catalog)."""
    from pglast import parse_sql

    return parse_sql(text)[0].stmt


def split_postgresql(text: str, file: str) -> list[Statement]:
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        raws = parse_sql(text)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        raise SpecError(f"{file}:{_line_at(text, offset)}", f"syntax error: {exc.args[0]}") from None
    out: list[Statement] = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        chunk = text[start:end]
        skip = _LEADING_NOISE.match(chunk)
        lead = skip.end() if skip else 0
        body = chunk[lead:].rstrip().rstrip(";").rstrip()
        kind = type(raw.stmt).__name__
        out.append(Statement(
            file=file,
            index=len(out) + 1,
            line=_line_at(text, start + lead),
            text=body,
            kind=kind,
            transactional=_why_not_transactional(raw.stmt) is None,
            transaction_control=kind == "TransactionStmt",
            _node=raw.stmt,
        ))
    return out


def split_sqlite(text: str, file: str) -> list[Statement]:
    out: list[Statement] = []
    buffer: list[str] = []
    start_line = 1
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if not buffer and not line.strip():
            continue
        if not buffer:
            start_line = number
        buffer.append(line)
        chunk = "".join(buffer)
        if sqlite3.complete_statement(chunk):
            skip = _LEADING_NOISE.match(chunk)
            lead = skip.end() if skip else 0
            body = chunk[lead:].rstrip().rstrip(";").rstrip()
            buffer = []
            if not body:
                continue
            first = body.split(None, 1)[0].upper()
            out.append(Statement(
                file=file,
                index=len(out) + 1,
                line=start_line + chunk[:lead].count("\n"),
                text=body,
                kind=first,
                transactional=first not in ("VACUUM",),
                transaction_control=first in ("BEGIN", "COMMIT", "END", "ROLLBACK"),
            ))
    rest = "".join(buffer)
    skip = _LEADING_NOISE.match(rest)
    if rest[skip.end() if skip else 0:].strip():
        raise SpecError(f"{file}:{start_line}", "unterminated statement (missing ';'?)")
    return out


def read_sql_text(path: Path, name: str | None = None) -> str:
    """A SQL file's text: UTF-8, a byte-order mark set aside (editors on Windows write one, and
    the parser would see it as a stray character); anything else is one clear error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(name or path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise SpecError(name or path, f"cannot be read: {exc.strerror or exc}") from None


#: How each dialect's SQL is split into statements.
SPLITTERS: dict[Dialect, Callable[[str, str], list[Statement]]] = {
    Dialect.POSTGRESQL: split_postgresql, Dialect.SQLITE: split_sqlite}


def split_statements(text: str, file: str, dialect: str) -> list[Statement]:
    """``text`` split into statements by ``dialect``'s own rules (PostgreSQL's parser, SQLite's
    statement completeness)."""
    return SPLITTERS[Dialect(dialect)](text, file)


def read_statements(path: Path, dialect: str, file: str | None = None, *, empty: bool = False) -> list[Statement]:
    """Split a SQL file into statements for ``dialect``. A file holding none (empty, or comments
    only) is an error, unless ``empty`` (a runbook's script that does nothing is a recorded no-op)."""
    name = file or path.name
    text = read_sql_text(path, name)
    statements = split_statements(text, name, dialect)
    if not statements and not empty:
        raise SpecError(name, "holds no SQL statement")
    return statements


def _transaction_word(stmt: Statement) -> str:
    """What a transaction control statement does: ``begin``, ``commit``, ``rollback``, ``prepared``
    (two-phase commit) or ``savepoint`` (SAVEPOINT, RELEASE, ROLLBACK TO: ordinary inside a
    transaction)."""
    words = stmt.text.upper().split()
    first, second = words[0], words[1] if len(words) > 1 else ""
    if first in ("BEGIN", "START"):
        return "begin"
    if first in ("COMMIT", "END"):
        return "prepared" if second == "PREPARED" else "commit"
    if first == "ROLLBACK" or first == "ABORT":
        if second == "TO" or (second in ("WORK", "TRANSACTION") and len(words) > 2 and words[2] == "TO"):
            return "savepoint"
        return "prepared" if second == "PREPARED" else "rollback"
    if first == "PREPARE":
        return "prepared"
    return "savepoint"


def author_transactions(statements: list[Statement]) -> tuple[list[Statement], bool]:
    """A file's statements with its author's own ``BEGIN ... COMMIT`` honoured: the markers go, and
    each statement between them carries its group's number (:attr:`Statement.group`), so that the
    group runs as one transaction wherever the file's statements do not all run in one already
    (a script in autocommit, a deploy's online steps). Returns the statements and whether the file
    had a group. A BEGIN without its COMMIT, a COMMIT without a BEGIN, a BEGIN inside a group, a
    ROLLBACK of the whole transaction or a two-phase commit is refused with its ``file:line``:
    each would make what runs differ from what the file says."""
    out: list[Statement] = []
    group, opened, groups = None, None, 0
    for stmt in statements:
        if not stmt.transaction_control:
            out.append(replace(stmt, group=group) if group is not None else stmt)
            continue
        word = _transaction_word(stmt)
        where = f"{stmt.file}:{stmt.line}"
        if word == "savepoint":
            out.append(replace(stmt, group=group, transaction_control=False) if group is not None
                       else replace(stmt, transaction_control=False))
        elif word == "begin":
            if opened is not None:
                raise SpecError(where, f"BEGIN inside the transaction the file opened at line {opened.line}: "
                                       "PostgreSQL keeps the first and only warns; close it with COMMIT first")
            groups += 1
            group, opened = groups, stmt
        elif word == "commit":
            if opened is None:
                raise SpecError(where, f"{stmt.summary} without a BEGIN before it in the file")
            group, opened = None, None
        elif word == "rollback":
            raise SpecError(where, f"{stmt.summary}: the file undoes its own transaction, so what it declares would "
                                   "never be applied; remove it (the phase rolls back by itself on any failure)")
        else:
            raise SpecError(where, f"{stmt.summary}: two-phase commit is not something a migration script can do "
                                   "inside a phase")
    if opened is not None:
        raise SpecError(f"{opened.file}:{opened.line}", "BEGIN without a COMMIT: the file ends with its transaction "
                                                         "still open")
    return out, groups > 0


def units(statements: list[Statement]) -> list[list[Statement]]:
    """The statements as the steps that run them outside one transaction: an author's group (the
    same file's same :attr:`Statement.group`) is one step, any other statement a step alone."""
    out: list[list[Statement]] = []
    for stmt in statements:
        last = out[-1][-1] if out else None
        if stmt.group is not None and last is not None and (last.file, last.group) == (stmt.file, stmt.group):
            out[-1].append(stmt)
        else:
            out.append([stmt])
    return out


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def render(conn: Any, text: str, params: dict[str, Any]) -> str:
    """The SQL with each ``%(name)s`` of ``params`` replaced by a quoted literal (others are left
    as written): the text that runs is the text the parser splits, EXPLAIN shows and an error quotes."""
    from psycopg import sql

    return _PLACEHOLDER.sub(lambda m: sql.Literal(params[m.group(1)]).as_string(conn) if m.group(1) in params
                            else m.group(0), text)
