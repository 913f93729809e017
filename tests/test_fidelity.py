"""Seed fidelity: what the plans promised is done or checked, not only printed."""
from __future__ import annotations

from pathlib import Path

import pytest
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.targets import embedded

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
    # The page's status line comes first (issue 14), the warnings right under it.
    assert "".join(page["cells"][0]["source"]).startswith("**PASSED** · conversation_integrity · test")
    top = "".join(page["cells"][1]["source"])
    assert top.startswith("**Warnings of this run**") and "short of the claimed 98%" in top and reason[:40] in top
    manifest = json.loads((archive_of(passed.stdout) / "manifest.json").read_text())
    assert manifest["phases"][0]["warnings"] and manifest["status"] == "passed"


def test_a_rollback_never_destroys_data_silently(tmp_path: Path, target: str) -> None:
    """Seed 000's rollback drops Event.messageId: its values are counted and copied into the
    archive first (hashed), and the restore command puts them back once the migration is re-applied."""
    import hashlib
    import json
    import os
    import subprocess

    import sqlalchemy as sa

    commands.prepare("event_message_fk", target)
    apply_schema(target)
    with connect(target) as conn, conn.begin():
        conn.execute(sa.text('UPDATE "Event" SET "messageId" = (SELECT min(id) FROM "Message")'))
        kept = conn.execute(sa.text('SELECT count(*) FROM "Event" WHERE "messageId" IS NOT NULL')).scalar()
    assert kept
    run = open_phase("rollback", "event_message_fk", target, archive_dir=tmp_path)
    run.plan()
    run.apply()
    run.verify_restored()
    run.finish()
    [saved] = json.loads((tmp_path / "rollback_backup" / "backup.json").read_text())
    assert (saved["kind"], saved["table"], saved["column"], saved["values"]) == ("column", "Event", "messageId", kept)
    file = tmp_path / saved["file"]
    assert hashlib.sha256(file.read_bytes()).hexdigest() == saved["sha256"]
    with connect(target) as conn:
        detail = conn.execute(sa.text("SELECT detail FROM dbrunbook.events WHERE run_id = :r"),
                              {"r": run.run_id}).scalar_one()
    assert detail["salvaged"][0]["values"] == kept
    # Put the column back, then the values, with the command the archive gives.
    apply_schema(target)
    url = commands.db_url(target)
    env = {**os.environ, "PATH": f"{embedded.client_binary('psql').parent}:{os.environ['PATH']}"}
    restore = saved["restore"].replace("psql ", f"psql '{url}' ", 1)
    done = subprocess.run(restore, shell=True, cwd=file.parent, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    with connect(target) as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "Event" WHERE "messageId" IS NOT NULL')).scalar() == kept


def test_a_column_kept_on_rollback_is_the_one_difference_accepted(tmp_path: Path, target: str) -> None:
    import shutil

    import yaml
    from dbrunbook.errors import ChecksFailed

    from .conftest import ROOT

    book = tmp_path / "keep_column"
    shutil.copytree(ROOT / "runbooks" / "event_message_fk", book)
    (book / "rollback.sql").write_text('ALTER TABLE "Event" DROP CONSTRAINT "Event_messageId_fkey";\n'
                                       'DROP INDEX "Event_messageId_idx";\n')
    spec = yaml.safe_load((book / "runbook.yaml").read_text())
    spec.pop("expect_after_rollback", None)
    (book / "runbook.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commands.prepare(str(book), target)
    apply_schema(target, book)
    refused = open_phase("rollback", book, target, archive_dir=tmp_path)
    refused.plan()
    refused.apply()
    refused.verify_restored()
    with pytest.raises(ChecksFailed, match="schema fingerprint .* differs"):
        refused.finish()  # undeclared: the kept column is a difference like any other
    spec["kept_on_rollback"] = [{"table": "Event", "column": "messageId", "why": "seed 000: can keep for future"}]
    (book / "runbook.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = open_phase("rollback", book, target, archive_dir=tmp_path)
    run.plan()
    run.apply()
    assert run.verify_restored().value.empty
    run.finish()


def test_seed_003s_race_runs_as_two_real_sessions(tmp_path: Path, target: str) -> None:
    """Two sessions open a conversation for one lead at the same instant: exactly one commits, the
    other waits for it, gets 23505 and fetches it; without the partial unique index both commit."""
    import sqlalchemy as sa

    runbook = "conversation_integrity"
    commands.prepare(runbook, target)
    apply_schema(target, runbook)
    run = open_phase("test", runbook, target, archive_dir=tmp_path, rows=20000)
    frame = run.concurrency().value
    assert sorted(frame["outcome"]) == ["committed", "fetched"]
    loser = frame[frame["outcome"] == "fetched"].iloc[0]
    assert loser["sqlstate"] == "23505" and loser["waited_ms"] >= 150  # it met the winner's transaction
    assert not run.failures
    run.abandon()
    with connect(target) as conn:
        assert conn.execute(sa.text("""SELECT count(*) FROM "Conversation" WHERE lead_id = 'lead-race'""")).scalar() == 0
        conn.execute(sa.text('DROP INDEX "Conversation_lead_open_unique"'))  # the race the index exists for
        conn.commit()
    unguarded = open_phase("test", runbook, target, archive_dir=tmp_path, rows=20000)
    frame = unguarded.concurrency().value
    assert list(frame["outcome"]) == ["committed", "committed"]
    assert unguarded.failures and "expected 1 to succeed" in unguarded.failures[0]
    unguarded.abandon()


@pytest.mark.parametrize(("runbook", "code", "models"), [
    ("conversation_integrity", {("check-then-create", "app/lib/conversations.ts", 10),
                                ("create-or-fetch-on-p2002", "app/lib/conversations.ts", None),
                                ("close-sets-closed-at", "app/lib/conversations.ts", None)},
     {"field closedAt DateTime? is missing"}),
    ("solution_type_analytics", {("conversation-keeps-solution-type", "app/api/conversations/route.ts", None),
                                 ("conversation-created-event", "app/api/conversations/route.ts", None)},
     {"field solutionType String? is missing", "@@index([solutionType]) is missing", "model AnalyticsEvent is not declared"}),
])
def test_code_verify_where_the_seeds_change_code(runbook: str, code: set[tuple[str, str, int | None]],
                                                 models: set[str], tmp_path: Path) -> None:
    """Seeds 003 (create-or-fetch on P2002, closedAt) and 004 (solutionType, the
    conversation_created event) change application code: their AFTER code passes, their BEFORE
    code fails at the places the seeds name."""
    from dbrunbook.runbook.spec import load_runbook

    from .conftest import add_target

    book = load_runbook(runbook)
    name = f"cv_{runbook}"
    add_target(name, {"sqlite_file": name} if book.spec.engine == "sqlite" else {"embedded": name})
    after = open_phase("code_verify", runbook, name, archive_dir=tmp_path)
    after.describe()
    after.verify()
    assert after.findings == []
    after.finish()
    failing = open_phase("code_verify", runbook, name, archive_dir=tmp_path,
                         app=str(book.path / "sample_app" / "before"))
    failing.describe()
    failing.verify()
    assert {(f.rule, f.file, f.line) for f in failing.findings if f.kind != "prisma"} == code
    prisma = {f.message for f in failing.findings if f.kind == "prisma"}
    assert models <= prisma, prisma
    failing.abandon()


def test_the_fidelity_audit_totals_are_its_rows() -> None:
    """runbooks/FIDELITY.md's summary is counted from its own rows, so it cannot drift from them."""
    from .conftest import ROOT

    text = (ROOT / "runbooks" / "FIDELITY.md").read_text()
    summary, *sections = text.split("\n## ")
    totals = [0, 0, 0, 0, 0]
    for section in sections:
        seed = section.split(":", 1)[0]
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
                if line.startswith("| ") and not line.startswith("| step")]
        counted = [len(rows), sum(r[1] == "✔" for r in rows), sum(r[2] == "✔" for r in rows),
                   sum(r[2] == "◐" for r in rows), sum(r[2] == "✘" for r in rows)]
        line = next(line for line in summary.splitlines() if line.startswith(f"| {seed} |"))
        assert [int(c) for c in line.strip("|").split("|")[2:]] == counted, seed
        totals = [a + b for a, b in zip(totals, counted, strict=True)]
    line = next(line for line in summary.splitlines() if line.startswith("| all |"))
    assert [int(c) for c in line.strip("|").split("|")[2:]] == totals
