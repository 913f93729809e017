"""Drift: a target changed out of band, or a migration edited after it ran, is found, named object by
object, exits with its own code, and stops a deploy unless the consent names the target."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from dbrunbook.run.drift import DRIFT_EXIT
from dbrunbook.state import ledger

from .conftest import (
    add_target,
    apply_schema,
    cli,
    connect,
    prepared_pair,
    prepared_target,
)

RUNBOOK = "event_message_fk"


def test_an_out_of_band_change_is_drift_in_status_and_drift(tmp_path: Path) -> None:
    with prepared_target(RUNBOOK, "dr") as target:
        assert cli("drift", "--target", target).returncode == 0  # the fixture prepare recorded
        apply_schema(target)
        clean = cli("drift", RUNBOOK, "--target", target)
        assert clean.returncode == 0 and "no drift" in clean.stdout and \
            "the schema is as the ledger recorded it after event_message_fk schema" in clean.stdout, clean.stdout
        assert cli("status", RUNBOOK, "--target", target).returncode == 0
        with connect(target) as conn, conn.begin():
            conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "hotfix" text DEFAULT \'x\''))
            conn.execute(sa.text('CREATE INDEX event_hotfix ON "Event" ("hotfix" DESC) WHERE "hotfix" IS NOT NULL'))
            conn.execute(sa.text('DROP INDEX "Event_messageId_idx"'))
        status = cli("status", RUNBOOK, "--target", target)
        assert status.returncode == DRIFT_EXIT, status.stdout + status.stderr
        assert "SCHEMA DRIFT: the schema changed out of band since event_message_fk schema (run" in status.stdout
        assert "2 added, 1 removed" in status.stdout, status.stdout
        found = cli("drift", "--target", target)
        assert found.returncode == DRIFT_EXIT, found.stdout + found.stderr
        for line in ('added    column public."Event".hotfix', 'added    index public."Event".event_hotfix',
                     'removed  index public."Event"."Event_messageId_idx"'):
            assert line in found.stdout, found.stdout
        data = json.loads(cli("drift", "--target", target, "--format", "json").stdout)
        (only,) = data["targets"]
        assert data["drifted"] and only["drifted"] and {d["change"] for d in only["differences"]} >= {"added", "removed"}
        changed = {d["object"]: d for d in only["differences"]}
        assert "DESC" in changed['public."Event".event_hotfix']["live"]  # the index as it is, order and predicate
        # Put back by hand as it was recorded: no drift again.
        with connect(target) as conn, conn.begin():
            conn.execute(sa.text('DROP INDEX event_hotfix; ALTER TABLE "Event" DROP COLUMN "hotfix"'))
            conn.execute(sa.text('CREATE INDEX "Event_messageId_idx" ON "Event"("messageId")'))
        assert cli("drift", "--target", target).returncode == 0


def test_an_edited_migration_is_drift_with_its_exit_code(runbook_copy: Path) -> None:
    with prepared_target(RUNBOOK, "de") as target:
        apply_schema(target, runbook_copy)
        migration = runbook_copy / "migration.sql"
        migration.write_text(migration.read_text() + "-- edited after it ran\n")
        status = cli("status", str(runbook_copy), "--target", target)
        assert status.returncode == DRIFT_EXIT and "applied (DRIFT)" in status.stdout, status.stdout
        found = cli("drift", str(runbook_copy), "--target", target)
        assert found.returncode == DRIFT_EXIT, found.stdout
        assert "file: event_message_fk: migration.sql changed since it was applied" in found.stdout


def test_a_tampered_run_of_the_target_is_drift_and_an_unreachable_target_an_error(tmp_path: Path) -> None:
    with prepared_target(RUNBOOK, "ds") as target:
        done = cli("run", RUNBOOK, "--target", target, "--phases", "schema")
        assert done.returncode == 0, done.stdout + done.stderr
        folder = Path(done.stdout.splitlines()[1].split("archive:", 1)[1].strip())
        assert cli("drift", "--target", target).returncode == 0
        page = folder / "01_schema.html"
        kept = page.read_bytes()
        page.write_bytes(kept.replace(b"passed", b"pasSed", 1))
        found = cli("drift", "--target", target)
        assert found.returncode == DRIFT_EXIT and "archive: " in found.stdout and "changed file: 01_schema.html" in \
            found.stdout, found.stdout
        page.write_bytes(kept)
    add_target("nowhere", {"url": "postgresql://nobody@127.0.0.1:1/nothing"})
    gone = cli("drift", "--target", "nowhere")
    assert gone.returncode == 1 and "nowhere: ERROR" in gone.stdout, gone.stdout + gone.stderr


def test_deploy_refuses_a_drifted_target_unless_the_consent_names_it(tmp_path: Path) -> None:
    with prepared_pair(RUNBOOK, "dd") as (rehearsal, prod):
        apply_schema(rehearsal)
        with connect(prod) as conn, conn.begin():
            conn.execute(sa.text("CREATE TABLE made_by_hand (id int)"))
        done = cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}")
        assert done.returncode == 1, done.stdout
        line = done.stderr.strip().splitlines()[-1]
        assert f"deploy refused: {prod} drifted from its ledger" in line and "added table public.made_by_hand" in line
        assert f"accept_drift={prod}" in line
        with connect(prod) as conn:
            assert ledger.read_state(conn, RUNBOOK) is None  # nothing was changed
        wrong = cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}",
                    "-p", f"accept_drift={rehearsal}")
        assert wrong.returncode == 1  # the consent names the target it is for
        accepted = cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}",
                       "-p", f"accept_drift={prod}")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        folder = Path(accepted.stdout.splitlines()[1].split("archive:", 1)[1].strip())
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["parameters"]["accept_drift"] == prod
        with connect(prod) as conn:
            frame = ledger.events_frame(conn, RUNBOOK)
            t = sa.table("events", sa.column("detail"), sa.column("id"), schema="dbrunbook")
            detail = conn.execute(sa.select(t.c.detail).order_by(t.c.id.desc()).limit(1)).scalar_one()
        assert frame.iloc[0][["phase", "status"]].tolist() == ["deploy", "passed"]
        assert detail["accepted_drift"]["objects"] == ["added table public.made_by_hand",
                                                       "added column public.made_by_hand.id"]
        assert detail["accepted_drift"]["by"]
        # The deploy recorded the schema as it left it, the table made by hand included: no drift now.
        assert cli("drift", "--target", prod).returncode == 0


def test_drift_without_a_ledger_says_so(target: str) -> None:
    found = cli("drift", "--target", target)
    assert found.returncode == 0 and "no schema recorded yet" in found.stdout, found.stdout

