"""Running located statements on a connection, and turning driver errors into ``file:line``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from ..errors import StatementFailed
from ..targets.secrets import redact
from .statements import Statement

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Executed:
    statement: Statement
    seconds: float
    rowcount: int | None


def describe_error(exc: BaseException) -> tuple[str, str | None, int | None]:
    """(message, sqlstate, 1-based position in the statement) of a DB-API error."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    position = None
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if diag is not None:
        message = diag.message_primary or message
        if diag.message_detail:
            message += f" ({diag.message_detail})"
        if diag.statement_position:
            position = int(diag.statement_position)
    return redact(message), sqlstate, position


def run_statement(conn: Connection, stmt: Statement, total: int) -> Executed:
    """Execute one statement on the connection's current transaction."""
    # The raw DB-API cursor: no parameter parsing, so a literal '%' in the SQL stays a '%'.
    cursor = conn.connection.cursor()
    done = _timed(stmt, total, lambda: cursor.execute(stmt.text))
    cursor.close()
    return Executed(stmt, done.seconds, _rows(cursor))


def run_autocommit_statement(conn: Any, stmt: Statement, total: int) -> Executed:
    """Execute one statement on a psycopg autocommit connection: it commits on its own."""
    holder: list[Any] = []
    done = _timed(stmt, total, lambda: holder.append(conn.execute(stmt.text.encode())))
    return Executed(stmt, done.seconds, _rows(holder[0]))


@dataclass(frozen=True)
class _Timed:
    seconds: float


def _timed(stmt: Statement, total: int, call: Any) -> _Timed:
    """Run ``call``; a database error becomes :class:`StatementFailed` with the statement's file:line."""
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        message, sqlstate, position = describe_error(exc)
        raise StatementFailed(stmt.file, stmt.line_of(position), stmt.index, total, stmt.text,
                              message, sqlstate) from None
    return _Timed(time.perf_counter() - started)


def _rows(cursor: Any) -> int | None:
    # DDL reports -1: "no row count" rather than a count of rows.
    return cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else None


def _is_database_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith("psycopg") or module.startswith("sqlite3")


def run_statements(conn: Connection, statements: list[Statement]) -> list[Executed]:
    """Execute statements in order; the first failure raises :class:`StatementFailed`."""
    return [run_statement(conn, stmt, len(statements)) for stmt in statements]


def statements_frame(statements: list[Statement]) -> pd.DataFrame:
    import pandas as pd  # frames are for the notebook's pages

    return pd.DataFrame(
        [{"#": s.index, "line": s.line, "statement": s.summary,
          "in transaction": "yes" if s.transactional else "no"} for s in statements],
        columns=["#", "line", "statement", "in transaction"],
    )


def executed_frame(executed: list[Executed]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        [{"#": e.statement.index, "line": e.statement.line, "statement": e.statement.summary,
          "ms": round(e.seconds * 1000, 2), "rows": e.rowcount} for e in executed],
        columns=["#", "line", "statement", "ms", "rows"],
    )
