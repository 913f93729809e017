"""The ledger each target keeps, and the one owner of runbook state.

Everything about what ran on a target lives here, as pgroll's ``pkg/state`` owns its state: the
tables and their schema version, the runbook states and the transitions between them, the one
decision every phase and ``dbrunbook status`` take from a state, and every read and write of the
ledger tables (``data_migrations`` included). No other module writes SQL against them.

Tables: ``events``, append-only for real (UPDATE, DELETE and TRUNCATE are refused by triggers);
``state``, one row per runbook (its state, the checksum, the step in flight, and the schema
snapshot taken once, before the first attempt); ``data_migrations``, one row per backfill;
``version``, the ledger's schema version, one row per upgrade. On PostgreSQL they live in schema
``dbrunbook``; on SQLite as ``dbrunbook_*`` tables in the same file.

Steps that commit on their own (an autocommit script, each online deploy step, each backfill
batch) are written ahead: the intent before the step, the outcome after it, so a kill at any
instant leaves a ledger that names the step that may be half done.
"""
from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    import pandas as pd

from ..catalog.introspect import Snapshot
from ..errors import DbrunbookError, DriftError, GuardRefused

SCHEMA = "dbrunbook"
#: The ledger schema this code writes. 1: events, state, data_migrations (no version table);
#: 2: the version table, the step in flight on ``state``, TRUNCATE refused on ``events``.
VERSION = 3

# -- runbook states -----------------------------------------------------------------------------
PENDING = "pending"            # no row: never applied here (or reset by prepare)
APPLYING = "applying"          # a forward phase is running steps that commit on their own
APPLIED = "applied"
PARTIAL = "partial"            # a deploy stopped on its lock policy after some steps committed
FAILED = "failed"              # a step failed after earlier ones committed (also an event status)
INTERRUPTED = "interrupted"    # a signal, or a kill (an ``applying`` nobody holds any more)
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
STATES = (PENDING, APPLYING, APPLIED, PARTIAL, FAILED, INTERRUPTED, ROLLING_BACK, ROLLED_BACK)
#: States a forward phase left part-way: resume re-checks every step against the catalog, and
#: the rollback phase may undo what was done.
UNFINISHED = (APPLYING, PARTIAL, FAILED, INTERRUPTED, ROLLING_BACK)
IN_FLIGHT = (APPLYING, ROLLING_BACK)

#: state -> the states it may move to. Anything else is a bug or a race, and raises.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({APPLYING, APPLIED}),
    # Back to where it was when the attempt applied nothing (a lock timeout on step 1).
    APPLYING: frozenset({APPLYING, APPLIED, PARTIAL, FAILED, INTERRUPTED, PENDING, ROLLED_BACK}),
    APPLIED: frozenset({APPLIED, ROLLING_BACK, ROLLED_BACK}),
    PARTIAL: frozenset({APPLYING, APPLIED, PARTIAL, ROLLING_BACK, ROLLED_BACK}),
    FAILED: frozenset({APPLYING, APPLIED, ROLLING_BACK, ROLLED_BACK}),
    INTERRUPTED: frozenset({APPLYING, APPLIED, ROLLING_BACK, ROLLED_BACK}),
    ROLLING_BACK: frozenset({ROLLING_BACK, ROLLED_BACK, FAILED, INTERRUPTED}),
    ROLLED_BACK: frozenset({APPLYING, APPLIED}),
}

# -- event statuses -------------------------------------------------------------------------------
PASSED = "passed"
NOOP = "noop"

# -- data migration phases and statuses (seed 002's "Stripe 6-phase pattern") ---------------------
DATA_PHASES = ("schema", "backfill", "dual-write", "dual-read", "cleanup", "complete")
DM_PENDING, DM_RUNNING, DM_PAUSED = "pending", "running", "paused"
DM_COMPLETED, DM_FAILED, DM_ROLLED_BACK = "completed", "failed", "rolled-back"

# -- decisions ------------------------------------------------------------------------------------
APPLY, RESUME, REFUSE = "apply", "resume", "refuse"
FORWARD, BACKWARD = "forward", "backward"

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def new_run_id() -> str:
    """The id of one run (the ledger's events and the archive's folder share it)."""
    return uuid.uuid4().hex[:12]


class IllegalTransition(DbrunbookError):
    """A state change the model does not allow (a bug, or two runs racing)."""

    def __init__(self, runbook: str, old: str, new: str) -> None:
        self.old, self.new = old, new
        allowed = ", ".join(sorted(TRANSITIONS.get(old, ()))) or "nothing"
        super().__init__(f"ledger: {runbook} cannot go from {old} to {new} (from {old}: {allowed})")


class LedgerTooNew(DbrunbookError):
    """The target's ledger was written by a newer dbrunbook."""


@dataclass(frozen=True)
class Tables:
    events: sa.Table
    state: sa.Table
    migrations: sa.Table
    version: sa.Table
    archives: sa.Table
    approvals: sa.Table


@lru_cache(maxsize=2)
def tables(dialect: str) -> Tables:
    metadata = sa.MetaData(schema=SCHEMA if dialect == "postgresql" else None)
    prefix = "" if dialect == "postgresql" else "dbrunbook_"
    events = sa.Table(
        prefix + "events", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("runbook", sa.Text, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
        sa.Column("error", sa.Text),
        sa.Column("checksums", _JSON, nullable=False),
        sa.Column("detail", _JSON),
    )
    sa.Index(f"{prefix}events_runbook_idx", events.c.runbook, events.c.id)
    state = sa.Table(
        prefix + "state", metadata,
        sa.Column("runbook", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("checksum", sa.Text),
        sa.Column("checksums", _JSON, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint_before", sa.Text),
        sa.Column("fingerprint_after", sa.Text),
        sa.Column("snapshot_before", _JSON),
        sa.Column("detail", _JSON),
        # Version 2: the phase that last moved the state, and the step in flight.
        *_STATE_V2_COLUMNS(),
    )
    # Data migrations (seed 002's "migrations" table, the Stripe pattern): one row per backfill,
    # its phase, status and checkpoint, advanced in the same transaction as each batch.
    migrations = sa.Table(
        prefix + "data_migrations", metadata,
        sa.Column("runbook", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("checkpoint", _JSON, nullable=False),
        sa.Column("processed_records", sa.BigInteger, nullable=False, default=0),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("verification", _JSON),
    )
    version = sa.Table(
        prefix + "version", metadata,
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("upgraded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
    )
    # Version 3: the seal of each archived run (its manifest's sha256 and the one before it on this
    # target, so a changed, deleted or swapped run shows), and the approvals of exact plans.
    archives = sa.Table(
        prefix + "archives", metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("runbook", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.Text, nullable=False),
        sa.Column("previous_run_id", sa.Text),
        sa.Column("previous_sha256", sa.Text),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
    )
    approvals = sa.Table(
        prefix + "approvals", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("runbook", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("approver", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("plan_sha256", sa.Text, nullable=False),
        sa.Column("checksums", _JSON, nullable=False),
        sa.Column("review_run_id", sa.Text),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )
    return Tables(events, state, migrations, version, archives, approvals)


def _STATE_V2_COLUMNS() -> list[sa.Column[Any]]:  # noqa: N802 - a table fragment, named like one
    return [sa.Column("phase", sa.Text), sa.Column("step", sa.Integer), sa.Column("steps", sa.Integer),
            sa.Column("steps_done", sa.Integer), sa.Column("step_sql", sa.Text), sa.Column("error", sa.Text)]


_APPEND_ONLY_SQL = [
    """CREATE OR REPLACE FUNCTION dbrunbook.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'dbrunbook.events is append-only'; END $$""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_append_only'
                        AND tgrelid = 'dbrunbook.events'::regclass) THEN
           CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dbrunbook.events
             FOR EACH ROW EXECUTE FUNCTION dbrunbook.refuse_change();
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_no_truncate'
                        AND tgrelid = 'dbrunbook.events'::regclass) THEN
           CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON dbrunbook.events
             FOR EACH STATEMENT EXECUTE FUNCTION dbrunbook.refuse_change();
         END IF;
       END $$""",
]
_APPEND_ONLY_SQLITE = [
    f"""CREATE TRIGGER IF NOT EXISTS dbrunbook_events_no_{verb.lower()} BEFORE {verb} ON dbrunbook_events
        BEGIN SELECT RAISE(ABORT, 'dbrunbook_events is append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]


def ensure_ledger(conn: Connection) -> None:
    """Create the ledger tables if they are missing, or upgrade them to :data:`VERSION`
    (idempotent, safe under concurrency)."""
    dialect = conn.dialect.name
    t = tables(dialect)
    if dialect == "postgresql":
        # Two first runs racing to create the ledger would collide on the catalog.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('dbrunbook.state.ledger'))"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    t.events.metadata.create_all(conn, checkfirst=True)
    found = conn.execute(sa.select(sa.func.max(t.version.c.version))).scalar()
    if found is not None and found > VERSION:
        raise LedgerTooNew(f"the ledger on this target is version {found}, newer than this dbrunbook writes "
                           f"({VERSION}); upgrade dbrunbook")
    if found == VERSION:
        return
    _upgrade_to_2(conn)  # idempotent; version 3 only adds tables, which create_all made above
    conn.execute(t.version.insert().values(version=VERSION, upgraded_at=now(), operator=operator()))


def _upgrade_to_2(conn: Connection) -> None:
    """From the version-1 ledger (no version table): the step columns and the append-only
    triggers. A fresh ledger already has the columns; every step is idempotent."""
    dialect = conn.dialect.name
    t = tables(dialect)
    have = {c["name"] for c in sa.inspect(conn).get_columns(t.state.name, schema=t.state.schema)}
    for column in _STATE_V2_COLUMNS():
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            table = f"{SCHEMA}.state" if dialect == "postgresql" else t.state.name
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))
    for statement in _APPEND_ONLY_SQL if dialect == "postgresql" else _APPEND_ONLY_SQLITE:
        conn.execute(sa.text(statement))
    # Version 2 compares a table's columns as a set: the fingerprints recorded before are
    # recomputed from the snapshots they were taken from, so they stay comparable.
    for runbook, objects in conn.execute(sa.select(t.state.c.runbook, t.state.c.snapshot_before)).all():
        if objects:
            conn.execute(t.state.update().where(t.state.c.runbook == runbook)
                         .values(fingerprint_before=Snapshot(dict(objects)).fingerprint))


def ledger_version(conn: Connection) -> int | None:
    """The version of the target's ledger: None without one, 1 for a ledger from before versions."""
    if not ledger_exists(conn):
        return None
    t = tables(conn.dialect.name)
    if not sa.inspect(conn).has_table(t.version.name, schema=t.version.schema):
        return 1
    return conn.execute(sa.select(sa.func.max(t.version.c.version))).scalar() or 1


def ledger_exists(conn: Connection) -> bool:
    t = tables(conn.dialect.name)
    return sa.inspect(conn).has_table(t.state.name, schema=t.state.schema)


def operator() -> str:
    """Who runs this: $DBRUNBOOK_OPERATOR, else user@host."""
    env = os.environ.get("DBRUNBOOK_OPERATOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> datetime:
    return datetime.now(UTC)


# -- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    run_id: str
    runbook: str
    phase: str
    action: str
    status: str
    target: str
    operator: str
    started_at: datetime
    finished_at: datetime
    dry_run: bool = False
    error: str | None = None
    checksums: dict[str, str] | None = None
    detail: dict[str, Any] | None = None


def record_event(conn: Connection, event: Event) -> None:
    t = tables(conn.dialect.name)
    conn.execute(t.events.insert().values(
        run_id=event.run_id, runbook=event.runbook, phase=event.phase, action=event.action,
        status=event.status, target=event.target, operator=event.operator,
        started_at=event.started_at, finished_at=event.finished_at,
        duration_s=(event.finished_at - event.started_at).total_seconds(),
        dry_run=event.dry_run, error=event.error, checksums=event.checksums or {},
        detail=event.detail,
    ))


def events_frame(conn: Connection, runbook: str, limit: int = 50) -> pd.DataFrame:
    """The latest events of a runbook on this target, newest first."""
    import pandas as pd  # frames are for readers; a run's start does not pay for pandas

    columns = ["run_id", "phase", "action", "status", "dry_run", "operator", "started_at",
               "duration_s", "error"]
    if not ledger_exists(conn):
        return pd.DataFrame(columns=columns)
    t = tables(conn.dialect.name)
    query = (sa.select(*[t.events.c[c] for c in columns]).where(t.events.c.runbook == runbook)
             .order_by(t.events.c.id.desc()).limit(limit))
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)


def run_events(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The events one run recorded, oldest first."""
    if not ledger_exists(conn):
        return []
    t = tables(conn.dialect.name)
    rows = conn.execute(sa.select(t.events).where(t.events.c.run_id == run_id).order_by(t.events.c.id))
    return [dict(r) for r in rows.mappings()]


# -- runbook state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class State:
    runbook: str
    state: str
    checksum: str | None
    checksums: dict[str, str]
    run_id: str
    operator: str
    updated_at: datetime
    fingerprint_before: str | None
    fingerprint_after: str | None
    snapshot_before: dict[str, str] | None
    phase: str | None = None
    step: int | None = None
    steps: int | None = None
    steps_done: int | None = None
    step_sql: str | None = None
    error: str | None = None


def read_state(conn: Connection, runbook: str) -> State | None:
    if not ledger_exists(conn):
        return None
    t = tables(conn.dialect.name)
    columns = [c for c in State.__dataclass_fields__ if c in t.state.c]
    try:
        row = conn.execute(sa.select(*[t.state.c[c] for c in columns])
                           .where(t.state.c.runbook == runbook)).mappings().first()
    except sa.exc.ProgrammingError:
        # A version-1 ledger not upgraded yet (read-only commands do not upgrade): its columns only.
        conn.rollback()
        old = [c for c in columns if c not in {col.name for col in _STATE_V2_COLUMNS()}]
        row = conn.execute(sa.select(*[t.state.c[c] for c in old])
                           .where(t.state.c.runbook == runbook)).mappings().first()
    if row is None:
        return None
    return State(**dict(row))


def _write(conn: Connection, state: State) -> None:
    t = tables(conn.dialect.name)
    values = {k: getattr(state, k) for k in State.__dataclass_fields__}
    conn.execute(t.state.delete().where(t.state.c.runbook == state.runbook))
    conn.execute(t.state.insert().values(**values))


def check_transition(runbook: str, old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(runbook, old, new)


def move(conn: Connection, runbook: str, new: str, **changes: Any) -> State:
    """Move a runbook to ``new`` (checked against :data:`TRANSITIONS`) with the given fields;
    the fingerprint before is never overwritten once recorded for the current cycle (see
    :func:`first_snapshot`)."""
    current = read_state(conn, runbook)
    old = current.state if current is not None else PENDING
    check_transition(runbook, old, new)
    base = current or State(runbook=runbook, state=PENDING, checksum=None, checksums={}, run_id="",
                            operator=operator(), updated_at=now(), fingerprint_before=None,
                            fingerprint_after=None, snapshot_before=None)
    snapshot = changes.pop("snapshot_before", None)
    if first_snapshot(current) and snapshot is not None:
        changes["snapshot_before"] = snapshot
        changes["fingerprint_before"] = Snapshot(snapshot).fingerprint
    updated = replace(base, state=new, updated_at=now(), **changes)
    if new in (APPLIED, ROLLED_BACK):  # a finished attempt has no step in flight
        updated = replace(updated, step=None, steps=None, steps_done=None, step_sql=None, error=None)
    _write(conn, updated)
    return updated


def first_snapshot(current: State | None) -> bool:
    """Whether an attempt starting now is the first of its cycle, so that the schema as it is
    now is the "before" a rollback must restore: never applied, or rolled back since. A
    resume (partial, failed, interrupted) or a re-verification keeps the recorded one."""
    return current is None or current.state == ROLLED_BACK or current.snapshot_before is None


def restore(conn: Connection, previous: State | None, runbook: str) -> None:
    """Put back the state an attempt started from, when the attempt applied nothing."""
    current = read_state(conn, runbook)
    old = current.state if current is not None else PENDING
    back = previous.state if previous is not None else PENDING
    check_transition(runbook, old, back)
    t = tables(conn.dialect.name)
    if previous is None:
        conn.execute(t.state.delete().where(t.state.c.runbook == runbook))
    else:
        _write(conn, previous)


def step_intent(conn: Connection, runbook: str, step: int, steps: int, sql: str) -> None:
    """Before a step that commits on its own: which one is in flight (written ahead)."""
    _progress(conn, runbook, step=step, steps=steps, step_sql=sql[:500])


def step_outcome(conn: Connection, runbook: str, step: int) -> None:
    """After that step committed (or was found done): steps 1..step are done."""
    _progress(conn, runbook, steps_done=step)


def _progress(conn: Connection, runbook: str, **values: Any) -> None:
    t = tables(conn.dialect.name)
    done = conn.execute(t.state.update().where(t.state.c.runbook == runbook, t.state.c.state.in_(IN_FLIGHT))
                        .values(updated_at=now(), **values))
    if done.rowcount != 1:
        current = read_state(conn, runbook)
        raise IllegalTransition(runbook, current.state if current else PENDING, "a step in flight")


def reset(conn: Connection, runbook: str) -> None:
    """Forget a runbook on this target (``prepare`` only: it reloads the "before" fixture)."""
    t = tables(conn.dialect.name)
    conn.execute(t.state.delete().where(t.state.c.runbook == runbook))
    conn.execute(t.migrations.delete().where(t.migrations.c.runbook == runbook))


def settle_interrupt(conn: Connection, *, runbook: str, run_id: str, phase: str, target: str, why: str,
                     started_at: datetime) -> str:
    """What a runner records after it stopped a run from outside (its kernel is gone): an attempt
    this run had in flight becomes ``interrupted`` (the steps done stay done), a backfill it was
    running is ``paused`` at its checkpoint, and the event says so. Returns the state now."""
    state = read_state(conn, runbook)
    if state is not None and state.state in IN_FLIGHT and state.run_id == run_id:
        state = move(conn, runbook, INTERRUPTED, error=why)
    t = tables(conn.dialect.name)
    if conn.dialect.name == "postgresql":
        conn.execute(t.migrations.update().where(t.migrations.c.runbook == runbook, t.migrations.c.run_id == run_id,
                                                 t.migrations.c.status == DM_RUNNING)
                     .values(status=DM_PAUSED, error=why, updated_at=now()))
    record_event(conn, Event(run_id=run_id, runbook=runbook, phase=phase, action="interrupted", status=INTERRUPTED,
                             target=target, operator=operator(), started_at=started_at, finished_at=now(),
                             error=why, detail={"in_flight": in_flight_text(state) if state else ""}))
    return effective_state(state, live=False)


# -- who is running: liveness through session advisory locks ---------------------------------------

def runbook_lock_key(runbook: str) -> str:
    """The session advisory lock a run holds while it moves this runbook step by step."""
    return f"dbrunbook.runbook:{runbook}"


def lock_held(conn: Connection, key: str) -> bool:
    """Whether another session holds the advisory lock ``key`` on this database now."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND objid = (hashtext(:key)::bigint & 4294967295)::oid AND pid <> pg_backend_pid() "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"),
        {"key": key}).scalar())


def effective_state(state: State | None, live: bool) -> str:
    """The state as it truly is: an attempt in flight that no live session holds was killed."""
    if state is None:
        return PENDING
    if state.state in IN_FLIGHT and not live:
        return INTERRUPTED
    return state.state


# -- the one decision ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What a phase does given the ledger: ``apply``, ``resume``, ``noop`` or ``refuse``."""

    action: str
    state: str                   # the effective state it was taken from
    reason: str
    error: DbrunbookError | None = None
    #: Steps whose effect is already in the catalog are skipped (the target is part-way).
    recovery: bool = False


def in_flight_text(state: State) -> str:
    """``step 2 of 4: CREATE INDEX ...`` for a state with a step in flight."""
    if not state.step:
        return ""
    done = state.steps_done or 0
    if done >= state.step:
        return f"after step {state.step} of {state.steps} ({done} done)"
    # A step that failed or hit its lock timeout rolled back whole; only a killed one may be half done.
    maybe = "" if state.state in (FAILED, PARTIAL) else "; it may be half done"
    return f"at step {state.step} of {state.steps} ({done} done{maybe}): {state.step_sql or '?'}"


def decide(direction: str, state: State | None, checksum: str, *, live: bool = False,
           script: str = "the migration", target: str = "") -> Decision:
    """The one decision, taken by schema, deploy and rollback, and shown by ``status``.

    Forward: apply (pending, rolled back), noop (applied, same checksum), resume (part-way,
    same checksum), refuse (drift, or another run in flight). Backward: apply from applied or
    any part-way state (recovery), noop when there is nothing to undo, refuse while in flight."""
    current = effective_state(state, live)
    where = f" on {target}" if target else ""
    if state is not None and current in IN_FLIGHT:
        return Decision(REFUSE, current, "another run is in flight", GuardRefused(
            f"refused: run {state.run_id} ({state.operator}) is {current.replace('_', ' ')} {state.runbook}{where} "
            f"right now ({in_flight_text(state) or 'starting'}); wait for it"))
    if direction == BACKWARD:
        if current in (PENDING, ROLLED_BACK):
            what = "already rolled back" if current == ROLLED_BACK else "never applied on this target"
            return Decision(NOOP, current, f"{what}: nothing to undo, the reverse expectations are verified again")
        assert state is not None
        if current == APPLIED:
            return Decision(APPLY, current, f"applied at {state.updated_at:%Y-%m-%d %H:%M} UTC by {state.operator}")
        return Decision(APPLY, current, f"{describe(state, checksum, live=live)[1]}: undo what was done; steps "
                        "whose object is already gone are skipped", recovery=True)
    if current in (PENDING, ROLLED_BACK):
        return Decision(APPLY, current, "not applied on this target yet" if current == PENDING
                        else "rolled back earlier: apply again")
    assert state is not None
    if state.checksum != checksum:
        return Decision(REFUSE, current, "drift", DriftError(
            f"{script} changed since it was {current.replace('_', ' ')}{where} ({(state.checksum or '?')[:12]} at "
            f"{state.updated_at:%Y-%m-%d %H:%M} by {state.operator}; the file is now {checksum[:12]}): "
            "roll back first, or restore the file"))
    if current == APPLIED:
        return Decision(NOOP, current, f"already applied with this checksum ({checksum[:12]}) at "
                        f"{state.updated_at:%Y-%m-%d %H:%M} UTC by {state.operator}")
    return Decision(RESUME, current, f"{describe(state, checksum, live=live)[1]}: resume; every step is checked "
                    "against the catalog and the ones already done are skipped", recovery=True)


def describe(state: State | None, checksum: str, *, live: bool = False, script: str = "the migration") -> tuple[str, str]:
    """(state, one line of detail) for ``dbrunbook status`` and the decisions' reasons."""
    current = effective_state(state, live)
    if state is None:
        return PENDING, f"{script} ({checksum[:12]}) has not been applied here"
    when = f"{state.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    run = f"run {state.run_id} by {state.operator}"
    if current == APPLIED:
        if state.checksum != checksum:
            return "applied (DRIFT)", (f"applied {state.checksum[:12] if state.checksum else '?'} but {script} "
                                       f"is now {checksum[:12]}")
        return "applied (up to date)", f"{script} {checksum[:12]} applied {when} by {state.operator}, run {state.run_id}"
    if current == ROLLED_BACK:
        return "rolled back", f"rolled back {when} by {state.operator}, run {state.run_id}"
    direction = "rolling back" if state.state == ROLLING_BACK or state.phase == "rollback" else "applying"
    step = in_flight_text(state)
    if current in IN_FLIGHT:
        return current.replace("_", " "), f"{direction} now ({run}) {step}".rstrip()
    if current == INTERRUPTED:
        killed = "" if state.state == INTERRUPTED else " (killed: no live session holds it)"
        return (f"interrupted {step}".rstrip(),
                f"{state.phase or direction} interrupted{killed} {when}, {run}; run it again to resume, or run the "
                "rollback phase")
    if current == PARTIAL:
        return "partial", (f"a deploy stopped part-way {when} ({run}) {step}; deploy again to resume, or roll back"
                           .replace("  ", " "))
    return (f"failed {step}".rstrip(),
            f"{state.phase or direction} failed {when} ({run}): {state.error or '?'}; fix and run again to resume, "
            "or run the rollback phase")


# -- data migrations (backfills) ------------------------------------------------------------------

@dataclass
class Checkpoint:
    """Where a backfill is: the last key committed, and what the batches did."""

    cursor: Any = None
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    last_id: Any = None
    rows_written: int = 0
    batches: int = 0
    # The oldest transaction still running when the backfill began (xid8, as text): every row
    # written since has a newer xmin, which is how the parity check finds them all.
    started_xid: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Checkpoint:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Migration:
    """One row of the ledger's data_migrations table."""

    runbook: str
    name: str
    phase: str = "backfill"
    status: str = DM_PENDING
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    run_id: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    verification: dict[str, Any] | None = None


def _migrations_sql() -> tuple[str, str]:
    table = f'"{SCHEMA}"."data_migrations"'
    read = (f"SELECT phase, status, checkpoint, run_id, started_at, completed_at, error, verification FROM {table} "
            "WHERE runbook = %s AND name = %s")
    write = (f"INSERT INTO {table} (runbook, name, phase, status, checkpoint, processed_records, run_id, started_at, "
             "completed_at, updated_at, error, verification) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s) "
             "ON CONFLICT (runbook, name) DO UPDATE SET phase = EXCLUDED.phase, status = EXCLUDED.status, "
             "checkpoint = EXCLUDED.checkpoint, processed_records = EXCLUDED.processed_records, "
             "run_id = EXCLUDED.run_id, started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, "
             "updated_at = now(), error = EXCLUDED.error, verification = EXCLUDED.verification")
    return read, write


def read_migration(conn: Any, runbook: str, name: str) -> Migration | None:
    """The backfill's row, on a psycopg connection (the backfill's own, batch by batch)."""
    row = conn.execute(_migrations_sql()[0], (runbook, name)).fetchone()
    if row is None:
        return None
    phase, status, point, run_id, started, completed, error, verification = row
    return Migration(runbook, name, phase, status, Checkpoint.from_json(point), run_id, started, completed, error,
                     verification)


def write_migration(conn: Any, m: Migration) -> None:
    """Upsert the row in the caller's transaction: with a batch, the two commit together."""
    from psycopg.types.json import Jsonb

    conn.execute(_migrations_sql()[1], (
        m.runbook, m.name, m.phase, m.status, Jsonb(asdict(m.checkpoint)), m.checkpoint.processed, m.run_id,
        m.started_at, m.completed_at, m.error, Jsonb(m.verification) if m.verification is not None else None))


def backfill_lock_key(runbook: str, name: str) -> str:
    """The session advisory lock a running backfill holds (a killed one's goes with its session)."""
    return f"dbrunbook.phases.backfill:{runbook}:{name}"


def effective_status(m: dict[str, Any] | Migration, live: bool) -> str:
    """A data migration's status as it truly is: ``running`` that nobody runs was killed."""
    status = m.status if isinstance(m, Migration) else str(m["status"])
    return "interrupted" if status == DM_RUNNING and not live else status


def cleaned_up_migrations(conn: Connection, runbook: str) -> list[str]:
    """The runbook's data migrations whose cleanup ran: after it, a rollback has nothing to go back to."""
    if not ledger_exists(conn):
        return []
    t = tables(conn.dialect.name)
    return list(conn.execute(sa.select(t.migrations.c.name).where(
        t.migrations.c.runbook == runbook, t.migrations.c.phase.in_(["cleanup", "complete"]))).scalars())


def mark_migrations_rolled_back(conn: Connection, runbook: str) -> None:
    t = tables(conn.dialect.name)
    conn.execute(t.migrations.update().where(t.migrations.c.runbook == runbook)
                 .values(status=DM_ROLLED_BACK, updated_at=now()))


def migrations_frame(conn: Connection, runbook: str) -> pd.DataFrame:
    """The runbook's data migrations on this target: phase, status (as it truly is) and checkpoint."""
    import pandas as pd

    columns = ["name", "phase", "status", "processed_records", "checkpoint", "updated_at", "error"]
    if not ledger_exists(conn):
        return pd.DataFrame(columns=columns)
    t = tables(conn.dialect.name)
    rows = conn.execute(sa.select(*[t.migrations.c[c] for c in columns]).where(t.migrations.c.runbook == runbook)
                        .order_by(t.migrations.c.name)).mappings().all()
    frame = pd.DataFrame(rows, columns=columns)
    frame["status"] = [effective_status({str(k): v for k, v in r.items()},
                                        lock_held(conn, backfill_lock_key(runbook, str(r["name"]))))
                       for r in frame.to_dict("records")]
    return frame


# -- archive seals (version 3) -------------------------------------------------------------------------

@dataclass(frozen=True)
class Seal:
    """What the target's ledger holds of one archived run: its manifest's sha256, and the run and
    manifest sha256 before it on this target (the archive's chain)."""

    run_id: str
    runbook: str
    target: str
    folder: str
    status: str
    manifest_sha256: str
    previous_run_id: str | None
    previous_sha256: str | None
    operator: str
    sealed_at: datetime


def last_seal(conn: Connection, target: str) -> Seal | None:
    """The newest sealed run on this target, or None (no ledger yet, or nothing sealed)."""
    if (ledger_version(conn) or 0) < 3:
        return None
    t = tables(conn.dialect.name)
    row = conn.execute(sa.select(t.archives).where(t.archives.c.target == target)
                       .order_by(t.archives.c.sealed_at.desc(), t.archives.c.run_id.desc()).limit(1)).mappings().first()
    return Seal(**row) if row else None


def record_seal(conn: Connection, seal: Seal) -> None:
    """Seal a run in the caller's transaction; a run is sealed once."""
    ensure_ledger(conn)
    t = tables(conn.dialect.name)
    conn.execute(t.archives.insert().values(**asdict(seal)))


def seals(conn: Connection, target: str | None = None) -> list[Seal]:
    if (ledger_version(conn) or 0) < 3:
        return []
    t = tables(conn.dialect.name)
    query = sa.select(t.archives).order_by(t.archives.c.sealed_at, t.archives.c.run_id)
    if target is not None:
        query = query.where(t.archives.c.target == target)
    return [Seal(**row) for row in conn.execute(query).mappings().all()]


# -- approvals (version 3) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Approval:
    """An approval of one exact plan: the sha256 of every runbook file, and the review it rests on."""

    runbook: str
    target: str
    approver: str
    plan_sha256: str
    checksums: dict[str, str]
    review_run_id: str | None
    approved_at: datetime
    note: str | None = None


def record_approval(conn: Connection, approval: Approval) -> None:
    ensure_ledger(conn)
    t = tables(conn.dialect.name)
    conn.execute(t.approvals.insert().values(**asdict(approval)))


def approvals(conn: Connection, runbook: str | None = None) -> list[Approval]:
    """Approvals recorded on this target, newest first."""
    if (ledger_version(conn) or 0) < 3:
        return []
    t = tables(conn.dialect.name)
    query = sa.select(t.approvals).order_by(t.approvals.c.approved_at.desc(), t.approvals.c.id.desc())
    if runbook is not None:
        query = query.where(t.approvals.c.runbook == runbook)
    return [Approval(**{k: v for k, v in row.items() if k != "id"}) for row in conn.execute(query).mappings().all()]
