"""The ledger: created on demand, append-only events, state per runbook."""
from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.errors import DriftError
from dbrunbook.state import approvals, identity, ledger, schemas, seals, storage
from dbrunbook.state.status import Direction, Status

from .conftest import ROOT, connect


def test_events_are_append_only(target: str) -> None:
    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
            storage.ensure_ledger(conn)  # idempotent
            now = identity.now()
            ledger.record_event(conn, ledger.Event(
                run_id="r1", runbook="rb", phase="schema", action="apply", status="passed",
                target=target, operator="tester@host", started_at=now, finished_at=now,
                checksums={"migration.sql": "abc"}))
        frame = ledger.events_frame(conn, "rb")
        assert list(frame["status"]) == ["passed"] and frame["operator"][0] == "tester@host"
        conn.rollback()  # end the read's implicit transaction
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.execute(sa.text("UPDATE dbrunbook.events SET status = 'failed'"))
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.execute(sa.text("DELETE FROM dbrunbook.events"))


def test_state_round_trip(target: str) -> None:
    with connect(target) as conn:
        assert ledger.read_state(conn, "rb") is None  # no ledger yet: nothing applied
        conn.rollback()
        with conn.begin():
            storage.ensure_ledger(conn)
            fields = dict(checksum="c1", checksums={"m": "c1"}, run_id="r1", operator="o",
                          fingerprint_after="f1", snapshot_before={"table public.t": "table"})
            ledger.move(conn, "rb", Status.APPLIED, **fields)
            ledger.move(conn, "rb", Status.APPLIED, **fields)  # replaces, never duplicates
            rows = conn.execute(sa.text("SELECT count(*) FROM dbrunbook.state WHERE runbook = 'rb'")).scalar()
            assert rows == 1
        got = ledger.read_state(conn, "rb")
        assert got is not None and got.checksum == "c1" and got.snapshot_before == {"table public.t": "table"}


def test_truncate_is_refused_too(target: str) -> None:
    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.execute(sa.text("TRUNCATE dbrunbook.events"))


def test_a_version_1_ledger_is_upgraded_and_keeps_its_history(target: str) -> None:
    """tests/fixtures/ledger_v1.sql: a target as the code before ledger versions left it."""
    from dbrunbook.cli import commands
    from dbrunbook.targets.connect import psycopg_connect
    from dbrunbook.targets.resolve import resolve_target

    dump = (ROOT / "tests" / "fixtures" / "ledger_v1.sql").read_text()
    with psycopg_connect(resolve_target(target), "load") as raw:
        raw.execute(dump.encode())
    with connect(target) as conn:
        assert storage.ledger_version(conn) == 1
        old = ledger.read_state(conn, "event_message_fk")  # readable before any upgrade
        assert old is not None and old.state == Status.APPLIED and old.step is None
    assert commands.status("event_message_fk", target).state == "applied (up to date)"
    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
        assert storage.ledger_version(conn) == storage.VERSION == 4
        columns = {c["name"] for c in sa.inspect(conn).get_columns("state", schema="dbrunbook")}
        assert {"phase", "step", "steps", "steps_done", "step_sql", "error"} <= columns
        # Version 3: the archive's seals and the approvals, empty after an upgrade.
        assert seals.seals(conn) == [] and approvals.recorded_approvals(conn) == []
        # Version 4: the schema records, none yet; version 1's fingerprints after are not comparable, so
        # drift says it has nothing to compare with rather than calling everything drift.
        found = schemas.schema_drift(conn)
        assert found.recorded is not None and not found.known and not found.drifted
        assert "upgraded from version 1" in found.line()
        assert list(ledger.events_frame(conn, "event_message_fk")["run_id"]) == ["v1run000001"]
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with conn.begin():
                conn.execute(sa.text("TRUNCATE dbrunbook.events"))
    # The state the old code recorded drives the new code: the rollback restores its fingerprint.
    run = open_phase("rollback", "event_message_fk", target)
    run.plan()
    run.apply()
    run.verify_restored()
    run.finish()
    with connect(target) as conn:
        after = schemas.last_schema(conn)
        assert after is not None and after.snapshot is not None and after.phase == "rollback"
    with connect(target) as conn:
        got = ledger.read_state(conn, "event_message_fk")
        assert got is not None and got.state == Status.ROLLED_BACK
        # Version 2 compares columns as a set: the upgrade recomputed the recorded fingerprint from
        # the snapshot version 1 stored, and the rollback restored exactly that.
        assert old.snapshot_before is not None
        assert introspect.snapshot(conn).fingerprint == got.fingerprint_before == \
            introspect.Snapshot(dict(old.snapshot_before)).fingerprint


def test_a_newer_ledger_is_refused(target: str) -> None:
    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
            conn.execute(sa.text("INSERT INTO dbrunbook.version VALUES (99, now(), 'future')"))
        with pytest.raises(storage.LedgerTooNew, match="version 99"):
            with conn.begin():
                storage.ensure_ledger(conn)


def test_transitions_are_checked(target: str) -> None:
    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
            with pytest.raises(ledger.IllegalTransition, match="cannot go from pending to rolled_back"):
                ledger.move(conn, "rb", Status.ROLLED_BACK, run_id="r", operator="o")
            ledger.move(conn, "rb", Status.APPLYING, run_id="r1", operator="o", checksum="c", checksums={},
                        snapshot_before={"table public.t": "table"}, steps=3, step=0, steps_done=0)
            first = ledger.read_state(conn, "rb")
            ledger.step_intent(conn, "rb", 1, 3, "ALTER TABLE t ADD COLUMN c int")
            ledger.step_outcome(conn, "rb", 1)
            ledger.step_intent(conn, "rb", 2, 3, "CREATE INDEX CONCURRENTLY i ON t (c)")
            ledger.move(conn, "rb", Status.INTERRUPTED, error="SIGINT")
            with pytest.raises(ledger.IllegalTransition, match="a step in flight"):
                ledger.step_intent(conn, "rb", 3, 3, "x")
            # A resume never overwrites the fingerprint before.
            ledger.move(conn, "rb", Status.APPLYING, run_id="r2", snapshot_before={"table public.u": "table"})
            ledger.move(conn, "rb", Status.APPLIED, run_id="r2", snapshot_before={"table public.u": "table"})
            got = ledger.read_state(conn, "rb")
    assert first is not None and got is not None
    assert got.snapshot_before == {"table public.t": "table"} and got.fingerprint_before == first.fingerprint_before
    assert got.step is None and got.run_id == "r2"


def test_every_state_has_its_transitions_and_the_decision_covers_it() -> None:
    assert set(ledger.TRANSITIONS) == set(ledger.STATES)
    assert all(targets <= set(ledger.STATES) for targets in ledger.TRANSITIONS.values())
    base = ledger.State(runbook="rb", state="", checksum="c", checksums={}, run_id="r", operator="o",
                        updated_at=identity.now(), fingerprint_before=None, fingerprint_after=None,
                        snapshot_before=None, step=2, steps=4, steps_done=1, step_sql="CREATE INDEX ...")
    expected = {  # state -> (forward, backward) with a live run holding the lock, then without
        Status.APPLIED: (("noop", "apply"), ("noop", "apply")),
        Status.PARTIAL: (("resume", "apply"), ("resume", "apply")),
        Status.FAILED: (("resume", "apply"), ("resume", "apply")),
        Status.INTERRUPTED: (("resume", "apply"), ("resume", "apply")),
        Status.APPLYING: (("refuse", "refuse"), ("resume", "apply")),
        Status.ROLLING_BACK: (("refuse", "refuse"), ("resume", "apply")),
        Status.ROLLED_BACK: (("apply", "noop"), ("apply", "noop")),
    }
    for name, (live, dead) in expected.items():
        state = replace(base, state=name)
        for is_live, want in ((True, live), (False, dead)):
            got = (ledger.decide(Direction.FORWARD, state, "c", live=is_live).action,
                   ledger.decide(Direction.BACKWARD, state, "c", live=is_live).action)
            assert got == want, (name, is_live)
    assert ledger.decide(Direction.FORWARD, None, "c").action == "apply"
    assert ledger.decide(Direction.BACKWARD, None, "c").action == "noop"
    drift = ledger.decide(Direction.FORWARD, replace(base, state=Status.INTERRUPTED), "other")
    assert drift.action == "refuse" and isinstance(drift.error, DriftError)
    text, detail = ledger.describe(replace(base, state=Status.APPLYING), "c", live=False)
    assert text == "interrupted at step 2 of 4 (1 done; it may be half done): CREATE INDEX ..."
    assert "killed" in detail


def test_a_data_migration_recorded_rolled_back_by_an_earlier_release_reads_as_rolled_back(target: str) -> None:
    """Status words are spelled once (Status): seed 002's ``rolled-back``, which earlier releases
    wrote for a data migration, reads as ``rolled_back`` from the row and in the status frame."""
    from dbrunbook.state import checkpoints
    from dbrunbook.targets.connect import psycopg_connect
    from dbrunbook.targets.resolve import resolve_target

    with connect(target) as conn:
        with conn.begin():
            storage.ensure_ledger(conn)
    with psycopg_connect(resolve_target(target), "old release") as raw:
        raw.execute("INSERT INTO dbrunbook.data_migrations (runbook, name, phase, status, checkpoint, "
                    "processed_records, run_id, updated_at) VALUES ('rb', 'old', 'backfill', 'rolled-back', '{}', 0, "
                    "'r0', now())")
        row = checkpoints.read_migration(raw, "rb", "old")
    assert row is not None and row.status is Status.ROLLED_BACK and row.status == "rolled_back"
    with connect(target) as conn:
        assert list(checkpoints.migrations_frame(conn, "rb")["status"]) == ["rolled_back"]
    assert Status("rolled-back") is Status.ROLLED_BACK
    with pytest.raises(ValueError):
        Status("rolled back")
