"""Test session set-up shared by tests/ and the nbval run over notebooks/.

Every test session gets its own embedded PostgreSQL (a temporary data folder), its own archive
folder and its own target config, through environment variables that the Papermill and nbval
kernels inherit. Nothing touches the developer's .dbrunbook/ or outputs/.
"""
from __future__ import annotations

import sys

# What dbrunbook/__init__ does, before nbval's plugin imports nbformat (and so jsonschema, which
# would build rfc3987_syntax's grammars: 1.1 s in each pytest process). nbval is loaded here, not
# from its entry point (pytest.ini: -p no:nbval), so that this line comes first.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
pytest_plugins = ["nbval.plugin"]

import compileall
import gc
import json
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
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
    if not hasattr(config, "workerinput"):
        # Some 200 CLI and kernel processes import the library: with bytecode writing off
        # (PYTHONDONTWRITEBYTECODE, as on the CI machine) each would compile it from source again.
        # An installed package has its bytecode written by pip; an editable one gets it here.
        compileall.compile_dir(ROOT / "lib", quiet=1)
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
    from dbrunbook.targets import embedded

    embedded.stop()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


# Units of work under pytest-xdist: a test stands alone, except where tests share what they build.
# The notebooks' cells run in phase order, each building on the one before; tests/test_reviewer.py
# builds one archive for the module (a module-scoped fixture), which a second worker would build again.
_TOGETHER = ("notebooks/", "tests/test_reviewer.py")
# Each test's wall and CPU seconds in a recorded run (`pytest --store-durations`). Only the order
# depends on it (see order_units); with a stale or missing file the suite is slower, never wrong.
DURATIONS = ROOT / "tests" / "durations.json"
# A unit "mostly waits" when its own processes' CPU is under this share of its wall time: the kill
# tests sleep, wait for sessions to end and re-run, and use about a third of a core.
WAITING_SHARE = 0.45
# Seconds of recorded work already queued on a worker above which its next unit is a short one.
LOOKAHEAD_S = 5.0


def work_unit(nodeid: str) -> str:
    """The unit of work ``nodeid`` belongs to: its module if that module's tests run together, else itself."""
    return next((prefix for prefix in _TOGETHER if nodeid.startswith(prefix)), nodeid)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true",
                     help=f"record each test's duration in {DURATIONS.relative_to(ROOT)} (orders the next runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def phase_order(item: pytest.Item) -> tuple[int, int]:
        name = Path(str(item.fspath)).name
        if name in _NOTEBOOK_ORDER:
            return (1, _NOTEBOOK_ORDER.index(name))
        return (0, 0)

    items.sort(key=phase_order)  # stable: tests/ first, then the notebooks in phase order
    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    units: dict[str, tuple[float, float]] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        wall, cpu = recorded.get(item.nodeid, (0.0, 0.0))
        had = units.get(unit, (0.0, 0.0))
        units[unit] = (had[0] + wall, had[1] + cpu)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    rank = {unit: n for n, unit in enumerate(order_units(units, workers))}
    # A unit's own tests stay together and in their order (the sort is stable).
    items.sort(key=lambda item: rank[work_unit(item.nodeid)])


def order_units(units: dict[str, tuple[float, float]], workers: int) -> list[str]:
    """The order units are handed to the workers: longest first, so that no long unit starts when the
    others are nearly done; but a unit that mostly waits comes at most once in every ``workers``
    units, while busy ones are left. Started side by side at the session's start, the kill tests
    left the cores half idle for their first minute."""
    pending = sorted(units, key=lambda unit: (-units[unit][0], unit))

    def waits(unit: str) -> bool:
        wall, cpu = units[unit]
        return wall > 0 and cpu < WAITING_SHARE * wall

    order: list[str] = []
    busy_since = workers  # busy units placed since the last waiting one
    while pending:
        unit = next((u for u in pending if busy_since >= workers - 1 or not waits(u)), pending[0])
        pending.remove(unit)
        order.append(unit)
        busy_since = 0 if waits(unit) else busy_since + 1
    return order


def pytest_collection_finish(session: pytest.Session) -> None:
    # What collection imported (the library, pandas, SQLAlchemy) lives as long as the session: out
    # of the cyclic collector's sight, as dbrunbook.run.startup does for the CLI and its kernels.
    gc.freeze()


_took: dict[str, list[float]] = {}
_CPU_AT = pytest.StashKey[float]()


def _cpu_seconds() -> float:
    """This process's CPU and that of the children it waited for (the CLI runs and their kernels),
    with the CLI runs forked by tests/cli_fork.py's server (its children, not ours)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    forking = getattr(sys.modules.get("tests.cli_fork"), "FORKING", None)
    forked = forking.cpu_seconds if forking is not None else 0.0
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime + forked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if call.when == "teardown" and _CPU_AT in item.stash:
        # Carried to the xdist controller with the report, which writes durations.json.
        outcome.get_result().user_properties.append(("cpu_seconds", _cpu_seconds() - item.stash[_CPU_AT]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    took = _took.setdefault(report.nodeid, [0.0, 0.0])
    took[0] += report.duration
    took[1] += sum(value for key, value in report.user_properties if key == "cpu_seconds")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under xdist the controller hears every worker's reports; a worker writes nothing.
    if session.config.getoption("store_durations") and not hasattr(session.config, "workerinput"):
        DURATIONS.write_text(json.dumps({k: [round(wall, 1), round(cpu, 1)] for k, (wall, cpu) in sorted(_took.items())
                                         if wall >= 0.05}, indent=0) + "\n")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers more than the cores. A good part of the suite waits (the kill tests'
    real sleeps, child processes, the server's answers): on 2 cores, 2 workers kept the CPU 81% busy
    and took 8 min 06 s; 3 workers, 93% and 6 min 30 s. Once the CLI calls were forked
    (tests/cli_fork.py), 3 workers left the cores 11% idle while the kill tests ran; 4 workers,
    5% (4:20 and 4:00 against 4:43 and 4:04, in alternating pairs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores + 2


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist (``-n``) the units of :func:`work_unit` go to whichever worker is free,
    longest first (the order of the collection). Each worker has its own embedded server, archive
    and config (pytest_configure runs in each)."""
    from xdist.scheduler import LoadScopeScheduling

    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}

    class Units(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: object) -> None:
            # A worker is always sent one unit ahead of the one it runs (it needs to know its next
            # test). Behind a long unit, that one is the shortest left, not the next long one: the
            # next long unit then goes to whichever worker comes free first, and two kill tests no
            # longer run back to back on one worker while the others run out of work.
            pending = [nodeid for scope in self.assigned_work.get(node, {}).values() for nodeid, done in scope.items()
                       if not done]
            if len(self.workqueue) > 1 and sum(recorded.get(n, (0.0, 0.0))[0] for n in pending) > LOOKAHEAD_S:
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False  # keep the collection's order: longest first
    return Units(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_CPU_AT] = _cpu_seconds()
    name = Path(str(item.fspath)).name
    if name in _NOTEBOOK_ORDER and "dev" not in _prepared:
        from dbrunbook.cli import commands

        commands.prepare("event_message_fk", "dev")
        # prod is the embedded stand-in for production: loading its fixture needs the override.
        commands.prepare("event_message_fk", "prod", allow_production=True)
        _prepared.add("dev")
