"""Live preflight: what the migration will meet on the target before anything runs.

For the tables the migration locks (:mod:`dbrunbook.sql.locks` says which, and how), their size
and estimated rows, the sessions that hold locks on them or have a transaction open for long, and
indexes a failed ``CREATE INDEX CONCURRENTLY`` left invalid. Each hazard is also a lint
:class:`~dbrunbook.sql.lint.Finding`, so the review shows one table and one verdict.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
from pglast import ast

from ..sql.lint import ERROR, INFO, WARNING, Finding
from ..sql.locks import BLOCKS, _conflicts, pg_mode
from ..sql.statements import Statement

# -- the live target ---------------------------------------------------------------------------------------

def partitions_of(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Partitioned table -> its partitions, for the tables whose partitions are all plain tables
    (a partitioned table with partitioned partitions, or with none, maps to [])."""
    rows = conn.execute(
        "SELECT p.relname, coalesce(array_agg(c.relname ORDER BY c.relname) FILTER (WHERE c.oid IS NOT NULL), '{}'), "
        "coalesce(bool_or(c.relkind = 'p'), false) FROM pg_class p "
        "LEFT JOIN pg_inherits i ON i.inhparent = p.oid LEFT JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE p.relkind = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema') GROUP BY p.relname").fetchall()
    return {parent: ([] if nested else list(children)) for parent, children, nested in rows}


def partitioned_index_findings(statements: list[Statement], partitions: dict[str, list[str]]) -> list[Finding]:
    """What deploy will do with an index on a partitioned table (review says it before it runs)."""
    out = []
    for statement in statements:
        node: Any = statement.node
        relation: Any = getattr(node, "relation", None)
        if isinstance(node, ast.IndexStmt) and str(relation.relname) in partitions:
            children = partitions[str(relation.relname)]
            how = (f"creates it ON ONLY {relation.relname}, builds it CONCURRENTLY on each of its "
                   f"{len(children)} partition(s), then attaches each one" if children else
                   "runs it as written (its partitions are partitioned too): it locks writes while it builds")
            out.append(Finding(INFO, "partitioned-index", statement.file, statement.line, statement.summary,
                               f"{relation.relname} is partitioned: PostgreSQL cannot build an index CONCURRENTLY "
                               f"through it; deploy {how}", "nothing to change: deploy derives this form"))
    return out


def extension_findings(conn: psycopg.Connection[Any], statements: list[Statement], target: str) -> list[Finding]:
    """``CREATE EXTENSION`` of one the server does not have: the migration would fail there."""
    out = []
    for statement in statements:
        node: Any = statement.node
        if not isinstance(node, ast.CreateExtensionStmt):
            continue
        name = str(node.extname)
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)).fetchone() is None:
            out.append(Finding(ERROR, "extension-unavailable", statement.file, statement.line, statement.summary,
                               f"extension {name} is not available on {target}: the server does not ship it",
                               f"install {name} on the server (its contrib or extension package), or do without it"
                               + (" (gen_random_uuid() is built in since PostgreSQL 13)" if name == "uuid-ossp" else "")))
    return out


def index_tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Index name -> table name, for the user schemas."""
    rows = conn.execute(
        "SELECT i.relname, t.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'").fetchall()
    return {str(index): str(table) for index, table in rows}


def fk_parents(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """Table -> the tables its foreign keys reference."""
    rows = conn.execute("SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
                        "WHERE c.contype = 'f'").fetchall()
    out: dict[str, set[str]] = {}
    for table, referenced in rows:
        out.setdefault(str(table).strip('"'), set()).add(str(referenced).strip('"'))
    return out


def table_sizes(conn: psycopg.Connection[Any], locks: dict[str, str]) -> pd.DataFrame:
    """Size and estimated rows of each existing table the migration locks (a table that does not
    exist yet is left out: the migration creates it)."""
    rows = []
    for table, mode in sorted(locks.items()):
        found = conn.execute(
            "SELECT c.reltuples::bigint, s.n_live_tup, pg_total_relation_size(c.oid), "
            "pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(%s)",
            (f'"{table}"',)).fetchone()
        if found is None:
            continue
        estimated, live, size_bytes, size = found
        rows.append({"table": table, "strongest lock": mode, "estimated rows": max(int(estimated), int(live or 0), 0),
                     "bytes": int(size_bytes), "size": size, "blocks": BLOCKS[mode]})
    return pd.DataFrame(rows, columns=["table", "strongest lock", "estimated rows", "bytes", "size", "blocks"])


def lock_holders(conn: psycopg.Connection[Any], tables: list[str]) -> pd.DataFrame:
    """Other sessions holding (or waiting for) a lock on these tables now."""
    rows = conn.execute(
        "SELECT c.relname, l.pid, l.mode, l.granted, a.application_name, a.state, "
        "extract(epoch FROM now() - a.xact_start)::int, left(a.query, 120) FROM pg_locks l "
        "JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE c.relname = ANY(%s) AND l.pid <> pg_backend_pid() ORDER BY c.relname, l.pid",
        (tables,)).fetchall()
    return pd.DataFrame(rows, columns=["table", "pid", "mode", "granted", "application", "state",
                                       "transaction open s", "query"])


def long_transactions(conn: psycopg.Connection[Any], older_than_s: float) -> pd.DataFrame:
    """Transactions on this database open longer than ``older_than_s``: a migration's lock waits
    behind them, and every query behind the migration waits too."""
    rows = conn.execute(
        "SELECT pid, usename, application_name, state, extract(epoch FROM now() - xact_start)::int, "
        "left(query, 120) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND xact_start IS NOT NULL AND now() - xact_start > make_interval(secs => %s) ORDER BY xact_start",
        (older_than_s,)).fetchall()
    return pd.DataFrame(rows, columns=["pid", "user", "application", "state", "transaction open s", "query"])


def invalid_indexes(conn: psycopg.Connection[Any]) -> pd.DataFrame:
    """Indexes left invalid (a failed CREATE INDEX CONCURRENTLY): never used, always maintained."""
    rows = conn.execute(
        "SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE NOT x.indisvalid "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    return pd.DataFrame(rows, columns=["table", "index", "definition"])


def holder_findings(file: str, locks: dict[str, str], holders: pd.DataFrame) -> list[Finding]:
    """A session holding a lock that the migration's lock on the same table would wait for."""
    out = []
    for row in holders.itertuples(index=False):
        wanted = locks.get(str(row.table))
        if wanted and row.granted and _conflicts(pg_mode(str(row.mode)), wanted):
            out.append(Finding(WARNING, "preflight:lock-held", file, None, "",
                               f"pid {row.pid} ({row.application or 'no application name'}, {row.state}) holds "
                               f"{row.mode} on {row.table}, which the migration's {wanted} lock must wait for",
                               "let it finish, or run the deploy phase (short lock_timeout, retries)"))
    return out


def long_transaction_findings(file: str, long_txns: pd.DataFrame) -> list[Finding]:
    return [Finding(WARNING, "preflight:long-transaction", file, None, "",
                    f"pid {row[0]} ({row[2] or row[1]}) has had a transaction open for {row[4]} s: a lock "
                    "queued behind it stalls every query that comes after the lock",
                    "find out what it is before running the migration")
            for row in long_txns.itertuples(index=False)]


def invalid_index_findings(file: str, invalid: pd.DataFrame, created_indexes: set[str]) -> list[Finding]:
    """An invalid index; an error when it has the name of an index the migration creates, which
    ``CREATE INDEX IF NOT EXISTS`` would take for done and build nothing."""
    out = []
    for row in invalid.itertuples(index=False):
        severe = str(row.index) in created_indexes
        out.append(Finding(ERROR if severe else WARNING, "preflight:invalid-index", file, None, "",
                           f"index {row.index} on {row.table} is invalid (a failed concurrent build)"
                           + (": the migration's CREATE INDEX IF NOT EXISTS would keep it and build nothing"
                              if severe else ": it is maintained on every write and never used"),
                           f'DROP INDEX CONCURRENTLY "{row.index}"'))
    return out
