"""Applying DDL to a live database without stalling its writers.

Two parts. :func:`derive_steps` turns a migration, as written (seed 000's is exactly what Prisma
generates), into online steps, the way GitLab's migration helpers do by hand: an index on an
existing table is built ``CONCURRENTLY``; a foreign key is added ``NOT VALID`` and validated in
a second step. Each step can tell whether it is already done, so a deploy that stopped part-way
resumes. :func:`run_step` then applies one step under a :class:`LockPolicy`: a short
``lock_timeout`` per attempt, retried with backoff (GitLab's ``with_lock_retries``, pgroll's
500 ms), and a ``statement_timeout``; every attempt is logged.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import psycopg
from pglast import ast
from pglast.enums import AlterTableType, ConstrType
from pglast.stream import RawStream
from psycopg import sql

from ..errors import DbrunbookError, StatementFailed
from . import effects
from .effects import Effect
from .execute import describe_error
from .locks import SHARE_UPDATE_EXCLUSIVE, statement_locks, stronger
from .statements import Statement, parse_one

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


class LockRetriesExhausted(DbrunbookError):
    """A step could not take its lock within the policy's attempts; nothing of it was applied."""


@dataclass(frozen=True)
class LockPolicy:
    lock_timeout_ms: int = 500
    attempts: int = 8
    backoff_ms: int = 250
    backoff_max_ms: int = 8000
    statement_timeout_s: float = 900.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after a failed attempt: exponential, capped, with jitter so that two
        waiting deploys do not retry in step."""
        base = min(self.backoff_ms * 2 ** (attempt - 1), self.backoff_max_ms) / 1000
        return base * random.uniform(0.75, 1.25)


@dataclass
class Step:
    """One online step derived from one statement of the migration."""

    source: Statement
    sql: str
    kind: str
    lock: str
    tables: list[str]
    why: str
    transactional: bool = True
    # What the step leaves in the catalog, for its "already done?" probe (None: nothing to look for).
    effects: list[Effect] | None = None

    @property
    def where(self) -> str:
        return f"{self.source.file}:{self.source.line}"


@dataclass
class Attempt:
    step: int
    attempt: int
    outcome: str
    waited_ms: float
    detail: str = ""


# pglast's node attributes are all Optional in its annotations; these helpers take Any.
def _relname(rel: Any) -> str:
    return f"{rel.schemaname}.{rel.relname}" if rel.schemaname else str(rel.relname)


def _render(node: Any) -> str:
    return str(RawStream()(node))


def _created_tables(statements: list[Statement]) -> set[str]:
    made = set()
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.CreateStmt):
            made.add(_relname(node.relation))
    return made


def _locks(statement: Statement, text: str, context: dict[str, Any]) -> tuple[str, list[str]]:
    """The strongest lock ``text`` takes and the tables it takes locks on, from the same lock
    table the review's preflight checks against ``pg_locks``."""
    taken = statement_locks([replace(statement, text=text)], context.get("index_tables"), context.get("parents"))
    mode = "-"
    for lock in taken:
        mode = lock.mode if mode == "-" else stronger(mode, lock.mode)
    return mode, list(dict.fromkeys(lock.table for lock in taken))


def partitioned_index_steps(statement: Statement, node: Any, partitions: list[str],
                            lock_of: Callable[[Statement, str], tuple[str, list[str]]]) -> list[Step]:
    """An index on a partitioned table, online: PostgreSQL refuses ``CREATE INDEX CONCURRENTLY``
    there (0A000), so the index is made ``ON ONLY`` the parent (no build, invalid for now), each
    partition's index is built ``CONCURRENTLY``, then attached; the parent's index turns valid
    when the last one is attached (the manual's "Partition Maintenance")."""
    parent, name = _relname(node.relation), str(node.idxname)
    schema = node.relation.schemaname
    qualified = f"{schema}.{name}" if schema else name
    node.relation.inh = False
    shell = _render(node)
    steps = [Step(statement, shell, "create index on only", *lock_of(statement, shell),
                  "on the parent only: no build, invalid until every partition's index is attached",
                  effects=[Effect("index shell", qualified, parent)])]
    for partition in partitions:
        child: Any = parse_one(statement.text)  # a copy of its own: it is changed below
        child.relation.relname = partition
        child.relation.inh = True
        child.concurrent = True
        child_name = _partition_index_name(partition, name)
        child.idxname = child_name
        qualified_child = f"{schema}.{child_name}" if schema else child_name
        built = _render(child)
        steps.append(Step(statement, built, "create index concurrently", *lock_of(statement, built),
                          f"partition {partition}, built CONCURRENTLY: writers go on", transactional=False,
                          effects=[Effect("index", qualified_child, f"{schema}.{partition}" if schema else partition)]))
        attach = sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
            sql.Identifier(*qualified.split(".")), sql.Identifier(*qualified_child.split("."))).as_string(None)
        steps.append(Step(statement, attach, "attach index partition", SHARE_UPDATE_EXCLUSIVE, [parent, partition],
                          "attaches the partition's index to the parent's; a metadata change",
                          effects=[Effect("attached index", qualified_child, qualified)]))
    return steps


def _partition_index_name(partition: str, index: str) -> str:
    """``<partition>_<index>``, cut to PostgreSQL's 63 bytes with a short hash when too long."""
    import hashlib

    name = f"{partition}_{index}"
    if len(name.encode()) <= 63:
        return name
    return name.encode()[:54].decode(errors="ignore") + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _inline_reference(node: Any, new_tables: set[str]) -> tuple[Any, Any] | None:
    """``ADD COLUMN c ... REFERENCES p(id)`` on an existing table, split into the column alone and
    the foreign key ``NOT VALID`` under the name PostgreSQL would give it (``<table>_<column>_fkey``),
    so the deploy validates it in a second step as it does any foreign key."""
    if not (isinstance(node, ast.AlterTableStmt) and len(node.cmds or ()) == 1):
        return None
    cmd: Any = (node.cmds or ())[0]
    column: Any = cmd.def_
    if cmd.subtype != AlterTableType.AT_AddColumn or not isinstance(column, ast.ColumnDef) or \
            _relname(node.relation) in new_tables:
        return None
    foreign = [c for c in column.constraints or () if c.contype == ConstrType.CONSTR_FOREIGN]
    if len(foreign) != 1:
        return None
    fk: Any = foreign[0]
    column.constraints = tuple(c for c in column.constraints or () if c is not fk) or None
    relation: Any = node.relation
    name = fk.conname or f"{relation.relname}_{column.colname}_fkey"[:63]
    add: Any = parse_one(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES x").format(
        _identifier(node.relation), sql.Identifier(str(name)), sql.Identifier(str(column.colname))).as_string(None))
    constraint: Any = add.cmds[0].def_
    constraint.pktable, constraint.pk_attrs = fk.pktable, fk.pk_attrs
    constraint.fk_upd_action, constraint.fk_del_action = fk.fk_upd_action, fk.fk_del_action
    constraint.fk_matchtype = fk.fk_matchtype
    return node, add


def _keep_authors_transactions(steps: list[Step]) -> list[Step]:
    """Statements the author wrapped in BEGIN ... COMMIT (a group: :attr:`Statement.group`) stay in
    one step, one transaction (a CHECK dropped and added again is never missing in between); what
    must run outside a transaction (CONCURRENTLY) and the validations follow that step."""
    out: list[Step] = []
    position = 0
    while position < len(steps):
        source = steps[position].source
        if source.group is None:
            out.append(steps[position])
            position += 1
            continue
        group = []
        while position < len(steps) and (steps[position].source.file, steps[position].source.group) == \
                (source.file, source.group):
            group.append(steps[position])
            position += 1
        inside = [s for s in group if s.transactional and s.kind != "validate constraint"]
        after = [s for s in group if s not in inside]
        if len(inside) > 1:
            lock = "-"
            for s in inside:
                lock = s.lock if lock == "-" else (stronger(lock, s.lock) if s.lock != "-" else lock)
            net: dict[tuple[str, str, str | None], Effect] = {}
            rerun = False
            for s in inside:
                rerun = rerun or not s.effects
                for e in s.effects or ():
                    net[(e.kind if e.kind != "index shell" else "index", e.name, e.relation)] = e
            inside = [Step(inside[0].source, ";\n".join(s.sql for s in inside), "transaction as the author wrote it",
                           lock, list(dict.fromkeys(t for s in inside for t in s.tables)),
                           f"{len(inside)} statements the author wrapped in BEGIN ... COMMIT stay in one transaction",
                           effects=None if rerun and not net else list(net.values()))]
        out += inside + after
    return out


def derive_steps(statements: list[Statement], index_tables: dict[str, str] | None = None,
                 partitions: dict[str, list[str]] | None = None) -> list[Step]:
    """The online steps for a migration (statements the rewrite does not apply to run as they are,
    each in its own short transaction under the lock policy). Each step's lock comes from
    :func:`dbrunbook.catalog.preflight.statement_locks`; ``index_tables`` (index -> table, from the live
    catalog) lets it see which table a ``DROP INDEX`` locks; ``partitions`` (partitioned table ->
    its partitions, from the live catalog) turns an index on a partitioned table into the form
    PostgreSQL can build online. What the author grouped in one transaction stays one step
    (see :func:`_keep_authors_transactions`)."""
    new_tables = _created_tables(statements)
    context: dict[str, Any] = {"index_tables": index_tables or {}}
    steps: list[Step] = []

    def step(statement: Statement, text: str, kind: str, why: str, found: list[Effect] | None,
             transactional: bool = True) -> Step:
        lock, tables = _locks(statement, text, context)
        return Step(statement, text, kind, lock, tables, why, transactional=transactional, effects=found)

    for statement in statements:
        node: Any = parse_one(statement.text)  # a copy of its own: the steps below change it
        split = _inline_reference(node, new_tables)
        if split is not None:
            column, add = split
            text = _render(column)
            steps.append(step(statement, text, "add column", "the column alone; its foreign key follows NOT VALID",
                              effects.effects_of(column)))
            node = add  # the foreign key, below, as any other: NOT VALID, then VALIDATE
        found = effects.effects_of(node)
        if isinstance(node, ast.IndexStmt):
            table = _relname(node.relation)
            relation: Any = node.relation
            children = (partitions or {}).get(str(relation.relname))
            if children == []:  # sub-partitioned (or no partition yet): as written, PostgreSQL recurses
                steps.append(step(statement, statement.text, "create index on a partitioned table",
                                  "as written: PostgreSQL builds it on every partition (it cannot do so CONCURRENTLY "
                                  "through a partitioned table, and this one's partitions are partitioned too)", found))
                continue
            if children is not None and node.idxname and table not in new_tables and relation.inh:
                steps += partitioned_index_steps(statement, node, children,
                                                 lambda st, text: _locks(st, text, context))
                continue
            if not node.concurrent and table not in new_tables:
                node.concurrent = True
                steps.append(step(statement, _render(node), "create index concurrently",
                                  "built CONCURRENTLY: writers go on while the index is built", found,
                                  transactional=False))
                continue
            steps.append(step(statement, statement.text, "create index", "as written", found,
                              transactional=not node.concurrent))
            continue
        if isinstance(node, ast.AlterTableStmt) and len(node.cmds or ()) == 1:
            cmd: Any = (node.cmds or ())[0]
            table = _relname(node.relation)
            constraint: Any = cmd.def_ if isinstance(cmd.def_, ast.Constraint) else None
            if (cmd.subtype == AlterTableType.AT_AddConstraint and constraint is not None
                    and constraint.contype == ConstrType.CONSTR_FOREIGN and constraint.conname
                    and not constraint.skip_validation and table not in new_tables):
                constraint.skip_validation = True
                constraint.initially_valid = False
                name = str(constraint.conname)
                steps.append(step(statement, _render(node), "add foreign key NOT VALID",
                                  "NOT VALID: checks new rows only, so the lock is held for milliseconds instead "
                                  "of a full scan", [Effect("constraint", name, table)]))
                validate = sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    _identifier(node.relation), sql.Identifier(name)).as_string(None)
                steps.append(step(statement, validate, "validate constraint",
                                  "scans existing rows under a lock that lets writers go on",
                                  [Effect("constraint", name, table, validated=True)]))
                continue
            kind = "add column" if cmd.subtype == AlterTableType.AT_AddColumn else "alter table"
            steps.append(step(statement, statement.text, kind, "as written, under the lock policy", found))
            continue
        steps.append(step(statement, statement.text, type(node).__name__, "as written, under the lock policy", found,
                          transactional=statement.transactional))
    return _keep_authors_transactions(steps)


def _identifier(rel: Any) -> sql.Identifier:
    return sql.Identifier(rel.schemaname, rel.relname) if rel.schemaname else sql.Identifier(rel.relname)


def steps_frame(steps: list[Step]) -> pd.DataFrame:
    return pd.DataFrame([{"step": n, "from": s.where, "kind": s.kind, "lock": s.lock, "tables": ", ".join(s.tables),
                          "sql": s.sql, "why": s.why} for n, s in enumerate(steps, start=1)],
                        columns=["step", "from", "kind", "lock", "tables", "sql", "why"])


def attempts_frame(attempts: list[Attempt]) -> pd.DataFrame:
    return pd.DataFrame([{"step": a.step, "attempt": a.attempt, "outcome": a.outcome,
                          "waited ms": round(a.waited_ms, 1), "detail": a.detail} for a in attempts],
                        columns=["step", "attempt", "outcome", "waited ms", "detail"])


# -- is a step already done? ------------------------------------------------------------------------

def step_state(conn: psycopg.Connection[Any], step: Step) -> str:
    """``done``, ``invalid`` (a CONCURRENTLY build that failed half-way), ``todo``, or ``rerun``
    (nothing in the catalog tells: the step runs again)."""
    return effects.state_of(conn, step.effects)


# -- running a step under the lock policy ----------------------------------------------------------------

def lock_holders(conn: psycopg.Connection[Any], tables: list[str]) -> str:
    """Who holds locks on these tables now (for the log line of a failed attempt)."""
    oids = [oid for oid in (effects.regclass(conn, t) for t in tables) if oid is not None]
    if not oids:
        return ""
    rows = conn.execute(
        "SELECT DISTINCT l.pid, l.mode, a.application_name, a.state, "
        "extract(epoch FROM now() - a.xact_start)::int FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.relation = ANY(%s) AND l.granted AND l.pid <> pg_backend_pid() ORDER BY l.pid", (oids,)).fetchall()
    return "; ".join(f"pid {pid} holds {mode} ({app or 'no app name'}, {state}, transaction open {age}s)"
                     for pid, mode, app, state, age in rows[:3])


def _execute_once(conn: psycopg.Connection[Any], step: Step, policy: LockPolicy) -> None:
    timeouts = sql.SQL("SET {} lock_timeout = {}; SET {} statement_timeout = {}")
    if step.transactional:
        with conn.transaction():
            conn.execute(timeouts.format(sql.SQL("LOCAL"), sql.Literal(f"{policy.lock_timeout_ms}ms"),
                                         sql.SQL("LOCAL"), sql.Literal(f"{int(policy.statement_timeout_s * 1000)}ms")))
            conn.execute(step.sql.encode())
    else:
        conn.execute(timeouts.format(sql.SQL("SESSION"), sql.Literal(f"{policy.lock_timeout_ms}ms"),
                                     sql.SQL("SESSION"), sql.Literal(f"{int(policy.statement_timeout_s * 1000)}ms")))
        conn.execute(step.sql.encode())


def _drop_invalid_index(conn: psycopg.Connection[Any], step: Step, policy: LockPolicy) -> None:
    conn.execute(sql.SQL("SET SESSION lock_timeout = {}").format(sql.Literal(f"{policy.lock_timeout_ms}ms")))
    for effect in step.effects or ():
        if effect.kind == "index":
            effects.drop_invalid_index(conn, effect)


def run_step(conn: psycopg.Connection[Any], number: int, total: int, step: Step, policy: LockPolicy,
             log: Callable[[Attempt], None], sleep: Callable[[float], None] = time.sleep,
             skip_done: bool = True) -> bool:
    """Apply one step on an autocommit connection; returns False when it was already done
    (looked for only with ``skip_done``: a resume; a first attempt runs every step as written,
    so an object that is unexpectedly there is an error, not a silent skip).

    A lock timeout is retried after a backoff; any other error, or the last lock timeout, raises
    with the migration's file and line."""
    if skip_done and step_state(conn, step) == effects.DONE:
        log(Attempt(number, 0, "already done", 0.0, "skipped: its effect is in the catalog (an earlier attempt)"))
        return False
    for attempt in range(1, policy.attempts + 1):
        if step_state(conn, step) == effects.INVALID:
            # A CONCURRENTLY build that timed out leaves an invalid index behind; it must go first.
            _drop_invalid_index(conn, step, policy)
            log(Attempt(number, attempt, "dropped invalid index", 0.0, "left by an earlier failed attempt"))
        started = time.perf_counter()
        try:
            _execute_once(conn, step, policy)
        except psycopg.Error as exc:
            waited = (time.perf_counter() - started) * 1000
            message, sqlstate, _ = describe_error(exc)
            if sqlstate == LOCK_NOT_AVAILABLE and attempt < policy.attempts:
                pause = policy.backoff(attempt)
                holders = lock_holders(conn, step.tables)
                log(Attempt(number, attempt, "lock timeout", waited,
                            f"retry in {pause * 1000:.0f} ms" + (f"; {holders}" if holders else "")))
                sleep(pause)
                continue
            if sqlstate == LOCK_NOT_AVAILABLE:
                holders = lock_holders(conn, step.tables)
                log(Attempt(number, attempt, "lock timeout", waited, "giving up" + (f"; {holders}" if holders else "")))
                if step_state(conn, step) == effects.INVALID:
                    _drop_invalid_index(conn, step, policy)
                raise LockRetriesExhausted(
                    f"{step.where}: step {number} of {total} ({step.kind}) could not take its {step.lock} lock on "
                    f"{', '.join(step.tables)} in {policy.attempts} attempts of {policy.lock_timeout_ms} ms"
                    + (f" ({holders})" if holders else "") + "; nothing of this step was applied") from None
            outcome = "statement timeout" if sqlstate == QUERY_CANCELED else "error"
            log(Attempt(number, attempt, outcome, waited, message))
            raise StatementFailed(step.source.file, step.source.line, number, total, step.sql, message,
                                  sqlstate) from None
        log(Attempt(number, attempt, "applied", (time.perf_counter() - started) * 1000,
                    f"lock_timeout {policy.lock_timeout_ms} ms"))
        return True
    return True  # unreachable: the loop returns or raises


@dataclass
class StepLog:
    """Collects attempts; ``echo`` shows each one as it happens (a long retry is visible live)."""

    echo: Callable[[str], None] | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def __call__(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.echo is not None:
            self.echo(f"step {attempt.step} attempt {attempt.attempt}: {attempt.outcome} "
                      f"({attempt.waited_ms:.0f} ms) {attempt.detail}".rstrip())
