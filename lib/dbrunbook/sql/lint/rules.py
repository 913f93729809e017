"""Our own lint rules, each one small unit in a registry (:data:`RULES`).

A rule reads one :class:`Migration` (its statements as PostgreSQL's parser reads them, the model
of what they make, the schema they meet and, when it is linted, the rollback) and returns its
findings. Adding a rule is one decorated function here and its test. Seed 001 is the model: a
review that found, by reading, a migration number that was taken, customer and user references
stored as VARCHAR, and a CHECK near a VARCHAR limit.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, DropBehavior, ObjectType

from ..statements import Statement
from .findings import ERROR, INFO, WARNING, Finding
from .model import LiveColumns, Model, _rel, _strs

_NUMBERED = re.compile(r"^(\d{3,})_(.+)\.sql$")
# Type families: a reference between two of them is wrong whatever the widths.
_FAMILIES = {
    "uuid": "uuid",
    "smallint": "integer", "integer": "integer", "bigint": "integer", "serial": "integer", "bigserial": "integer",
    "text": "text", "character varying": "text", "character": "text",
}


# -- squawk ---------------------------------------------------------------------------------------------



# -- a model of what a migration does -------------------------------------------------------------------



# -- our rules -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rollback:
    """A migration's rollback as the rules read it: its name, and its statements (None: declared
    but missing, or none declared at all)."""

    name: str
    statements: list[Statement] | None


@dataclass(frozen=True)
class Migration:
    """What a rule reads: one migration, the schema it builds on, and its rollback."""

    statements: list[Statement]
    model: Model                               # what the statements make
    columns: LiveColumns                       # the columns they meet (a live catalog wins)
    indexes: dict[str, list[list[str]]]        # the index column lists they meet
    history: Model | None = None               # what the migrations before this one built
    rollback: Rollback | None = None           # None: the rollback is not linted
    after: Model | None = None                 # the history and this migration: what the rollback meets


@dataclass(frozen=True)
class Rule:
    name: str
    emits: tuple[str, ...]  # the rule names its findings carry
    check: Callable[[Migration], list[Finding]]

    @property
    def doc(self) -> str:
        return " ".join((self.check.__doc__ or "").split())


#: Every rule, by name, in the order findings are listed.
RULES: dict[str, Rule] = {}


def rule(name: str, *emits: str) -> Callable[[Callable[[Migration], list[Finding]]], Callable[[Migration], list[Finding]]]:
    """Register a rule; ``emits``: the rule names of its findings (default: ``name``)."""
    def register(check: Callable[[Migration], list[Finding]]) -> Callable[[Migration], list[Finding]]:
        RULES[name] = Rule(name, emits or (name,), check)
        return check
    return register


def run_rules(migration: Migration) -> list[Finding]:
    """Every registered rule over one migration."""
    return [finding for registered in RULES.values() for finding in registered.check(migration)]


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


@rule("references", "fk-type-mismatch", "fk-width-mismatch", "reference-without-fk")
def check_references(m: Migration) -> list[Finding]:
    """Foreign keys whose column types differ from what they reference (family or width), and
    columns that look like references (``customerId``) but have no foreign key. The history (the
    model the earlier migrations built: primary keys, partitions) counts when linting a chain."""
    model, live, history = m.model, m.columns, m.history
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


@rule("check-literal-too-long")
def check_check_literals(m: Migration) -> list[Finding]:
    """A CHECK that allows a value longer than its VARCHAR column can hold."""
    model, live = m.model, m.columns
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


@rule("partitioned-index")
def check_partitioned_indexes(m: Migration) -> list[Finding]:
    """An index on a partitioned table: what deploy will do with it, said before it runs."""
    model, history = m.model, m.history
    partitioned = model.partitioned | (history.partitioned if history else set())
    out = []
    for table, _, stmt in model.indexes:
        node: Any = stmt.node
        if isinstance(node, ast.IndexStmt) and table in partitioned and table not in model.partitioned:
            out.append(_finding(INFO, "partitioned-index", stmt,
                                f"{table} is partitioned: PostgreSQL cannot build an index CONCURRENTLY through it; "
                                f"deploy creates it ON ONLY {table}, builds it CONCURRENTLY on each partition, then "
                                "attaches each one", "nothing to change: deploy derives this form"))
    return out


@rule("fk-without-index")
def check_fk_indexes(m: Migration) -> list[Finding]:
    """A foreign key whose columns lead no index: deletes on the parent scan the child."""
    model, live_indexes = m.model, m.indexes
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
        node: Any = stmt.node
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


@rule("rollback", "rollback-missing", "rollback-incomplete", "rollback-order")
def check_rollback(m: Migration) -> list[Finding]:
    """The rollback exists, undoes everything the forward script creates, in an order that works."""
    if m.rollback is None:
        return []
    rollback, rollback_name = m.rollback.statements, m.rollback.name
    if not rollback and not m.statements and rollback is not None:
        return []  # a migration that does nothing needs nothing undone
    if not rollback:
        what = "is missing" if rollback is None else "has no statements"
        return [Finding(ERROR, "rollback-missing", rollback_name, None, "", f"the rollback script {what}",
                        "write the statements that undo the migration, in reverse order")]
    model = m.model
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


@rule("rollback-drop-order")
def check_drop_order(m: Migration) -> list[Finding]:
    """Drops that PostgreSQL refuses because a foreign key still points at the table: a down that
    drops a parent before its children (seen without a database, as the rehearsal would see it)."""
    if m.rollback is None or not m.rollback.statements or m.after is None:
        return []
    after, rollback = m.after, m.rollback.statements
    fks = [(t, r, after.fk_names.get(id(fk), "")) for fk in after.foreign_keys for t, _, r, _, _ in [fk]]
    out = []
    for stmt in rollback:
        node: Any = stmt.node
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



# -- the live catalog ------------------------------------------------------------------------------------



# -- a migration folder, as one chain ---------------------------------------------------------------

