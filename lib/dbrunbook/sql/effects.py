"""What a statement leaves in the catalog, and whether it is there already.

A run that stopped part-way (killed, interrupted, a failed step after earlier ones committed)
resumes by asking, for each statement, whether its effect is in place: a column, an index (an
INVALID one left by a killed ``CREATE INDEX CONCURRENTLY`` is dropped and rebuilt), a constraint
(present ``NOT VALID`` or validated), a trigger, a function, a type, an enum value, a table, a
sequence, a view, an extension, a schema, a rename. A rollback that undoes a part-way migration
asks the same question the other way round: a ``DROP`` whose object is already gone is done.
Statements with no catalog effect to look for (``COMMENT ON``, ``CREATE OR REPLACE``, ``SET NOT
NULL``, data changes) are run again: they are idempotent or cannot be told apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ObjectType

from .statements import Statement

DONE, TODO, INVALID, RERUN = "done", "todo", "invalid", "rerun"


@dataclass(frozen=True)
class Effect:
    """One object a statement creates (``present``) or drops (``present=False``)."""

    kind: str                  # table, column, index, constraint, trigger, function, type, enum value,
    #                            sequence, view, extension, schema, rename, rename column
    name: str                  # the object (schema-qualified where it is a relation)
    relation: str | None = None  # the table it belongs to (columns, indexes, constraints, triggers)
    present: bool = True
    validated: bool = False    # a constraint that must be validated, not merely present
    old: str | None = None     # a rename's old name

    def __str__(self) -> str:
        verb = "exists" if self.present else "is gone"
        on = f" on {self.relation}" if self.relation else ""
        return f"{self.kind} {self.name}{on} {verb}"


def _qualified(rel: Any) -> str:
    return f"{rel.schemaname}.{rel.relname}" if getattr(rel, "schemaname", None) else str(rel.relname)


def _names(obj: Any) -> list[str]:
    items = obj if isinstance(obj, tuple) else (obj,)
    return [str(getattr(n, "sval", n)) for n in items if n is not None]


def _dotted(names: list[str]) -> str:
    return ".".join(names)


_DROP_KINDS = {
    ObjectType.OBJECT_TABLE: "table", ObjectType.OBJECT_INDEX: "index", ObjectType.OBJECT_SEQUENCE: "sequence",
    ObjectType.OBJECT_VIEW: "view", ObjectType.OBJECT_MATVIEW: "view", ObjectType.OBJECT_TYPE: "type",
    ObjectType.OBJECT_DOMAIN: "type", ObjectType.OBJECT_FUNCTION: "function", ObjectType.OBJECT_PROCEDURE: "function",
    ObjectType.OBJECT_TRIGGER: "trigger", ObjectType.OBJECT_EXTENSION: "extension", ObjectType.OBJECT_SCHEMA: "schema",
}


def _drop_effects(node: Any) -> list[Effect] | None:
    kind = _DROP_KINDS.get(node.removeType)
    if kind is None:
        return None
    out = []
    for obj in node.objects or ():
        if kind == "function":
            names = _names(obj.objname)
        elif kind == "type":
            names = _names(obj.names if isinstance(obj, ast.TypeName) else obj)
        else:
            names = _names(obj)
        if not names:
            return None
        if kind == "trigger":
            out.append(Effect("trigger", names[-1], _dotted(names[:-1]), present=False))
        else:
            out.append(Effect(kind, _dotted(names), present=False))
    return out


def _alter_effects(node: Any) -> list[Effect] | None:
    table = _qualified(node.relation)
    out: list[Effect] = []
    for cmd in node.cmds or ():
        definition = cmd.def_
        if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(definition, ast.ColumnDef):
            out.append(Effect("column", str(definition.colname), table))
        elif cmd.subtype == AlterTableType.AT_DropColumn and cmd.name:
            out.append(Effect("column", str(cmd.name), table, present=False))
        elif cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(definition, ast.Constraint) \
                and definition.conname:
            out.append(Effect("constraint", str(definition.conname), table))
        elif cmd.subtype == AlterTableType.AT_DropConstraint and cmd.name:
            out.append(Effect("constraint", str(cmd.name), table, present=False))
        elif cmd.subtype == AlterTableType.AT_ValidateConstraint and cmd.name:
            out.append(Effect("constraint", str(cmd.name), table, validated=True))
    # One ALTER TABLE commits all its subcommands or none: what can be looked for decides.
    return out or None


def effects_of(node: Any) -> list[Effect] | None:
    """The catalog effects of one parsed statement; None when there is nothing to look for."""
    if isinstance(node, ast.CreateStmt):
        return [Effect("table", _qualified(node.relation))]
    if isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        return [Effect("table", _qualified(node.into.rel))]
    if isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        return _alter_effects(node)
    if isinstance(node, ast.IndexStmt) and node.idxname:
        table = _qualified(node.relation)
        schema = getattr(node.relation, "schemaname", None)
        return [Effect("index", f"{schema}.{node.idxname}" if schema else str(node.idxname), table)]
    if isinstance(node, ast.DropStmt):
        return _drop_effects(node)
    if isinstance(node, ast.CreateTrigStmt) and not node.replace:
        return [Effect("trigger", str(node.trigname), _qualified(node.relation))]
    if isinstance(node, ast.CreateFunctionStmt) and not node.replace:
        return [Effect("function", _dotted(_names(node.funcname)))]
    if isinstance(node, ast.CreateEnumStmt):
        return [Effect("type", _dotted(_names(node.typeName)))]
    if isinstance(node, ast.CompositeTypeStmt):
        return [Effect("type", _qualified(node.typevar))]
    if isinstance(node, ast.CreateDomainStmt):
        return [Effect("type", _dotted(_names(node.domainname)))]
    if isinstance(node, ast.AlterEnumStmt) and node.newVal and not node.oldVal:
        return [Effect("enum value", str(node.newVal), _dotted(_names(node.typeName)))]
    if isinstance(node, ast.CreateSeqStmt):
        return [Effect("sequence", _qualified(node.sequence))]
    if isinstance(node, ast.ViewStmt) and not node.replace:
        return [Effect("view", _qualified(node.view))]
    if isinstance(node, ast.CreateExtensionStmt):
        return [Effect("extension", str(node.extname))]
    if isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
        return [Effect("schema", str(node.schemaname))]
    if isinstance(node, ast.RenameStmt) and node.relation is not None:
        table = _qualified(node.relation)
        if node.renameType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_INDEX, ObjectType.OBJECT_SEQUENCE,
                               ObjectType.OBJECT_VIEW):
            schema = getattr(node.relation, "schemaname", None)
            new = f"{schema}.{node.newname}" if schema else str(node.newname)
            return [Effect("rename", new, old=table)]
        if node.renameType == ObjectType.OBJECT_COLUMN:
            return [Effect("rename column", str(node.newname), table, old=str(node.subname))]
    return None


def statement_effects(statement: Statement) -> list[Effect] | None:
    return effects_of(statement.node)


# -- probes (psycopg, autocommit or inside the caller's transaction) --------------------------------

def regclass(conn: Any, name: str) -> int | None:
    """The oid of a relation named ``name`` (``schema.name`` or ``name``), or None."""
    from psycopg import sql

    parts = name.split(".")
    ident = sql.Identifier(*parts).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s)::oid", (ident,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _regtype(conn: Any, name: str) -> int | None:
    from psycopg import sql

    ident = sql.Identifier(*name.split(".")).as_string(conn)
    row = conn.execute("SELECT to_regtype(%s)::oid", (ident,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _exists(conn: Any, query: str, params: tuple[Any, ...]) -> bool:
    return conn.execute(query, params).fetchone() is not None


def _present(conn: Any, e: Effect) -> str:
    """DONE when the object is there (as the effect needs it), INVALID for an invalid index."""
    if e.kind in ("table", "sequence", "view"):
        return DONE if regclass(conn, e.name) else TODO
    if e.kind == "rename":
        return DONE if regclass(conn, e.name) and not regclass(conn, e.old or "") else TODO
    if e.kind in ("type",):
        return DONE if _regtype(conn, e.name) else TODO
    if e.kind == "enum value":
        oid = _regtype(conn, e.relation or "")
        return DONE if oid and _exists(conn, "SELECT 1 FROM pg_enum WHERE enumtypid = %s AND enumlabel = %s",
                                       (oid, e.name)) else TODO
    if e.kind == "extension":
        return DONE if _exists(conn, "SELECT 1 FROM pg_extension WHERE extname = %s", (e.name,)) else TODO
    if e.kind == "schema":
        return DONE if _exists(conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (e.name,)) else TODO
    if e.kind == "function":
        schema, _, name = e.name.rpartition(".")
        return DONE if _exists(conn, "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = "
                               "coalesce(to_regnamespace(%s)::oid, (SELECT oid FROM pg_namespace WHERE nspname = "
                               "current_schema()))", (name, schema or None)) else TODO
    if e.kind == "index shell":  # CREATE INDEX ... ON ONLY a partitioned table: invalid until attached
        return DONE if regclass(conn, e.name) else TODO
    if e.kind == "attached index":  # ALTER INDEX parent ATTACH PARTITION child
        parent, child = regclass(conn, e.relation or ""), regclass(conn, e.name)
        return DONE if parent and child and _exists(conn, "SELECT 1 FROM pg_inherits WHERE inhrelid = %s AND "
                                                       "inhparent = %s", (child, parent)) else TODO
    if e.kind == "index" and e.relation is None:  # DROP INDEX names the index alone
        return DONE if regclass(conn, e.name) else TODO
    table = regclass(conn, e.relation or "")
    if table is None:
        return TODO
    if e.kind == "column":
        return DONE if _exists(conn, "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s "
                               "AND NOT attisdropped", (table, e.name)) else TODO
    if e.kind == "rename column":
        new = _exists(conn, "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s AND NOT attisdropped",
                      (table, e.name))
        old = _exists(conn, "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s AND NOT attisdropped",
                      (table, e.old))
        return DONE if new and not old else TODO
    if e.kind == "index":
        row = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE i.indrelid = %s AND c.relname = %s", (table, e.name.rpartition(".")[2])).fetchone()
        return TODO if row is None else (DONE if row[0] else INVALID)
    if e.kind == "constraint":
        row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conrelid = %s AND conname = %s",
                           (table, e.name)).fetchone()
        if row is None:
            return TODO
        return DONE if row[0] or not e.validated else TODO
    if e.kind == "trigger":
        return DONE if _exists(conn, "SELECT 1 FROM pg_trigger WHERE tgrelid = %s AND tgname = %s AND NOT tgisinternal",
                               (table, e.name)) else TODO
    return TODO


def effect_state(conn: Any, e: Effect) -> str:
    """DONE, TODO or INVALID for one effect, in the direction it goes."""
    found = _present(conn, e)
    if e.present:
        return found
    if e.kind == "index" and found == INVALID:
        return TODO
    return TODO if found == DONE else DONE


def state_of(conn: Any, effects: list[Effect] | None) -> str:
    """DONE when every effect is in place, INVALID when an index is invalid, RERUN when there
    is nothing to look for, else TODO."""
    if not effects:
        return RERUN
    states = [effect_state(conn, e) for e in effects]
    if INVALID in states:
        return INVALID
    return DONE if all(s == DONE for s in states) else TODO


def drop_invalid_index(conn: Any, e: Effect, concurrently: bool = True) -> None:
    """Drop the invalid index a killed ``CREATE INDEX CONCURRENTLY`` left, so it is built again."""
    from psycopg import sql

    table = e.relation or ""
    schema = table.rpartition(".")[0]
    name = e.name.rpartition(".")[2]
    ident = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    how = sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL("")
    conn.execute(sql.SQL("DROP INDEX {}IF EXISTS {}").format(how, ident))
