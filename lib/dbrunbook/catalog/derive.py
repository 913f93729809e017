"""Expectations derived from a catalog: what a migration did to a scratch database (tables, columns,
indexes, foreign keys), as runbook.yaml's ``expect`` sections, so that ``import`` and ``new`` write
runbooks whose checks describe what the migration made."""
from __future__ import annotations

from typing import Any

from psycopg import sql

# Each key column with its order as the index has it (DESC, and NULLS where not the default for
# that order), the way SQLAlchemy's inspector reports it to the expectations' check; the columns an
# INCLUDE adds are not keys.
_INDEXES = (
    "SELECT i.relname, array_agg(a.attname || CASE "
    "WHEN (x.indoption[k.ord - 1] & 1) = 1 THEN ' DESC' || CASE WHEN (x.indoption[k.ord - 1] & 2) = 0 "
    "THEN ' NULLS LAST' ELSE '' END WHEN (x.indoption[k.ord - 1] & 2) = 2 THEN ' NULLS FIRST' ELSE '' END "
    "ORDER BY k.ord), x.indisunique FROM pg_index x "
    "JOIN pg_class i ON i.oid = x.indexrelid CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY k(attnum, ord) "
    "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
    "WHERE x.indrelid = to_regclass(%s) AND k.ord <= x.indnkeyatts AND x.indexprs IS NULL AND x.indpred IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) GROUP BY i.relname, x.indisunique")


def _quoted(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def catalog_snapshot(conn: Any | None) -> dict[str, Any]:
    """Tables, columns (type, nullable), indexes and foreign keys of the scratch database's public schema."""
    if conn is None:
        return {}
    out: dict[str, Any] = {}
    tables = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1").fetchall()]
    for table in tables:
        columns = {str(name): {"type": str(kind), "nullable": not bool(notnull)} for name, kind, notnull in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute WHERE attrelid = "
            "to_regclass(%s) AND attnum > 0 AND NOT attisdropped", (_quoted(table),)).fetchall()}
        indexes = {str(name): {"columns": [str(c) for c in cols], "unique": bool(unique)}
                   for name, cols, unique in conn.execute(_INDEXES, (_quoted(table),)).fetchall()}
        fks = {str(name): {"columns": [str(c) for c in cols], "table": str(ref), "ref": [str(c) for c in refcols]}
               for name, cols, ref, refcols in conn.execute(
                   "SELECT con.conname, array(SELECT attname FROM pg_attribute WHERE attrelid = con.conrelid AND "
                   "attnum = ANY(con.conkey) ORDER BY array_position(con.conkey, attnum)), f.relname, "
                   "array(SELECT attname FROM pg_attribute WHERE attrelid = con.confrelid AND attnum = ANY(con.confkey) "
                   "ORDER BY array_position(con.confkey, attnum)) FROM pg_constraint con JOIN pg_class f ON "
                   "f.oid = con.confrelid WHERE con.conrelid = to_regclass(%s) AND con.contype = 'f'",
                   (_quoted(table),)).fetchall()}
        out[table] = {"columns": columns, "indexes": indexes, "fks": fks}
    return out


def expectations_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a migration did to the catalog, as runbook.yaml expectations."""
    tables = {"present": sorted(set(after) - set(before)), "absent": sorted(set(before) - set(after))}
    columns: list[dict[str, Any]] = []
    indexes: list[dict[str, Any]] = []
    fks: list[dict[str, Any]] = []
    for table in sorted(after):
        old = before.get(table, {"columns": {}, "indexes": {}, "fks": {}})
        new = after[table]
        for name, col in sorted(new["columns"].items()):
            if old["columns"].get(name) != col:
                columns.append({"table": table, "column": name, "type": col["type"], "nullable": col["nullable"]})
        columns += [{"table": table, "column": name, "present": False}
                    for name in sorted(set(old["columns"]) - set(new["columns"]))]
        for name, index in sorted(new["indexes"].items()):
            if old["indexes"].get(name) != index:
                indexes.append({"table": table, "name": name, "columns": index["columns"], "unique": index["unique"]})
        indexes += [{"table": table, "name": name, "present": False}
                    for name in sorted(set(old["indexes"]) - set(new["indexes"]))]
        for name, fk in sorted(new["fks"].items()):
            if old["fks"].get(name) != fk:
                fks.append({"table": table, "name": name, "columns": fk["columns"],
                            "references": {"table": fk["table"], "columns": fk["ref"]}})
        fks += [{"table": table, "name": name, "columns": fk["columns"], "present": False}
                for name, fk in sorted(old["fks"].items()) if name not in new["fks"]]
    out: dict[str, Any] = {}
    if tables["present"] or tables["absent"]:
        out["tables"] = {k: v for k, v in tables.items() if v}
    for key, value in (("columns", columns), ("indexes", indexes), ("foreign_keys", fks)):
        if value:
            out[key] = value
    return out
