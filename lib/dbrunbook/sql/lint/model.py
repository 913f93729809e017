"""A model of what a migration does, built from its parsed statements: tables and columns with
their types, keys, foreign keys, indexes, checks, triggers and what each statement creates.
Built over a chain, it follows renames and drops."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from ..statements import Statement

_TYPE_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "int": "integer", "varchar": "character varying",
               "bpchar": "character", "char": "character", "bool": "boolean", "timestamptz": "timestamp with time zone",
               "serial4": "serial", "serial8": "bigserial"}


LiveColumns = dict[str, dict[str, tuple[str, int | None]]]  # table -> column -> (type, length)


@dataclass
class Column:
    table: str
    name: str
    type: str
    length: int | None
    stmt: Statement
    references: tuple[str, str] | None = None  # (table, column)


@dataclass
class Model:
    """What the statements create, by name, with the statement that does it. Built over a chain
    (``build_model(statements, base)``), it follows renames and drops, so a table created as
    ``x_temp`` and renamed to ``x`` is ``x`` for every later file."""

    columns: list[Column] = field(default_factory=list)
    # (table, columns, referenced table, referenced columns, statement, constraint name)
    foreign_keys: list[tuple[str, list[str], str, list[str], Statement]] = field(default_factory=list)
    fk_names: dict[int, str] = field(default_factory=dict)  # id of a foreign_keys entry -> its name
    primary_keys: dict[str, list[str]] = field(default_factory=dict)
    partitions: dict[str, str] = field(default_factory=dict)  # partition -> partitioned table
    partitioned: set[str] = field(default_factory=set)  # tables declared PARTITION BY
    indexes: list[tuple[str, list[str], Statement]] = field(default_factory=list)
    checks: list[tuple[str, Any, Statement]] = field(default_factory=list)
    created: list[tuple[str, str, str, Statement]] = field(default_factory=list)  # (kind, name, table, stmt)
    tables: dict[str, dict[str, Column]] = field(default_factory=dict)
    triggers: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (table, function)

    def column(self, table: str, name: str) -> Column | None:
        return self.tables.get(table, {}).get(name)

    def copy(self) -> Model:
        """The model as it is now, its containers copied: building more onto this one leaves the
        copy's tables, keys and partitions as they were (the columns themselves are shared)."""
        return Model(list(self.columns), list(self.foreign_keys), dict(self.fk_names), dict(self.primary_keys),
                     dict(self.partitions), set(self.partitioned), list(self.indexes), list(self.checks),
                     list(self.created), {t: dict(c) for t, c in self.tables.items()}, dict(self.triggers))


def _type(type_name: Any) -> tuple[str, int | None]:
    names = [n.sval for n in type_name.names if n.sval != "pg_catalog"]
    base = _TYPE_NAMES.get(names[-1], names[-1]) if names else "?"
    length = None
    if type_name.typmods:
        first = type_name.typmods[0]
        value = getattr(getattr(first, "val", None), "ival", None)
        length = int(value) if value is not None else None
    return base, length


def _rel(node: Any) -> str:
    return str(node.relname)


def _strs(values: Any) -> list[str]:
    return [str(v.sval) for v in values or ()]


def _add_column(model: Model, table: str, coldef: Any, stmt: Statement) -> None:
    base, length = _type(coldef.typeName)
    column = Column(table, str(coldef.colname), base, length, stmt)
    for constraint in coldef.constraints or ():
        if constraint.contype == ConstrType.CONSTR_FOREIGN:
            ref_cols = _strs(constraint.pk_attrs) or ["id"]
            column.references = (_rel(constraint.pktable), ref_cols[0])
            _add_fk(model, (table, [column.name], _rel(constraint.pktable), ref_cols, stmt),
                    str(constraint.conname or f"{table}_{column.name}_fkey"))
        elif constraint.contype == ConstrType.CONSTR_CHECK:
            model.checks.append((table, constraint.raw_expr, stmt))
        elif constraint.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            model.indexes.append((table, [column.name], stmt))  # backed by an index
            if constraint.contype == ConstrType.CONSTR_PRIMARY:
                model.primary_keys[table] = [column.name]
    model.columns.append(column)
    model.tables.setdefault(table, {})[column.name] = column


def _add_fk(model: Model, fk: tuple[str, list[str], str, list[str], Statement], name: str) -> None:
    model.foreign_keys.append(fk)
    model.fk_names[id(fk)] = name


def _table_constraint(model: Model, table: str, constraint: Any, stmt: Statement) -> None:
    if constraint.contype == ConstrType.CONSTR_FOREIGN:
        columns = _strs(constraint.fk_attrs)
        _add_fk(model, (table, columns, _rel(constraint.pktable), _strs(constraint.pk_attrs) or ["id"], stmt),
                str(constraint.conname or f"{table}_{'_'.join(columns)}_fkey"))
    elif constraint.contype == ConstrType.CONSTR_CHECK:
        model.checks.append((table, constraint.raw_expr, stmt))
    elif constraint.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
        model.indexes.append((table, _strs(constraint.keys), stmt))  # backed by an index
        if constraint.contype == ConstrType.CONSTR_PRIMARY:
            model.primary_keys[table] = _strs(constraint.keys)
    if constraint.conname:
        model.created.append(("constraint", str(constraint.conname), table, stmt))


def build_model(statements: list[Statement], base: Model | None = None) -> Model:
    """What the statements make; over ``base`` (changed in place) for a chain of files."""
    model = base if base is not None else Model()
    for stmt in statements:
        node: Any = stmt.node
        if isinstance(node, ast.CreateStmt):
            table = _rel(node.relation)
            model.tables.setdefault(table, {})
            model.created.append(("table", table, table, stmt))
            if node.partbound is not None and node.inhRelations:
                model.partitions[table] = _rel(node.inhRelations[0])
            if node.partspec is not None:
                model.partitioned.add(table)
            for element in node.tableElts or ():
                if isinstance(element, ast.ColumnDef):
                    _add_column(model, table, element, stmt)
                elif isinstance(element, ast.Constraint):
                    _table_constraint(model, table, element, stmt)
        elif isinstance(node, ast.AlterTableStmt):
            table = _rel(node.relation)
            for cmd in node.cmds or ():
                if cmd.subtype == AlterTableType.AT_AddColumn:
                    _add_column(model, table, cmd.def_, stmt)
                    model.created.append(("column", str(cmd.def_.colname), table, stmt))
                elif cmd.subtype == AlterTableType.AT_AddConstraint:
                    _table_constraint(model, table, cmd.def_, stmt)
                elif cmd.subtype == AlterTableType.AT_DropColumn and cmd.name:
                    model.tables.get(table, {}).pop(str(cmd.name), None)
                elif cmd.subtype == AlterTableType.AT_DropConstraint and cmd.name:
                    _drop_fk(model, table, str(cmd.name))
                elif cmd.subtype == AlterTableType.AT_AlterColumnType and cmd.name and isinstance(cmd.def_, ast.ColumnDef):
                    found = model.column(table, str(cmd.name))
                    if found is not None:
                        found.type, found.length = _type(cmd.def_.typeName)
                elif cmd.subtype == AlterTableType.AT_AttachPartition and isinstance(cmd.def_, ast.PartitionCmd):
                    model.partitions[_rel(cmd.def_.name)] = table
        elif isinstance(node, ast.RenameStmt) and node.relation is not None:
            _rename(model, node)
        elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            for obj in node.objects or ():
                name = _strs(obj)[-1]
                model.tables.pop(name, None)
                model.foreign_keys = [fk for fk in model.foreign_keys if fk[0] != name]
        elif isinstance(node, ast.IndexStmt):
            columns = [str(p.name) for p in node.indexParams or () if p.name]
            model.indexes.append((_rel(node.relation), columns, stmt))
            if node.idxname:
                model.created.append(("index", str(node.idxname), _rel(node.relation), stmt))
        elif isinstance(node, ast.CreateTrigStmt):
            function = _strs(node.funcname)[-1]
            model.triggers[str(node.trigname)] = (_rel(node.relation), function)
            model.created.append(("trigger", str(node.trigname), _rel(node.relation), stmt))
        elif isinstance(node, ast.CreateFunctionStmt):
            model.created.append(("function", _strs(node.funcname)[-1], "", stmt))
    return model


def _drop_fk(model: Model, table: str, name: str) -> None:
    model.foreign_keys = [fk for fk in model.foreign_keys if not (fk[0] == table and model.fk_names.get(id(fk)) == name)]


def _rename(model: Model, node: Any) -> None:
    """``ALTER TABLE a RENAME TO b`` and ``RENAME COLUMN``: later files see the new names."""
    table = _rel(node.relation)
    if node.renameType == ObjectType.OBJECT_TABLE and node.newname:
        new = str(node.newname)
        if table in model.tables:
            model.tables[new] = model.tables.pop(table)
            for column in model.tables[new].values():
                column.table = new
        model.foreign_keys = [(new if t == table else t, c, new if r == table else r, rc, st)
                              for t, c, r, rc, st in model.foreign_keys]
        if table in model.primary_keys:
            model.primary_keys[new] = model.primary_keys.pop(table)
        model.indexes = [(new if t == table else t, c, st) for t, c, st in model.indexes]
        model.partitions = {(new if k == table else k): (new if v == table else v) for k, v in model.partitions.items()}
    elif node.renameType == ObjectType.OBJECT_COLUMN and node.subname and node.newname:
        columns = model.tables.get(table, {})
        if str(node.subname) in columns:
            column = columns.pop(str(node.subname))
            column.name = str(node.newname)
            columns[column.name] = column


def model_columns(model: Model) -> LiveColumns:
    """The model's tables as a catalog the rules read (the schema a chain has built so far)."""
    return {table: {name: (col.type, col.length) for name, col in cols.items()} for table, cols in model.tables.items()}


def model_indexes(model: Model) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for table, cols, _ in model.indexes:
        out.setdefault(table, []).append(cols)
    return out
