"""The ledger each target keeps of what ran against it.

Two tables: ``events``, append-only (one row per phase action: who, when, how long, outcome,
checksums of the SQL used), and ``state``, the current state of each runbook on this target
(applied or rolled back, with the checksum and the schema snapshot taken before it was applied).
On PostgreSQL they live in schema ``dbrunbook``; on SQLite as ``dbrunbook_events`` and
``dbrunbook_state`` in the same file.
"""
from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

SCHEMA = "dbrunbook"
APPLIED = "applied"
ROLLED_BACK = "rolled_back"
# A deploy that stopped part-way: some online steps are committed, the next deploy resumes.
PARTIAL = "partial"

PASSED = "passed"
FAILED = "failed"
NOOP = "noop"

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


@dataclass(frozen=True)
class Tables:
    events: sa.Table
    state: sa.Table
    migrations: sa.Table


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
    return Tables(events, state, migrations)


_APPEND_ONLY_SQL = [
    """CREATE OR REPLACE FUNCTION dbrunbook.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'dbrunbook.events is append-only'; END $$""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_append_only'
                        AND tgrelid = 'dbrunbook.events'::regclass) THEN
           CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON dbrunbook.events
             FOR EACH ROW EXECUTE FUNCTION dbrunbook.refuse_change();
         END IF;
       END $$""",
]


def ensure_ledger(conn: Connection) -> None:
    """Create the ledger tables if they are missing (idempotent, safe under concurrency)."""
    dialect = conn.dialect.name
    t = tables(dialect)
    if dialect == "postgresql":
        # Two first runs racing to create the ledger would collide on the catalog.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('dbrunbook.ledger'))"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    t.events.metadata.create_all(conn, checkfirst=True)
    if dialect == "postgresql":
        for statement in _APPEND_ONLY_SQL:
            conn.execute(sa.text(statement))


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


def read_state(conn: Connection, runbook: str) -> State | None:
    if not ledger_exists(conn):
        return None
    t = tables(conn.dialect.name)
    row = conn.execute(sa.select(t.state).where(t.state.c.runbook == runbook)).mappings().first()
    if row is None:
        return None
    return State(**{k: row[k] for k in State.__dataclass_fields__})


def write_state(conn: Connection, state: State) -> None:
    t = tables(conn.dialect.name)
    values = {k: getattr(state, k) for k in State.__dataclass_fields__}
    conn.execute(t.state.delete().where(t.state.c.runbook == state.runbook))
    conn.execute(t.state.insert().values(**values))


def clear_state(conn: Connection, runbook: str) -> None:
    t = tables(conn.dialect.name)
    conn.execute(t.state.delete().where(t.state.c.runbook == runbook))
    conn.execute(t.migrations.delete().where(t.migrations.c.runbook == runbook))


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
                 .values(status="rolled-back", updated_at=now()))


def migrations_frame(conn: Connection, runbook: str) -> pd.DataFrame:
    """The runbook's data migrations on this target: phase, status and checkpoint."""
    columns = ["name", "phase", "status", "processed_records", "checkpoint", "updated_at", "error"]
    if not ledger_exists(conn):
        return pd.DataFrame(columns=columns)
    t = tables(conn.dialect.name)
    rows = conn.execute(sa.select(*[t.migrations.c[c] for c in columns]).where(t.migrations.c.runbook == runbook)
                        .order_by(t.migrations.c.name)).mappings().all()
    return pd.DataFrame(rows, columns=columns)


def events_frame(conn: Connection, runbook: str, limit: int = 50) -> pd.DataFrame:
    """The latest events of a runbook on this target, newest first."""
    columns = ["run_id", "phase", "action", "status", "dry_run", "operator", "started_at",
               "duration_s", "error"]
    if not ledger_exists(conn):
        return pd.DataFrame(columns=columns)
    t = tables(conn.dialect.name)
    query = (sa.select(*[t.events.c[c] for c in columns]).where(t.events.c.runbook == runbook)
             .order_by(t.events.c.id.desc()).limit(limit))
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)
