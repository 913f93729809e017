"""The source tool's own migration history, kept in step with what dbrunbook applies.

A member imported from Prisma, golang-migrate or Flyway carries its ``origin`` (the tool and the
migration's name or version). When the target has that tool's history table, applying the member
records it there as the tool itself would (Prisma's ``_prisma_migrations`` row with its sha256
checksum, golang-migrate's ``schema_migrations`` version, Flyway's ``flyway_schema_history`` row
with its CRC32 checksum), and rolling it back removes it, so ``prisma migrate status`` and the like
agree with the ledger. It runs in the phase's own transaction: both records commit together.
"""
from __future__ import annotations

import hashlib
import uuid
import zlib
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..dialects import Dialect
from ..runbook.sections import Origin

#: The dialects whose tools' history tables are kept in step (the tools' own SQL is PostgreSQL's here).
KEPT_ON = (Dialect.POSTGRESQL,)


def _has(conn: Connection, table: str) -> bool:
    return bool(conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar())


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


def record_applied(conn: Connection, origin: Origin | None, migration: Path, operator: str) -> str | None:
    """Record the member in its tool's history table, if the target has one; what was done."""
    if origin is None or Dialect(conn.dialect.name) not in KEPT_ON:
        return None
    if origin.tool == "prisma" and _has(conn, "_prisma_migrations"):
        checksum = hashlib.sha256(migration.read_bytes()).hexdigest()
        conn.execute(sa.text('DELETE FROM "_prisma_migrations" WHERE migration_name = :n AND rolled_back_at IS NULL '
                             "AND finished_at IS NULL"), {"n": origin.name})
        conn.execute(sa.text(
            'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, logs, rolled_back_at, '
            "started_at, applied_steps_count) VALUES (:id, :c, now(), :n, NULL, NULL, now(), 1)"),
            {"id": str(uuid.uuid4()), "c": checksum, "n": origin.name})
        return f"_prisma_migrations: {origin.name} ({checksum[:12]})"
    if origin.tool == "updown" and _has(conn, "schema_migrations"):
        if _golang_migrate(conn):  # one row: the current version, and whether it is dirty
            conn.execute(sa.text("DELETE FROM schema_migrations"))
            conn.execute(sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, false)"),
                         {"v": int(origin.version)})
        else:  # dbmate: one row per applied version
            conn.execute(sa.text("INSERT INTO schema_migrations (version) VALUES (:v) ON CONFLICT DO NOTHING"),
                         {"v": origin.version})
        return f"schema_migrations: version {origin.version}"
    if origin.tool == "flyway" and _has(conn, "flyway_schema_history"):
        rank = conn.execute(sa.text("SELECT coalesce(max(installed_rank), 0) + 1 FROM flyway_schema_history")).scalar()
        conn.execute(sa.text(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, "
            "installed_by, installed_on, execution_time, success) VALUES (:r, :v, :d, 'SQL', :s, :c, :by, now(), 0, true)"),
            {"r": rank, "v": origin.version, "d": origin.name.replace("_", " "), "s": migration.name if not
             origin.script else origin.script, "c": flyway_checksum(migration), "by": operator[:100]})
        return f"flyway_schema_history: version {origin.version}"
    return None


def record_rolled_back(conn: Connection, origin: Origin | None, previous: str | None) -> str | None:
    """Undo the record when the member is rolled back (``previous``: the version before it)."""
    if origin is None or Dialect(conn.dialect.name) not in KEPT_ON:
        return None
    if origin.tool == "prisma" and _has(conn, "_prisma_migrations"):
        conn.execute(sa.text('DELETE FROM "_prisma_migrations" WHERE migration_name = :n'), {"n": origin.name})
        return f"_prisma_migrations: {origin.name} removed"
    if origin.tool == "updown" and _has(conn, "schema_migrations"):
        if not _golang_migrate(conn):
            conn.execute(sa.text("DELETE FROM schema_migrations WHERE version = :v"), {"v": origin.version})
            return f"schema_migrations: version {origin.version} removed"
        conn.execute(sa.text("DELETE FROM schema_migrations"))
        if previous and previous.isdigit():
            conn.execute(sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, false)"),
                         {"v": int(previous)})
        return f"schema_migrations: version {previous or '(none)'}"
    if origin.tool == "flyway" and _has(conn, "flyway_schema_history"):
        conn.execute(sa.text("DELETE FROM flyway_schema_history WHERE version = :v"), {"v": origin.version})
        return f"flyway_schema_history: version {origin.version} removed"
    return None
