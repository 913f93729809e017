"""Seed 003's runbook: precondition, behaviour cases, probes with hidden indexes, index sizes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.errors import PreconditionFailed
from dbrunbook.state import ledger

from .conftest import apply_schema, cli, connect, prepared_pair
from .test_run import archive_of

RUNBOOK = "conversation_integrity"


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def test_schema_test_rollback_end_to_end(target: str) -> None:
    commands.prepare(RUNBOOK, target)
    before = fingerprint(target)
    done = cli("run", RUNBOOK, "--target", target, "--phases", "schema,test,rollback", "-p", "rows=20000")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = archive_of(done.stdout)
    assert fingerprint(target) == before
    test_page = json.dumps(json.loads((folder / "02_test.ipynb").read_text()))
    assert "Behaviour:** 4 of 4 case(s) passed" in test_page
    assert "recent messages:" in test_page and "customer conversations:" in test_page
    assert "the plan claimed **25x**" in test_page and "the plan claimed **10x**" in test_page
    assert 'Index Scan using \\"Message_conversation_id_created_at_idx\\"' in test_page
    assert "partial saves" in test_page
    assert (folder / "probe_timings.png").is_file()
    assert "Fingerprint restored" in (folder / "03_rollback.html").read_text()


def test_probes_hide_the_index_for_the_before_path(target: str, tmp_path: Path) -> None:
    commands.prepare(RUNBOOK, target)
    apply_schema(target, RUNBOOK)
    test = open_phase("test", RUNBOOK, target, rows=20000, archive_dir=tmp_path)
    test.generate()
    test.time_access_paths()
    plans = test.explain().value.set_index(["probe", "path"])
    assert plans.loc[("recent messages", "before"), "indexes scanned"] == "(none)"
    assert plans.loc[("recent messages", "after"), "result"] == "pass"
    assert plans.loc[("customer conversations", "after"), "result"] == "pass"
    sizes = test.index_sizes().value.set_index("index")
    partial = sizes.loc["Conversation_lead_open_unique"]
    assert 0 < partial["built fresh: as defined"] < partial["built fresh: without WHERE"]
    test.finish()
    # The hidden indexes came back: the savepoints were rolled back.
    with connect(target) as conn:
        names = set(conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).scalars())
    assert {"Message_conversation_id_created_at_idx", "Conversation_customer_id_started_at_idx"} <= names


def test_write_overhead_is_measured_with_and_without_the_new_indexes(target: str, tmp_path: Path) -> None:
    commands.prepare(RUNBOOK, target)
    apply_schema(target, RUNBOOK)
    test = open_phase("test", RUNBOOK, target, rows=20000, archive_dir=tmp_path)
    test.generate()
    with connect(target) as conn:
        messages = conn.execute(sa.text('SELECT count(*) FROM "Message"')).scalar()
    frame = test.write_overhead().value.set_index("write")
    print(frame.to_string())
    for write in ("new messages", "new conversations"):
        row = frame.loc[write]
        assert 0 < row["median ms without"] and 0 < row["median ms with"]
        assert row["claimed"] == "at most +10% (seed 003: write overhead +5-10%)"
        pct = float(row["overhead"].rstrip("%"))
        assert pct == pytest.approx((row["median ms with"] / row["median ms without"] - 1) * 100, abs=1)
        if pct > 10:  # short of the claim: accepted only with the runbook's reason, as a warning
            assert any(w.startswith(f"write '{write}'") and "accepted as a warning: measured +" in w
                       for w in test.detail.get("warnings", [])), test.detail
    assert float(frame.loc["new conversations", "overhead"].rstrip("%")) > 10  # honest: the seed's figure misses here
    assert not test.failures
    # Without the reason, the same shortfall fails the phase.
    strict = test.spec.write_costs[1].model_copy(update={"claim_warn": ""})
    test.spec.write_costs[:] = [strict]
    test.write_overhead()
    assert [f for f in test.failures if f.startswith("write 'new conversations'")], test.failures
    test.failures.clear()
    test.finish()
    with connect(target) as conn:  # every write rolled back, the indexes back
        assert conn.execute(sa.text('SELECT count(*) FROM "Message"')).scalar() == messages  # the fixture's rows only
        names = set(conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).scalars())
    assert {"Message_conversation_id_created_at_idx", "Conversation_lead_open_unique"} <= names


def test_precondition_stops_before_anything_changes(target: str) -> None:
    commands.prepare(RUNBOOK, target)
    with connect(target) as conn:
        conn.execute(sa.text("""INSERT INTO "Conversation" (lead_id) VALUES ('lead-1'), ('lead-2'), ('lead-2')"""))
        conn.commit()
    before = fingerprint(target)
    run = open_phase("schema", RUNBOOK, target)
    with pytest.raises(PreconditionFailed) as caught:
        run.plan()
    assert str(caught.value) == (
        "precondition 'no lead with more than one open conversation' failed: 2 offending row(s): "
        "lead_id=lead-1, open_conversations=2; lead_id=lead-2, open_conversations=3; nothing was changed")
    assert fingerprint(target) == before
    with connect(target) as conn:
        event = ledger.events_frame(conn, RUNBOOK, limit=1).iloc[0]
    assert (event["phase"], event["status"]) == ("schema", "failed")
    # The same from the shell: exit 1, one line naming the offenders.
    done = cli("run", RUNBOOK, "--target", target, "--phases", "schema")
    assert done.returncode == 1 and "lead_id=lead-2, open_conversations=3" in done.stderr


def test_deploy_preflight_runs_the_precondition_too(tmp_path: Path) -> None:
    with prepared_pair(RUNBOOK, prefix="ci_") as (rehearsal, prod):
        apply_schema(rehearsal, RUNBOOK)
        with connect(prod) as conn:  # production data the rehearsal did not have
            conn.execute(sa.text("""INSERT INTO "Conversation" (lead_id) VALUES ('lead-3')"""))
            conn.commit()
        before = fingerprint(prod)
        deploy = open_phase("deploy", RUNBOOK, prod, rehearsal=rehearsal, archive_dir=tmp_path)
        deploy.acquire_run_lock()
        with pytest.raises(PreconditionFailed, match="lead_id=lead-3, open_conversations=2"):
            deploy.preflight()
        assert fingerprint(prod) == before
        assert not (tmp_path / "schema_before.sql").exists()  # it stopped before the backup, too
        assert commands.status(RUNBOOK, prod).state == "pending"
