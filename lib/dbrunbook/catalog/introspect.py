"""Schema snapshots: every user object flattened to ``{key: definition}``, a fingerprint
(sha256 of that mapping) and the diff of two snapshots as a frame.

The ``dbrunbook`` ledger schema is left out, so recording a run never changes a fingerprint.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..dialects import Dialect

if TYPE_CHECKING:
    import pandas as pd

_USER_NS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbrunbook') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
)

_PG_QUERIES: dict[str, str] = {
    "relation": f"""
        SELECT format('%I.%I', n.nspname, c.relname),
               CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                    WHEN 'v' THEN 'view ' || pg_get_viewdef(c.oid)
                    WHEN 'm' THEN 'materialized view ' || pg_get_viewdef(c.oid)
                    WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' END
               || coalesce(' -- ' || obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_NS}
          AND {_NOT_EXTENSION_MEMBER.format(oid='c.oid')}""",
    "columns": f"""
        SELECT format('%I.%I', n.nspname, c.relname), string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_NS}
        GROUP BY 1""",
    "column": f"""
        SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname),
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE ' NULL' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END
               || CASE a.attgenerated WHEN 's' THEN ' GENERATED STORED' WHEN 'v' THEN ' GENERATED VIRTUAL' ELSE '' END
               || coalesce(' -- ' || col_description(c.oid, a.attnum), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_NS}""",
    "constraint": f"""
        SELECT format('%I.%I.%I', n.nspname, c.relname, con.conname),
               pg_get_constraintdef(con.oid) || CASE WHEN con.convalidated THEN '' ELSE ' (not validated)' END
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS}""",
    "index": f"""
        SELECT format('%I.%I.%I', n.nspname, c.relname, i.relname),
               pg_get_indexdef(i.oid) || CASE WHEN x.indisvalid THEN '' ELSE ' (INVALID)' END
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS}""",
    "trigger": f"""
        SELECT format('%I.%I.%I', n.nspname, c.relname, t.tgname), pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_NS}""",
    "function": f"""
        SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
               md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind IN ('f', 'p') AND {_USER_NS} AND {_NOT_EXTENSION_MEMBER.format(oid='p.oid')}""",
    "type": f"""
        SELECT format('%I.%I', n.nspname, t.typname),
               CASE t.typtype WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', '
                        ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
                    WHEN 'd' THEN 'domain ' || format_type(t.typbasetype, t.typtypmod) ELSE 'composite' END
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE (t.typtype IN ('e', 'd') OR (t.typtype = 'c' AND EXISTS (
                 SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')))
          AND {_USER_NS} AND {_NOT_EXTENSION_MEMBER.format(oid='t.oid')}""",
    "extension": "SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql'",
    "schema": f"SELECT format('%I', n.nspname), 'schema' FROM pg_namespace n WHERE {_USER_NS}",
}


@dataclass(frozen=True)
class Snapshot:
    """A schema at one moment: ``objects`` maps ``"kind name"`` to its definition."""

    objects: dict[str, str]

    @property
    def fingerprint(self) -> str:
        """sha256 of the objects, a table's columns taken as a set: PostgreSQL cannot put a column
        back where it was (a re-added column goes last), so order is information, not identity."""
        canonical = json.dumps(canonical_objects(self.objects), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> pd.DataFrame:
        import pandas as pd  # for readers; a run's start and its fingerprints do not need it

        kinds = pd.Series([key.split(" ", 1)[0] for key in self.objects], dtype="object")
        counts = kinds.value_counts().sort_index()
        return counts.rename_axis("object kind").reset_index(name="count")


COLUMNS_KIND = "columns"


def canonical_objects(objects: dict[str, str]) -> dict[str, str]:
    """The objects with each table's column list sorted (the column definitions themselves are
    compared one by one under their own keys)."""
    return {key: ", ".join(sorted(value.split(", "))) if key.startswith(COLUMNS_KIND + " ") else value
            for key, value in objects.items()}


def _snapshot_postgresql(conn: Connection) -> dict[str, str]:
    objects: dict[str, str] = {}
    for kind, query in _PG_QUERIES.items():
        for key, value in conn.execute(sa.text(query)):
            objects[f"{kind} {key}"] = value or ""
    return objects


def _snapshot_sqlite(conn: Connection) -> dict[str, str]:
    rows = conn.execute(sa.text(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'dbrunbook\\_%' ESCAPE '\\'"
    ))
    return {f"{kind} {name}": " ".join(sql.split()) for kind, name, sql in rows}


_SNAPSHOTS: dict[Dialect, Callable[[Connection], dict[str, str]]] = {
    Dialect.POSTGRESQL: _snapshot_postgresql, Dialect.SQLITE: _snapshot_sqlite}


def snapshot(conn: Connection) -> Snapshot:
    """Snapshot every user object visible to ``conn`` (inside its current transaction)."""
    return Snapshot(_SNAPSHOTS[Dialect(conn.dialect.name)](conn))


def diff(before: Snapshot, after: Snapshot) -> pd.DataFrame:
    """One row per object added, removed or changed between two snapshots; a table whose columns
    are the same in another order is ``column order`` (information: the fingerprint ignores it)."""
    rows = []
    canonical_before, canonical_after = canonical_objects(before.objects), canonical_objects(after.objects)
    for key in sorted(set(before.objects) | set(after.objects)):
        old, new = before.objects.get(key), after.objects.get(key)
        if old == new:
            continue
        change = "added" if old is None else "removed" if new is None else \
            "column order" if canonical_before.get(key) == canonical_after.get(key) else "changed"
        kind, name = key.split(" ", 1)
        rows.append({"change": change, "kind": kind, "object": name,
                     "before": old or "", "after": new or ""})
    import pandas as pd

    return pd.DataFrame(rows, columns=["change", "kind", "object", "before", "after"])


def without_columns(snapshot: Snapshot, columns: Iterable[Any]) -> Snapshot:
    """The snapshot with these columns (objects with ``table`` and ``column``) left out: their own
    entries, and their names in their table's column list."""
    drop = {(str(c.table), str(c.column)) for c in columns}
    out: dict[str, str] = {}
    for key, value in snapshot.objects.items():
        kind, _, name = key.partition(" ")
        parts = [p.strip('"') for p in name.split(".")]
        if kind == "column" and len(parts) >= 3 and (parts[-2], parts[-1]) in drop:
            continue
        if kind == COLUMNS_KIND and parts:
            names = [n for n in value.split(", ") if (parts[-1], n.strip('"')) not in drop]
            value = ", ".join(names)
        out[key] = value
    return Snapshot(out)
