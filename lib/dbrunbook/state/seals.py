"""The seal of each archived run in its target's ledger: the manifest's sha256 and the run before
it on the target, so a changed, deleted or swapped run shows (:mod:`dbrunbook.archive.chain`
verifies the archive against them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .storage import ensure_ledger, ledger_version, tables


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
