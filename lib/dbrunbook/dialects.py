"""The database dialects dbrunbook runs on, as objects: what each can do, said once.

A module asks a dialect what it needs (``target.dialect.sessions``: can another session be seen,
named, locked against and ended?) rather than which product it is; a phase says in the registry
which dialects it runs on. The value is SQLAlchemy's backend name, which is also what a target's
URL, runbook.yaml's ``engine`` and the ledger hold, so a dialect compares equal to its name.
"""
from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    POSTGRESQL = "postgresql"
    SQLITE = "sqlite"

    @property
    def label(self) -> str:
        return {"postgresql": "PostgreSQL", "sqlite": "SQLite"}[self.value]

    @property
    def sessions(self) -> bool:
        """Server sessions that can be named (application_name), seen (pg_stat_activity), locked
        against (advisory locks) and ended: a run's, a deploy's, a backfill's."""
        return self is Dialect.POSTGRESQL

    @property
    def parser(self) -> bool:
        """PostgreSQL's own parser (pglast) reads its SQL: statements as parse trees, for lint, the
        review, the lock table, online steps and generated rollbacks."""
        return self is Dialect.POSTGRESQL

    @property
    def schemas(self) -> bool:
        """Tables live in schemas (``schema.table``); the ledger has a schema of its own."""
        return self is Dialect.POSTGRESQL

    @property
    def copy(self) -> bool:
        """``COPY ... TO STDOUT``: the rows a phase deletes or drops are streamed into the archive."""
        return self is Dialect.POSTGRESQL

    @property
    def file(self) -> bool:
        """A database is a file on this machine (connecting to a missing one would create it)."""
        return self is Dialect.SQLITE

    @property
    def file_lock(self) -> bool:
        """One lock for the whole database: a read transaction left open stops every writer from
        committing."""
        return self is Dialect.SQLITE

    @property
    def explains(self) -> bool:
        """``EXPLAIN (FORMAT JSON)``, relation sizes and index statistics: the test phase's probes."""
        return self is Dialect.POSTGRESQL


def dialect(name: str) -> Dialect:
    """The dialect of a backend name (``Target.dialect``, a connection's ``dialect.name``)."""
    return Dialect(name)
