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


def test_a_claim_short_fails_unless_the_runbook_accepts_it_with_a_reason(tmp_path: Path, target: str) -> None:
    """Seed 003's "98%+ smaller" partial index measures about 40% here: without a reason that
    fails the phase; with claim_warn it passes, and the warning heads the page and the summary."""
    import json
    import shutil

    import yaml

    from .conftest import ROOT, cli
    from .test_run import archive_of

    book = tmp_path / "conversation_integrity"
    shutil.copytree(ROOT / "runbooks" / "conversation_integrity", book)
    spec = yaml.safe_load((book / "runbook.yaml").read_text())
    for probe in spec["test"]["probes"]:
        probe.pop("claim_warn", None)
        probe["claim"] = 1  # these hold: only the size claim is at stake
    size = spec["test"]["index_sizes"][0]
    reason = size.pop("claim_warn")
    (book / "runbook.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commands.prepare(str(book), target)
    failed = cli("run", str(book), "--target", target, "--phases", "schema,test", "-p", "rows=20000")
    assert failed.returncode == 1
    assert "short of the claimed 98%" in failed.stderr and "claim_warn" in failed.stderr, failed.stderr
    size["claim_warn"] = reason
    (book / "runbook.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    passed = cli("run", str(book), "--target", target, "--phases", "test", "-p", "rows=20000")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "warning: index Conversation_lead_open_unique: the partial index is" in passed.stdout
    page = json.loads((archive_of(passed.stdout) / "01_test.ipynb").read_text())
    top = "".join(page["cells"][0]["source"])
    assert top.startswith("**Warnings of this run**") and "short of the claimed 98%" in top and reason[:40] in top
    manifest = json.loads((archive_of(passed.stdout) / "manifest.json").read_text())
    assert manifest["phases"][0]["warnings"] and manifest["status"] == "passed"
