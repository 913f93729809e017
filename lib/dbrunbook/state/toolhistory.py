"""The source tool's own migration history, kept in step with what dbrunbook applies.

A member imported from another tool carries its ``origin`` (the tool and the migration's name or
version). When the target has that tool's history table, applying the member records it there as
the tool itself would, and rolling it back removes it, so ``prisma migrate status``, ``goose status``
and the like agree with the ledger. One :class:`History` per tool in :data:`HISTORIES`:

- prisma: ``_prisma_migrations``, a row with the file's sha256 as checksum;
- updown (golang-migrate): ``schema_migrations``, one row, the current version (a table without
  ``dirty`` is dbmate's, one row per version);
- dbmate: ``schema_migrations``, one row per version;
- flyway: ``flyway_schema_history``, a row with Flyway's CRC32 checksum (a repeatable's version NULL);
- goose: ``goose_db_version``, a row per version applied;
- pop: ``schema_migration``, one row per version;
- diesel: ``__diesel_schema_migrations``, one row per version.

Sqitch's registry (changes, events, tags and dependencies keyed by change ids) is not written:
``sqitch status`` on a target migrated here does not know of it. It runs in the phase's own
transaction: both records commit together.
"""
from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..dialects import Dialect
from ..runbook.sections import Origin

#: The dialects whose tools' history tables are kept in step (the tools' own SQL is PostgreSQL's here).
KEPT_ON = (Dialect.POSTGRESQL,)


def _has(conn: Connection, table: str) -> bool:
    return bool(conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{table}"'}).scalar())


def _golang_migrate(conn: Connection) -> bool:
    return bool(conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'schema_migrations' "
        "AND column_name = 'dirty' AND table_schema = current_schema())")).scalar())


def flyway_checksum(path: Path) -> int:
    """Flyway's checksum: CRC32 over the script's lines, without line endings (a signed int)."""
    crc = 0
    text = path.read_text(encoding="utf-8-sig")
    for line in text.splitlines():
        crc = zlib.crc32(line.encode(), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


Record = Callable[[Connection, Origin, Path, str], str]
Remove = Callable[[Connection, Origin, "str | None"], str]


@dataclass(frozen=True)
class History:
    """A tool's history table and how it records a migration applied and rolled back."""

    table: str
    applied: Record
    rolled_back: Remove


def _prisma_applied(conn: Connection, origin: Origin, migration: Path, operator: str) -> str:
    checksum = hashlib.sha256(migration.read_bytes()).hexdigest()
    conn.execute(sa.text('DELETE FROM "_prisma_migrations" WHERE migration_name = :n AND rolled_back_at IS NULL '
                         "AND finished_at IS NULL"), {"n": origin.name})
    conn.execute(sa.text(
        'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, logs, rolled_back_at, '
        "started_at, applied_steps_count) VALUES (:id, :c, now(), :n, NULL, NULL, now(), 1)"),
        {"id": str(uuid.uuid4()), "c": checksum, "n": origin.name})
    return f"_prisma_migrations: {origin.name} ({checksum[:12]})"


def _prisma_rolled_back(conn: Connection, origin: Origin, previous: str | None) -> str:
    conn.execute(sa.text('DELETE FROM "_prisma_migrations" WHERE migration_name = :n'), {"n": origin.name})
    return f"_prisma_migrations: {origin.name} removed"


def _updown_applied(conn: Connection, origin: Origin, migration: Path, operator: str) -> str:
    if not _golang_migrate(conn):
        return _per_version_applied("schema_migrations")(conn, origin, migration, operator)
    conn.execute(sa.text("DELETE FROM schema_migrations"))  # one row: the current version, and whether dirty
    conn.execute(sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, false)"),
                 {"v": int(origin.version)})
    return f"schema_migrations: version {origin.version}"


def _updown_rolled_back(conn: Connection, origin: Origin, previous: str | None) -> str:
    if not _golang_migrate(conn):
        return _per_version_rolled_back("schema_migrations")(conn, origin, previous)
    conn.execute(sa.text("DELETE FROM schema_migrations"))
    if previous and previous.isdigit():
        conn.execute(sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, false)"),
                     {"v": int(previous)})
    return f"schema_migrations: version {previous or '(none)'}"


def _per_version_applied(table: str) -> Record:
    """A table of one row per applied version (dbmate, pop, diesel)."""
    def applied(conn: Connection, origin: Origin, migration: Path, operator: str) -> str:
        conn.execute(sa.text(f'INSERT INTO "{table}" (version) VALUES (:v) ON CONFLICT DO NOTHING'),
                     {"v": origin.version})
        return f"{table}: version {origin.version}"
    return applied


def _per_version_rolled_back(table: str) -> Remove:
    def rolled_back(conn: Connection, origin: Origin, previous: str | None) -> str:
        conn.execute(sa.text(f'DELETE FROM "{table}" WHERE version = :v'), {"v": origin.version})
        return f"{table}: version {origin.version} removed"
    return rolled_back


def _flyway_applied(conn: Connection, origin: Origin, migration: Path, operator: str) -> str:
    rank = conn.execute(sa.text("SELECT coalesce(max(installed_rank), 0) + 1 FROM flyway_schema_history")).scalar()
    conn.execute(sa.text(
        "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, "
        "installed_by, installed_on, execution_time, success) VALUES (:r, :v, :d, 'SQL', :s, :c, :by, now(), 0, true)"),
        {"r": rank, "v": origin.version or None, "d": origin.name.replace("_", " "),
         "s": origin.script or migration.name, "c": flyway_checksum(migration), "by": operator[:100]})
    return f"flyway_schema_history: {f'version {origin.version}' if origin.version else f'repeatable {origin.name}'}"


def _flyway_rolled_back(conn: Connection, origin: Origin, previous: str | None) -> str:
    conn.execute(sa.text("DELETE FROM flyway_schema_history WHERE version = :v"), {"v": origin.version})
    return f"flyway_schema_history: version {origin.version} removed"


def _goose_applied(conn: Connection, origin: Origin, migration: Path, operator: str) -> str:
    conn.execute(sa.text("INSERT INTO goose_db_version (version_id, is_applied) VALUES (:v, true)"),
                 {"v": int(origin.version)})
    return f"goose_db_version: version {origin.version}"


def _goose_rolled_back(conn: Connection, origin: Origin, previous: str | None) -> str:
    conn.execute(sa.text("DELETE FROM goose_db_version WHERE version_id = :v"), {"v": int(origin.version)})
    return f"goose_db_version: version {origin.version} removed"


#: Each tool whose history is kept in step, by the ``origin.tool`` of its imported members.
HISTORIES: dict[str, History] = {
    "prisma": History("_prisma_migrations", _prisma_applied, _prisma_rolled_back),
    "updown": History("schema_migrations", _updown_applied, _updown_rolled_back),
    "dbmate": History("schema_migrations", _per_version_applied("schema_migrations"),
                      _per_version_rolled_back("schema_migrations")),
    "flyway": History("flyway_schema_history", _flyway_applied, _flyway_rolled_back),
    "goose": History("goose_db_version", _goose_applied, _goose_rolled_back),
    "pop": History("schema_migration", _per_version_applied("schema_migration"),
                   _per_version_rolled_back("schema_migration")),
    "diesel": History("__diesel_schema_migrations", _per_version_applied("__diesel_schema_migrations"),
                      _per_version_rolled_back("__diesel_schema_migrations")),
}


def _history(conn: Connection, origin: Origin | None) -> History | None:
    if origin is None or Dialect(conn.dialect.name) not in KEPT_ON:
        return None
    history = HISTORIES.get(origin.tool)
    return history if history is not None and _has(conn, history.table) else None


def record_applied(conn: Connection, origin: Origin | None, migration: Path, operator: str) -> str | None:
    """Record the member in its tool's history table, if the target has one; what was done."""
    history = _history(conn, origin)
    return history.applied(conn, origin, migration, operator) if history is not None and origin else None


def record_rolled_back(conn: Connection, origin: Origin | None, previous: str | None) -> str | None:
    """Undo the record when the member is rolled back (``previous``: the version before it)."""
    history = _history(conn, origin)
    return history.rolled_back(conn, origin, previous) if history is not None and origin else None
