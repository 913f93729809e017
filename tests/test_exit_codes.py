"""The exit codes a scheduler reads: one table in --help and the README, and each code where it comes
from (drift's 3 in tests/test_drift.py, 4 in tests/test_run.py, 130/143 in tests/test_interrupts.py)."""
from __future__ import annotations

import re

from dbrunbook import open_phase
from dbrunbook.cli.main import EXIT_CODES
from dbrunbook.errors import TargetBusy, exit_code_of

from .conftest import ROOT, apply_schema, cli, prepared_pair

RUNBOOK = "event_message_fk"


def test_one_table_in_the_help_and_the_readme() -> None:
    shown = cli("--help")
    assert shown.returncode == 0
    readme = (ROOT / "README.md").read_text()
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", shown.stdout, re.M), (code, shown.stdout)
        assert f"| `{code}` | {meaning} |" in readme, code


def test_a_wrong_command_line_is_2_and_runs_nothing() -> None:
    done = cli("run", RUNBOOK)  # no --target
    assert done.returncode == 2 and "--target" in done.stderr


def test_another_run_in_flight_is_busy_75_and_changes_nothing() -> None:
    with prepared_pair(RUNBOOK, "busy") as (rehearsal, prod):
        apply_schema(rehearsal)
        holder = open_phase("deploy", RUNBOOK, prod, rehearsal=rehearsal)
        holder.acquire_run_lock()
        try:
            done = cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}",
                       "-p", "run_lock_wait_s=0")
        finally:
            holder.abandon()  # its session's lock goes with it
        assert done.returncode == 75, done.stdout + done.stderr
        assert "another deploy holds the run lock" in done.stderr
        assert cli("run", RUNBOOK, "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}"
                   ).returncode == 0  # the same command, once the other is done


def test_an_error_line_carries_its_class_exit_code() -> None:
    assert exit_code_of("TargetBusy: refused: another run is moving it") == TargetBusy.exit_code == 75
    assert exit_code_of("RunLockBusy: deploy refused: another deploy holds the run lock") == 75
    assert exit_code_of("ArchiveNotWritten: applied") == 4
    assert exit_code_of("StatementFailed: x.sql:1: ...") == 1
    assert exit_code_of("PapermillExecutionError: nothing we know") == 1


def test_a_run_with_nothing_to_do_exits_0_saying_so_with_a_small_sealed_record(target: str) -> None:
    import json
    from pathlib import Path

    import sqlalchemy as sa
    from dbrunbook.cli import commands

    from .conftest import connect

    commands.prepare(RUNBOOK, target)
    first = cli("run", RUNBOOK, "--target", target, "--phases", "schema")
    assert first.returncode == 0, first.stdout + first.stderr

    def folder_of(done: object) -> Path:
        return Path(done.stdout.splitlines()[1].split("archive:", 1)[1].strip())  # type: ignore[attr-defined]

    again = cli("run", RUNBOOK, "--target", target, "--phases", "schema")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"nothing to do: {RUNBOOK} schema: already applied with this checksum" in again.stdout, again.stdout
    small = folder_of(again)
    assert [p.name for p in small.iterdir() if not p.name.startswith(".")] == ["manifest.json"]
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["status"] == "noop" and manifest["complete"] and manifest["nothing_to_do"]
    assert (small / "manifest.json").stat().st_size < 20_000
    listed = json.loads(cli("history", "--target", target, "--format", "json").stdout)
    assert any(r["run_id"] == manifest["run_id"] and r["status"] == "noop" for r in listed)
    assert cli("archive", "verify", manifest["run_id"]).returncode == 0  # sealed like any run
    # Changed out of band: not "nothing to do" any more; the phase runs and its page says what it found.
    with connect(target) as conn, conn.begin():
        conn.execute(sa.text('ALTER TABLE "Message" ADD COLUMN by_hand text'))
    changed = cli("run", RUNBOOK, "--target", target, "--phases", "schema")
    assert "nothing to do" not in changed.stdout and (folder_of(changed) / "01_schema.ipynb").is_file()
