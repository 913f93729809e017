"""Fleet rollout on Dask (a LocalCluster of processes) and real embedded databases: waves, a
halt after the failing wave, a resume, carry-on, and every database's own ledger."""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook.cli import commands
from dbrunbook.run import fleet
from dbrunbook.state import ledger
from dbrunbook.targets import embedded

from .conftest import add_config, cli, connect

RUNBOOK = "event_message_fk"


@pytest.fixture
def tenants() -> Iterator[tuple[str, list[str]]]:
    """A group of 12 tenant databases (a pattern over the embedded server), each with seed 000's
    "before" schema."""
    prefix = f"fl{uuid.uuid4().hex[:6]}"
    group = f"g{prefix}"
    names = [f"{prefix}_{i:02d}" for i in range(1, 13)]
    add_config("groups", group, {"pattern": f"{prefix}_*", "server": "dev"})
    for name in names:
        embedded.ensure_database(name)
        commands.prepare(RUNBOOK, f"{group}/{name}")
    try:
        yield group, [f"{group}/{n}" for n in names]
    finally:
        for name in names:
            embedded.drop_database(name)


def state(ref: str) -> str | None:
    with connect(ref) as conn:
        found = ledger.read_state(conn, RUNBOOK)
    return None if found is None else found.state


def fleet_json(stdout: str) -> dict[str, object]:
    folder = Path(re.findall(r"archive: (\S+)", stdout)[-1])
    return json.loads((folder / "fleet.json").read_text())


def test_waves_halt_after_a_failing_wave_then_resume(tenants: tuple[str, list[str]]) -> None:
    group, refs = tenants
    assert fleet.group_targets(group) == refs
    # Database 4 (in the second wave of 1, 3, 8) already has the column: its schema phase fails.
    with connect(refs[3]) as conn:
        conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "messageId" TEXT'))
        conn.commit()
    halted = cli("fleet", "run", RUNBOOK, "--group", group, "--phases", "schema", "--waves", "1,4,100%",
                 "--parallel", "2")
    assert halted.returncode == 1, halted.stdout + halted.stderr
    assert (f"wave 2 {refs[3]}: FAILED: StatementFailed: event_message_fk/migration.sql:5: statement 1 of 3 failed "
            '[42701]: column "messageId" of relation "Event" already exists') in halted.stdout, halted.stdout
    assert "halted after the first failure: 8 database(s) in later waves not started" in halted.stdout
    assert "database(s) failed, the rollout halted" in halted.stderr
    report = fleet_json(halted.stdout)
    statuses = {d["target"]: d["status"] for d in report["databases"]}  # type: ignore[index, union-attr]
    assert [statuses[r] for r in refs[:4]] == ["passed", "passed", "passed", "failed"]
    assert all(statuses[r] == "not started" for r in refs[4:])
    assert [state(r) for r in refs[:3]] == ["applied"] * 3
    assert state(refs[3]) is None  # the failed transaction left nothing, not even a state
    assert all(state(r) is None for r in refs[4:])  # later waves untouched
    # Each database's evidence is structured: its phases, what each step returned, its fingerprint.
    first = next(d for d in report["databases"] if d["target"] == refs[0])  # type: ignore[union-attr]
    steps = first["phases"][0]["steps"]
    assert first["phases"][0]["phase"] == "schema" and list(steps)[:3] == ["plan", "before", "applied"], steps
    checks = steps["checks"]["tables"][0]["rows"]
    assert checks and all(row["result"] == "pass" for row in checks), checks
    assert any("Expectations:" in text for text in steps["checks"]["texts"])
    broken = next(d for d in report["databases"] if d["target"] == refs[3])  # type: ignore[union-attr]
    assert list(broken["phases"][0]["steps"]) == ["plan", "before"]  # what it found before the error
    assert first["fingerprint"] and first["run_id"] and first["worker"] != "local"
    page = (Path(re.findall(r"archive: (\S+)", halted.stdout)[-1]) / "fleet.html").read_text()
    assert "Wave 3: 8 database(s)" in page and "not started" in page and "image/png" in page
    # Fixed, the same command resumes: the three applied are skipped, the rest applied.
    with connect(refs[3]) as conn:
        conn.execute(sa.text('ALTER TABLE "Event" DROP COLUMN "messageId"'))
        conn.commit()
    resumed = cli("fleet", "run", RUNBOOK, "--group", group, "--phases", "schema", "--waves", "1,4,100%")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    statuses = {d["target"]: d["status"] for d in fleet_json(resumed.stdout)["databases"]}  # type: ignore[union-attr]
    assert [statuses[r] for r in refs[:3]] == ["skipped"] * 3 and all(statuses[r] == "passed" for r in refs[3:])
    assert all(state(r) == "applied" for r in refs)
    shown = cli("fleet", "status", RUNBOOK, "--group", group)
    assert shown.stdout.count("applied (up to date)") == 12
    # Each database's ledger works alone afterwards: status, and a rollback of one of them.
    assert "applied (up to date)" in cli("status", RUNBOOK, "--target", refs[5]).stdout
    back = cli("run", RUNBOOK, "--target", refs[5], "--phases", "rollback")
    assert back.returncode == 0 and state(refs[5]) == "rolled_back", back.stdout + back.stderr


def test_on_error_continue_applies_every_other_database(tenants: tuple[str, list[str]]) -> None:
    group, refs = tenants
    with connect(refs[0]) as conn:  # the canary itself is broken
        conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "messageId" TEXT'))
        conn.commit()
    result = fleet.fleet_run(RUNBOOK, refs, ["schema"], waves="1,50%,100%", parallel=2, on_error="continue")
    assert not result.ok and [d.target for d in result.failed] == [refs[0]]
    assert all(d.status == "passed" for d in result.databases if d.target != refs[0])
    assert [state(r) for r in refs[1:]] == ["applied"] * 11
    assert f"wave 1 {refs[0]}: FAILED" in result.render()


def test_full_notebooks_per_database_on_request(tenants: tuple[str, list[str]]) -> None:
    _, refs = tenants
    result = fleet.fleet_run(RUNBOOK, refs[:2], ["schema", "rollback"], waves="100%", parallel=2, notebooks=True)
    assert result.ok, result.render()
    for ref in refs[:2]:
        folder = result.folder / "databases" / ref.replace("/", "__")
        assert (folder / "01_schema.ipynb").is_file() and (folder / "02_rollback.html").is_file()
        assert "Fingerprint restored" in (folder / "02_rollback.html").read_text()
    assert [state(r) for r in refs[:2]] == ["rolled_back"] * 2


def test_no_more_workers_than_the_largest_wave_holds() -> None:
    assert fleet.workers_needed(2, [["dev"]]) == 1  # the README's one-database fleet starts one worker
    assert fleet.workers_needed(4, [["a"], ["b", "c", "d"]]) == 3
    assert fleet.workers_needed(2, [["a"], ["b", "c", "d"]]) == 2
    with pytest.raises(Exception, match="at least 1"):
        fleet.workers_needed(0, [["a"]])


def test_waves_are_cumulative_and_must_reach_every_database() -> None:
    assert fleet.parse_waves("1,10%,100%", 40) == [1, 3, 36]
    assert fleet.parse_waves("1,100%", 1) == [1]
    assert fleet.parse_waves("5,5,100%", 12) == [5, 7]
    with pytest.raises(Exception, match="reaches 4 of 12"):
        fleet.parse_waves("1,4", 12)
    with pytest.raises(Exception, match="neither a count nor a percentage"):
        fleet.parse_waves("one,100%", 3)


def test_a_killed_fleet_leaves_every_ledger_true_and_a_rerun_completes(tenants: tuple[str, list[str]]) -> None:
    """SIGINT or SIGKILL to `dbrunbook fleet run` at a random moment: each database is applied (its
    ledger says so, and the column is there) or untouched (no state, no column); the same command
    then completes the rest, and a fleet rollback brings every fingerprint back."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from dbrunbook.catalog import introspect

    from .conftest import ROOT
    from .test_interrupts import default_sigint

    group, refs = tenants
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    sig = rng.choice([signal.SIGINT, signal.SIGKILL])
    before = {}
    for ref in refs:
        with connect(ref) as conn:
            before[ref] = introspect.snapshot(conn).fingerprint
    run = subprocess.Popen([sys.executable, "-m", "dbrunbook", "fleet", "run", RUNBOOK, "--group", group,
                            "--phases", "schema", "--waves", "1,100%", "--parallel", "2"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert run.stdout is not None
    # The kill lands after the canary and a random number of the second wave's 11 databases, with at
    # least one still to go (a kill timed by the clock alone came after the end on a quiet machine).
    finished = rng.randrange(0, 10)
    while "wave 1" not in run.stdout.readline():  # the canary is done: the second wave is under way
        assert run.poll() is None, f"seed {seed}: the fleet ended before the kill"
    for _ in range(finished):
        assert "wave 2" in run.stdout.readline(), f"seed {seed}: the fleet ended before the kill"
    time.sleep(rng.uniform(0.0, 0.05))
    assert run.poll() is None, f"seed {seed}: the fleet ended before the kill"
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    context = f"seed {seed}, {sig.name}"
    assert run.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), f"{context}: {err}"
    # Workers of a killed coordinator may finish the database they hold: wait until nothing is connected.
    deadline = time.monotonic() + 60
    names = [ref.split("/", 1)[1] for ref in refs]
    while True:
        with connect("dev") as conn:
            busy = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(:n)"),
                                {"n": names}).scalar()
        if not busy:
            break
        assert time.monotonic() < deadline, f"{context}: sessions still open on the tenants"
        time.sleep(0.2)
    applied = 0
    for ref in refs:
        with connect(ref) as conn:
            has_column = conn.execute(sa.text("SELECT count(*) FROM information_schema.columns WHERE "
                                              "table_name = 'Event' AND column_name = 'messageId'")).scalar() == 1
        assert (state(ref) == "applied") == has_column, f"{context}: {ref} ledger {state(ref)}, column {has_column}"
        assert state(ref) in ("applied", None), f"{context}: {ref} {state(ref)}"
        applied += has_column
    assert 1 <= applied, context  # the canary at least
    print(f"{context}: {applied} of {len(refs)} applied when the kill landed")
    again = cli("fleet", "run", RUNBOOK, "--group", group, "--phases", "schema")
    assert again.returncode == 0, f"{context}\n{again.stdout}{again.stderr}"
    assert all(state(r) == "applied" for r in refs), context
    back = cli("fleet", "run", RUNBOOK, "--group", group, "--phases", "rollback", "--waves", "100%")
    assert back.returncode == 0, f"{context}\n{back.stdout}{back.stderr}"
    for ref in refs:
        with connect(ref) as conn:
            assert introspect.snapshot(conn).fingerprint == before[ref], f"{context}: {ref}"
