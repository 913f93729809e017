"""The lock table: which table locks each statement takes when it runs as written (the manual's
*Explicit Locking* table, per command, including the parents a foreign key or a DROP locks), the
modes weakest to strongest, and which mode conflicts with which."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from .statements import Statement

ACCESS_SHARE = "ACCESS SHARE"


ROW_SHARE = "ROW SHARE"


ROW_EXCLUSIVE = "ROW EXCLUSIVE"


SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"


SHARE = "SHARE"


SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"


EXCLUSIVE = "EXCLUSIVE"


ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"


#: Weakest to strongest, as in the manual.
LOCK_MODES = (ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE,
              EXCLUSIVE, ACCESS_EXCLUSIVE)


#: What each mode blocks, in words a reviewer weighs.
BLOCKS = {
    ACCESS_SHARE: "only ACCESS EXCLUSIVE (DROP, most ALTER TABLE)",
    ROW_SHARE: "EXCLUSIVE and ACCESS EXCLUSIVE",
    ROW_EXCLUSIVE: "SHARE and stronger (CREATE INDEX, ...)",
    SHARE_UPDATE_EXCLUSIVE: "other schema changes and VACUUM; reads and writes go on",
    SHARE: "writes (INSERT, UPDATE, DELETE); reads go on",
    SHARE_ROW_EXCLUSIVE: "writes and other schema changes; reads go on",
    EXCLUSIVE: "writes; only plain reads go on",
    ACCESS_EXCLUSIVE: "everything, reads included",
}


# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE.
_ALTER_LOCKS = {
    AlterTableType.AT_ValidateConstraint: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_SetStatistics: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_ClusterOn: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_DropCluster: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_SetRelOptions: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_ResetRelOptions: SHARE_UPDATE_EXCLUSIVE,
    AlterTableType.AT_EnableTrig: SHARE_ROW_EXCLUSIVE,
    AlterTableType.AT_DisableTrig: SHARE_ROW_EXCLUSIVE,
    AlterTableType.AT_AttachPartition: SHARE_UPDATE_EXCLUSIVE,
}


_DML = {"InsertStmt": ROW_EXCLUSIVE, "UpdateStmt": ROW_EXCLUSIVE, "DeleteStmt": ROW_EXCLUSIVE,
        "MergeStmt": ROW_EXCLUSIVE, "SelectStmt": ACCESS_SHARE}


@dataclass(frozen=True)
class TableLock:
    """A lock one statement takes on one table."""

    statement: Statement
    table: str
    mode: str
    new: bool = False  # the table is created earlier in the same migration: nobody waits on it


def stronger(a: str, b: str) -> str:
    return a if LOCK_MODES.index(a) >= LOCK_MODES.index(b) else b


def _rel(node: Any) -> str:
    return str(node.relname)


def _fk_targets(constraints: Any) -> list[str]:
    return [_rel(c.pktable) for c in constraints or () if c.contype == ConstrType.CONSTR_FOREIGN]


def _alter_locks(node: Any, fk_targets: dict[str, str]) -> dict[str, str]:
    table = _rel(node.relation)
    locks: dict[str, str] = {}

    def take(name: str, mode: str) -> None:
        locks[name] = stronger(locks.get(name, ACCESS_SHARE), mode)

    for cmd in node.cmds or ():
        definition = cmd.def_
        if cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(definition, ast.Constraint) \
                and definition.contype == ConstrType.CONSTR_FOREIGN:
            take(table, SHARE_ROW_EXCLUSIVE)
            take(_rel(definition.pktable), SHARE_ROW_EXCLUSIVE)
            if definition.conname:
                fk_targets[str(definition.conname)] = _rel(definition.pktable)
            continue
        if cmd.subtype == AlterTableType.AT_ValidateConstraint and str(cmd.name) in fk_targets:
            take(fk_targets[str(cmd.name)], ROW_SHARE)  # validating a foreign key reads the referenced table
        take(table, _ALTER_LOCKS.get(cmd.subtype, ACCESS_EXCLUSIVE))
        if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(definition, ast.ColumnDef):
            for referenced in _fk_targets(definition.constraints):
                take(referenced, SHARE_ROW_EXCLUSIVE)
    return locks


def _comment_table(node: Any) -> str | None:
    names = [str(n.sval) for n in (node.object if isinstance(node.object, tuple) else ()) if hasattr(n, "sval")]
    if node.objtype == ObjectType.OBJECT_TABLE and names:
        return names[-1]
    if node.objtype == ObjectType.OBJECT_COLUMN and len(names) >= 2:
        return names[-2]
    return None


def _statement_locks(node: Any, index_tables: dict[str, str], fk_targets: dict[str, str],
                     parents: dict[str, set[str]]) -> dict[str, str]:
    """Table -> lock mode for one parsed statement. ``fk_targets`` (foreign key name ->
    referenced table) and ``parents`` (table -> the tables its foreign keys reference) are
    filled as foreign keys are added, for a later VALIDATE or DROP TABLE."""
    if isinstance(node, ast.CreateStmt):
        locks = {_rel(node.relation): ACCESS_EXCLUSIVE}
        for element in node.tableElts or ():
            constraints = element.constraints if isinstance(element, ast.ColumnDef) else \
                (element,) if isinstance(element, ast.Constraint) else ()
            for referenced in _fk_targets(constraints):
                locks[referenced] = SHARE_ROW_EXCLUSIVE
                parents.setdefault(_rel(node.relation), set()).add(referenced)
        return locks
    if isinstance(node, ast.AlterTableStmt):
        locks = _alter_locks(node, fk_targets)
        table = _rel(node.relation)
        parents.setdefault(table, set()).update(t for t, m in locks.items() if t != table and m == SHARE_ROW_EXCLUSIVE)
        return locks
    if isinstance(node, ast.IndexStmt):
        return {_rel(node.relation): SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE}
    if isinstance(node, ast.CreateTrigStmt):
        return {_rel(node.relation): SHARE_ROW_EXCLUSIVE}
    if isinstance(node, ast.CommentStmt):
        commented = _comment_table(node)
        return {commented: SHARE_UPDATE_EXCLUSIVE} if commented else {}
    if isinstance(node, ast.DropStmt):
        objects = [[str(p.sval) for p in (o if isinstance(o, tuple) else ())] for o in node.objects or ()]
        if node.removeType == ObjectType.OBJECT_TABLE:
            # Dropping a table drops its foreign keys' triggers on the referenced tables, which
            # takes ACCESS EXCLUSIVE on those too (a rollback's DROP TABLE blocks the parents).
            dropped = [names[-1] for names in objects if names]
            return {t: ACCESS_EXCLUSIVE for name in dropped for t in [name, *sorted(parents.get(name, ()))]}
        if node.removeType == ObjectType.OBJECT_TRIGGER:
            return {names[-2]: ACCESS_EXCLUSIVE for names in objects if len(names) >= 2}
        if node.removeType == ObjectType.OBJECT_INDEX:
            mode = SHARE_UPDATE_EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE
            return {index_tables[names[-1]]: mode for names in objects if names and names[-1] in index_tables}
        return {}
    if isinstance(node, ast.TruncateStmt):
        return {_rel(r): ACCESS_EXCLUSIVE for r in node.relations or ()}
    if isinstance(node, ast.RenameStmt) and node.relation is not None:
        return {_rel(node.relation): ACCESS_EXCLUSIVE}
    if type(node).__name__ in _DML and getattr(node, "relation", None) is not None:
        return {_rel(node.relation): _DML[type(node).__name__]}
    return {}


def statement_locks(statements: list[Statement], index_tables: dict[str, str] | None = None,
                    fk_parents: dict[str, set[str]] | None = None) -> list[TableLock]:
    """Every table lock the statements take when run as written, in order. From the live
    catalog: ``index_tables`` (index -> table, for ``DROP INDEX``) and ``fk_parents`` (table ->
    the tables its foreign keys reference, for ``DROP TABLE``)."""
    created: set[str] = set()
    fk_targets: dict[str, str] = {}
    parents = {table: set(refs) for table, refs in (fk_parents or {}).items()}
    out: list[TableLock] = []
    for statement in statements:
        node: Any = statement.node
        if isinstance(node, ast.CreateStmt):
            created.add(_rel(node.relation))
        for table, mode in _statement_locks(node, index_tables or {}, fk_targets, parents).items():
            out.append(TableLock(statement, table, mode, new=table in created))
    return out


def locks_frame(locks: list[TableLock]) -> pd.DataFrame:
    return pd.DataFrame([{"where": f"{lock.statement.file}:{lock.statement.line}", "statement": lock.statement.summary,
                          "table": lock.table + (" (new)" if lock.new else ""), "lock": lock.mode,
                          "blocks": "nobody yet: created by this migration" if lock.new else BLOCKS[lock.mode]}
                         for lock in locks], columns=["where", "statement", "table", "lock", "blocks"])


def strongest_locks(locks: list[TableLock]) -> dict[str, str]:
    """Existing table -> the strongest lock the migration takes on it."""
    out: dict[str, str] = {}
    for lock in locks:
        if not lock.new:
            out[lock.table] = stronger(out.get(lock.table, ACCESS_SHARE), lock.mode)
    return out


def _conflicts(held: str, wanted: str) -> bool:
    """Whether a lock held in mode ``held`` blocks one requested in mode ``wanted`` (the
    manual's conflict table, which is symmetric)."""
    conflicts = {
        ACCESS_SHARE: {ACCESS_EXCLUSIVE},
        ROW_SHARE: {EXCLUSIVE, ACCESS_EXCLUSIVE},
        ROW_EXCLUSIVE: {SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE_UPDATE_EXCLUSIVE: {SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE: {ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE},
        SHARE_ROW_EXCLUSIVE: {ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                              ACCESS_EXCLUSIVE},
        EXCLUSIVE: set(LOCK_MODES) - {ACCESS_SHARE},
        ACCESS_EXCLUSIVE: set(LOCK_MODES),
    }
    return wanted in conflicts[held]


def pg_mode(mode: str) -> str:
    """``RowExclusiveLock`` (pg_locks) -> ``ROW EXCLUSIVE``."""
    words, current = [], ""
    for char in mode.removesuffix("Lock"):
        if char.isupper() and current:
            words.append(current)
            current = ""
        current += char
    return " ".join([*words, current]).upper()
