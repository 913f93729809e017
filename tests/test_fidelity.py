"""Seed fidelity: what the plans promised is done or checked, not only printed."""
from __future__ import annotations

from pathlib import Path

from dbrunbook import commands, introspect, open_phase

from .conftest import apply_schema, connect, prepared_pair


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def test_deploy_keeps_the_authors_transaction_and_splits_an_inline_reference(tmp_path: Path) -> None:
    """Seed 001's 022 wraps DROP CONSTRAINT and the new ADD CONSTRAINT of its CHECK in one
    BEGIN ... COMMIT: deploy runs them in one transaction, so production never lacks the CHECK;
    its inline REFERENCES becomes NOT VALID, then VALIDATE, as lint's fix text says."""
    runbook = "saved_insights_customer"
    with prepared_pair(runbook, "f3") as (rehearsal, prod):
        apply_schema(rehearsal, runbook)
        run = open_phase("deploy", runbook, prod, rehearsal=rehearsal, archive_dir=tmp_path)
        run.acquire_run_lock()
        run.preflight()
        run.plan()
        first = run.steps[0]
        assert first.kind == "transaction as the author wrote it" and first.transactional
        drop = first.sql.index('DROP CONSTRAINT IF EXISTS "SavedInsights_scope_check"')
        add = first.sql.index('ADD CONSTRAINT "SavedInsights_scope_check"')
        assert drop < add  # one step, one transaction: the CHECK is replaced, never missing
        assert 'ADD CONSTRAINT "SavedInsights_customerId_fkey" FOREIGN KEY ("customerId") REFERENCES "Customer" ' \
               "(id) ON DELETE SET NULL NOT VALID" in first.sql
        assert 'ADD COLUMN "customerId" uuid NULL;' in first.sql  # the column alone
        kinds = [s.kind for s in run.steps]
        assert kinds[1:3] == ["validate constraint", "create index concurrently"]
        run.apply()
        run.verify()
        run.finish()
        # The online form ends in exactly the schema the rehearsal's one transaction produced.
        assert fingerprint(prod) == fingerprint(rehearsal)
        assert commands.status(runbook, prod).state == "applied (up to date)"
