"""The ledger: created on demand, append-only events, state per runbook."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from dbrunbook import ledger

from .conftest import connect


def test_events_are_append_only(target: str) -> None:
    with connect(target) as conn:
        with conn.begin():
            ledger.ensure_ledger(conn)
            ledger.ensure_ledger(conn)  # idempotent
            now = ledger.now()
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
            ledger.ensure_ledger(conn)
            fields = dict(checksum="c1", checksums={"m": "c1"}, run_id="r1", operator="o",
                          fingerprint_after="f1", snapshot_before={"table public.t": "table"})
            ledger.move(conn, "rb", ledger.APPLIED, **fields)
            ledger.move(conn, "rb", ledger.APPLIED, **fields)  # replaces, never duplicates
            rows = conn.execute(sa.text("SELECT count(*) FROM dbrunbook.state WHERE runbook = 'rb'")).scalar()
            assert rows == 1
        got = ledger.read_state(conn, "rb")
        assert got is not None and got.checksum == "c1" and got.snapshot_before == {"table public.t": "table"}
