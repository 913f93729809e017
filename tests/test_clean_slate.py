"""clean_slate: guarded deletion with a backup of every deleted row."""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.cli import commands
from dbrunbook.errors import GuardRefused
from dbrunbook.state import ledger

from .conftest import add_target, cli, connect
from .test_run import archive_of

FIXTURE_EVENTS = 16  # the seed: "Successfully deleted 16 events"


def count(target: str, table: str) -> int:
    with connect(target) as conn:
        return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())


def last_event(target: str) -> dict[str, object]:
    with connect(target) as conn:
        frame = ledger.events_frame(conn, "event_message_fk", limit=1)
    return frame.iloc[0].to_dict()


def run_clean_slate(target: str, tmp_path: Path, **options: object) -> None:
    run = open_phase("clean_slate", "event_message_fk", target, archive_dir=tmp_path, **options)
    run.check_guard()
    run.counts("before")
    run.delete()
    run.reset()
    run.counts("after")
    run.finish()


@pytest.mark.parametrize("confirm", ["", "prod", "DEV"])
def test_refused_without_the_targets_name(target: str, tmp_path: Path, confirm: str) -> None:
    commands.prepare("event_message_fk", target)
    with pytest.raises(GuardRefused, match="set the confirm parameter to the target's name"):
        run_clean_slate(target, tmp_path, confirm=confirm)
    assert count(target, "Event") == FIXTURE_EVENTS
    assert not (tmp_path / "clean_slate_backup").exists()
    event = last_event(target)
    assert event["phase"] == "clean_slate" and event["status"] == "failed"
    assert "nothing was deleted" in str(event["error"])


def test_production_needs_the_extra_consent(tmp_path: Path) -> None:
    name = "cs_prod"
    add_target(name, {"embedded": "cs_prod_db", "production": True})
    commands.prepare("event_message_fk", name, allow_production=True)
    with pytest.raises(GuardRefused, match="marked production; set allow_production=True"):
        run_clean_slate(name, tmp_path, confirm=name)
    assert count(name, "Event") == FIXTURE_EVENTS
    run_clean_slate(name, tmp_path, confirm=name, allow_production=True)
    assert count(name, "Event") == 0


def test_deletes_with_a_restorable_backup(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    with connect(target) as conn:
        ids = sorted(conn.execute(sa.text('SELECT id FROM "Event"')).scalars())
        counters = conn.execute(sa.text('SELECT sum("timesUsed") FROM "Chunk_Performance"')).scalar_one()
    assert counters > 0
    run_clean_slate(target, tmp_path, confirm=target)
    assert count(target, "Event") == 0
    # The optional reset was not asked for: the counters are untouched.
    with connect(target) as conn:
        assert conn.execute(sa.text('SELECT sum("timesUsed") FROM "Chunk_Performance"')).scalar_one() == counters

    folder = tmp_path / "clean_slate_backup"
    index = json.loads((folder / "backup.json").read_text())
    assert [(f["table"], f["rows"]) for f in index["files"]] == [("Event", FIXTURE_EVENTS)]
    with gzip.open(folder / "Event.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["id"] for r in rows) == ids
    assert any("messageId" in r["metadata"] for r in rows)  # the JSON came through intact

    # The backup restores with COPY, as its restore command says.
    raw = gzip.decompress((folder / "Event.csv.gz").read_bytes())
    with connect(target) as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy('COPY "Event" FROM STDIN WITH (FORMAT csv, HEADER)') as copy:
            copy.write(raw)
        conn.connection.driver_connection.commit()
    assert count(target, "Event") == FIXTURE_EVENTS
    event = last_event(target)
    assert event["status"] == "passed" and event["action"] == "delete"


def test_reset_backs_up_the_counters_first(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    run_clean_slate(target, tmp_path, confirm=target, reset=True)
    with connect(target) as conn:
        assert conn.execute(sa.text('SELECT max("timesUsed") + max("satisfactionRate") FROM "Chunk_Performance"')).scalar_one() == 0
    with gzip.open(tmp_path / "clean_slate_backup" / "Chunk_Performance.before_reset.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and any(int(r["timesUsed"]) > 0 for r in rows)


def test_dry_run_deletes_nothing(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    run_clean_slate(target, tmp_path, confirm=target, dry_run=True)
    assert count(target, "Event") == FIXTURE_EVENTS
    event = last_event(target)
    assert event["status"] == "passed" and event["dry_run"]


def test_papermill_run_refuses_then_deletes(target: str) -> None:
    commands.prepare("event_message_fk", target)
    refused = cli("run", "event_message_fk", "--target", target, "--phases", "clean_slate")
    assert refused.returncode == 1
    assert "clean_slate refused: set the confirm parameter" in refused.stderr
    assert count(target, "Event") == FIXTURE_EVENTS

    done = cli("run", "event_message_fk", "--target", target, "--phases", "clean_slate", "-p", f"confirm={target}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert count(target, "Event") == 0
    folder = archive_of(done.stdout)
    assert (folder / "clean_slate_backup" / "Event.csv.gz").is_file()
    html = (folder / "01_clean_slate.html").read_text()
    assert "Deleted 16 row(s)" in html
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "clean_slate_backup/Event.csv.gz" in manifest["output_files"]


def test_a_misspelt_parameter_is_refused_before_anything_runs(target: str) -> None:
    commands.prepare("event_message_fk", target)
    done = cli("run", "event_message_fk", "--target", target, "--phases", "schema,clean_slate", "-p", "confrim=dev")
    assert done.returncode == 1
    assert "unknown parameter(s) confrim for phase(s) schema, clean_slate" in done.stderr
    assert "confirm" in done.stderr  # the list of what they do take
    assert count(target, "Event") == FIXTURE_EVENTS
