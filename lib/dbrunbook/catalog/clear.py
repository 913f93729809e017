"""A database emptied of every user object, so that ``prepare`` brings it to exactly its fixture,
whatever earlier runs left (functions, triggers, types, sequences, views, extensions, schemas).

PostgreSQL: every extension but plpgsql and every user schema are dropped with CASCADE (the ledger's
schema stays); ``public`` is created again with the owner and the privileges it had. SQLite: every
trigger, view and table but the ledger's. It runs in the caller's transaction: with the fixture
after it, a failure leaves the database as it was.
"""
from __future__ import annotations

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from ..dialects import Dialect
from ..errors import TargetError


def clear_user_objects(conn: Connection, target: str, keep: str) -> list[str]:
    """Drop every user object the connection sees but the ledger's (``keep``: its schema, or its
    tables' prefix on SQLite); what was dropped, for the record."""
    if Dialect(conn.dialect.name) == Dialect.SQLITE:
        return _clear_sqlite(conn, keep)
    return _clear_postgresql(conn, target, keep)


def _quoted(conn: Connection, composed: sql.Composable) -> str:
    return composed.as_string(conn.connection.driver_connection)


def _clear_postgresql(conn: Connection, target: str, keep: str) -> list[str]:
    dropped: list[str] = []
    extensions = conn.execute(sa.text("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"))
    for (name,) in extensions.all():
        conn.exec_driver_sql(_quoted(conn, sql.SQL("DROP EXTENSION IF EXISTS {} CASCADE").format(sql.Identifier(name))))
        dropped.append(f"extension {name}")
    schemas = conn.execute(sa.text(
        "SELECT n.nspname, pg_get_userbyid(n.nspowner), "
        "array(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END "
        "|| ' ' || a.privilege_type FROM aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner) "
        "FROM pg_namespace n WHERE n.nspname NOT IN ('information_schema', :ledger) AND n.nspname NOT LIKE 'pg\\_%' "
        "ORDER BY 1"), {"ledger": keep}).all()
    for name, owner, grants in schemas:
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(_quoted(conn, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name))))
        except sa.exc.DBAPIError as exc:
            savepoint.rollback()
            raise TargetError(f"prepare cannot bring {target} back to the fixture: dropping schema {name} fails "
                              f"({' '.join(str(exc.orig).split())}); prepare needs a database whose user owns its "
                              "schemas (nothing was changed)") from None
        savepoint.commit()
        dropped.append(f"schema {name}")
        if name == "public":  # the schema every database starts with: there again, as it was
            conn.exec_driver_sql(_quoted(conn, sql.SQL("CREATE SCHEMA public AUTHORIZATION {}").format(
                sql.Identifier(owner))))
            for grant in grants:
                grantee, privilege = grant.rsplit(" ", 1)
                conn.exec_driver_sql(f"GRANT {privilege} ON SCHEMA public TO {grantee}")
    return dropped


def _clear_sqlite(conn: Connection, keep: str) -> list[str]:
    # Checked at commit, when every table is gone: dropping a parent before its children is fine.
    conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    dropped: list[str] = []
    for kind in ("trigger", "view", "table"):
        names = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = :k AND name NOT LIKE 'sqlite%' "
                                     "AND substr(name, 1, length(:keep) + 1) <> :keep || '_'"), {"k": kind, "keep": keep})
        for (name,) in names.all():
            conn.exec_driver_sql(f'DROP {kind.upper()} IF EXISTS "{name.replace(chr(34), chr(34) * 2)}"')
            dropped.append(f"{kind} {name}")
    return dropped
