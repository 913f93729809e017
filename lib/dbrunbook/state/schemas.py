"""The schema as each committed change left it, and drift: what changed since, out of band.

Every phase that commits a change to the schema (schema, deploy, rollback, a backfill's cleanup,
prepare) records, in the same transaction, the whole snapshot (every user object and its definition,
:mod:`dbrunbook.catalog.introspect`). Drift is the live schema compared with the newest record:
each object added, removed or changed since, by anyone but dbrunbook. A ledger from before version 4
has only fingerprints: drift then says whether the schema changed, not what.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..catalog import introspect
from ..catalog.introspect import Snapshot
from .identity import now, operator
from .status import Status
from .storage import ledger_exists, ledger_version, tables

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RecordedSchema:
    run_id: str
    runbook: str
    phase: str
    operator: str
    recorded_at: datetime
    fingerprint: str           # "": not known (a ledger upgraded from version 1, before its next change)
    snapshot: Snapshot | None  # None: only the fingerprint is known (a ledger from before version 4)

    def says(self) -> str:
        return (f"{self.runbook} {self.phase} (run {self.run_id} by {self.operator}, "
                f"{self.recorded_at:%Y-%m-%d %H:%M} UTC)")


def record_schema(conn: Connection, *, run_id: str, runbook: str, phase: str, snapshot: Snapshot) -> None:
    """Record the schema as a change left it (in the change's own transaction)."""
    t = tables(conn.dialect.name)
    conn.execute(t.schemas.insert().values(run_id=run_id, runbook=runbook, phase=phase, operator=operator(),
                                           recorded_at=now(), fingerprint=snapshot.fingerprint,
                                           objects=snapshot.objects))


def last_schema(conn: Connection) -> RecordedSchema | None:
    """The newest record of the schema: the last change's own, or, where the ledger has none (it
    predates them), the fingerprint its newest state recorded."""
    if not ledger_exists(conn):
        return None
    t = tables(conn.dialect.name)
    if sa.inspect(conn).has_table(t.schemas.name, schema=t.schemas.schema):
        row = conn.execute(sa.select(t.schemas).order_by(t.schemas.c.id.desc()).limit(1)).mappings().first()
        if row is not None:
            return RecordedSchema(row["run_id"], row["runbook"], row["phase"], row["operator"], row["recorded_at"],
                                  row["fingerprint"], Snapshot(dict(row["objects"])))
    version_1 = ledger_version(conn) == 1  # its fingerprints hashed column order too: not comparable
    state = conn.execute(sa.select(t.state.c.runbook, t.state.c.run_id, t.state.c.operator, t.state.c.updated_at,
                                   t.state.c.fingerprint_after).order_by(t.state.c.updated_at.desc()).limit(1)
                         ).mappings().first()
    if state is None:
        return None
    return RecordedSchema(state["run_id"], state["runbook"], "?", state["operator"], state["updated_at"],
                          "" if version_1 else state["fingerprint_after"] or "", None)


def part_way(conn: Connection) -> list[str]:
    """The runbooks caught mid-attempt on this target (applying, rolling back, partial, failed,
    interrupted): their own steps changed the schema since the last record, so what differs is not
    known to be out of band until the attempt ends."""
    if not ledger_exists(conn):
        return []
    t = tables(conn.dialect.name)
    settled = (Status.APPLIED, Status.ROLLED_BACK, Status.PENDING)
    return [f"{r} ({s})" for r, s in conn.execute(sa.select(t.state.c.runbook, t.state.c.state)
                                                  .where(t.state.c.state.not_in(settled))
                                                  .order_by(t.state.c.runbook))]


@dataclass(frozen=True)
class SchemaDrift:
    """The live schema against the newest record of it."""

    recorded: RecordedSchema | None
    live: Snapshot
    differences: pd.DataFrame  # change, kind, object, recorded, live (column order is not drift)
    part_way: tuple[str, ...] = ()  # runbooks mid-attempt: the differences may be their own steps

    @property
    def known(self) -> bool:
        """Whether there is a record to compare with."""
        return self.recorded is not None and bool(self.recorded.fingerprint)

    @property
    def drifted(self) -> bool:
        if self.recorded is None or not self.known or self.part_way:
            return False
        if self.recorded.snapshot is None:
            return self.recorded.fingerprint != self.live.fingerprint
        return bool(len(self.differences))

    def _differs(self) -> bool:
        assert self.recorded is not None
        if self.recorded.snapshot is None:
            return self.recorded.fingerprint != self.live.fingerprint
        return bool(len(self.differences))

    def line(self) -> str:
        if self.recorded is None:
            return "no schema recorded yet (nothing applied here)"
        if not self.known:
            return (f"no schema record to compare with (the ledger was upgraded from version 1 after "
                    f"{self.recorded.runbook}'s last change; the next change records one)")
        if self.part_way and self._differs():
            return (f"the schema changed since {self.recorded.says()} while {', '.join(self.part_way)} is part-way: "
                    "its own steps may account for it; drift is told once the attempt is applied or rolled back")
        if not self.drifted:
            return f"the schema is as the ledger recorded it after {self.recorded.says()}"
        if self.recorded.snapshot is None:
            return (f"the schema changed since {self.recorded.says()} (fingerprint {self.recorded.fingerprint[:12]}, "
                    f"now {self.live.fingerprint[:12]}; the ledger predates object-level records)")
        counts = self.differences["change"].value_counts()
        said = ", ".join(f"{n} {change}" for change, n in sorted(counts.items()))
        return f"the schema changed out of band since {self.recorded.says()}: {said}"


def schema_drift(conn: Connection) -> SchemaDrift:
    """Compare the schema ``conn`` sees with the newest record of it."""
    import pandas as pd

    recorded = last_schema(conn)
    live = introspect.snapshot(conn)
    busy = tuple(part_way(conn))
    columns = ["change", "kind", "object", "recorded", "live"]
    if recorded is None or recorded.snapshot is None:
        return SchemaDrift(recorded, live, pd.DataFrame(columns=columns), busy)
    found = introspect.diff(recorded.snapshot, live)
    # A table's column list follows from its columns, each a row of its own; its order is not drift.
    found = found[(found["change"] != "column order") & (found["kind"] != introspect.COLUMNS_KIND)]
    found = found.rename(columns={"before": "recorded", "after": "live"}).reset_index(drop=True)
    # A relation says what it is (table, view, sequence...).
    relation = found["kind"] == "relation"
    found.loc[relation, "kind"] = [r or l for r, l in zip(found.loc[relation, "recorded"], found.loc[relation, "live"],
                                                          strict=True)]
    # By object: a table before its columns and indexes.
    return SchemaDrift(recorded, live, found.sort_values(["object", "kind"], kind="stable").reset_index(drop=True)[columns],
                       busy)

