"""Live preflight: what the migration will meet on the target before anything runs.

For each statement, the table locks PostgreSQL takes when it runs as written (the "Explicit
Locking" table of the manual, per command); then, for the tables that already exist, their size
and estimated rows, the sessions that hold locks on them or have a transaction open for long, and
indexes a failed ``CREATE INDEX CONCURRENTLY`` left invalid. Each hazard is also a lint
:class:`~dbrunbook.sql.lint.Finding`, so the review shows one table and one verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType

from ..sql.lint import ERROR, INFO, WARNING, Finding
from ..sql.statements import Statement

ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
#: Weakest to strongest, as in the manual.
LOCK_MODES = (ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE,
              EXCLUSIVE, ACCESS_EXCLUSIVE)
#: What each mode blocks, in words a reviewer weighs.
BLOCKS = {
    ACCESS_SHARE: "only ACCESS EXCLUSIVE (DROP, most ALTER TABLE)",
    ROW_SHARE: "EXCLUSIVE and ACCESS EXCLUSIVE",
    ROW_EXCLUSIVE: "SHARE and stronger (CREATE INDEX, ...)",
    SHARE_UPDATE_EXCLUSIVE: "other schema changes and VACUUM; reads and writes go on",
    SHARE: "writes (INSERT, UPDATE, DELETE); reads go on",
    SHARE_ROW_EXCLUSIVE: "writes and other schema changes; reads go on",
    EXCLUSIVE: "writes; only plain reads go on",
    ACCESS_EXCLUSIVE: "everything, reads included",
}
# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE.
_ALTER_LOCKS = {
    AlterTableType.AT_ValidateConstraint: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_SetStatistics: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_ClusterOn: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_DropCluster: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_SetRelOptions: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_ResetRelOptions: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_EnableTrig: SHARE_ROW_EXCLUSIVE,
    AlterTableType.AT_DisableTrig: SHARE_ROW_EXCLUSIVE,
    AlterTableType.AT_AttachPartition: SHARE_UPDATE_EXCLUSIVE,
}
_DML = {"InsertStmt": ROW_EXCLUSIVE, "UpdateStmt": ROW_EXCLUSIVE, "DeleteStmt": ROW_EXCLUSIVE,
        "MergeStmt": ROW_EXCLUSIVE, "SelectStmt": ACCESS_SHARE}


@dataclass(frozen=True)
class TableLock:
    """A lock one statement takes on one table."""

    statement: Statement
    table: str
    mode: str
    new: bool = False  # the table is created earlier in the same migration: nobody waits on it


def stronger(a: str, b: str) -> str:
    return a if LOCK_MODES.index(a) >= LOCK_MODES.index(b) else b


def _rel(node: Any) -> str:
    return str(node.relname)


def _fk_targets(constraints: Any) -> list[str]:
    return [_rel(c.pktable) for c in constraints or () if c.contype == ConstrType.CONSTR_FOREIGN]


def _alter_locks(node: Any, fk_targets: dict[str, str]) -> dict[str, str]:
    table = _rel(node.relation)
    locks: dict[str, str] = {}

    def take(name: str, mode: str) -> None:
        locks[name] = stronger(locks.get(name, ACCESS_SHARE), mode)

    for cmd in node.cmds or ():
        definition = cmd.def_
        if cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(definition, ast.Constraint) \
                and definition.contype == ConstrType.CONSTR_FOREIGN:
            take(table, SHARE_ROW_EXCLUSIVE)
            take(_rel(definition.pktable), SHARE_ROW_EXCLUSIVE)
            if definition.conname:
                fk_targets[str(definition.conname)] = _rel(definition.pktable)
            continue
        if cmd.subtype == AlterTableType.AT_ValidateConstraint and str(cmd.name) in fk_targets:
            take(fk_targets[str(cmd.name)], ROW_SHARE)  # validating a foreign key reads the referenced table
        take(table, _ALTER_LOCKS.get(cmd.subtype, ACCESS_EXCLUSIVE))
        if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(definition, ast.ColumnDef):
            for referenced in _fk_targets(definition.constraints):
                take(referenced, SHARE_ROW_EXCLUSIVE)
    return locks


def _comment_table(node: Any) -> str | None:
    names = [str(n.sval) for n in (node.object if isinstance(node.object, tuple) else ()) if hasattr(n, "sval")]
    if node.objtype == ObjectType.OBJECT_TABLE and names:
        return names[-1]
    if node.objtype == ObjectType.OBJECT_COLUMN and len(names) >= 2:
        return names[-2]
    return None


def _statement_locks(node: Any, index_tables: dict[str, str], fk_targets: dict[str, str],
                     parents: dict[str, set[str]]) -> dict[str, str]:
    """Table -> lock mode for one parsed statement. ``fk_targets`` (foreign key name ->
    referenced table) and ``parents`` (table -> the tables its foreign keys reference) are
    filled as foreign keys are added, for a later VALIDATE or DROP TABLE."""
    if isinstance(node, ast.CreateStmt):
        locks = {_rel(node.relation): ACCESS_EXCLUSIVE}
        for element in node.tableElts or ():
            constraints = element.constraints if isinstance(element, ast.ColumnDef) else \
                (element,) if isinstance(element, ast.Constraint) else ()
            for referenced in _fk_targets(constraints):
                locks[referenced] = SHARE_ROW_EXCLUSIVE
                parents.setdefault(_rel(node.relation), set()).add(referenced)
        return locks
    if isinstance(node, ast.AlterTableStmt):
        locks = _alter_locks(node, fk_targets)
        table = _rel(node.relation)
        parents.setdefault(table, set()).update(t for t, m in locks.items() if t != table and m == SHARE_ROW_EXCLUSIVE)
        return locks
    if isinstance(node, ast.IndexStmt):
        return {_rel(node.relation): SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE}
    if isinstance(node, ast.CreateTrigStmt):
        return {_rel(node.relation): SHARE_ROW_EXCLUSIVE}
    if isinstance(node, ast.CommentStmt):
        commented = _comment_table(node)
        return {commented: SHARE_UPDATE_EXCLUSIVE} if commented else {}
    if isinstance(node, ast.DropStmt):
        objects = [[str(p.sval) for p in (o if isinstance(o, tuple) else ())] for o in node.objects or ()]
        if node.removeType == ObjectType.OBJECT_TABLE:
            # Dropping a table drops its foreign keys' triggers on the referenced tables, which
            # takes ACCESS EXCLUSIVE on those too (a rollback's DROP TABLE blocks the parents).
            dropped = [names[-1] for names in objects if names]
            return {t: ACCESS_EXCLUSIVE for name in dropped for t in [name, *sorted(parents.get(name, ()))]}
        if node.removeType == ObjectType.OBJECT_TRIGGER:
            return {names[-2]: ACCESS_EXCLUSIVE for names in objects if len(names) >= 2}
        if node.removeType == ObjectType.OBJECT_INDEX:
            mode = SHARE_UPDATE_EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE
            return {index_tables[names[-1]]: mode for names in objects if names and names[-1] in index_tables}
        return {}
    if isinstance(node, ast.TruncateStmt):
        return {_rel(r): ACCESS_EXCLUSIVE for r in node.relations or ()}
    if isinstance(node, ast.RenameStmt) and node.relation is not None:
        return {_rel(node.relation): ACCESS_EXCLUSIVE}
    if type(node).__name__ in _DML and getattr(node, "relation", None) is not None:
        return {_rel(node.relation): _DML[type(node).__name__]}
    return {}


def statement_locks(statements: list[Statement], index_tables: dict[str, str] | None = None,
                    fk_parents: dict[str, set[str]] | None = None) -> list[TableLock]:
    """Every table lock the statements take when run as written, in order. From the live
    catalog: ``index_tables`` (index -> table, for ``DROP INDEX``) and ``fk_parents`` (table ->
    the tables its foreign keys reference, for ``DROP TABLE``)."""
    created: set[str] = set()
    fk_targets: dict[str, str] = {}
    parents = {table: set(refs) for table, refs in (fk_parents or {}).items()}
    out: list[TableLock] = []
    for statement in statements:
        node: Any = parse_sql(statement.text)[0].stmt
        if isinstance(node, ast.CreateStmt):
            created.add(_rel(node.relation))
        for table, mode in _statement_locks(node, index_tables or {}, fk_targets, parents).items():
            out.append(TableLock(statement, table, mode, new=table in created))
    return out


def locks_frame(locks: list[TableLock]) -> pd.DataFrame:
    return pd.DataFrame([{"where": f"{lock.statement.file}:{lock.statement.line}", "statement": lock.statement.summary,
                          "table": lock.table + (" (new)" if lock.new else ""), "lock": lock.mode,
                          "blocks": "nobody yet: created by this migration" if lock.new else BLOCKS[lock.mode]}
                         for lock in locks], columns=["where", "statement", "table", "lock", "blocks"])


def strongest_locks(locks: list[TableLock]) -> dict[str, str]:
    """Existing table -> the strongest lock the migration takes on it."""
    out: dict[str, str] = {}
    for lock in locks:
        if not lock.new:
            out[lock.table] = stronger(out.get(lock.table, ACCESS_SHARE), lock.mode)
    return out


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
        node: Any = parse_sql(statement.text)[0].stmt
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
        node: Any = parse_sql(statement.text)[0].stmt
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


def _conflicts(held: str, wanted: str) -> bool:
    """Whether a lock held in mode ``held`` blocks one requested in mode ``wanted`` (the
    manual's conflict table, which is symmetric)."""
    conflicts = {
        ACCESS_SHARE: {ACCESS_EXCLUSIVE},
        ROW_SHARE: {EXCLUSIVE, ACCESS_EXCLUSIVE},
        ROW_EXCLUSIVE: {SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE_UPDATE_EXCLUSIVE: {SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE: {ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE_ROW_EXCLUSIVE: {ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                              ACCESS_EXCLUSIVE},
        EXCLUSIVE: set(LOCK_MODES) - {ACCESS_SHARE},
        ACCESS_EXCLUSIVE: set(LOCK_MODES),
    }
    return wanted in conflicts[held]


def pg_mode(mode: str) -> str:
    """``RowExclusiveLock`` (pg_locks) -> ``ROW EXCLUSIVE``."""
    words, current = [], ""
    for char in mode.removesuffix("Lock"):
        if char.isupper() and current:
            words.append(current)
            current = ""
        current += char
    return " ".join([*words, current]).upper()


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
