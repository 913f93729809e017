"""What a rollback would destroy, counted and copied into the archive before it goes.

A rollback's ``DROP TABLE``, ``DROP COLUMN`` or ``ALTER COLUMN ... TYPE`` takes values with it that
no fingerprint brings back: seed 000 calls dropping its column "optional - can keep for future",
seed 003 promises "no data loss". Before such a statement runs, the phase counts what will go and
copies it (``COPY ... TO STDOUT``, gzip) into ``rollback_backup/`` in the run's archive, with a
``backup.json`` holding each file's sha256 and the command that restores it.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ObjectType
from psycopg import sql

from ..sql.statements import Statement

FOLDER = "rollback_backup"


@dataclass(frozen=True)
class Loss:
    """Values one rollback statement destroys: a table's rows, or a column's non-null values."""

    kind: str                 # "table", "column" or "type change"
    table: str
    column: str | None
    statement: Statement


@dataclass(frozen=True)
class Salvaged:
    kind: str
    table: str
    column: str | None
    values: int
    file: str
    sha256: str
    restore: str
    where: str


def _qualified(rel: Any) -> str:
    return f"{rel.schemaname}.{rel.relname}" if rel.schemaname else str(rel.relname)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def losses_of(statements: list[Statement]) -> list[Loss]:
    """The statements of a rollback that destroy stored values, as written."""
    out = []
    for statement in statements:
        try:
            node: Any = statement.node
        except Exception:  # SQLite's own syntax: nothing PostgreSQL's parser can read is a DROP here
            continue
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            for obj in node.objects or ():
                names = [str(n.sval) for n in obj]
                out.append(Loss("table", ".".join(names), None, statement))
        elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
            table = _qualified(node.relation)
            for cmd in node.cmds or ():
                if cmd.subtype == AlterTableType.AT_DropColumn and cmd.name:
                    out.append(Loss("column", table, str(cmd.name), statement))
                elif cmd.subtype == AlterTableType.AT_AlterColumnType and cmd.name:
                    out.append(Loss("type change", table, str(cmd.name), statement))
    return out


def _exists(conn: Any, loss: Loss) -> bool:
    row = conn.execute("SELECT to_regclass(%s)::oid", (_ident(loss.table).as_string(conn),)).fetchone()
    if not row or row[0] is None:
        return False
    if loss.column is None:
        return True
    return conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s AND NOT attisdropped",
                        (row[0], loss.column)).fetchone() is not None


def _key_columns(conn: Any, table: str) -> list[str]:
    """The table's primary key (else every column but the one saved is the key the restore matches on)."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (_ident(table).as_string(conn),)).fetchall()
    return [str(r[0]) for r in rows]


def salvage(conn: Any, statements: list[Statement], folder: Path) -> list[Salvaged]:
    """Count and copy what the statements would destroy, in the caller's transaction (so the copy
    is of exactly what the rollback then drops); returns one entry per loss that holds values."""
    if type(conn).__module__.startswith("sqlite3"):
        return _salvage_sqlite(conn, statements, folder)
    out: list[Salvaged] = []
    target = folder / FOLDER
    for loss in losses_of(statements):
        if not _exists(conn, loss):
            continue  # already gone (a rollback of a part-way migration): nothing to lose
        table = _ident(loss.table)
        if loss.column is None:
            count = sql.SQL("SELECT count(*) FROM {}").format(table)
            copy = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT WITH (FORMAT csv, HEADER)").format(table)
            name = f"{loss.table}.csv.gz"
        else:
            keys = [k for k in _key_columns(conn, loss.table) if k != loss.column]
            column = sql.Identifier(loss.column)
            count = sql.SQL("SELECT count({}) FROM {}").format(column, table)
            copy = sql.SQL("COPY (SELECT {} FROM {} WHERE {} IS NOT NULL) TO STDOUT WITH (FORMAT csv, HEADER)").format(
                sql.SQL(", ").join([*map(sql.Identifier, keys), column]), table, column)
            name = f"{loss.table}.{loss.column}.csv.gz"
        row = conn.execute(count).fetchone()
        values = int(row[0]) if row else 0
        if values == 0:
            continue
        target.mkdir(parents=True, exist_ok=True)
        path = target / name
        with gzip.open(path, "wb") as out_file, conn.cursor() as cursor, cursor.copy(copy) as stream:
            for block in stream:
                out_file.write(block)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        restore = _restore(loss, name, conn)
        out.append(Salvaged(loss.kind, loss.table, loss.column, values, f"{FOLDER}/{name}", digest, restore,
                            f"{loss.statement.file}:{loss.statement.line}"))
    if out:
        (target / "backup.json").write_text(json.dumps([asdict(s) for s in out], indent=2) + "\n")
    return out


def _restore(loss: Loss, name: str, conn: Any) -> str:
    """The command that puts the values back (after the migration is applied again)."""
    table = _ident(loss.table).as_string(conn)
    if loss.column is None:
        return f"gunzip -c {name} | psql -c '\\copy {table} FROM STDIN WITH (FORMAT csv, HEADER)'"
    keys = [k for k in _key_columns(conn, loss.table) if k != loss.column]
    column = sql.Identifier(loss.column).as_string(conn)
    key_list = ", ".join(sql.Identifier(k).as_string(conn) for k in keys)
    match = " AND ".join(f"t.{sql.Identifier(k).as_string(conn)} = r.{sql.Identifier(k).as_string(conn)}"
                         for k in keys) or "false"
    return (f"gunzip -c {name} | psql -v ON_ERROR_STOP=1 -c 'CREATE TEMP TABLE r AS SELECT {key_list}, {column} FROM "
            f"{table} LIMIT 0' -c '\\copy r FROM STDIN WITH (FORMAT csv, HEADER)' -c 'UPDATE {table} t SET {column} = "
            f"r.{column} FROM r WHERE {match}'")


def _salvage_sqlite(conn: Any, statements: list[Statement], folder: Path) -> list[Salvaged]:
    """The same on SQLite: the rows or values read in the phase's transaction, written as gzip CSV."""
    import csv
    import io

    out: list[Salvaged] = []
    target = folder / FOLDER
    for loss in losses_of(statements):
        table = '"' + loss.table.replace('"', '""') + '"'
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()]
        if not columns or (loss.column is not None and loss.column not in columns):
            continue
        if loss.column is None:
            query, name = f"SELECT * FROM {table}", f"{loss.table}.csv.gz"
        else:
            column = '"' + loss.column.replace('"', '""') + '"'
            query, name = f"SELECT rowid AS row_id, {column} FROM {table} WHERE {column} IS NOT NULL", \
                f"{loss.table}.{loss.column}.csv.gz"
        cursor = conn.execute(query)
        rows = cursor.fetchall()
        if not rows:
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([d[0] for d in cursor.description])
        writer.writerows(rows)
        target.mkdir(parents=True, exist_ok=True)
        path = target / name
        with gzip.open(path, "wt") as handle:
            handle.write(buffer.getvalue())
        plain = name[:-3]
        if loss.column is None:
            restore = f'gunzip -k {name} && sqlite3 DATABASE ".import --csv --skip 1 {plain} {table}"'
        else:
            column = '"' + loss.column.replace('"', '""') + '"'
            restore = (f'gunzip -k {name} && sqlite3 DATABASE ".import --csv {plain} restore_values" '
                       f'"UPDATE {table} SET {column} = (SELECT r.{column} FROM restore_values r WHERE r.row_id = '
                       f'{table}.rowid) WHERE rowid IN (SELECT row_id FROM restore_values)" "DROP TABLE restore_values"')
        out.append(Salvaged(loss.kind, loss.table, loss.column, len(rows), f"{FOLDER}/{name}",
                            hashlib.sha256(path.read_bytes()).hexdigest(), restore,
                            f"{loss.statement.file}:{loss.statement.line}"))
    if out:
        (target / "backup.json").write_text(json.dumps([asdict(s) for s in out], indent=2) + "\n")
    return out
