"""Data migrations (seed 002's ``migrations`` table, the Stripe pattern): one row per backfill,
its phase, status and checkpoint, written in the same transaction as each batch."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    import pandas as pd

from .identity import now
from .ledger import lock_held
from .status import Status
from .storage import SCHEMA, ledger_exists, tables

#: A data migration's phases (seed 002's "Stripe 6-phase pattern"); its statuses are Status words.
DATA_PHASES = ("schema", "backfill", "dual-write", "dual-read", "cleanup", "complete")


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
    status: str = Status.PENDING
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
    return Migration(runbook, name, phase, Status(status), Checkpoint.from_json(point), run_id, started, completed, error,
                     verification)


def write_migration(conn: Any, m: Migration) -> None:
    """Upsert the row in the caller's transaction: with a batch, the two commit together."""
    from psycopg.types.json import Jsonb

    conn.execute(_migrations_sql()[1], (
        m.runbook, m.name, m.phase, m.status, Jsonb(asdict(m.checkpoint)), m.checkpoint.processed, m.run_id,
        m.started_at, m.completed_at, m.error, Jsonb(m.verification) if m.verification is not None else None))


def backfill_lock_key(runbook: str, name: str) -> str:
    """The session advisory lock a running backfill holds (a killed one's goes with its session)."""
    return f"dbrunbook.backfill:{runbook}:{name}"


def effective_status(m: dict[str, Any] | Migration, live: bool) -> Status:
    """A data migration's status as it truly is: ``running`` that nobody runs was killed."""
    status = Status(m.status if isinstance(m, Migration) else str(m["status"]))
    return Status.INTERRUPTED if status == Status.RUNNING and not live else status


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
                 .values(status=Status.ROLLED_BACK, updated_at=now()))


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
