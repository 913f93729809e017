"""Recorded approvals: who agreed to a production deploy, of which exact plan.

``approve`` records in the target's ledger the sha256 of every file of the runbook as it is now and
the run id of the passed review of those same files. Deploy on a production target refuses without
an approval whose files still match (an edit voids it), and refuses an approval by the operator
themself unless the project's ``dbrunbook.yaml`` says ``approvals: {allow_self_approval: true}``
(four eyes by default, as GitLab's merge-request approvals and Bytebase's rollouts have it).
The approver is a name, as trustworthy as the operator's ($DBRUNBOOK_OPERATOR or user@host).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from ..archive import chain
from ..errors import GuardRefused
from ..runbook.sets import RunbookSet, resolve_set
from ..runbook.spec import Runbook, load_runbook, sha256_file
from . import ledger


class ApprovalRequired(GuardRefused):
    """A production deploy without a valid approval of the exact plan."""


def plan_checksums(book: Runbook | RunbookSet) -> dict[str, str]:
    """sha256 of every file of the runbook (or set), by its path inside the folder."""
    files = book.files() if isinstance(book, Runbook) else sorted(p for p in book.path.rglob("*") if p.is_file())
    return {str(p.relative_to(book.path)): sha256_file(p) for p in files}


def plan_sha256(checksums: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name}:{digest}\n" for name, digest in sorted(checksums.items())).encode()).hexdigest()


def passed_review(book: Runbook | RunbookSet, checksums: dict[str, str]) -> str | None:
    """The newest archived run with a passed review of these exact files, or None."""
    found: list[tuple[str, str]] = []
    for runs in chain.archived_runs().values():
        for run in runs:
            m = run.manifest
            reviewed = [p for p in m.get("phases") or [] if str(p.get("phase", "")).endswith("review")]
            if (m.get("runbook") == book.name and m.get("runbook_files") == checksums and reviewed
                    and all(p.get("status") == ledger.PASSED for p in reviewed)):
                found.append((str(m.get("started_at", "")), run.run_id))
    return max(found)[1] if found else None


def needs_review(book: Runbook | RunbookSet) -> bool:
    """The review phase is PostgreSQL's: a SQLite runbook is approved on its files alone."""
    members = book.members if isinstance(book, RunbookSet) else [book]
    return any(m.spec.engine == "postgresql" for m in members)


@dataclass(frozen=True)
class Approved:
    runbook: str
    target: str
    approver: str
    plan_sha256: str
    review_run_id: str | None
    members: list[str]

    def render(self) -> str:
        review = f"review run {self.review_run_id}" if self.review_run_id else "no review phase (SQLite)"
        members = f" ({len(self.members)} members)" if len(self.members) > 1 else ""
        return (f"approved {self.runbook}{members} for {self.target} by {self.approver}: plan {self.plan_sha256[:12]}, "
                f"{review}; editing any of its files voids this approval")


def approve(ref: str, target_ref: str, *, approver: str | None = None, note: str | None = None) -> Approved:
    """Record an approval of the runbook (each member of a set) as its files are now."""
    from ..targets.resolve import engine, resolve_target

    target = resolve_target(target_ref)
    book: Runbook | RunbookSet = resolve_set(ref) or load_runbook(ref)
    checksums = plan_checksums(book)
    review = passed_review(book, checksums)
    if review is None and needs_review(book):
        raise ApprovalRequired(f"approve refused: no passed review of {book.name} as its files are now is in the "
                               f"archive; run `dbrunbook run {ref} --target <rehearsal> --phases review` first")
    who = approver or ledger.operator()
    members = book.members if isinstance(book, RunbookSet) else [book]
    with engine(target).begin() as conn:
        for member in members:
            own = plan_checksums(member)
            ledger.record_approval(conn, ledger.Approval(member.name, target.name, who, plan_sha256(own), own, review,
                                                         ledger.now(), note))
    return Approved(book.name, target.name, who, plan_sha256(checksums), review, [m.name for m in members])


def allow_self_approval() -> bool:
    from ..targets.resolve import load_config

    return load_config().approvals.allow_self_approval


def approvals_required() -> bool:
    from ..targets.resolve import load_config

    return load_config().approvals.required


def valid_approval(conn: Connection, book: Runbook, operator: str) -> tuple[ledger.Approval | None, str]:
    """The newest approval of the runbook's current files by someone allowed to approve, and if
    there is none, why (in one clause)."""
    recorded = ledger.approvals(conn, book.name)
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
