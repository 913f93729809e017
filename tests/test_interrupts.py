"""Kills at random points: the ledger tells the truth, a re-run completes, a rollback restores.

Each scenario kills the real ``dbrunbook run`` (SIGKILL and SIGINT, alternating, at a random
instant once its steps are under way), then checks the ledger against the catalog, re-runs to
completion, rolls back and compares the schema with the fingerprint taken before the first try.
The seed is in every assertion message.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.runbook.spec import load_runbook
from dbrunbook.sql import effects
from dbrunbook.sql.online import derive_steps
from dbrunbook.sql.statements import units
from dbrunbook.state import checkpoints, identity, ledger
from dbrunbook.state.status import Status
from dbrunbook.targets.connect import psycopg_connect
from dbrunbook.targets.resolve import resolve_target

from .conftest import (
    ROOT,
    SEED_000,
    Blocker,
    apply_schema,
    cli,
    connect,
    prepared_pair,
    prepared_target,
)

SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
SLEEP = "SELECT pg_sleep({s});\n"


def slow_copy(tmp_path: Path, name: str, statements: list[str]) -> Path:
    """Seed 000's runbook with its migration replaced by ``statements`` (pauses between steps)."""
    folder = tmp_path / name
    shutil.copytree(SEED_000, folder)
    (folder / "migration.sql").write_text("\n".join(statements) + "\n")
    return folder


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def state(target: str, runbook: str) -> ledger.State | None:
    with connect(target) as conn:
        return ledger.read_state(conn, runbook)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sessions_of(target: str, run_id: str) -> int:
    with connect(target) as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :p"),
                                {"p": f"dbrunbook % {run_id}%"}).scalar() or 0)


def default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it. A test session started in the background of a
    non-interactive shell has SIGINT ignored, and children inherit that, so the signal the test sends
    would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_run(args: list[str], target: str, started: Callable[[], bool], sig: int, delay: float,
             ) -> tuple[subprocess.CompletedProcess[str], str]:
    """Start ``dbrunbook run``, wait until ``started()``, wait ``delay`` s, send ``sig``; returns the
    finished process and its run id, once no session of the run is left on the server."""
    proc = subprocess.Popen([sys.executable, "-m", "dbrunbook", "run", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                            preexec_fn=default_sigint)
    assert proc.stdout is not None
    # The run id and archive come first, flushed (read both lines here: communicate() reads the
    # pipe itself, past what readline() buffered).
    first = proc.stdout.readline() + proc.stdout.readline()
    run_id = first.split("(run ", 1)[1].split(")", 1)[0]
    wait_for(lambda: started() or proc.poll() is not None, "the run's steps to start")
    time.sleep(delay)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    # A SIGKILLed runner's kernel notices its parent is gone within a second, and its sessions
    # end with it (the server checks for a vanished client during a statement).
    wait_for(lambda: sessions_of(target, run_id) == 0, f"the sessions of run {run_id} to end", timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err), run_id


def check_signal_outcome(done: subprocess.CompletedProcess[str], sig: int, context: str) -> None:
    if sig == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL, context
        return
    if done.returncode == 0:  # the signal landed after the last phase ended
        return
    assert done.returncode == EXIT[sig], context + done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dbrunbook: interrupted by {sig.name}"), context + done.stderr
    for noise in ("Traceback", "DeadKernelError", "KeyboardInterrupt"):
        assert noise not in done.stderr, context + done.stderr


def check_manifest(stdout: str, sig: int, context: str) -> None:
    folder = Path(stdout.splitlines()[1].split("archive:", 1)[1].strip())
    manifest = json.loads((folder / "manifest.json").read_text())
    # Whenever the kill landed, each page saved so far is a whole, valid notebook.
    for page in folder.glob("*.ipynb"):
        nbformat.validate(nbformat.read(page, as_version=4))
    if manifest["complete"]:
        assert manifest["status"] == "passed", context
        return
    assert manifest["status"] == ("running" if sig == signal.SIGKILL else "interrupted"), context


def check_truth(target: str, runbook: str, step_effects: list[list[effects.Effect] | None], context: str) -> str:
    """The ledger's word against the catalog: the steps it calls done are done, the steps after
    the one in flight are not; returns the state ``status`` shows."""
    got = state(target, Path(runbook).name)
    report = commands.status(runbook, target)
    with psycopg_connect(resolve_target(target), "truth") as raw:
        done = [effects.state_of(raw, found) for found in step_effects]
    if got is None:
        assert all(s != effects.DONE for s in done), context
        return Status.PENDING
    if got.state == Status.APPLIED:
        assert all(s in (effects.DONE, effects.RERUN) for s in done), f"{context}: {done}"
        return got.state
    assert got.state in (Status.INTERRUPTED, Status.APPLYING), context
    assert got.step is not None and got.steps_done is not None, context
    for number, found in enumerate(done, start=1):
        if number <= got.steps_done:
            assert found in (effects.DONE, effects.RERUN), f"{context}: step {number} is {found}"
        elif number > got.step:
            assert found != effects.DONE, f"{context}: step {number} is done but the ledger says {got.step_sql}"
    assert report.state.startswith("interrupted"), f"{context}: {report.state}"
    if got.steps_done < got.step:
        assert f"at step {got.step} of {got.steps}" in report.state, f"{context}: {report.state}"
    return Status.INTERRUPTED


def test_deploy_killed_at_random_points(tmp_path: Path) -> None:
    book = slow_copy(tmp_path, "slow_deploy", [
        'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=1.0),
        'CREATE INDEX "Event_messageId_idx" ON "Event"("messageId");', SLEEP.format(s=1.0),
        'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") REFERENCES '
        '"Message"("id") ON DELETE CASCADE ON UPDATE CASCADE;'])
    statements = load_runbook(book).read_script("migration", "postgresql")[0]
    steps = [s.effects for s in derive_steps(statements)]
    with prepared_pair("event_message_fk", "k") as (rehearsal, prod):
        apply_schema(rehearsal, book)
        original = fingerprint(prod)
        kill_cycles(book, prod, ["--phases", "deploy", "-p", f"rehearsal={rehearsal}"], steps, 1.8, original)


def kill_cycles(book: Path, target: str, phase_args: list[str], steps: list[list[effects.Effect] | None],
                max_delay: float, original: str) -> None:
    """Five kills (SIGKILL, SIGINT and SIGTERM in turn) at random instants once the steps are under way;
    after each: the ledger against the catalog, a re-run to completion, the fingerprint recorded
    at the first attempt, and a rollback back to it."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    args = [str(book), "--target", target, *phase_args]
    outcomes = []
    for attempt in range(5):
        sig = SIGNALS[attempt % len(SIGNALS)]
        context = f"seed {seed}, attempt {attempt}, {sig.name}"
        done, _ = kill_run(args, target, lambda: _in_flight(target, book.name), sig, rng.uniform(0, max_delay))
        check_signal_outcome(done, sig, context)
        check_manifest(done.stdout, sig, context)
        outcomes.append(check_truth(target, str(book), steps, context))
        again = cli("run", *args)
        assert again.returncode == 0, context + again.stdout + again.stderr
        assert commands.status(str(book), target).state == "applied (up to date)", context
        recorded = state(target, book.name)
        assert recorded is not None and recorded.fingerprint_before == original, context
        _rollback(target, book)  # its last cell proves the recorded fingerprint is back
        assert fingerprint(target) == original, context
    assert outcomes.count(Status.INTERRUPTED) >= 3, f"seed {seed}: the kills missed the steps: {outcomes}"


def _in_flight(target: str, runbook: str) -> bool:
    got = state(target, runbook)
    return got is not None and got.state in ledger.IN_FLIGHT


def _rollback(target: str, book: Path) -> None:
    run = open_phase("rollback", book, target, confirm=target)
    run.plan()
    run.apply()
    run.check_expectations()
    run.verify_restored()
    run.finish()


def test_autocommit_schema_killed_at_random_points(tmp_path: Path) -> None:
    book = slow_copy(tmp_path, "slow_schema", [
        'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=0.8),
        'CREATE INDEX CONCURRENTLY "Event_messageId_idx" ON "Event"("messageId");', SLEEP.format(s=0.8),
        'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") REFERENCES '
        '"Message"("id") ON DELETE CASCADE ON UPDATE CASCADE;'])
    statements = load_runbook(book).read_script("migration", "postgresql")[0]
    steps = [effects.statement_effects(s) for s in statements]
    with prepared_target("event_message_fk", "ks") as target:
        original = fingerprint(target)
        kill_cycles(book, target, ["--phases", "schema"], steps, 1.4, original)


def test_autocommit_schema_with_an_authors_transaction_killed_at_random_points(tmp_path: Path) -> None:
    """The author's BEGIN ... COMMIT is one step: a kill inside it leaves none of it (the server rolls
    the transaction back with the session), and the ledger never calls it done before it committed."""
    book = slow_copy(tmp_path, "slow_group", [
        "BEGIN;", 'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=0.8),
        'COMMENT ON COLUMN "Event"."messageId" IS \'the message\';', "COMMIT;",
        'CREATE INDEX CONCURRENTLY "Event_messageId_idx" ON "Event"("messageId");', SLEEP.format(s=0.8),
        'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") REFERENCES '
        '"Message"("id") ON DELETE CASCADE ON UPDATE CASCADE;'])
    statements = load_runbook(book).read_script("migration", "postgresql")[0]
    steps: list[list[effects.Effect] | None] = []
    for unit in units(statements):
        found = [e for stmt in unit for e in (effects.statement_effects(stmt) or [])]
        steps.append(found or None)
    assert len(steps) == 4  # the group, the index, the pause, the constraint
    with prepared_target("event_message_fk", "kg") as target:
        original = fingerprint(target)
        kill_cycles(book, target, ["--phases", "schema"], steps, 1.4, original)


def test_a_killed_runs_folder_is_incomplete_not_tampering_and_is_settled_from_the_ledger(tmp_path: Path) -> None:
    """SIGKILL leaves a folder whose manifest says "running" and files written after it: verify says
    what it is (incomplete, where it stopped, as the ledger records it), settles the manifest from the
    ledger and seals it; after that it verifies like any run, and a file added to it is tampering."""
    book = slow_copy(tmp_path, "killed_archive", [
        'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=4),
        'CREATE INDEX CONCURRENTLY "Event_messageId_idx" ON "Event"("messageId");',
        'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") REFERENCES '
        '"Message"("id") ON DELETE CASCADE ON UPDATE CASCADE;'])
    with prepared_target("event_message_fk", "ka") as target:
        done, run_id = kill_run([str(book), "--target", target, "--phases", "schema"], target,
                                lambda: _in_flight(target, book.name), signal.SIGKILL, 0.5)
        assert done.returncode == -signal.SIGKILL
        folder = Path(done.stdout.splitlines()[1].split("archive:", 1)[1].strip())
        left = json.loads((folder / "manifest.json").read_text())
        assert (left["status"], left["complete"], left["running_phase"]) == ("running", False, "schema")
        verified = cli("archive", "verify", run_id)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert (f"{run_id}: incomplete: the process stopped during schema; the ledger says interrupted at step 2 of "
                "4 (1 done; it may be half done)") in verified.stdout, verified.stdout
        assert "its manifest was settled from the ledger and sealed" in verified.stdout
        settled = json.loads((folder / "manifest.json").read_text())
        assert settled["status"] == "interrupted" and settled["settled"]["by"] == "dbrunbook archive verify"
        assert settled["settled"]["stopped_during"] == "schema" and "01_schema.ipynb" in settled["output_files"]
        again = cli("archive", "verify", run_id)
        assert again.returncode == 0 and "incomplete" not in again.stdout, again.stdout
        (folder / "notes.txt").write_text("added later")
        tampered = cli("archive", "verify", run_id)
        assert tampered.returncode == 1 and f"{run_id}: unlisted file: notes.txt" in tampered.stdout, tampered.stdout
        # The runbook itself resumes as after any kill.
        resumed = cli("run", str(book), "--target", target, "--phases", "schema")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def test_backfill_killed_at_random_points_pauses_and_resumes() -> None:
    runbook = "normalize_attachments"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with prepared_target(runbook, "kb") as target:
        original = fingerprint(target)
        name = load_runbook(runbook).spec.backfill.name  # type: ignore[union-attr]
        args = [runbook, "--target", target, "--phases", "backfill", "-p", "batch_size=50",
                "-p", "target_batch_ms=10", "-p", "pause_ms=40"]

        def migration() -> checkpoints.Migration | None:
            with psycopg_connect(resolve_target(target), "test") as raw:
                return checkpoints.read_migration(raw, runbook, name)

        for attempt in range(5):
            sig = SIGNALS[attempt % 2]
            context = f"seed {seed}, attempt {attempt}, {sig.name}"
            apply_schema(target, runbook)
            gen = open_phase("backfill", runbook, target, generate=6000, max_batches=0)
            gen.plan()
            gen.abandon()

            def running() -> bool:
                m = migration()
                return m is not None and m.status == Status.RUNNING and m.checkpoint.batches > 0

            done, _ = kill_run(args, target, running, sig, rng.uniform(0, 1.5))
            check_signal_outcome(done, sig, context)
            check_manifest(done.stdout, sig, context)
            m = migration()
            assert m is not None, context
            report = commands.status(runbook, target)
            shown = report.migrations.iloc[0]["status"]
            if m.status == Status.COMPLETED:
                assert shown == Status.COMPLETED, context
            elif sig == signal.SIGKILL:
                assert (m.status, shown) == (Status.RUNNING, "interrupted"), context
            else:
                assert (m.status, shown) == (Status.PAUSED, Status.PAUSED), context
            again = cli("run", *args)
            assert again.returncode == 0, context + again.stdout + again.stderr
            m = migration()
            assert m is not None and m.status == Status.COMPLETED and m.verification \
                and m.verification["passed"], context
            _rollback(target, load_runbook(runbook).path)
            assert fingerprint(target) == original, context


def test_backfill_cleanup_killed_at_random_points_drops_the_arrays_whole_or_not_at_all() -> None:
    """The cleanup drops the deprecated arrays and closes the rollback window. A report holds the
    table, so the cleanup's first DROP waits for its lock; the report ends and the run is killed
    (SIGKILL or SIGINT) at two random instants, in either order (a SIGKILLed runner's kernel runs on
    for up to a second: it may still commit): the arrays are gone exactly when the ledger says the
    migration is complete, otherwise the schema is as before the run; a re-run completes."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for attempt in range(2):
        kill_a_cleanup(SIGNALS[attempt % 2], rng, f"seed {seed}, attempt {attempt}, {SIGNALS[attempt % 2].name}")


def kill_a_cleanup(sig: int, rng: random.Random, context: str) -> None:
    import threading

    from .test_backfill import ARRAYS, checkpoint, scalar

    runbook = "normalize_attachments"
    with prepared_target(runbook, "kc") as target:
        apply_schema(target, runbook)
        run = open_phase("backfill", runbook, target, generate=300)
        run.plan()
        run.run()
        run.verify()
        run.finish()  # verified; no dual-read, no cleanup yet
        before = fingerprint(target)
        report = Blocker(target, "SELECT count(*) FROM messages")
        released: list[bool] = []

        def end_report() -> None:
            released.append(True)
            report.release()

        ends = threading.Timer(rng.uniform(0, 2.0), end_report)

        def waiting() -> bool:  # the cleanup's first DROP waits for the report's lock
            with connect(target) as conn:
                seen = bool(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND wait_event_type = 'Lock' "
                    "AND application_name LIKE 'dbrunbook %' AND query LIKE 'DROP %'"), {"d": target}).scalar())
            if seen:
                ends.start()
            return seen

        args = [runbook, "--target", target, "--phases", "backfill", "-p", "cleanup=True"]
        try:
            done, _ = kill_run(args, target, waiting, sig, rng.uniform(0, 0.6))
        finally:
            ends.cancel()
            if ends.is_alive():
                ends.join()
            if not released:
                report.release()
        if done.returncode != 0:  # else the kill landed after the run's end
            check_signal_outcome(done, sig, context)
        check_manifest(done.stdout, sig, context)
        m = checkpoint(target)
        assert m is not None, context
        left = scalar(target, ARRAYS)
        assert left in (0, 3), f"{context}: {left} of the 3 arrays left"
        assert (left == 0) == (m.phase == "complete"), f"{context}: arrays {left}, ledger {m.phase} {m.status}"
        if left:
            assert fingerprint(target) == before, context
        print(f"{context}: exit {done.returncode}, {'cleaned up' if left == 0 else 'arrays kept'}")
        again = cli("run", *args)
        assert again.returncode == 0, context + again.stdout + again.stderr
        m = checkpoint(target)
        assert m is not None and (m.phase, m.status) == ("complete", Status.COMPLETED), context
        assert scalar(target, ARRAYS) == 0, context


def test_deploy_killed_in_a_long_statement_resumes_with_the_first_fingerprint(tmp_path: Path) -> None:
    """The issue's first reproduction: `SELECT pg_sleep(20)` as statement 2, a deploy killed in it
    (8 s here: the rehearsal and the re-run sleep it in full)."""
    book = slow_copy(tmp_path, "sleepy", [
        'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=8),
        'CREATE INDEX "Event_messageId_idx" ON "Event"("messageId");',
        'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") REFERENCES '
        '"Message"("id") ON DELETE CASCADE ON UPDATE CASCADE;'])
    with prepared_pair("event_message_fk", "r1") as (rehearsal, prod):
        original = fingerprint(prod)
        # Rehearsed with the sleep shortened would be another checksum: rehearse it as it is.
        apply_schema(rehearsal, book)
        args = [str(book), "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}"]

        seen: list[float] = []  # when statement 2 was first seen in flight

        def sleeping() -> bool:
            got = state(prod, "sleepy")
            if got is not None and got.step == 2:
                seen.append(time.monotonic())
            return bool(seen)

        done, _ = kill_run(args, prod, sleeping, signal.SIGKILL, 0.5)
        # Timed from the statement, not from the command's start (which a loaded machine delays): its
        # session ends about 1.5 s after it was seen (killed at 0.5 s); run on, it would last 8 s.
        assert seen and time.monotonic() - seen[0] < 6, "the killed statement must not run on for its 8 s"
        assert done.returncode == -signal.SIGKILL
        report = commands.status(str(book), prod)
        assert report.state == "interrupted at step 2 of 5 (1 done; it may be half done): SELECT pg_sleep(8)", \
            report.state
        assert "killed" in report.detail
        with connect(prod) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM information_schema.columns WHERE "
                                        "table_name = 'Event' AND column_name = 'messageId'")).scalar() == 1
        again = cli("run", *args)
        assert again.returncode == 0, again.stdout + again.stderr
        recorded = state(prod, "sleepy")
        assert recorded is not None and recorded.fingerprint_before == original
        _rollback(prod, book)
        assert fingerprint(prod) == original


def test_autocommit_failure_half_way_is_failed_then_resumes_or_rolls_back(tmp_path: Path) -> None:
    """The issue's second reproduction: ADD COLUMN, CREATE INDEX CONCURRENTLY, a failing ADD CONSTRAINT."""
    statements = ['ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;',
                  'CREATE INDEX CONCURRENTLY "Event_messageId_idx" ON "Event"("messageId");',
                  'ALTER TABLE "Event" ADD CONSTRAINT "Event_messageId_fkey" FOREIGN KEY ("messageId") '
                  'REFERENCES "Message"("id") ON DELETE CASCADE;']
    book = slow_copy(tmp_path, "half_way", statements)
    with prepared_target("event_message_fk", "hw") as target:
        original = fingerprint(target)
        # A row whose messageId names no message: the constraint cannot be added yet.
        with connect(target) as conn, conn.begin():
            conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "messageId" TEXT'))
            conn.execute(sa.text('UPDATE "Event" SET "messageId" = \'no-such-message\''))
            conn.execute(sa.text('ALTER TABLE "Event" DROP COLUMN "messageId"'))
        bad = book / "migration.sql"
        bad.write_text("\n".join([statements[0], "UPDATE \"Event\" SET \"messageId\" = 'no-such-message';",
                                  *statements[1:]]) + "\n")
        failed = cli("run", str(book), "--target", target, "--phases", "schema")
        assert failed.returncode == 1
        err = failed.stderr.strip().splitlines()
        assert len(err) == 1 and "statement 4 of 4 failed [23503]" in err[0] and "statements 1 to 3 stay applied" in \
            err[0], failed.stderr
        report = commands.status(str(book), target)
        assert report.state.startswith('failed at step 4 of 4 (3 done): ALTER TABLE "Event" ADD CONSTRAINT'), \
            report.state
        assert "23503" in report.detail
        # Run again as it is: it resumes (steps 1-3 found done or re-run) and fails at the same place.
        again = cli("run", str(book), "--target", target, "--phases", "schema")
        assert again.returncode == 1 and "already exists" not in again.stderr, again.stderr
        # The rollback phase is allowed from failed and undoes what was done.
        undo = cli("run", str(book), "--target", target, "--phases", "rollback")
        assert undo.returncode == 0, undo.stdout + undo.stderr
        assert fingerprint(target) == original
        assert commands.status(str(book), target).state == "rolled back"


WORKER = """
import sys
from dbrunbook import open_phase
run = open_phase("schema", sys.argv[1], sys.argv[2])
run.plan()
print("started", flush=True)
try:
    run.apply()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_stop_in_jupyterlab_marks_the_attempt_interrupted_and_releases_everything(tmp_path: Path) -> None:
    """The lib's own handling, as when an engineer presses Stop in JupyterLab (KeyboardInterrupt in
    the cell): the statement in flight is cancelled, the ledger says interrupted (written, not
    inferred), the event is recorded, and the runbook's lock is released."""
    book = slow_copy(tmp_path, "stopped", [
        'ALTER TABLE "Event" ADD COLUMN "messageId" TEXT;', SLEEP.format(s=30),
        'CREATE INDEX CONCURRENTLY "Event_messageId_idx" ON "Event"("messageId");'])
    with prepared_target("event_message_fk", "st") as target:
        original = fingerprint(target)
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(book), target], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                                  preexec_fn=default_sigint)
        assert worker.stdout is not None
        while worker.stdout.readline().strip() != "started":
            pass
        wait_for(lambda: (state(target, "stopped") or ledger.State("", "", None, {}, "", "", identity.now(), None, None,
                                                                    None)).step == 2, "step 2")
        started = time.monotonic()
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=60)
        assert time.monotonic() - started < 10, "the 30 s statement was not cancelled"
        assert "interrupted" in out, out + err
        got = state(target, "stopped")
        assert got is not None and got.state == Status.INTERRUPTED and (got.step, got.steps_done) == (2, 1)
        with connect(target) as conn:
            assert not ledger.lock_held(conn, ledger.runbook_lock_key("stopped"))
            last = ledger.events_frame(conn, "stopped").iloc[0]
        assert (last["action"], last["status"]) == ("interrupted", "interrupted")
        assert commands.status(str(book), target).state.startswith("interrupted at step 2 of 3")
        again = cli("run", str(book), "--target", target, "--phases", "rollback")
        assert again.returncode == 0, again.stdout + again.stderr
        assert fingerprint(target) == original


# -- a signal during the runner's own bookkeeping ---------------------------------------------------

@pytest.fixture
def sigint_stops() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt in this process, as in a terminal: a test session started in
    a non-interactive shell's background has it ignored (see default_sigint)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def signal_in_bookkeeping(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """SIGINT or SIGTERM to this process while the runner renders the first page it renders: the
    moment a phase has ended and the next has not started (injected where it cannot be timed)."""
    from dbrunbook.run import runner

    real = runner.render_html
    sent: list[bool] = []

    def render_then_signal(output: Path, title: str) -> Path:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)
        return real(output, title)

    monkeypatch.setattr(runner, "render_html", render_then_signal)


def test_a_signal_between_phases_is_held_and_stops_the_run_before_the_next(target: str, monkeypatch: pytest.MonkeyPatch,
                                                                           sigint_stops: None) -> None:
    from dbrunbook.run import runner, signals

    commands.prepare("event_message_fk", target)
    previous, sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signals.install_sigterm()  # as `dbrunbook run` does
    signal_in_bookkeeping(monkeypatch, signal.SIGTERM)
    try:
        with pytest.raises(runner.RunInterrupted) as stopped:
            commands.run("event_message_fk", target, ["schema", "rollback"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.exit_code == 143
    assert str(stopped.value).startswith(f"interrupted by SIGTERM before rollback of event_message_fk on {target}")
    result = stopped.value.result
    assert [(p.phase, p.status) for p in result.phases] == [("schema", "passed"), ("rollback", "interrupted")]
    assert result.phases[0].html == "01_schema.html" and (result.folder / "01_schema.html").exists()
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    # The rollback never started: the schema phase's migration stands, as the ledger says.
    assert commands.status("event_message_fk", target).state == "applied (up to date)"
    assert signal.getsignal(signal.SIGINT) is sigint  # as it was before the run


def test_a_signal_after_the_last_phase_lets_the_run_complete_and_says_so(target: str, monkeypatch: pytest.MonkeyPatch,
                                                                         sigint_stops: None) -> None:
    commands.prepare("event_message_fk", target)
    signal_in_bookkeeping(monkeypatch, signal.SIGINT)
    result = commands.run("event_message_fk", target, ["schema"])
    assert result.ok and result.notes == [
        "SIGINT received after the last phase had ended: the run finished and is archived; nothing was stopped"]
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["status"] == "passed" and manifest["complete"]


def test_held_signals_are_raised_where_the_next_block_starts_and_a_second_stops_at_once(sigint_stops: None) -> None:
    from dbrunbook.run import signals

    before = signal.getsignal(signal.SIGINT)
    with signals.held() as held:
        os.kill(os.getpid(), signal.SIGINT)
        assert held.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt) as stop:
            with held.let_through():
                pytest.fail("a held signal stops the run before the block starts")
        assert signals.was_held(stop.value)
        with pytest.raises(KeyboardInterrupt) as second:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert not signals.was_held(second.value)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_the_process_ignores_stays_ignored_while_held() -> None:
    """A job started with SIGINT ignored (nohup, a non-interactive shell's background) is not
    stopped by one: holding does not turn the signal back on."""
    from dbrunbook.run import signals

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.held() as held:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            with held.let_through():
                assert held.received is None
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
