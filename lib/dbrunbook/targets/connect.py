"""Connections to a resolved target: SQLAlchemy engines (one per URL, the embedded server started
on demand) and plain psycopg sessions for what must run outside the engine's transactions."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ..errors import TargetError
from . import embedded
from .resolve import Target
from .secrets import redact


def engine(target: Target, *, create: bool = True) -> Engine:
    """An engine for the target, starting the embedded server on demand; ``create=False`` for a
    reader (history, verify, the overview): a dropped embedded database stays dropped."""
    url = target.url
    if not create and target.dialect.file and url.database and url.database != ":memory:" \
            and not Path(url.database).exists():
        raise TargetError(f"SQLite file {url.database} does not exist")  # connecting would create it
    if target.embedded_db:
        # The wheel may put the socket elsewhere when the data path is too long for one.
        socket_dir = embedded.ensure_database(target.embedded_db, create=create)
        url = url.update_query_dict({"host": str(socket_dir)})
    return _engine(url)


@lru_cache(maxsize=32)
def _engine(url: sa.URL) -> Engine:
    # NullPool: phases hold one connection for their whole life, and idle pooled connections
    # would only block DROP DATABASE and lock waits for nothing.
    kwargs: dict[str, Any] = {"poolclass": NullPool}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"application_name": "dbrunbook"}
    eng = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        _transactional_sqlite(eng)
    else:
        event.listen(eng, "connect", lambda dbapi_connection, _record: _watch_and_commit(dbapi_connection))
    shown = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)

    @event.listens_for(eng, "handle_error")
    def _unreachable(ctx: Any) -> None:
        # A failed connect (closed port, wrong password, no such database) is the user's to fix:
        # one line naming the server, not a driver traceback.
        if ctx.connection is None and isinstance(ctx.sqlalchemy_exception, sa.exc.OperationalError):
            raise TargetError(f"cannot connect to {shown}: {_first_line(ctx.original_exception)}") from None

    return eng


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def _watch_and_commit(dbapi_connection: Any) -> None:
    watch_client(dbapi_connection)
    if not dbapi_connection.autocommit:
        dbapi_connection.commit()


def _transactional_sqlite(eng: Engine) -> None:
    """Python's sqlite3 commits before DDL on its own; SQLite itself runs DDL in transactions.
    Take the transaction out of the driver's hands and emit BEGIN ourselves (SQLAlchemy's
    documented recipe), so a migration and its checks commit or roll back together."""

    @event.listens_for(eng, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA busy_timeout = 5000")

    @event.listens_for(eng, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def psycopg_connect(target: Target, application_name: str, autocommit: bool = True) -> Any:
    """A psycopg connection of its own (PostgreSQL targets), named so that ``pg_stat_activity``
    says whose it is; in autocommit unless asked (then it never holds a transaction open)."""
    import psycopg

    url = engine(target).url.set(drivername="postgresql")
    try:
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=autocommit,
                               application_name=application_name[:63])
    except psycopg.OperationalError as exc:
        raise TargetError(f"cannot connect to {target.display_url}: {_first_line(exc)}") from None
    watch_client(conn)
    if not autocommit:
        conn.commit()
    return conn


def watch_client(conn: Any) -> None:
    """Have the server check, during a long statement, that this client is still there (PostgreSQL
    14+): a killed run's statement is cancelled within a second and its locks released, instead of
    running on (a ``pg_sleep``, an index build) with nobody to commit it. Older servers: unchanged."""
    import psycopg

    try:
        conn.execute("SET client_connection_check_interval = 1000")
    except psycopg.Error:
        conn.rollback()
