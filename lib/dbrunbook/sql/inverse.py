"""Inverses: the statements that undo a forward statement, read against the catalog as it is just
before the statement runs, or the reason none can without losing data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ObjectType
from pglast.stream import RawStream
from psycopg import sql

from .statements import Statement


@dataclass(frozen=True)
class Inverse:
    """The statements that undo one forward statement, or why none can without losing data."""

    statements: list[str]
    irreversible: str | None = None


def _render(node: Any) -> str:
    return str(RawStream()(node))


def _ident(*names: str) -> str:
    return sql.Identifier(*names).as_string(None)


def _rel(rel: Any) -> str:
    return _ident(rel.schemaname, rel.relname) if rel.schemaname else _ident(rel.relname)


def _literal(value: str) -> str:
    return sql.Literal(value).as_string(None)


def _names(values: Any) -> list[str]:
    return [str(v.sval) for v in values or () if hasattr(v, "sval")]


def _column_state(conn: Any, table: str, column: str) -> tuple[str, bool, str | None] | None:
    """(type, not null, default) of a column as the catalog has it now."""
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped", (table, column)).fetchone()
    return (str(row[0]), bool(row[1]), row[2]) if row else None


def _enum_labels(conn: Any | None, type_name: str) -> list[str] | None:
    """The labels of an enum type, in order, as the catalog has it now (None: not an enum)."""
    if conn is None:
        return None
    import psycopg

    try:  # the scratch session is in autocommit: an error here leaves nothing to roll back
        rows = conn.execute("SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = to_regtype(%s) "
                            "ORDER BY e.enumsortorder", (type_name,)).fetchall()
    except psycopg.Error:  # a name to_regtype cannot read: not an enum we can see
        return None
    return [str(r[0]) for r in rows] or None


def _replaced_view(conn: Any | None, view: str) -> Inverse:
    """CREATE OR REPLACE VIEW undone: the definition the catalog had (dropped and created again, as
    the old one may have fewer columns), or the view dropped when there was none."""
    if conn is None:
        return Inverse([], "CREATE OR REPLACE VIEW: the view it replaced is not known without a scratch database")
    row = conn.execute("SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%s) AND "
                       "c.relkind = 'v'", (view,)).fetchone()
    if row is None:
        return Inverse([f"DROP VIEW {view}"])
    return Inverse([f"DROP VIEW {view}", f"CREATE VIEW {view} AS {str(row[0]).strip().rstrip(';')}"])


def _replaced_function(conn: Any | None, signature: str, kind: str) -> Inverse:
    """CREATE OR REPLACE FUNCTION undone: the definition the catalog had, or the function dropped."""
    if conn is None:
        return Inverse([], f"CREATE OR REPLACE {kind}: the {kind.lower()} it replaced is not known without a scratch "
                           "database")
    import psycopg

    try:
        row = conn.execute("SELECT pg_get_functiondef(to_regprocedure(%s))", (signature,)).fetchone()
    except psycopg.Error:  # an argument type that is not there yet: the function is not either
        row = None
    if row is None or row[0] is None:
        return Inverse([f"DROP {kind} {signature}"])
    return Inverse([str(row[0]).strip()])


def _index_definition(conn: Any, name: str) -> str | None:
    row = conn.execute("SELECT pg_get_indexdef(to_regclass(%s))", (name,)).fetchone()
    return str(row[0]) if row and row[0] else None


def invert(statement: Statement, conn: Any | None = None) -> Inverse:
    """The inverse of one statement, reading the catalog as it is just before the statement runs
    (``conn``: a scratch database where the earlier statements ran), or why it has none."""
    node: Any = statement.node
    if isinstance(node, ast.CreateStmt):
        return Inverse([f"DROP TABLE {_rel(node.relation)}"])
    if isinstance(node, ast.IndexStmt) and node.idxname:
        relation: Any = node.relation
        schema = relation.schemaname
        return Inverse([f"DROP INDEX {_ident(schema, node.idxname) if schema else _ident(node.idxname)}"])
    if isinstance(node, (ast.CreateEnumStmt, ast.CreateDomainStmt)):
        names = _names(node.typeName if isinstance(node, ast.CreateEnumStmt) else node.domainname)
        return Inverse([f"DROP {'TYPE' if isinstance(node, ast.CreateEnumStmt) else 'DOMAIN'} {_ident(*names)}"])
    if isinstance(node, ast.CompositeTypeStmt):
        return Inverse([f"DROP TYPE {_rel(node.typevar)}"])
    if isinstance(node, ast.CreateSeqStmt):
        return Inverse([f"DROP SEQUENCE {_rel(node.sequence)}"])
    if isinstance(node, ast.ViewStmt):
        return _replaced_view(conn, _rel(node.view)) if node.replace else Inverse([f"DROP VIEW {_rel(node.view)}"])
    if isinstance(node, ast.CreateExtensionStmt):
        return Inverse([f"DROP EXTENSION IF EXISTS {_ident(str(node.extname))}"])
    if isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
        return Inverse([f"DROP SCHEMA {_ident(str(node.schemaname))}"])
    if isinstance(node, ast.CreateTrigStmt):
        return Inverse([f"DROP TRIGGER {_ident(str(node.trigname))} ON {_rel(node.relation)}"])
    if isinstance(node, ast.CreateFunctionStmt):
        args = ", ".join(_render(p.argType) for p in node.parameters or ()
                         if getattr(p, "mode", None) is None or str(p.mode) not in ("FUNC_PARAM_OUT", "FUNC_PARAM_TABLE"))
        signature = f"{_ident(*_names(node.funcname))}({args})"
        if node.replace:
            return _replaced_function(conn, signature, "PROCEDURE" if node.is_procedure else "FUNCTION")
        return Inverse([f"DROP {'PROCEDURE' if node.is_procedure else 'FUNCTION'} {signature}"])
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TYPE and node.object is not None:
        named = _names(node.object)
        renamed = [*named[:-1], str(node.newname)]
        return Inverse([f"ALTER TYPE {_ident(*renamed)} RENAME TO {_ident(named[-1])}"])
    if isinstance(node, ast.RenameStmt) and node.relation is not None:
        table = _rel(node.relation)
        if node.renameType == ObjectType.OBJECT_TABLE:
            schema = node.relation.schemaname
            new = _ident(str(schema), str(node.newname)) if schema else _ident(str(node.newname))
            return Inverse([f"ALTER TABLE {new} RENAME TO {_ident(str(node.relation.relname))}"])
        if node.renameType == ObjectType.OBJECT_COLUMN:
            return Inverse([f"ALTER TABLE {table} RENAME COLUMN {_ident(str(node.newname))} TO "
                            f"{_ident(str(node.subname))}"])
    if isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        return _invert_alter(node, conn)
    if isinstance(node, ast.AlterEnumStmt):
        return Inverse([], "ALTER TYPE ... ADD VALUE: PostgreSQL cannot remove an enum value")
    if isinstance(node, ast.DropStmt):
        if node.removeType == ObjectType.OBJECT_TYPE and conn is not None:
            # An enum (Prisma's value removal drops the old one after moving its columns) comes back
            # with its labels in order; a domain or composite type does not, without its definition.
            made = []
            for obj in node.objects or ():
                parts = [str(getattr(n, "sval", "")) for n in getattr(obj, "names", None) or ()]
                labels = _enum_labels(conn, ".".join(_ident(n) for n in parts)) if parts else None
                if labels is None:
                    return Inverse([], "DROP TYPE: only an enum's labels can be read back from the catalog")
                made.append(f"CREATE TYPE {_ident(*parts)} AS ENUM ({', '.join(_literal(v) for v in labels)})")
            return Inverse(made)
        if node.removeType == ObjectType.OBJECT_INDEX and conn is not None:
            definitions = [_index_definition(conn, ".".join(_names(o))) for o in node.objects or ()]
            if all(definitions):
                return Inverse([str(d) for d in definitions])
        what = "DROP TABLE: its rows are gone" if node.removeType == ObjectType.OBJECT_TABLE else "a DROP"
        return Inverse([], what + " (the rollback cannot bring back what it removed)")
    if type(node).__name__ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "TruncateStmt", "MergeStmt"):
        return Inverse([], f"{type(node).__name__.removesuffix('Stmt').upper()}: a data change has no inverse")
    if isinstance(node, (ast.CommentStmt, ast.GrantStmt, ast.VariableSetStmt)):
        return Inverse([])  # nothing the rollback must undo for the schema to match
    return Inverse([], f"{type(node).__name__}: no inverse is known for this statement")


def _invert_alter(node: Any, conn: Any | None) -> Inverse:
    table = _rel(node.relation)
    out: list[str] = []
    for cmd in node.cmds or ():
        column = str(cmd.name) if cmd.name else None
        state = _column_state(conn, table, column) if conn is not None and column else None
        kind = cmd.subtype
        if kind == AlterTableType.AT_AddColumn:
            out.append(f"ALTER TABLE {table} DROP COLUMN {_ident(str(cmd.def_.colname))}")
        elif kind == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint) and cmd.def_.conname:
            out.append(f"ALTER TABLE {table} DROP CONSTRAINT {_ident(str(cmd.def_.conname))}")
        elif kind == AlterTableType.AT_AddConstraint:
            return Inverse([], "ADD CONSTRAINT without a name: the rollback cannot name what to drop")
        elif kind == AlterTableType.AT_SetNotNull and column:
            out.append(f"ALTER TABLE {table} ALTER COLUMN {_ident(column)} DROP NOT NULL")
        elif kind == AlterTableType.AT_DropNotNull and column:
            out.append(f"ALTER TABLE {table} ALTER COLUMN {_ident(column)} SET NOT NULL")
        elif kind == AlterTableType.AT_ColumnDefault and column:
            previous = state[2] if state else None
            out.append(f"ALTER TABLE {table} ALTER COLUMN {_ident(column)} "
                       + (f"SET DEFAULT {previous}" if previous else "DROP DEFAULT"))
        elif kind == AlterTableType.AT_AlterColumnType and column:
            if state is None:
                return Inverse([], f"ALTER COLUMN {column} TYPE: the type it had is unknown without a catalog")
            new_type = _render(cmd.def_.typeName)
            old_labels, new_labels = _enum_labels(conn, state[0]), _enum_labels(conn, new_type)
            if old_labels is not None and new_labels is not None:
                # Enum to enum: back to the old one, through text, when every new label is an old one.
                missing = [v for v in new_labels if v not in old_labels]
                if missing:
                    return Inverse([], f"ALTER COLUMN {column} TYPE {new_type}: its values {missing} do not exist in "
                                       f"{state[0]}")
                out.append(f"ALTER TABLE {table} ALTER COLUMN {_ident(column)} TYPE {state[0]} "
                           f"USING {_ident(column)}::text::{state[0]}")
                continue
            if _narrows(state[0], new_type):
                return Inverse([], f"ALTER COLUMN {column} TYPE {new_type} narrows {state[0]}: values may have "
                                   "been cut or rounded")
            out.append(f"ALTER TABLE {table} ALTER COLUMN {_ident(column)} TYPE {state[0]} "
                       f"USING {_ident(column)}::{state[0]}")
        elif kind == AlterTableType.AT_DropColumn:
            return Inverse([], f"DROP COLUMN {column}: its values are gone")
        elif kind == AlterTableType.AT_DropConstraint:
            return Inverse([], f"DROP CONSTRAINT {column}: its definition is not in the migration")
        else:
            return Inverse([], f"ALTER TABLE ({AlterTableType(kind).name}): no inverse is known")
    return Inverse(list(reversed(out)))


_WIDTH = {"smallint": 1, "integer": 2, "int": 2, "int4": 2, "bigint": 3, "int8": 3}


def _narrows(old: str, new: str) -> bool:
    """Whether changing ``old`` to ``new`` can lose information (a shorter varchar, a smaller
    integer, numeric or timestamp precision cut, any text to a non-text type)."""
    import re

    def parts(t: str) -> tuple[str, list[int]]:
        t = t.lower().strip()
        base = re.sub(r"\(.*\)", "", t).strip()
        return base, [int(n) for n in re.findall(r"\d+", t[len(base):])]

    (a, an), (b, bn) = parts(old), parts(new)
    a, b = a.replace("character varying", "varchar"), b.replace("character varying", "varchar")
    if a in _WIDTH and b in _WIDTH:
        return _WIDTH[b] < _WIDTH[a]
    if a == b:
        return bool(an and bn and any(y < x for x, y in zip(an, bn, strict=False))) or (bool(an) is False and bool(bn))
    if a in ("text", "varchar") and b == "varchar":
        return True
    return not (a in ("varchar", "char", "character") and b == "text")
