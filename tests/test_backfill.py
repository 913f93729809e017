"""The backfill phase on seed 002: batches commit with their checkpoint, so SIGKILL at any
instant loses and repeats nothing; a bad row fails its batch whole; verification gates the
cleanup; the ledger's phase and status are what `dbrunbook status` shows."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dbrunbook import open_phase
from dbrunbook.cli import commands
from dbrunbook.errors import TargetBusy
from dbrunbook.phases import backfill, batches
from dbrunbook.state import ledger
from dbrunbook.state.status import Status
from dbrunbook.targets.connect import psycopg_connect
from dbrunbook.targets.resolve import resolve_target

from .conftest import ROOT, apply_schema, cli, connect, prepared_target
from .test_run import archive_of

RUNBOOK = "normalize_attachments"


@pytest.fixture
def applied() -> Iterator[str]:
    """A target with the before-state fixture and the schema phase applied."""
    with prepared_target(RUNBOOK, "bf") as name:
        apply_schema(name, RUNBOOK)
        yield name


def backfill_run(target: str, **options: object) -> backfill.BackfillRun:
    run: backfill.BackfillRun = open_phase("backfill", RUNBOOK, target, **options)
    run.plan()
    return run


def generate(target: str, rows: int) -> None:
    run = backfill_run(target, generate=rows, max_batches=0)
    run.abandon()


# The deprecated arrays the cleanup drops: 3 before it, 0 after.
ARRAYS = ("SELECT count(*) FROM information_schema.columns WHERE table_name = 'messages' "
          "AND column_name IN ('attachments', 'toolCalls', 'partialToolCalls')")


def scalar(target: str, query: str) -> object:
    with connect(target) as conn:
        return conn.execute(sa.text(query)).scalar()


def verify_queries(target: str) -> tuple[object, object, object, object]:
    from dbrunbook.runbook.spec import load_runbook

    v = load_runbook(RUNBOOK).spec.backfill.verify  # type: ignore[union-attr]
    return (scalar(target, v.source_count), scalar(target, v.target_count),
            scalar(target, v.source_checksum), scalar(target, v.target_checksum))


def checkpoint(target: str) -> backfill.Migration | None:
    with psycopg_connect(resolve_target(target), "test") as conn:
        return backfill.read_migration(conn, RUNBOOK, "001_normalize_message_attachments")


# Array elements as the backfill maps them: a partial call with a finished twin is that call.
ELEMENTS = """coalesce(jsonb_array_length(attachments), 0) + coalesce(jsonb_array_length("toolCalls"), 0)
    + (SELECT count(*) FROM jsonb_array_elements(coalesce("partialToolCalls", '[]')) AS p
       WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce("toolCalls", '[]')) AS c
                         WHERE c->>'id' = p->>'id'))"""


def rows_up_to(target: str, cursor: object) -> tuple[int, int, int]:
    """(array elements of messages <= cursor, rows for them, rows for messages after the cursor)."""
    bound = -1 if cursor is None else int(cursor)  # type: ignore[call-overload]
    elements = scalar(target, f"SELECT coalesce(sum({ELEMENTS}), 0) FROM messages WHERE id <= {bound}")
    done = scalar(target, f"""SELECT (SELECT count(*) FROM attachments WHERE "messageId" <= {bound})
        + (SELECT count(*) FROM "toolCalls" WHERE "messageId" <= {bound})""")
    beyond = scalar(target, f"""SELECT (SELECT count(*) FROM attachments WHERE "messageId" > {bound})
        + (SELECT count(*) FROM "toolCalls" WHERE "messageId" > {bound})""")
    return int(elements), int(done), int(beyond)  # type: ignore[call-overload]


WORKER = """
import sys
from dbrunbook import open_phase
run = open_phase("backfill", "normalize_attachments", sys.argv[1], batch_size=50, target_batch_ms=10, pause_ms=80)
run.plan()
print("started", flush=True)
run.run()
"""


def test_sigkill_at_random_points_then_resume_loses_and_repeats_nothing(applied: str) -> None:
    generate(applied, 30_000)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    cursors = []
    for _ in range(5):
        worker = subprocess.Popen([sys.executable, "-c", WORKER, applied], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
        assert worker.stdout is not None
        while worker.stdout.readline().strip() != "started":  # the plan's report comes first
            pass
        time.sleep(rng.uniform(0.3, 2.5))
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        # The killed client may have sent its last COMMIT already: read once its sessions are gone,
        # or the checkpoint and the rows are read on either side of that commit.
        deadline = time.monotonic() + 30
        while scalar(applied, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbrunbook backfill %'"):
            assert time.monotonic() < deadline, f"seed {seed}: the killed worker's sessions did not end"
            time.sleep(0.05)
        state = checkpoint(applied)
        assert state is not None
        cursor = state.checkpoint.cursor
        # The invariant: everything up to the checkpoint is in, nothing after it is.
        elements, done, beyond = rows_up_to(applied, cursor)
        assert (done, beyond) == (elements, 0), f"seed {seed}, cursor {cursor}"
        assert state.status == Status.RUNNING, f"seed {seed}, cursor {cursor}, {cursors}"  # killed: nobody wrote "completed"
        cursors.append(cursor)
    assert cursors == sorted(cursors, key=lambda c: -1 if c is None else c), f"seed {seed}"
    assert len({c for c in cursors if c is not None}) >= 3, f"seed {seed}: kills did not land mid-backfill {cursors}"
    # The unattended path resumes to the end and verifies.
    done = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill")
    assert done.returncode == 0, done.stdout + done.stderr
    source_count, target_count, source_sum, target_sum = verify_queries(applied)
    assert source_count == target_count and int(target_count) > 25_000  # type: ignore[call-overload]
    assert source_sum == target_sum
    final = checkpoint(applied)
    # The notebook runs the dual-read after a passed verification: the seed's next phase is recorded.
    assert final is not None and (final.phase, final.status) == ("dual-read", "completed")
    assert final.verification and final.verification["dual_read"]["mismatches"] == 0
    assert final.verification and final.verification["passed"] is True
    assert final.checkpoint.processed == scalar(applied, "SELECT count(*) FROM messages")
    status = cli("status", RUNBOOK, "--target", applied)
    assert "data migration 001_normalize_message_attachments: phase dual-read, status completed; checkpoint: " \
           f"cursor {final.checkpoint.cursor}, processed {final.checkpoint.processed}" in status.stdout


def test_running_a_batch_again_inserts_nothing(applied: str) -> None:
    generate(applied, 2_000)
    run = backfill_run(applied)
    first = batches.run_batch(run.db, run.batch_sql, run.batch_file, 1, 2_005)
    run.db.commit()
    again = batches.run_batch(run.db, run.batch_sql, run.batch_file, 1, 2_005)
    run.db.commit()
    run.abandon()
    assert first > 1_000 and again == 0


def test_a_bad_row_fails_its_batch_whole_and_the_fix_resumes(applied: str) -> None:
    generate(applied, 3_000)
    bad = 1_234
    with connect(applied) as conn:  # a bad row from before the schema: the dual-write trigger would refuse it now
        conn.execute(sa.text("ALTER TABLE messages DISABLE TRIGGER messages_dual_write"))
        conn.execute(sa.text(f"""UPDATE messages SET attachments = '{{"type": "file"}}' WHERE id = {bad}"""))
        conn.execute(sa.text("ALTER TABLE messages ENABLE TRIGGER messages_dual_write"))
        conn.commit()
    run = backfill_run(applied, batch_size=100, target_batch_ms=100_000)
    with pytest.raises(backfill.BatchFailed) as err:
        run.run()
    message = str(err.value)
    assert "normalize_attachments/backfill.sql: batch " in message and f"failed at key {bad}:" in message
    assert "cannot extract elements from an object" in message and "nothing of the batch was committed" in message
    state = checkpoint(applied)
    assert state is not None and state.status == Status.FAILED and state.error == message
    # The checkpoint stopped before the failed batch; nothing of that batch is in.
    assert err.value.first == state.checkpoint.cursor + 1 and err.value.first <= bad <= err.value.last
    assert rows_up_to(applied, state.checkpoint.cursor)[1:] == (rows_up_to(applied, state.checkpoint.cursor)[0], 0)
    assert state.checkpoint.failed == err.value.last - err.value.first + 1
    with connect(applied) as conn:
        conn.execute(sa.text(f"UPDATE messages SET attachments = NULL WHERE id = {bad}"))
        conn.commit()
    run = backfill_run(applied)
    assert "resume after key" in run.detail["decision"]
    run.run()
    assert list(run.verify().value["result"]) == ["pass"] * 4
    run.finish()


def test_cleanup_needs_a_passed_verification_and_closes_the_rollback_window(applied: str) -> None:
    generate(applied, 1_000)
    run = backfill_run(applied, max_batches=1, batch_size=100, cleanup=True)
    run.run()
    verdict = run.verify().value  # paused part-way: verification waits for the end of the keyset
    assert verdict.empty and checkpoint(applied).status == Status.PAUSED  # type: ignore[union-attr]
    with pytest.raises(backfill.CleanupRefused, match="no verification is recorded"):
        run.cleanup()
    assert scalar(applied, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'messages' "
                           "AND column_name = 'attachments'") == 1
    # A message written the old way only, past the dual-write trigger (a replica, a bulk load with
    # triggers off): parity catches it.
    run = backfill_run(applied)
    run.run()
    with connect(applied) as conn:
        conn.execute(sa.text("SET session_replication_role = replica"))
        conn.execute(sa.text("""INSERT INTO messages ("conversationId", "userId", role, content, attachments)
            VALUES (1, 1, 'user', 'late', '[{"type": "file", "name": "x", "storageId": "s", "mimeType": "m", "size": 1}]')"""))
        conn.commit()
    verdict = run.verify().value
    parity = next(c for c in verdict["check"] if c.startswith("dual-write parity"))
    assert dict(zip(verdict["check"], verdict["result"], strict=True))[parity] == "FAIL"
    with pytest.raises(Exception, match="verification: array elements = rows"):
        run.finish()
    # The application dual-writes it; the next run catches up, verifies, and cleans up.
    run = backfill_run(applied, cleanup=True)
    run.run()
    assert list(run.verify().value["result"]) == ["pass"] * 4
    with pytest.raises(backfill.CleanupRefused, match="no passed dual-read is recorded"):
        run.cleanup()
    run = backfill_run(applied, cleanup=True)
    assert list(run.dual_read().value["result"]) == ["pass"]
    assert checkpoint(applied).phase == "dual-read"  # type: ignore[union-attr]
    run.cleanup()
    run.finish()
    assert scalar(applied, ARRAYS) == 0
    state = checkpoint(applied)
    assert state is not None and (state.phase, state.status) == ("complete", "completed")
    refused = cli("run", RUNBOOK, "--target", applied, "--phases", "rollback")
    assert refused.returncode == 1 and "the rollback window closed with the cleanup" in refused.stderr


def test_a_second_backfill_on_the_same_target_is_refused(applied: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom dbrunbook import open_phase\n"
                               "run = open_phase('backfill', 'normalize_attachments', sys.argv[1])\n"
                               "print('started', flush=True)\ntime.sleep(60)", applied],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout is not None
        while holder.stdout.readline().strip() != "started":
            pass
        with pytest.raises(TargetBusy, match="another backfill of normalize_attachments") as busy:
            open_phase("backfill", RUNBOOK, applied)
        assert busy.value.exit_code == 75  # a scheduler retries later
    finally:
        holder.kill()
        holder.wait()
    backfill_run(applied).abandon()  # the killed holder's lock went with its session


def test_rollback_marks_the_data_migration_rolled_back_and_a_new_schema_starts_over(applied: str) -> None:
    generate(applied, 500)
    run = backfill_run(applied)
    run.run()
    run.abandon()
    done = cli("run", RUNBOOK, "--target", applied, "--phases", "rollback,schema")
    assert done.returncode == 0, done.stdout + done.stderr
    state = checkpoint(applied)
    assert state is not None and state.status == Status.ROLLED_BACK
    run = backfill_run(applied)
    assert run.detail["decision"] == "start again: the schema was rolled back"
    run.abandon()


@pytest.mark.parametrize(("size", "rows", "ms", "expected"), [
    (1000, 1000, 500.0, 500),     # twice too slow: halve
    (1000, 1000, 50.0, 2000),     # five times too fast: at most double
    (1000, 1000, 250.0, 1000),    # on target
    (1000, 300, 10.0, 1000),      # a short last batch says nothing
    (20, 20, 10_000.0, 10),       # never under the minimum
])
def test_throttle(size: int, rows: int, ms: float, expected: int) -> None:
    assert batches.Throttle(target_ms=250).next_size(size, rows, ms) == expected


def test_restart_walks_everything_again_and_writes_nothing_twice(applied: str) -> None:
    generate(applied, 1_500)
    run = backfill_run(applied)
    run.run()
    before = verify_queries(applied)
    run = backfill_run(applied, restart=True)
    assert run.detail["decision"] == "restart from the beginning (restart=True)"
    frame = run.run().value
    assert int(frame["rows"].sum()) == scalar(applied, "SELECT count(*) FROM messages")
    assert int(frame["written"].sum()) == 0
    assert verify_queries(applied) == before
    run.abandon()


def test_a_slice_with_max_batches_is_paused_exits_0_and_says_what_remains(applied: str) -> None:
    generate(applied, 3_000)
    sliced = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "-p", "max_batches=2",
                 "-p", "batch_size=100")
    assert sliced.returncode == 0, sliced.stdout + sliced.stderr
    state = checkpoint(applied)
    assert state is not None and state.status == Status.PAUSED and state.checkpoint.batches == 2
    assert state.verification is None  # not run on a slice
    report = commands.status(RUNBOOK, applied)
    assert report.migrations.iloc[0]["status"] == "paused"
    page = (archive_of(sliced.stdout) / "01_backfill.ipynb").read_text()
    total = scalar(applied, "SELECT count(*) FROM messages")
    left = int(total) - state.checkpoint.processed  # type: ignore[call-overload]
    assert left > 0 and f"{left} source rows remain" in page
    with connect(applied) as conn:
        last = ledger.events_frame(conn, RUNBOOK).iloc[0]
    assert (last["phase"], last["status"]) == ("backfill", "paused")
    done = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill")
    assert done.returncode == 0, done.stdout + done.stderr
    state = checkpoint(applied)
    assert state is not None and state.status == Status.COMPLETED and state.verification["passed"]  # type: ignore[index]


def test_a_time_window_pauses_at_a_batch_boundary_and_the_same_command_resumes(applied: str) -> None:
    generate(applied, 3_000)
    windowed = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "--max-duration", "1s",
                   "-p", "batch_size=50", "-p", "pause_ms=250")
    assert windowed.returncode == 0, windowed.stdout + windowed.stderr
    state = checkpoint(applied)
    assert state is not None and state.status == Status.PAUSED and 0 < state.checkpoint.batches < 60, state
    page = (archive_of(windowed.stdout) / "01_backfill.ipynb").read_text()
    assert "Paused: the window of 1s ended" in page and "Run the same command again to resume" in page
    with connect(applied) as conn:
        last = ledger.events_frame(conn, RUNBOOK).iloc[0]
    assert (last["phase"], last["status"]) == ("backfill", "paused")
    resumed = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "--max-duration", "10m")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    state = checkpoint(applied)
    assert state is not None and state.status == Status.COMPLETED and state.verification["passed"]  # type: ignore[index]


def test_a_window_that_does_not_parse_is_refused_before_anything_runs(applied: str) -> None:
    bad = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "--max-duration", "half an hour")
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    assert bad.stderr.strip().splitlines() == ["dbrunbook: error: --max-duration: 'half an hour' is not a duration: "
                                               "write it as 90s, 30m, 2h, 1h30m or 1d"]
    as_parameter = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "-p", "max_duration=soon")
    assert as_parameter.returncode == 1 and "max_duration='soon'" in as_parameter.stderr and \
        as_parameter.stdout == ""


# -- seed 002's transition: dual-write, dual-read, a live writer ------------------------------------------

WRITER = """
import os, random, sys, time
from dbrunbook.targets.connect import psycopg_connect
from dbrunbook.targets.resolve import resolve_target
target, seed, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
conn = psycopg_connect(resolve_target(target), "app writer", autocommit=True)
top = conn.execute("SELECT max(id) FROM messages").fetchone()[0]
done = {"attachments": 0, "finalize": 0, "insert": 0, "delete": 0}
print("started", flush=True)
while not os.path.exists(stop):
    roll, key = rng.random(), rng.randint(1, top)
    if roll < 0.5:  # the application changes a message's attachments (any message, before or after its batch)
        conn.execute(\"\"\"UPDATE messages SET attachments = jsonb_build_array(jsonb_build_object('type', 'file',
            'name', 'edit-' || %s || '.pdf', 'storageId', 'e' || %s, 'mimeType', 'application/pdf', 'size', %s))
            WHERE id = %s\"\"\", (key, key, key, key))
        done["attachments"] += 1
    elif roll < 0.7:  # the old finalize: partial calls move into toolCalls
        conn.execute(\"\"\"UPDATE messages SET "toolCalls" = coalesce("toolCalls", '[]') || coalesce((
            SELECT jsonb_agg(p) FROM jsonb_array_elements(coalesce("partialToolCalls", '[]')) AS p
            WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce("toolCalls", '[]')) AS c
                              WHERE c->>'id' = p->>'id')), '[]'), "partialToolCalls" = NULL
            WHERE id = %s AND "partialToolCalls" IS NOT NULL\"\"\", (key,))
        done["finalize"] += 1
    elif roll < 0.9:  # a new message, written the old way
        conn.execute(\"\"\"INSERT INTO messages ("conversationId", "userId", role, content, attachments, "toolCalls")
            VALUES (1, 1, 'assistant', 'live', '[{"type": "audio", "name": "a.mp3", "storageId": "live",
            "mimeType": "audio/mpeg", "size": 7}]', jsonb_build_array(jsonb_build_object('id', 'live_' || %s,
            'name', 'getWeather', 'args', '{"city": "Faro"}'::text, 'timestamp', 1)))\"\"\", (rng.random(),))
        done["insert"] += 1
    else:
        conn.execute("DELETE FROM messages WHERE id = %s", (key,))
        done["delete"] += 1
    time.sleep(0.003)
print(" ".join(f"{k}={v}" for k, v in done.items()), flush=True)
"""


@contextmanager
def live_writer(target: str, tmp_path: Path) -> Iterator[dict[str, int]]:
    """A real application process writing the old shape until the block ends; yields its counts."""
    seed = random.randrange(1 << 30)
    stop = tmp_path / "stop-writer"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, target, str(seed), str(stop)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "started", writer.stderr.read() if writer.stderr else ""
    counts: dict[str, int] = {"seed": seed}
    try:
        yield counts
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, f"seed {seed}: the writer failed: {err}"
        counts.update({k: int(v) for k, v in (pair.split("=") for pair in out.split())})


def test_a_live_writer_during_the_backfill_loses_nothing_with_the_dual_write(applied: str, tmp_path: Path) -> None:
    generate(applied, 20_000)
    with live_writer(applied, tmp_path) as writes:
        done = cli("run", RUNBOOK, "--target", applied, "--phases", "backfill", "-p", "batch_size=200",
                   "-p", "target_batch_ms=20", "-p", "pause_ms=40")
        time.sleep(0.5)  # and a little after the verification too
    seed = writes["seed"]
    assert done.returncode == 0, f"seed {seed}: {done.stdout}{done.stderr}"
    assert writes["attachments"] + writes["finalize"] + writes["insert"] + writes["delete"] > 200, f"seed {seed} {writes}"
    # Verified under live writes, and still true once they stop.
    source_count, target_count, source_sum, target_sum = verify_queries(applied)
    assert (source_count, source_sum) == (target_count, target_sum), f"seed {seed} {writes}"
    state = checkpoint(applied)
    assert state is not None and state.verification and state.verification["passed"], f"seed {seed}"
    parity = next(c for c in state.verification["checks"] if c["check"].startswith("dual-write parity"))
    assert int(parity["check"].split(": ")[1].split(" ")[0]) > 0, f"seed {seed}: {parity}"
    assert list(backfill_run(applied).dual_read().value["result"]) == ["pass"], f"seed {seed}"


def test_without_the_dual_write_the_same_writer_is_caught_by_parity(applied: str, tmp_path: Path) -> None:
    generate(applied, 20_000)
    with connect(applied) as conn:
        conn.execute(sa.text("ALTER TABLE messages DISABLE TRIGGER messages_dual_write"))
        conn.commit()
    run = backfill_run(applied, batch_size=200, target_batch_ms=20, pause_ms=40)
    with live_writer(applied, tmp_path) as writes:
        run.run()
        time.sleep(0.5)
    frame = run.verify().value
    verdict = dict(zip(frame["check"], frame["result"], strict=True))
    parity = next(c for c in verdict if c.startswith("dual-write parity"))
    assert verdict[parity] == "FAIL" and verdict["content checksum"] == "FAIL", f"seed {writes['seed']} {writes}"
    run.abandon()


def test_parity_covers_an_old_row_written_after_its_batch_not_only_the_latest(applied: str) -> None:
    generate(applied, 5_000)
    run = backfill_run(applied)
    run.run()
    with connect(applied) as conn:  # message 1000 of 5000, long past its batch, written without the trigger
        conn.execute(sa.text("SET session_replication_role = replica"))
        conn.execute(sa.text("""UPDATE messages SET attachments = '[{"type": "file", "name": "late.pdf",
            "storageId": "late", "mimeType": "application/pdf", "size": 1}]' WHERE id = 1000"""))
        conn.commit()
    frame = run.verify().value
    parity = frame[frame["check"].str.startswith("dual-write parity")].iloc[0]
    assert "1 row(s) written since the backfill began, and the latest 100" in parity["check"]
    assert (parity["source"], parity["result"]) == ("1 mismatch(es)", "FAIL")
    run.abandon()


def test_stringified_args_become_json_and_a_partial_twin_merges_into_its_call(applied: str) -> None:
    run = backfill_run(applied)
    run.run()
    assert list(run.verify().value["result"]) == ["pass"] * 4
    run.abandon()
    with connect(applied) as conn:
        porto = conn.execute(sa.text("""SELECT jsonb_typeof(args), args->>'city', result->>'tempC' FROM "toolCalls"
                                        WHERE "toolCallId" = 'call_4'""")).one()
        twins = conn.execute(sa.text("""SELECT "isPartial", args->>'days' FROM "toolCalls"
                                        WHERE "toolCallId" = 'call_5'""")).all()
    assert tuple(porto) == ("object", "Porto", "19")
    assert [tuple(r) for r in twins] == [(False, "3")]  # the finished call, once; its partial twin merged


def test_the_cleanup_removes_the_dual_write_and_a_missed_final_expectation_rolls_it_back(
        applied: str, tmp_path: Path) -> None:
    copy = tmp_path / RUNBOOK
    shutil.copytree(ROOT / "runbooks" / RUNBOOK, copy)
    spec = yaml.safe_load((copy / "runbook.yaml").read_text())
    spec["backfill"]["expect_after_cleanup"]["tables"] = {"present": ["messages_archive"]}
    (copy / "runbook.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = open_phase("backfill", copy, applied, cleanup=True)
    run.plan()
    run.run()
    run.verify()
    run.dual_read()
    with pytest.raises(backfill.BackfillError, match=r"cleanup rolled back: the final schema misses 1 expectation"):
        run.cleanup()
    trigger = "SELECT count(*) FROM pg_trigger WHERE tgname = 'messages_dual_write'"
    assert (scalar(applied, trigger), scalar(applied, ARRAYS)) == (1, 3)
    assert checkpoint(applied).phase == "dual-read"  # type: ignore[union-attr]
    run = backfill_run(applied, cleanup=True)  # the runbook as written
    steps = run.cleanup().value
    run.finish()
    assert list(steps["step"])[:2] == ['DROP TRIGGER "messages_dual_write" ON "messages"',
                                     'DROP FUNCTION "messages_dual_write"()']
    assert (scalar(applied, trigger), scalar(applied, ARRAYS)) == (0, 0)
