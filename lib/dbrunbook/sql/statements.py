"""SQL files split into located statements, by a real parser (pglast) for PostgreSQL.

Each :class:`Statement` knows its file and starting line, so a failure can be reported as
``file:line``, and whether it can run inside a transaction block.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
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


def read_statements(path: Path, dialect: str, file: str | None = None) -> list[Statement]:
    """Split a SQL file into statements for ``dialect``."""
    name = file or path.name
    text = read_sql_text(path, name)
    statements = split_statements(text, name, dialect)
    if not statements:
        raise SpecError(name, "holds no SQL statement")
    return statements


def strip_transaction_wrapper(statements: list[Statement]) -> tuple[list[Statement], bool]:
    """Drop a BEGIN ... COMMIT pair wrapping the whole file: the phase owns the transaction.

    Any other transaction control statement would silently break the phase's atomicity, so it is
    refused with its location. Returns the statements and whether a wrapper was removed."""
    body = list(statements)
    wrapped = False
    if len(body) >= 2 and body[0].transaction_control and body[-1].transaction_control:
        first, last = body[0].text.split()[0].upper(), body[-1].text.split()[0].upper()
        if first in ("BEGIN", "START") and last in ("COMMIT", "END"):
            body = body[1:-1]
            wrapped = True
    for stmt in body:
        if stmt.transaction_control:
            raise SpecError(
                f"{stmt.file}:{stmt.line}",
                f"transaction control inside the script ({stmt.summary}); dbrunbook runs the "
                "script in one transaction of its own: remove it",
            )
    return body, wrapped


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def render(conn: Any, text: str, params: dict[str, Any]) -> str:
    """The SQL with each ``%(name)s`` of ``params`` replaced by a quoted literal (others are left
    as written): the text that runs is the text the parser splits, EXPLAIN shows and an error quotes."""
    from psycopg import sql

    return _PLACEHOLDER.sub(lambda m: sql.Literal(params[m.group(1)]).as_string(conn) if m.group(1) in params
                            else m.group(0), text)
