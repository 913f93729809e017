"""The README's first command: `dbrunbook demo` plays the whole seed-000 flow."""
from __future__ import annotations

import json
from pathlib import Path

from dbrunbook.cli import commands

from .conftest import cli


def test_demo_plays_the_seed_000_flow() -> None:
    done = cli("demo", fresh=True)  # the quick start, exactly: a fresh interpreter
    assert done.returncode == 0, done.stdout + done.stderr
    folders = [Path(line.split("archive:", 1)[1].strip()) for line in done.stdout.splitlines()
               if line.strip().startswith("archive:")]
    assert len(folders) == 2
    dev, prod = (json.loads((f / "manifest.json").read_text()) for f in folders)
    assert [p["phase"] for p in dev["phases"]] == ["review", "schema", "clean_slate", "code_verify", "test", "rollback",
                                                 "schema"]
    assert [p["phase"] for p in prod["phases"]] == ["deploy"]
    assert dev["status"] == prod["status"] == "passed"
    assert prod["production"] is True and dev["production"] is False
    # A complete archive: every page in both forms, the backups, the probe chart, the schema dump.
    dev_files, prod_files = set(dev["output_files"]), set(prod["output_files"])
    assert {f"{n:02d}_{p}.{ext}" for n, p in enumerate([p["phase"] for p in dev["phases"]], start=1)
            for ext in ("ipynb", "html")} <= dev_files
    assert {"clean_slate_backup/Event.csv.gz", "clean_slate_backup/backup.json", "probe_timings.png"} <= dev_files
    assert {"01_deploy.ipynb", "01_deploy.html", "schema_before.sql"} <= prod_files
    rollback_page = (folders[0] / "06_rollback.html").read_text()
    assert "Fingerprint restored" in rollback_page
    assert commands.status("event_message_fk", "prod").state == "applied (up to date)"
    assert commands.status("event_message_fk", "dev").state == "applied (up to date)"


def test_demo_all_runs_every_runbook_on_its_own_databases() -> None:
    """Three times in a row in one checkout: each prepare brings the databases back to the fixture,
    whatever the previous demo left on them (seed 002's dual-write function and trigger, ...)."""
    for attempt in range(3):
        done = cli("demo", "--all", fresh=True)
        assert done.returncode == 0, f"demo --all, run {attempt + 1}: {done.stdout[-3000:]}{done.stderr}"
    assert "dropped first" in done.stdout  # the leftovers were there, and went
    table = done.stdout.split("\n\n")[-1]
    lines = [line.split() for line in table.splitlines()[1:] if line.strip() and not line.startswith("demo")]
    summary = {(row[0], row[1]): (row[2], row[3]) for row in lines}
    # Seed 001's proposal, reviewed first: its no-go is archived as evidence, not a failed demo.
    refused = [row for row in lines if row[3] == "no-go(expected)"]
    assert [(row[0], row[1], row[2]) for row in refused] == [
        ("saved_insights_customer", "saved_insights_customer_dev", "review")]
    page = (Path(refused[0][-1]) / "01_review.ipynb").read_text()
    assert "NO-GO" in page and "fk-type-mismatch" in page and "migration-numbering" in page
    assert summary[("event_message_fk", "event_message_fk_dev")] == (
        "review,schema,clean_slate,code_verify,test,rollback,schema", "passed")
    assert summary[("event_message_fk", "event_message_fk_prod")] == ("deploy", "passed")
    assert summary[("conversation_integrity", "conversation_integrity_dev")] == (
        "review,schema,code_verify,test,rollback,schema", "passed")
    assert summary[("conversation_integrity", "conversation_integrity_prod")] == ("deploy", "passed")
    assert summary[("solution_type_analytics", "solution_type_analytics_dev")] == (
        "schema,code_verify,test,rollback,schema", "passed")
    assert summary[("solution_type_analytics", "solution_type_analytics_prod")] == ("deploy", "passed")
    assert summary[("saved_insights_customer", "saved_insights_customer_dev")] == (
        "review,schema,test,rollback,schema", "passed")
    assert summary[("saved_insights_customer", "saved_insights_customer_prod")] == ("deploy", "passed")
    assert summary[("normalize_attachments", "normalize_attachments_dev")] == (
        "review,schema,backfill,rollback,schema", "passed")
    assert summary[("normalize_attachments", "normalize_attachments_prod")] == ("deploy,backfill", "passed")
    # Seed 002 to its end on production: dual-read recorded, dual-write removed, arrays gone, final schema checked.
    prod = next(Path(row[-1]) for row in lines if row[1] == "normalize_attachments_prod")
    page = (prod / "02_backfill.ipynb").read_text()
    assert "dual-read" in page and "Cleanup done:" in page and "the final schema" in page
    assert "the plan reported 136.1 rows/s" in page and "with the ledger's phase `complete`" in page
    for row in lines:
        assert Path(row[-1]).is_dir() and (Path(row[-1]) / "manifest.json").is_file()
