"""The ledger's tables and their schema version, created and upgraded in place.

Tables: ``events``, append-only for real (UPDATE, DELETE and TRUNCATE are refused by triggers);
``state``, one row per runbook (its state, the checksum, the step in flight, and the schema
snapshot taken once, before the first attempt); ``data_migrations``, one row per backfill;
``archives``, the seal of each archived run; ``approvals``; ``schemas``, the schema as each change
left it (what ``drift`` compares against); ``version``, the ledger's schema
version, one row per upgrade. On PostgreSQL they live in schema ``dbrunbook``; on SQLite as
``dbrunbook_*`` tables in the same file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from ..catalog.introspect import Snapshot
from ..dialects import Dialect
from ..errors import DbrunbookError
from .identity import now, operator

SCHEMA = "dbrunbook"


#: The ledger schema this code writes. 1: events, state, data_migrations (no version table);
#: 2: the version table, the step in flight on ``state``, TRUNCATE refused on ``events``;
#: 3: archives (seals) and approvals; 4: schemas, the schema as each change left it (drift).
VERSION = 4


_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


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
    schemas: sa.Table


@lru_cache(maxsize=2)
def tables(dialect: str) -> Tables:
    """The ledger's tables: in schema ``dbrunbook`` where the dialect has schemas, else as
    ``dbrunbook_*`` tables beside the application's."""
    schemas = Dialect(dialect).schemas
    metadata = sa.MetaData(schema=SCHEMA if schemas else None)
    prefix = "" if schemas else "dbrunbook_"
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
    # Version 4: the whole schema (every user object and its definition) as each change that
    # committed left it, so that a change made out of band shows object by object (drift).
    recorded = sa.Table(
        prefix + "schemas", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("runbook", sa.Text, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("objects", _JSON, nullable=False),
    )
    return Tables(events, state, migrations, version, archives, approvals, recorded)


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
#: What makes ``events`` append-only, in each dialect's own SQL.
_APPEND_ONLY = {Dialect.POSTGRESQL: _APPEND_ONLY_SQL, Dialect.SQLITE: _APPEND_ONLY_SQLITE}


def ensure_ledger(conn: Connection) -> None:
    """Create the ledger tables if they are missing, or upgrade them to :data:`VERSION`
    (idempotent, safe under concurrency)."""
    dialect = Dialect(conn.dialect.name)
    t = tables(dialect)
    if dialect.sessions:
        # Two first runs racing to create the ledger would collide on the catalog.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('dbrunbook.ledger'))"))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    t.events.metadata.create_all(conn, checkfirst=True)
    found = conn.execute(sa.select(sa.func.max(t.version.c.version))).scalar()
    if found is not None and found > VERSION:
        raise LedgerTooNew(f"the ledger on this target is version {found}, newer than this dbrunbook writes "
                           f"({VERSION}); upgrade dbrunbook")
    if found == VERSION:
        return
    _upgrade_to_2(conn, from_version_1=found is None)  # idempotent; versions 3 and 4 only add tables
    conn.execute(t.version.insert().values(version=VERSION, upgraded_at=now(), operator=operator()))


def _upgrade_to_2(conn: Connection, *, from_version_1: bool) -> None:
    """From the version-1 ledger (no version table): the step columns and the append-only
    triggers. A fresh ledger already has the columns; every step is idempotent."""
    dialect = Dialect(conn.dialect.name)
    t = tables(dialect)
    have = {c["name"] for c in sa.inspect(conn).get_columns(t.state.name, schema=t.state.schema)}
    for column in _STATE_V2_COLUMNS():
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            table = f"{SCHEMA}.state" if dialect.schemas else t.state.name
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))
    for statement in _APPEND_ONLY[dialect]:
        conn.execute(sa.text(statement))
    # Version 2 compares a table's columns as a set: the fingerprints recorded before are
    # recomputed from the snapshots they were taken from, so they stay comparable.
    for runbook, objects in conn.execute(sa.select(t.state.c.runbook, t.state.c.snapshot_before)).all():
        if objects:
            conn.execute(t.state.update().where(t.state.c.runbook == runbook)
                         .values(fingerprint_before=Snapshot(dict(objects)).fingerprint))
    if from_version_1:
        # The fingerprints after that version 1 recorded hashed the column order too, and no
        # snapshot is there to recompute them from: compared with today's they would all read as
        # drift, so they go (drift has no record to compare with until the next change).
        conn.execute(t.state.update().values(fingerprint_after=None))


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
