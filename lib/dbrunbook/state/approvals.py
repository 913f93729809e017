"""Recorded approvals: who agreed to a production deploy, of which exact plan.

``approve`` (:func:`dbrunbook.cli.commands.approve`) records in the target's ledger the sha256 of
every file of the runbook as it is now and the run id of the passed review of those same files. Deploy on a production target refuses without
an approval whose files still match (an edit voids it), and refuses an approval by the operator
themself unless the project's ``dbrunbook.yaml`` says ``approvals: {allow_self_approval: true}``
(four eyes by default, as GitLab's merge-request approvals and Bytebase's rollouts have it).
The approver is a name, as trustworthy as the operator's ($DBRUNBOOK_OPERATOR or user@host).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import load_config
from ..errors import GuardRefused
from ..files import digest
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook
from .storage import ensure_ledger, ledger_version, tables


class ApprovalRequired(GuardRefused):
    """A production deploy without a valid approval of the exact plan."""


def plan_checksums(book: Runbook | RunbookSet) -> dict[str, str]:
    """sha256 of every file of the runbook (or set): the same record its runs' manifests hold."""
    return book.file_checksums()


def plan_sha256(checksums: dict[str, str]) -> str:
    return digest(sorted(checksums.items()))


def allow_self_approval() -> bool:

    return load_config().approvals.allow_self_approval


def approvals_required() -> bool:

    return load_config().approvals.required


def valid_approval(conn: Connection, book: Runbook, operator: str) -> tuple[Approval | None, str]:
    """The newest approval of the runbook's current files by someone allowed to approve, and if
    there is none, why (in one clause)."""
    recorded = recorded_approvals(conn, book.name)
    if not recorded:
        return None, "no approval is recorded"
    current = plan_checksums(book)
    matching = [a for a in recorded if a.plan_sha256 == plan_sha256(current)]
    if not matching:
        changed = sorted(n for n in set(current) | set(recorded[0].checksums)
                         if current.get(n) != recorded[0].checksums.get(n))
        return None, (f"the files changed since {recorded[0].approver}'s approval at "
                      f"{recorded[0].approved_at:%Y-%m-%d %H:%M} ({', '.join(changed[:5])})")
    others = [a for a in matching if a.approver != operator]
    if others:
        return others[0], ""
    if allow_self_approval():
        return matching[0], ""
    return None, (f"the only approval is by {operator}, who is deploying (four eyes: dbrunbook.yaml "
                  "approvals.allow_self_approval is false)")


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


def recorded_approvals(conn: Connection, runbook: str | None = None) -> list[Approval]:
    """Approvals recorded on this target, newest first."""
    if (ledger_version(conn) or 0) < 3:
        return []
    t = tables(conn.dialect.name)
    query = sa.select(t.approvals).order_by(t.approvals.c.approved_at.desc(), t.approvals.c.id.desc())
    if runbook is not None:
        query = query.where(t.approvals.c.runbook == runbook)
    return [Approval(**{k: v for k, v in row.items() if k != "id"}) for row in conn.execute(query).mappings().all()]
