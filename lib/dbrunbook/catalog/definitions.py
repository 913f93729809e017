"""Objects by their definitions, as PostgreSQL itself writes them: what generated expectations record
and what the checks compare, so that an expectation describes exactly what a migration made.

Every definition comes from the server's own deparser (``pg_get_indexdef``, ``pg_get_constraintdef``,
``pg_get_expr``, ``pg_get_viewdef``, ``pg_get_functiondef``), then :func:`canonical` (parsed and
printed again by pglast), so that two servers spelling the same definition differently in
whitespace or parentheses agree. Views and functions are compared by a hash of that text (:func:`digest`).

The queries take a psycopg connection (the phase's own, in its transaction, or the scratch
database's) and read every user schema: not the system's, not the ledger's, not what an extension owns.
"""
from __future__ import annotations

import hashlib
from typing import Any

#: Schemas that hold no user object (the ledger's own is ``dbrunbook``).
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "dbrunbook")

_USER_NAMESPACE = ("n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'dbrunbook') "
                   "AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'")
# Not an extension's: its objects come and go with CREATE EXTENSION, which the tables record.
_NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass AND d.objid = {oid} "
                  "AND d.deptype = 'e')")


def canonical(text: str) -> str:
    """A definition in one spelling: parsed and printed by pglast (whitespace-normalised when it does
    not parse)."""
    from pglast.parser import ParseError
    from pglast.stream import RawStream

    try:
        return str(RawStream()(text.strip().rstrip(";")))
    except (ParseError, ValueError, NotImplementedError):
        return " ".join(text.split())


def digest(text: str) -> str:
    """The hash a view's or a function's definition is compared by (16 hex digits of sha256)."""
    return hashlib.sha256(canonical(text).encode()).hexdigest()[:16]


def qualified(schema: str, name: str) -> str:
    """How an object is named in expectations: bare in ``public``, ``schema.name`` elsewhere."""
    return name if schema == "public" else f"{schema}.{name}"


def tables(conn: Any) -> list[tuple[str, str]]:
    """(schema, table) of every user table, partitioned ones included."""
    return [(str(s), str(t)) for s, t in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {_USER_NAMESPACE} AND "
        + _NOT_EXTENSION.format(catalog="'pg_class'", oid="c.oid") + " ORDER BY 1, 2").fetchall()]


def columns(conn: Any, schema: str, table: str) -> dict[str, dict[str, Any]]:
    """Each column: type with its typmods, nullability, default, identity, generation expression and
    collation (where not its type's)."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, a.attidentity, "
        "CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, "
        "(SELECT co.collname FROM pg_collation co JOIN pg_type ty ON ty.oid = a.atttypid WHERE co.oid = a.attcollation "
        "AND a.attcollation <> ty.typcollation) "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table)).fetchall()
    identity = {"a": "always", "d": "by default", "": ""}
    return {str(name): {"type": str(kind), "nullable": not notnull, "default": str(default or ""),
                        "identity": identity.get(str(ident or ""), ""), "generated": str(generated or ""),
                        "collation": str(collation or "")}
            for name, kind, notnull, default, ident, generated, collation in rows}


def indexes(conn: Any, schema: str, table: str) -> dict[str, str]:
    """Each index not owned by a constraint, by its definition (order, NULLS, opclass, expressions,
    INCLUDE, predicate, method: all of it)."""
    return {str(name): canonical(str(text)) for name, text in conn.execute(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u', 'x'))",
        (schema, table)).fetchall()}


def index_definition(conn: Any, schema: str, name: str) -> str:
    """One index's definition by name, whoever owns it ('' when there is none)."""
    row = conn.execute("SELECT pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('i', 'I')", (schema, name)).fetchone()
    return canonical(str(row[0])) if row else ""


def constraints(conn: Any, schema: str, table: str) -> dict[str, str]:
    """Each constraint (primary key, unique, check, exclusion, foreign key), by its definition."""
    return {str(name): " ".join(str(text).split()) for name, text in conn.execute(
        "SELECT k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND k.contype IN ('p', 'u', 'c', 'x', 'f')", (schema, table)).fetchall()}


def triggers(conn: Any, schema: str, table: str) -> dict[str, str]:
    """Each user trigger, by its definition."""
    return {str(name): canonical(str(text)) for name, text in conn.execute(
        "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND NOT t.tgisinternal", (schema, table)).fetchall()}


def enums(conn: Any) -> dict[str, list[str]]:
    """Each enum type's labels, in their order."""
    return {qualified(str(s), str(t)): list(labels) for s, t, labels in conn.execute(
        "SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_type t "
        "JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace "
        f"WHERE {_USER_NAMESPACE} AND " + _NOT_EXTENSION.format(catalog="'pg_type'", oid="t.oid")
        + " GROUP BY 1, 2").fetchall()}


def views(conn: Any) -> dict[str, str]:
    """Each view and materialized view, by the hash of its definition."""
    return {qualified(str(s), str(v)): digest(str(text)) for s, v, text in conn.execute(
        "SELECT n.nspname, c.relname, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON "
        f"n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {_USER_NAMESPACE} AND "
        + _NOT_EXTENSION.format(catalog="'pg_class'", oid="c.oid")).fetchall()}


def functions(conn: Any) -> dict[str, str]:
    """Each function and procedure as ``name(argument types)``, by the hash of its definition."""
    return {f"{qualified(str(s), str(f))}({args})": digest(str(text)) for s, f, args, text in conn.execute(
        "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid) "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        f"WHERE p.prokind IN ('f', 'p') AND {_USER_NAMESPACE} AND "
        + _NOT_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")).fetchall()}
