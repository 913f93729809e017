"""Lint: what a reviewer of a migration should catch before anything runs.

Two sources of findings, one table. Unsafe DDL comes from squawk (the ``squawk-cli`` wheel, its
JSON reporter): we do not re-implement its rules. Our own rules read the statements as parsed
by PostgreSQL's own parser (pglast) and know about the rest of the project: the migrations
already numbered, the tables created earlier in the same migration, and (given a target) the
live catalog. Seed 001 is the model: a review that found, by reading, a migration number that
was taken, customer and user references stored as VARCHAR, and a CHECK near a VARCHAR limit.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType

from ..errors import DbrunbookError, SpecError
from .statements import Statement, read_statements

if TYPE_CHECKING:
    import pandas as pd

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (INFO, WARNING, ERROR)
FINDING_COLUMNS = ["severity", "rule", "where", "statement", "message", "fix"]
_NUMBERED = re.compile(r"^(\d{3,})_(.+)\.sql$")
# Type families: a reference between two of them is wrong whatever the widths.
_FAMILIES = {
    "uuid": "uuid",
    "smallint": "integer", "integer": "integer", "bigint": "integer", "serial": "integer", "bigserial": "integer",
    "text": "text", "character varying": "text", "character": "text",
}
_TYPE_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "int": "integer", "varchar": "character varying",
               "bpchar": "character", "char": "character", "bool": "boolean", "timestamptz": "timestamp with time zone",
               "serial4": "serial", "serial8": "bigserial"}


LiveColumns = dict[str, dict[str, tuple[str, int | None]]]  # table -> column -> (type, length)


@dataclass(frozen=True)
class Finding:
    severity: str
    rule: str
    file: str
    line: int | None
    statement: str
    message: str
    fix: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.rule}: {self.message}"


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    import pandas as pd  # for the notebook's table; `run` and `lint` do not need it

    return pd.DataFrame([{"severity": f.severity, "rule": f.rule, "where": f.where, "statement": f.statement,
                          "message": f.message, "fix": f.fix} for f in findings], columns=FINDING_COLUMNS)


def reaches(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether any finding is at least as severe as ``fail_on``."""
    floor = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(f.severity) >= floor for f in findings)


# -- squawk ---------------------------------------------------------------------------------------------

def squawk_binary() -> Path:
    beside = Path(sys.executable).parent / "squawk"
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which("squawk")) else None)
    if found is None:
        raise DbrunbookError("squawk not found (pip install squawk-cli, as requirements.txt does)")
    return found


@dataclass(frozen=True)
class SquawkOptions:
    """How squawk is run: its rule selection, and whether it is told the script runs in one
    transaction (``None``: tell it so for every file whose statements can, as the schema phase
    runs them)."""

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    assume_in_transaction: bool | None = None


def squawk_findings(files: list[Path], pg_version: str | None = None,
                    names: dict[Path, str] | None = None, options: SquawkOptions | None = None) -> list[Finding]:
    """squawk's findings for these files, with the line of the statement they are about."""
    options = options or SquawkOptions()
    statements = {f: _statements_or_none(f, (names or {}).get(f, f.name)) for f in files}
    groups: dict[bool, list[Path]] = {}
    for f in files:
        found = statements[f]
        # A file that runs in the phase's transaction is linted as such: no "can't be rerun"
        # for what the transaction makes atomic, and the in-transaction rules where they apply.
        in_transaction = options.assume_in_transaction if options.assume_in_transaction is not None else \
            bool(found) and all(s.transactional for s in found or ())
        groups.setdefault(in_transaction, []).append(f)
    out = []
    for in_transaction, group in groups.items():
        out += _run_squawk(group, pg_version, names, options, in_transaction, statements)
    return out


def _statements_or_none(path: Path, name: str) -> list[Statement] | None:
    try:
        return read_statements(path, "postgresql", name)
    except SpecError:
        return None


def _run_squawk(files: list[Path], pg_version: str | None, names: dict[Path, str] | None, options: SquawkOptions,
                in_transaction: bool, statements: dict[Path, list[Statement] | None]) -> list[Finding]:
    if not files:
        return []
    args = [str(squawk_binary()), "--reporter", "json"]
    if pg_version:
        args.append(f"--pg-version={pg_version}")
    if options.exclude:
        args.append(f"--exclude={','.join(options.exclude)}")
    if options.include:
        args.append(f"--include={','.join(options.include)}")
    if in_transaction:
        args.append("--assume-in-transaction")
    done = subprocess.run(args + [str(f) for f in files], capture_output=True, text=True, timeout=300)
    try:
        raw = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise DbrunbookError(f"squawk failed: {(done.stderr or done.stdout).strip()[:300]}") from None
    out = []
    for item in raw:
        path = Path(item["file"])
        line = int(item.get("line") or 0) + 1
        stmt = _statement_at(statements.get(path) or [], line)
        out.append(Finding(ERROR if str(item.get("level", "")).lower() == "error" else WARNING,
                           f"squawk:{item['rule_name']}", (names or {}).get(path, path.name),
                           stmt.line if stmt else line, stmt.summary if stmt else "", item["message"],
                           _with_deploy_note(item["rule_name"], item.get("help") or "")))
    return out


# squawk rules whose remedy the deploy phase applies by itself (online.derive_steps and its lock
# policy): the finding stands for the script as written, and the reviewer learns what deploy does.
DEPLOY_HANDLES = {
    "require-concurrent-index-creation": "an index on an existing table is built CONCURRENTLY",
    "adding-foreign-key-constraint": "a foreign key is added NOT VALID, then validated",
    "require-lock-timeout": "every step runs under lock_timeout, with retries",
    "require-statement-timeout": "every step runs under statement_timeout",
}


def _with_deploy_note(rule: str, help_text: str) -> str:
    note = DEPLOY_HANDLES.get(rule)
    return f"{help_text} (the deploy phase does this: {note})".strip() if note else help_text


def _statement_at(statements: list[Statement], line: int) -> Statement | None:
    before = [s for s in statements if s.line <= line]
    return before[-1] if before else None


# -- a model of what a migration does -------------------------------------------------------------------

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
        node: Any = parse_sql(stmt.text)[0].stmt
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


# -- our rules -------------------------------------------------------------------------------------------

def _finding(severity: str, rule: str, stmt: Statement, message: str, fix: str = "") -> Finding:
    return Finding(severity, rule, stmt.file, stmt.line, stmt.summary, message, fix)


def check_numbering(proposed: list[Path], existing: list[Path], names: dict[Path, str] | None = None) -> list[Finding]:
    """A proposed migration number must be free and after the latest existing one."""
    taken = {int(m.group(1)): p.name for p in existing if (m := _NUMBERED.match(p.name))}
    latest = max(taken, default=-1)
    width = max((len(m.group(1)) for p in [*existing, *proposed] if (m := _NUMBERED.match(p.name))), default=3)
    out, next_free = [], latest + 1
    for path in sorted(proposed):
        found = _NUMBERED.match(path.name)
        if not found:
            continue
        number = int(found.group(1))
        if number in taken or number <= latest:
            suggestion = f"{next_free:0{width}d}_{found.group(2)}.sql"
            why = f"{number:0{width}d} already exists ({taken[number]})" if number in taken else \
                f"{number:0{width}d} is not after the latest existing migration"
            out.append(Finding(ERROR, "migration-numbering", (names or {}).get(path, path.name), None, "",
                               f"{why}; the latest is {taken.get(latest, latest)}",
                               f"rename to {suggestion}"))
            next_free += 1
    return out


def _lookup(model: Model, live: LiveColumns, table: str, column: str) -> tuple[str, int | None] | None:
    found = model.column(table, column)
    if found is not None:
        return found.type, found.length
    return live.get(table, {}).get(column)


def _describe(kind: tuple[str, int | None]) -> str:
    return f"{kind[0]}({kind[1]})" if kind[1] else kind[0]


def _referenced_table(name: str, tables: Iterable[str]) -> str | None:
    """The table a column name like ``customerId`` or ``user_id`` points at, if one exists."""
    stem = re.sub(r"(_id|Id|ID)$", "", name)
    if not stem or stem == name:
        return None
    candidates = {stem.lower(), stem.lower() + "s", stem.lower() + "es"}
    return next((t for t in sorted(tables) if t.lower() in candidates), None)


_WIDTH = {"smallint": 16, "smallserial": 16, "integer": 32, "serial": 32, "bigint": 64, "bigserial": 64}
_PLAIN = {"serial": "integer", "bigserial": "bigint", "smallserial": "smallint"}


def _mismatch(table: str, column: str, mine: tuple[str, int | None], ref_table: str, ref_column: str,
              theirs: tuple[str, int | None], stmt: Statement) -> Finding | None:
    """A reference whose type differs from its key: another family (an error), or the same family
    at another width (a narrower child cannot hold the parent's keys: an error; a wider child means
    the parent overflows first, and widening it later rewrites both: a warning)."""
    family_mine, family_theirs = _FAMILIES.get(mine[0], mine[0]), _FAMILIES.get(theirs[0], theirs[0])
    where = f'{table}."{column}" is {_describe(mine)} but references {ref_table}.{ref_column}, which is {_describe(theirs)}'
    if family_mine != family_theirs:
        return _finding(ERROR, "fk-type-mismatch", stmt, where, f"declare {column} as {_PLAIN.get(theirs[0], theirs[0])}")
    if mine[0] in _WIDTH and theirs[0] in _WIDTH and _WIDTH[mine[0]] != _WIDTH[theirs[0]]:
        wide = max(mine[0], theirs[0], key=lambda t: _WIDTH[t])
        wide = _PLAIN.get(wide, wide)
        if _WIDTH[mine[0]] < _WIDTH[theirs[0]]:
            return _finding(ERROR, "fk-width-mismatch", stmt, where + f": keys above {_describe(mine)}'s range cannot "
                            "be referenced", f"declare {column} as {wide}")
        return _finding(WARNING, "fk-width-mismatch", stmt, where + f": {ref_table}.{ref_column} overflows long before "
                        f"{column} does, and widening it later rewrites {ref_table} and every table referencing it",
                        f"make {ref_table}.{ref_column} {wide} too (or {column} {_PLAIN.get(theirs[0], theirs[0])})")
    if family_mine == "text" and mine[1] and (theirs[1] is None or mine[1] < theirs[1]):
        return _finding(WARNING, "fk-width-mismatch", stmt, where + ": longer keys cannot be referenced",
                        f"declare {column} as {_describe(theirs)}")
    return None


def _own_key(model: Model, table: str, column: str, target: str) -> bool:
    """A column that is its table's own key, not a reference: part of the table's primary key, or
    a partition's copy of its parent's key (``payment_p2022_01.payment_id``)."""
    if column in model.primary_keys.get(table, []):
        return True
    parent = model.partitions.get(table)
    return parent is not None and (parent == target or column in model.primary_keys.get(parent, []))


def check_references(model: Model, live: LiveColumns, history: Model | None = None) -> list[Finding]:
    """Foreign keys whose column types differ from what they reference (family or width), and
    columns that look like references (``customerId``) but have no foreign key. ``history``: the
    model the earlier migrations built (primary keys, partitions), when linting a chain."""
    out = []
    tables = set(model.tables) | set(live)
    known = Model(primary_keys={**(history.primary_keys if history else {}), **model.primary_keys},
                  partitions={**(history.partitions if history else {}), **model.partitions})
    fk_columns = {(t, c) for t, cols, _, _, _ in model.foreign_keys for c in cols}
    for table, columns, ref_table, ref_columns, stmt in model.foreign_keys:
        for column, ref_column in zip(columns, ref_columns, strict=False):
            mine, theirs = _lookup(model, live, table, column), _lookup(model, live, ref_table, ref_column)
            if mine and theirs:
                found = _mismatch(table, column, mine, ref_table, ref_column, theirs, stmt)
                if found is not None:
                    out.append(found)
    for col in model.columns:
        if col.name.lower() == "id" or (col.table, col.name) in fk_columns:
            continue
        target = _referenced_table(col.name, tables - {col.table})
        if target is None or _own_key(known, col.table, col.name, target):
            continue
        theirs = _lookup(model, live, target, "id")
        mine = (col.type, col.length)
        if theirs and _FAMILIES.get(mine[0], mine[0]) != _FAMILIES.get(theirs[0], theirs[0]):
            out.append(_finding(ERROR, "fk-type-mismatch", col.stmt,
                                f'{col.table}."{col.name}" is {_describe(mine)} but {target}.id is '
                                f"{_describe(theirs)}: it stores something other than the key it names",
                                f'"{col.name}" {theirs[0].upper()} REFERENCES "{target}"(id)'))
        out.append(_finding(WARNING, "reference-without-fk", col.stmt,
                            f'{col.table}."{col.name}" looks like a reference to {target} but has no '
                            "foreign key: nothing keeps it consistent", f'add REFERENCES "{target}"(id)'))
    return out


def _check_literals(expr: Any) -> tuple[str | None, list[str]]:
    """(column, string literals) of ``col IN ('a', 'b')`` or ``col = 'a'`` expressions."""
    column, literals = None, []
    stack = [expr]
    while stack:
        node: Any = stack.pop()
        if isinstance(node, ast.ColumnRef) and column is None:
            fields: Any = node.fields
            column = str(fields[-1].sval)
        elif isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
            literals.append(str(node.val.sval))
        elif isinstance(node, ast.Node):
            stack.extend(v for v in (getattr(node, a) for a in node) if v is not None)
        elif isinstance(node, tuple):
            stack.extend(node)
    return column, literals


def check_check_literals(model: Model, live: LiveColumns) -> list[Finding]:
    """A CHECK that allows a value longer than its VARCHAR column can hold."""
    out = []
    for table, expr, stmt in model.checks:
        column, literals = _check_literals(expr)
        kind = _lookup(model, live, table, column) if column else None
        if not kind or kind[0] != "character varying" or not kind[1]:
            continue
        too_long = [lit for lit in literals if len(lit) > kind[1]]
        if too_long:
            out.append(_finding(ERROR, "check-literal-too-long", stmt,
                                f"{table}.{column} is VARCHAR({kind[1]}) but the CHECK allows "
                                + ", ".join(f"'{v}' ({len(v)} characters)" for v in too_long),
                                f"widen {column} to VARCHAR({max(len(v) for v in too_long)}) or more"))
    return out


def check_partitioned_indexes(model: Model, history: Model | None = None) -> list[Finding]:
    """An index on a partitioned table: what deploy will do with it, said before it runs."""
    partitioned = model.partitioned | (history.partitioned if history else set())
    out = []
    for table, _, stmt in model.indexes:
        node: Any = parse_sql(stmt.text)[0].stmt
        if isinstance(node, ast.IndexStmt) and table in partitioned and table not in model.partitioned:
            out.append(_finding(INFO, "partitioned-index", stmt,
                                f"{table} is partitioned: PostgreSQL cannot build an index CONCURRENTLY through it; "
                                f"deploy creates it ON ONLY {table}, builds it CONCURRENTLY on each partition, then "
                                "attaches each one", "nothing to change: deploy derives this form"))
    return out


def check_fk_indexes(model: Model, live_indexes: dict[str, list[list[str]]]) -> list[Finding]:
    """A foreign key whose columns lead no index: deletes on the parent scan the child."""
    out = []
    for table, columns, ref_table, _, stmt in model.foreign_keys:
        indexed = [cols for t, cols, _ in model.indexes if t == table] + live_indexes.get(table, [])
        if not any(cols[:len(columns)] == columns for cols in indexed):
            out.append(_finding(WARNING, "fk-without-index", stmt,
                                f"{table}({', '.join(columns)}) references {ref_table} but no index starts with "
                                f"{', '.join(columns)}: a delete on {ref_table} scans {table}",
                                f'CREATE INDEX ON "{table}" ({", ".join(columns)})'))
    return out


def _drops(statements: list[Statement]) -> list[tuple[str, str, str, Statement]]:
    """(kind, name, table, stmt) of everything a rollback script removes."""
    kinds = {ObjectType.OBJECT_TABLE: "table", ObjectType.OBJECT_INDEX: "index",
             ObjectType.OBJECT_FUNCTION: "function", ObjectType.OBJECT_TRIGGER: "trigger"}
    out = []
    for stmt in statements:
        node: Any = parse_sql(stmt.text)[0].stmt
        if isinstance(node, ast.DropStmt) and node.removeType in kinds:
            kind = kinds[node.removeType]
            for obj in node.objects or ():
                if kind == "function":
                    out.append((kind, _strs(obj.objname)[-1], "", stmt))
                elif kind == "trigger":
                    names = _strs(obj)
                    out.append((kind, names[-1], names[-2] if len(names) > 1 else "", stmt))
                else:
                    out.append((kind, _strs(obj)[-1], "", stmt))
        elif isinstance(node, ast.AlterTableStmt):
            for cmd in node.cmds or ():
                if cmd.subtype == AlterTableType.AT_DropColumn:
                    out.append(("column", str(cmd.name), _rel(node.relation), stmt))
                elif cmd.subtype == AlterTableType.AT_DropConstraint:
                    out.append(("constraint", str(cmd.name), _rel(node.relation), stmt))
                elif cmd.subtype == AlterTableType.AT_AddConstraint and cmd.def_.conname:
                    # Re-adding a constraint the migration replaced restores it.
                    out.append(("constraint", str(cmd.def_.conname), _rel(node.relation), stmt))
    return out


def check_rollback(forward: list[Statement], rollback: list[Statement] | None, rollback_name: str) -> list[Finding]:
    """The rollback exists, undoes everything the forward script creates, in an order that works."""
    if not rollback:
        what = "is missing" if rollback is None else "has no statements"
        return [Finding(ERROR, "rollback-missing", rollback_name, None, "", f"the rollback script {what}",
                        "write the statements that undo the migration, in reverse order")]
    model = build_model(forward)
    drops = _drops(rollback)
    dropped_tables = {name for kind, name, _, _ in drops if kind == "table"}
    out = []
    for kind, name, table, stmt in model.created:
        if table in dropped_tables and kind != "function":
            continue  # goes with its table
        if not any(k == kind and n == name for k, n, _, _ in drops):
            out.append(_finding(ERROR, "rollback-incomplete", stmt,
                                f"the migration creates {kind} {name}" + (f" on {table}" if table and kind != "table" else "")
                                + f" and {rollback_name} does not remove it",
                                f"add a DROP for {kind} {name} to {rollback_name}"))
    position = {(k, n): i for i, (k, n, _, _) in enumerate(drops)}
    for trigger, (table, function) in model.triggers.items():
        f_at, t_at = position.get(("function", function)), position.get(("trigger", trigger))
        table_at = position.get(("table", table))
        trigger_gone = min(i for i in (t_at, table_at) if i is not None) if (t_at, table_at) != (None, None) else None
        if f_at is not None and trigger_gone is not None and f_at < trigger_gone:
            stmt = drops[f_at][3]
            out.append(_finding(ERROR, "rollback-order", stmt,
                                f"function {function} is dropped before trigger {trigger}, which uses it: the DROP fails",
                                f"drop trigger {trigger} (or its table {table}) first"))
    return out


def read_for_lint(path: Path, name: str, role: str = "migration") -> tuple[list[Statement], list[Finding]]:
    """A file's statements, or the finding that says why there are none: an empty or comment-only
    file, or one PostgreSQL's parser rejects (a down written for another database, ``DROP INDEX x
    ON t``), is a finding with its file and line, never a crash of the whole lint."""
    try:
        return read_statements(path, "postgresql", name), []
    except SpecError as exc:
        if exc.message == "holds no SQL statement":
            if role == "rollback":
                return [], [Finding(WARNING, "irreversible", name, None, "", "the down file is empty (or comments "
                                    "only): this step cannot be undone", "write the statements that undo it, or "
                                    "declare the step irreversible")]
            return [], [Finding(WARNING, "empty-migration", name, None, "", "the file holds no SQL statement "
                                "(comments only?): applying it changes nothing", "remove it, or write what it should do")]
        where, _, line = exc.path.rpartition(":")
        foreign = " (written for another database?)" if role == "rollback" else ""
        return [], [Finding(ERROR, "syntax-error", where or exc.path, int(line) if line.isdigit() else None, "",
                            f"PostgreSQL cannot parse it{foreign}: {exc.message}", "write it in PostgreSQL's SQL")]


def check_drop_order(after: Model, rollback: list[Statement]) -> list[Finding]:
    """Drops that PostgreSQL refuses because a foreign key still points at the table: a down that
    drops a parent before its children (seen without a database, as the rehearsal would see it)."""
    fks = [(t, r, after.fk_names.get(id(fk), "")) for fk in after.foreign_keys for t, _, r, _, _ in [fk]]
    out = []
    for stmt in rollback:
        node: Any = parse_sql(stmt.text)[0].stmt
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            dropped = {_strs(obj)[-1] for obj in node.objects or ()}
            if node.behavior != DropBehavior.DROP_CASCADE:
                for name in sorted(dropped):
                    children = sorted({t for t, r, _ in fks if r == name and t not in dropped})
                    if children:
                        out.append(_finding(ERROR, "rollback-drop-order", stmt,
                                            f"drops {name} while {', '.join(children)} still reference(s) it: "
                                            "PostgreSQL refuses the DROP",
                                            f"drop {', '.join(children)} (or their foreign keys) first"))
            fks = [fk for fk in fks if fk[0] not in dropped]
        elif isinstance(node, ast.AlterTableStmt):
            table = _rel(node.relation)
            for cmd in node.cmds or ():
                if cmd.subtype == AlterTableType.AT_DropConstraint and cmd.name:
                    fks = [fk for fk in fks if not (fk[0] == table and fk[2] == str(cmd.name))]
    return out


# -- putting it together -------------------------------------------------------------------------------

@dataclass
class LintResult:
    findings: list[Finding]
    files: list[str]

    def frame(self) -> pd.DataFrame:
        return findings_frame(self.findings)

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "findings": [{**asdict(f), "where": f.where} for f in self.findings]},
                          indent=2)

    def render(self) -> str:
        if not self.findings:
            return f"{len(self.files)} file(s) checked: no findings"
        lines = [f"{f.where}: {f.severity}: {f.rule}: {f.message}" + (f"\n    fix: {f.fix}" if f.fix else "")
                 for f in sorted(self.findings, key=lambda f: (-SEVERITIES.index(f.severity), f.file, f.line or 0))]
        counts = {s: sum(1 for f in self.findings if f.severity == s) for s in reversed(SEVERITIES)}
        return "\n".join(lines + [", ".join(f"{n} {s}(s)" for s, n in counts.items() if n)])


def _read_rollbacks(paths: list[Path], name: Any) -> tuple[list[Statement] | None, list[Finding]]:
    """The rollback's statements (None when a file is missing or none is declared, [] when they
    hold none) and the files that cannot be parsed, as findings."""
    if not paths or not all(p.is_file() for p in paths):
        return None, []
    out: list[Statement] = []
    problems: list[Finding] = []
    for path in paths:
        found, issues = read_for_lint(path, name(path), "rollback")
        out += found
        problems += [f for f in issues if f.rule == "syntax-error"]  # an empty one is rollback-missing
    return out, problems


def _history_statements(existing: list[Path]) -> list[Statement]:
    out: list[Statement] = []
    for path in existing:
        out += _statements_or_none(path, path.name) or []
    return out


def history_catalog(existing: list[Path]) -> tuple[LiveColumns, dict[str, list[list[str]]]]:
    """The schema the existing migrations build, read the way seed 001's reviewers read 008, 012
    and 014: column types and index column lists, by table. A file pglast cannot read is skipped
    (it only narrows what the rules can see; it is not what is being reviewed)."""
    statements: list[Statement] = []
    for path in existing:
        try:
            statements += read_statements(path, "postgresql", path.name)
        except SpecError:
            continue
    model = build_model(statements)  # every statement already parsed once in read_statements
    columns: LiveColumns = {table: {name: (col.type, col.length) for name, col in cols.items()}
                            for table, cols in model.tables.items()}
    indexes: dict[str, list[list[str]]] = {}
    for table, cols, _ in model.indexes:
        indexes.setdefault(table, []).append(cols)
    return columns, indexes


def _merge(history: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The live catalog wins for every table it has: it is what the migration will meet."""
    return {**history, **(live or {})}


def lint_files(files: list[Path], *, existing: list[Path] | None = None, live: LiveColumns | None = None,
               live_indexes: dict[str, list[list[str]]] | None = None, rollback: list[Path] | None = None,
               pg_version: str | None = None, squawk: bool = True,
               names: dict[Path, str] | None = None, squawk_options: SquawkOptions | None = None) -> LintResult:
    """Every rule over the migration files (read as one migration, in order). ``existing``: the
    project's migrations, for numbering and as the schema the migration builds on (a live
    catalog, when given, wins). ``rollback``: its files in the order they run; None skips the
    rollback rules, an empty list is a missing rollback. ``names``: how files are shown."""
    def name(path: Path) -> str:
        return (names or {}).get(path, path.name)

    statements: list[Statement] = []
    unreadable: list[Finding] = []
    for f in files:
        found, problems = read_for_lint(f, name(f))
        statements += found
        unreadable += problems
    model = build_model(statements)
    history, history_indexes = history_catalog(existing or [])
    columns, indexes = _merge(history, live), _merge(history_indexes, live_indexes)
    findings = unreadable + check_numbering(files, existing or [], names)
    findings += check_references(model, columns)
    findings += check_check_literals(model, columns)
    findings += check_fk_indexes(model, indexes)
    if rollback is not None:
        label = " + ".join(name(f) for f in rollback) or "(no rollback declared)"
        back, problems = _read_rollbacks(rollback, name)
        findings += problems + ([] if problems and not back else check_rollback(statements, back, label))
        if back:
            findings += check_drop_order(build_model(_history_statements(existing or []) + statements), back)
    if squawk:
        findings += squawk_findings(files, pg_version, names, squawk_options)
    return LintResult(findings, [name(f) for f in files])


# -- the live catalog ------------------------------------------------------------------------------------

def live_catalog(conn: Any) -> tuple[LiveColumns, dict[str, list[list[str]]]]:
    """Column types and index column lists of the user tables of a PostgreSQL target."""
    columns: LiveColumns = {}
    rows = conn.execute(sa.text(
        "SELECT c.relname, a.attname, format_type(a.atttypid, NULL), "
        "CASE WHEN a.atttypmod > 4 AND a.atttypid IN (1042, 1043) THEN a.atttypmod - 4 END "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbrunbook') AND n.nspname NOT LIKE 'pg_toast%'"))
    for table, column, type_, length in rows:
        columns.setdefault(table, {})[column] = (_TYPE_NAMES.get(type_, type_), length)
    indexes: dict[str, list[list[str]]] = {}
    rows = conn.execute(sa.text(
        "SELECT c.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbrunbook') GROUP BY c.relname, i.indexrelid"))
    for table, cols in rows:
        indexes.setdefault(table, []).append(list(cols))
    return columns, indexes


# -- a migration folder, as one chain ---------------------------------------------------------------

def lint_chain(folder: Path, layout: str | None = None, *, live: LiveColumns | None = None,
               live_indexes: dict[str, list[list[str]]] | None = None, pg_version: str | None = None,
               squawk: bool = True, squawk_options: SquawkOptions | None = None) -> LintResult:
    """A team's migration folder in any layout :mod:`dbrunbook.runbook.layouts` reads, linted as one chain
    in order: each file against the schema the files before it built (renames followed, drops
    applied), its down against what it created and against the foreign keys it would break, and
    the numbering of the whole folder. An empty or unparsable file is a finding; the rest of the
    chain is still linted."""
    from ..runbook import layouts as layout_

    folder = Path(folder)
    members, issues = layout_.read_folder(folder, layout)
    findings = [Finding(ERROR, "migration-numbering", issue.file, None, "", issue.message, issue.fix)
                for issue in issues]
    acc = Model()
    names: dict[Path, str] = {}
    ups: list[Path] = []
    for member in members:
        up_name = str(member.up.relative_to(folder))
        names[member.up] = up_name
        ups.append(member.up)
        statements, problems = read_for_lint(member.up, up_name)
        findings += problems
        if statements:
            own = build_model(statements)
            columns = _merge(model_columns(acc), live)
            indexes = _merge(model_indexes(acc), live_indexes)
            for index_table, cols, _ in own.indexes:  # an index later in the same file still counts
                indexes.setdefault(index_table, []).append(cols)
            findings += check_references(own, columns, history=acc)
            findings += check_check_literals(own, columns)
            findings += check_fk_indexes(own, indexes)
            findings += check_partitioned_indexes(own, acc)
        build_model(statements, base=acc)
        if member.down is not None:
            down_name = str(member.down.relative_to(folder))
            down, problems = read_for_lint(member.down, down_name, "rollback")
            findings += problems
            if down and statements:
                findings += check_rollback(statements, down, down_name)
                findings += check_drop_order(acc, down)
    if squawk and ups:
        findings += squawk_findings(ups, pg_version, names, squawk_options)
    return LintResult(findings, [names[p] for p in ups])
