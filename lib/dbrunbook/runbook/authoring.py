"""Writing a runbook from SQL, as ``import`` and ``new`` do: the migration tried on a scratch
database statement by statement (each statement's inverse read from the catalog just before it),
the rollback generated where every statement can be inverted, the expectations derived from what the
catalog became, and runbook.yaml written with a comment on each key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..catalog.derive import Catalog, catalog_snapshot, expectations_between
from ..sql.inverse import Inverse, invert
from ..sql.statements import Statement


@dataclass
class Trial:
    """What a script did on a scratch database: each statement's inverse, the catalog before and
    after, and the first statement that failed (``file:line: message``), after which nothing ran;
    then, when its rollback was tried (:func:`try_rollback`), the catalog after it or its error."""

    inverses: list[Inverse] = field(default_factory=list)
    before: Catalog = field(default_factory=Catalog)
    after: Catalog | None = None
    error: str | None = None
    back: Catalog | None = None
    back_error: str | None = None

    @property
    def expectations(self) -> dict[str, Any]:
        """What the script made, as runbook.yaml expectations (none when it did not run to its end)."""
        return expectations_between(self.before, self.after) if self.after is not None else {}

    @property
    def after_rollback(self) -> dict[str, Any]:
        """What the rollback undid, as expectations (``expect_after_rollback``)."""
        return expectations_between(self.after, self.back) if self.after is not None and self.back is not None \
            else {}

    def left_behind(self) -> list[str]:
        """What the migration made that is still there after its rollback."""
        if self.after is None or self.back is None:
            return []
        return sorted((self.back.names() & self.after.names()) - self.before.names())


def apply(conn: Any, statements: list[Statement]) -> str | None:
    """Run statements on a scratch database (autocommit); the first error as ``file:line: message``."""
    import psycopg

    for stmt in statements:
        try:
            conn.execute(stmt.text.encode())
        except psycopg.Error as exc:
            return f"{stmt.file}:{stmt.line}: {(exc.diag.message_primary or str(exc)).strip()}"
    return None


def try_script(conn: Any, statements: list[Statement], *, invert_each: bool = True) -> Trial:
    """Run ``statements`` one by one on the scratch database ``conn``, each one's inverse read first."""
    trial = Trial(before=catalog_snapshot(conn))
    for stmt in statements:
        if invert_each:
            trial.inverses.append(invert(stmt, conn))
        trial.error = apply(conn, [stmt])
        if trial.error:
            return trial
    trial.after = catalog_snapshot(conn)
    return trial


def try_rollback(conn: Any, trial: Trial, forward: list[Statement], backward: list[Statement]) -> bool:
    """Run the rollback after a trial that ran to its end, recording the catalog it leaves
    (:attr:`Trial.back`) or its first error; then the scratch database is as the migration left it
    again: a rollback that can run in a transaction is rolled back (psycopg's
    ``force_rollback``), one that cannot is followed by the migration once more. False when that
    could not be done (the scratch database no longer follows the chain)."""
    if trial.after is None:
        return True
    if all(stmt.transactional for stmt in backward):
        with conn.transaction(force_rollback=True):
            trial.back_error = apply(conn, backward)
            if trial.back_error is None:
                trial.back = catalog_snapshot(conn)
        return True
    trial.back_error = apply(conn, backward)
    if trial.back_error is not None:
        return False
    trial.back = catalog_snapshot(conn)
    return apply(conn, forward) is None


def generated_rollback(inverses: list[Inverse]) -> tuple[list[str], list[str]]:
    """(the rollback's statements: each inverse in reverse order, the reasons it cannot be written)."""
    irreversible = [i.irreversible for i in inverses if i.irreversible]
    return ([] if irreversible else [s for i in reversed(inverses) for s in i.statements]), irreversible


def expectation_count(expect: dict[str, Any]) -> int:
    return sum(len(v) if isinstance(v, list) else len(v.get("present", [])) + len(v.get("absent", []))
               for v in expect.values())


#: What each key of runbook.yaml is, said above it where import and new write one.
COMMENTS = {
    "title": "What this runbook does, as a reviewer reads it first.",
    "source": "Where the migration came from.",
    "engine": "The database it is written for: postgresql or sqlite.",
    "migration": "The forward script (or a list of files, applied in order as one migration).",
    "rollback": "The way back; [] declares the runbook forward-only (see irreversible).",
    "irreversible": "Why there is no rollback: what the migration does that cannot be undone without losing data.",
    "fixture": "The schema the migration starts from: `dbrunbook prepare` loads it into a non-production target.",
    "expect": "What must exist once the migration ran (generated from what it made on a scratch database; the "
              "schema and deploy phases check it).",
    "expect_after_rollback": "What must be gone again after the rollback (generated: what the migration made). "
                             "The rollback phase also proves the whole schema's fingerprint is back.",
    "origin": "The migration's name and version in its source tool, whose history table is kept in step.",
}


def render_spec(spec: dict[str, Any]) -> str:
    """runbook.yaml's text, a comment above each key it has (:data:`COMMENTS`)."""
    parts = []
    for key, value in spec.items():
        comment = COMMENTS.get(key)
        block = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=110)
        parts.append((f"# {comment}\n" if comment else "") + block)
    return "\n".join(parts)
