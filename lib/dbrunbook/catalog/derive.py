"""Expectations derived from a catalog: what a migration did to a scratch database, as runbook.yaml's
``expect`` sections, so that ``import`` and ``new`` write runbooks whose checks describe exactly what
the migration made: every user table (in any schema) with its columns (type with typmods,
nullability, default, identity, generation), indexes, constraints and triggers by definition; enum
labels in order; views and functions by the hash of their definitions (see :mod:`.definitions`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import definitions

_NO_TABLE: dict[str, dict[str, Any]] = {"columns": {}, "indexes": {}, "constraints": {}, "triggers": {}}


@dataclass
class Catalog:
    """The user objects of a database, as :func:`expectations_between` compares them."""

    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Every object, named with its kind (``table users``, ``view user_emails``)."""
        return ({f"table {t}" for t in self.tables} | {f"type {e}" for e in self.enums}
                | {f"view {v}" for v in self.views} | {f"function {f}" for f in self.functions})


def catalog_snapshot(conn: Any | None) -> Catalog:
    """The user objects the psycopg connection ``conn`` sees (an empty catalog for None)."""
    if conn is None:
        return Catalog()
    out = Catalog(enums=definitions.enums(conn), views=definitions.views(conn), functions=definitions.functions(conn))
    for schema, table in definitions.tables(conn):
        out.tables[definitions.qualified(schema, table)] = {
            "columns": definitions.columns(conn, schema, table), "indexes": definitions.indexes(conn, schema, table),
            "constraints": definitions.constraints(conn, schema, table),
            "triggers": definitions.triggers(conn, schema, table)}
    return out


def _column(table: str, name: str, col: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"table": table, "column": name, "type": col["type"], "nullable": col["nullable"]}
    for key in ("default", "identity", "generated", "collation"):
        # What it has, and what it lost ("": none) when the migration took it away.
        if col[key] or (old is not None and old[key] != col[key]):
            entry[key] = col[key]
    return entry


def _named(kind: str, table: str, new: dict[str, str], old: dict[str, str]) -> list[dict[str, Any]]:
    """Indexes, constraints or triggers of a table: new or changed by definition, or gone."""
    out: list[dict[str, Any]] = [{"table": table, "name": name, "definition": text}
                                 for name, text in sorted(new.items()) if old.get(name) != text]
    return out + [{"table": table, "name": name, "present": False} for name in sorted(set(old) - set(new))]


def _by_name(new: dict[str, Any], old: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Enums, views or functions: new or changed (labels, hash), or gone."""
    out: list[dict[str, Any]] = [{"name": name, key: value} for name, value in sorted(new.items())
                                 if old.get(name) != value]
    return out + [{"name": name, "present": False} for name in sorted(set(old) - set(new))]


def expectations_between(before: Catalog, after: Catalog) -> dict[str, Any]:
    """What a migration did to the catalog, as runbook.yaml expectations."""
    tables = {"present": sorted(set(after.tables) - set(before.tables)),
              "absent": sorted(set(before.tables) - set(after.tables))}
    sections: dict[str, list[dict[str, Any]]] = {"columns": [], "indexes": [], "constraints": [], "triggers": []}
    for table in sorted(after.tables):
        old, new = before.tables.get(table, _NO_TABLE), after.tables[table]
        for name, col in sorted(new["columns"].items()):
            if old["columns"].get(name) != col:
                sections["columns"].append(_column(table, name, col, old["columns"].get(name)))
        sections["columns"] += [{"table": table, "column": name, "present": False}
                                for name in sorted(set(old["columns"]) - set(new["columns"]))]
        for kind in ("indexes", "constraints", "triggers"):
            sections[kind] += _named(kind, table, new[kind], old[kind])
    out: dict[str, Any] = {}
    if tables["present"] or tables["absent"]:
        out["tables"] = {k: v for k, v in tables.items() if v}
    out.update({key: value for key, value in sections.items() if value})
    for key, new_items, old_items, field_name in (("enums", after.enums, before.enums, "labels"),
                                                  ("views", after.views, before.views, "hash"),
                                                  ("functions", after.functions, before.functions, "hash")):
        found = _by_name(new_items, old_items, field_name)
        if found:
            out[key] = found
    return out
