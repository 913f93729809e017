from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dbrunbook import open_phase
from dbrunbook.cli import commands
from dbrunbook.files import read_yaml
from dbrunbook.targets import embedded
from dbrunbook.targets.connect import engine
from dbrunbook.targets.resolve import resolve_target

from .cli_fork import FORKING, run_fresh

ROOT = Path(__file__).resolve().parents[1]
SEED_000 = ROOT / "runbooks" / "event_message_fk"


def add_config(section: str, name: str, entry: dict[str, object]) -> None:
    """Add an entry (a target, a group) to this session's dbrunbook.yaml (see the root conftest)."""
    path = Path(os.environ["DBRUNBOOK_CONFIG"])
    # libyaml's dumper, as read_yaml uses its loader: the session's config grows by a target or two per test.
    config = (read_yaml(path.read_text()) if path.exists() else {}) or {}
    config.setdefault(section, {})[name] = entry
    path.write_text(yaml.dump(config, Dumper=yaml.CSafeDumper))


def add_target(name: str, entry: dict[str, object]) -> None:
    add_config("targets", name, entry)


@pytest.fixture
def target() -> Iterator[str]:
    """A fresh database on the session's embedded server, as a named, non-production target."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    add_target(name, {"embedded": name})
    embedded.ensure_database(name)
    yield name
    embedded.drop_database(name)


@pytest.fixture
def runbook_copy(tmp_path: Path) -> Path:
    """A private copy of the seed-000 runbook that a test may edit."""
    folder = tmp_path / "event_message_fk"
    shutil.copytree(SEED_000, folder)
    return folder


def connect(target_name: str) -> sa.Connection:
    return engine(resolve_target(target_name)).connect()


class Blocker:
    """Another session holding a lock in an open transaction, like a long report or a stuck job."""

    def __init__(self, target: str, statement: str) -> None:
        self.conn = connect(target)
        self.conn.execute(sa.text(statement))

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()

    def __enter__(self) -> Blocker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def cli(*args: str, env: dict[str, str] | None = None, fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would: in a process of its own, forked from one that has
    imported the library already (tests/cli_fork.py), or with ``fresh`` started afresh."""
    environ = {**os.environ, **(env or {})}
    return (run_fresh if fresh else FORKING.run)(list(args), ROOT, environ, 600)


def apply_schema(target: str, runbook: str | Path = "event_message_fk") -> None:
    """The schema phase, cell by cell, as a rehearsal."""
    run = open_phase("schema", runbook, target)
    run.plan()
    run.apply()
    run.check_expectations()
    run.finish()


@contextmanager
def prepared_target(runbook: str, prefix: str) -> Iterator[str]:
    """A fresh database prepared from the runbook's fixture, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    add_target(name, {"embedded": name})
    commands.prepare(runbook, name)
    try:
        yield name
    finally:
        embedded.drop_database(name)


@contextmanager
def prepared_pair(runbook: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    """A rehearsal target and a production target, both prepared from the runbook's fixture,
    dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    rehearsal, prod = f"{prefix}reh_{suffix}", f"{prefix}prd_{suffix}"
    add_target(rehearsal, {"embedded": rehearsal})
    add_target(prod, {"embedded": prod, "production": True})
    commands.prepare(runbook, rehearsal)
    commands.prepare(runbook, prod, allow_production=True)
    try:
        yield rehearsal, prod
    finally:
        for name in (rehearsal, prod):
            embedded.drop_database(name)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """A folder of files (a migration folder shaped like a real one), written for a test."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
