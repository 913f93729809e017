"""Test session set-up shared by tests/ and the nbval run over notebooks/.

Every test session gets its own embedded PostgreSQL (a temporary data folder), its own archive
folder and its own target config, through environment variables that the Papermill and nbval
kernels inherit. Nothing touches the developer's .dbrunbook/ or outputs/.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_SESSION_DIR: Path | None = None
_prepared: set[str] = set()
# nbval runs the phase notebooks in this order, on the default target "dev".
# deploy's defaults deploy to prod, rehearsed on dev: it runs while dev holds the migration.
_NOTEBOOK_ORDER = ["review.ipynb", "schema.ipynb", "code_verify.ipynb", "test.ipynb", "deploy.ipynb", "rollback.ipynb"]
# clean_slate refuses with its default parameters (confirm must name the target, and nbval cannot
# pass parameters); tests/test_clean_slate.py runs it through Papermill with confirm set instead.
# backfill's default runbook (seed 000) declares no backfill; tests/test_backfill.py runs it on seed 002.
collect_ignore = ["notebooks/clean_slate.ipynb", "notebooks/backfill.ipynb"]


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_DIR
    # A short path: the server's Unix socket lives in its data folder.
    _SESSION_DIR = Path(tempfile.mkdtemp(prefix="dbrb-"))
    os.environ["DBRUNBOOK_HOME"] = str(ROOT)
    os.environ["DBRUNBOOK_PGDATA"] = str(_SESSION_DIR / "pgdata")
    os.environ["DBRUNBOOK_OUTPUTS"] = str(_SESSION_DIR / "outputs")
    os.environ["DBRUNBOOK_CONFIG"] = str(_SESSION_DIR / "dbrunbook.yaml")
    # Production deploys need a recorded approval by default; the tests of deploy's own mechanics
    # switch that off for the session, and tests/test_approval.py switches it back on.
    (_SESSION_DIR / "dbrunbook.yaml").write_text("approvals: {required: false}\n")
    os.environ.pop("DATABASE_URL", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_DIR is None:
        return
    from dbrunbook import embedded

    embedded.stop()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> tuple[int, int]:
        name = Path(str(item.fspath)).name
        if name in _NOTEBOOK_ORDER:
            return (1, _NOTEBOOK_ORDER.index(name))
        return (0, 0)

    items.sort(key=order)  # stable: tests/ first, then the notebooks in phase order


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist (``-n``) every test stands alone, on whichever worker is free, except the
    notebooks' cells: they all run on one worker, in phase order, each building on the one before.
    Each worker has its own embedded server, archive and config (pytest_configure runs in each)."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if nodeid.startswith("notebooks/") else nodeid

    return NotebooksTogether(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    name = Path(str(item.fspath)).name
    if name in _NOTEBOOK_ORDER and "dev" not in _prepared:
        from dbrunbook import commands

        commands.prepare("event_message_fk", "dev")
        # prod is the embedded stand-in for production: loading its fixture needs the override.
        commands.prepare("event_message_fk", "prod", allow_production=True)
        _prepared.add("dev")
