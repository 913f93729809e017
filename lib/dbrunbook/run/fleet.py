"""Fleet rollout: one runbook (or set) to many databases, in waves, on Dask distributed.

A group of targets (``dbrunbook.yaml`` ``groups:``) or an explicit list is cut into waves (a canary
first: ``1,10%,100%`` means one database, then up to 10% of them reached, then all); within a wave up
to ``parallel`` databases run at once on the workers of a Dask cluster (a ``LocalCluster`` of
processes by default, a running scheduler's address for a real one). Each database runs the phases
in-process, the phase notebooks' own cells in a clean namespace (no kernel), and keeps its own
ledger exactly as a single run would, so ``status``, the drift check and rollback work per database
afterwards. A failure halts before the next wave (or, with ``on_error="continue"``, is reported and
the rollout goes on). Re-running skips the databases already where the phases take them. The fleet's
evidence is structured data (``fleet.json``) and one archived page (``fleet.ipynb`` and its HTML).
"""
from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..archive.fleet import (
    DatabaseEvidence,
    FleetResult,
    PhaseEvidence,
    write_fleet_archive,
)
from ..archive.manifest import utc_stamp
from ..archive.pages import render_html
from ..config import load_config
from ..errors import DbrunbookError, SpecError, TargetError
from ..paths import outputs_dir, project_root
from ..phases import registry
from ..runbook.sets import load_book
from ..state import ledger
from ..state.identity import new_run_id
from ..state.status import Direction, Status
from ..targets.connect import engine
from ..targets.resolve import GROUP_SEP, resolve_target
from .kernel import WARM_MODULES, run_kernel
from .runner import warm_html
from .startup import pause_collector, settle
from .steps import (
    Engine,
    KernelEngine,
    Step,
    error_line,
    in_process,
    plan_steps,
    run_step,
    step_parameters,
)

HALT, CONTINUE = "halt", "continue"


class FleetError(DbrunbookError):
    """A fleet run could not start, or ended with failed databases (the report says which)."""


# -- targets and waves ------------------------------------------------------------------------------------

def group_targets(name: str) -> list[str]:
    """The target references of a group, in a stable order."""
    groups = load_config().groups
    if name not in groups:
        raise TargetError(f"unknown group {name!r}; groups in dbrunbook.yaml: {', '.join(sorted(groups)) or 'none'}")
    group = groups[name]
    if group.targets:
        return list(group.targets)
    import sqlalchemy as sa

    if group.pattern:
        server = resolve_target(group.server)
        with engine(server).connect() as conn:
            names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"))
            found = [str(n) for n in names.scalars() if fnmatch.fnmatchcase(str(n), group.pattern)]
        return [f"{name}{GROUP_SEP}{db}" for db in found]
    catalog = resolve_target(str(group.on))
    with engine(catalog).connect() as conn:
        values = [str(v) for v in conn.execute(sa.text(str(group.query))).scalars()]
    known = load_config().targets
    refs = []
    for value in values:
        if "://" in value:
            raise TargetError(f"group {name}: its query returned a URL; return database names, target names or "
                              "env:VAR references (secrets stay out of the catalog's answers)")
        refs.append(value if value in known or value.startswith("env:") else f"{name}{GROUP_SEP}{value}")
    return refs


def parse_waves(text: str, total: int) -> list[int]:
    """How many databases each wave takes: ``1,10%,100%`` of 40 -> [1, 3, 36] (cumulative: up to
    10% reached by the end of the second wave). The last wave must reach every database."""
    reached, sizes = 0, []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        try:
            goal = math.ceil(total * float(part[:-1]) / 100) if part.endswith("%") else int(part)
        except ValueError:
            raise SpecError("--waves", f"{part!r} is neither a count nor a percentage") from None
        goal = min(max(goal, reached), total)
        if goal > reached:
            sizes.append(goal - reached)
            reached = goal
    if reached < total:
        raise SpecError("--waves", f"{text!r} reaches {reached} of {total} database(s); end with 100%")
    return sizes


# -- one database, on a worker -----------------------------------------------------------------------

@dataclass(frozen=True)
class DatabaseTask:
    runbook: str          # a path: the workers resolve it themselves
    target: str           # a reference (name, group/db, env:VAR): never a URL with a password
    phases: tuple[str, ...]
    parameters: dict[str, Any]
    archive_dir: str
    wave: int
    notebooks: bool = False  # also a full archived notebook per phase (Papermill, one kernel per database)


def _skip_reason(book: Any, target: Any, phases: tuple[str, ...]) -> str | None:
    """Why this database needs nothing (already where the phases take it), or None."""
    with engine(target).connect() as conn:
        state = ledger.read_state(conn, book.name)
    checksum = book.migration_checksum()
    if registry.only(Direction.FORWARD, phases) and state is not None and state.state == Status.APPLIED \
            and state.checksum == checksum:
        return f"already applied ({checksum[:12]})"
    if registry.only(Direction.BACKWARD, phases) and (state is None or state.state in (Status.PENDING,
                                                                                          Status.ROLLED_BACK)):
        return "nothing to roll back"
    return None


def run_database(task: DatabaseTask) -> DatabaseEvidence:
    """The phases on one database, in this process: what a Dask worker runs (each phase's notebook
    cells here, or with ``notebooks`` its full page in a kernel of the database's own)."""
    started, cpu = time.perf_counter(), time.process_time()
    evidence = DatabaseEvidence(task.target, task.wave, Status.PASSED, worker=_worker_name())
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            target = resolve_target(task.target)
            book = load_book(task.runbook)
            reasons = [_skip_reason(m, target, task.phases) for m in book.members]
            if all(reasons):
                evidence.status, evidence.error = Status.SKIPPED, str(reasons[0])
            else:
                evidence.run_id = new_run_id()
                folder = Path(task.archive_dir)
                folder.mkdir(parents=True, exist_ok=True)
                with contextlib.ExitStack() as stack:
                    engine_: Engine = stack.enter_context(in_process())
                    if task.notebooks:
                        engine_ = KernelEngine(stack.enter_context(run_kernel(folder, project_root())), project_root())
                    for step in plan_steps(book.members, list(task.phases), single=book.members[:1] == [book]):
                        one = _run_phase(step, engine_, task, evidence.run_id, folder)
                        evidence.phases.append(one)
                        if one.status != Status.PASSED:
                            evidence.status, evidence.error = Status.FAILED, one.error
                            break
    except Exception as exc:  # a database that cannot be reached is this database's failure
        evidence.status, evidence.error = Status.FAILED, error_line(exc)
    try:
        with engine(resolve_target(task.target), create=False).connect() as conn:
            state = ledger.read_state(conn, Path(task.runbook).name)
        evidence.state = "" if state is None else state.state
        evidence.fingerprint = "" if state is None else str(state.fingerprint_after or "")
    except Exception:
        pass
    evidence.seconds = round(time.perf_counter() - started, 3)
    evidence.cpu_seconds = round(time.process_time() - cpu, 3)
    evidence.log = log.getvalue()[-4000:]
    return evidence


def _run_phase(step: Step, engine_: Engine, task: DatabaseTask, run_id: str, folder: Path) -> PhaseEvidence:
    parameters = step_parameters(step, runbook=str(step.member.path), target=task.target, run_id=run_id,
                                 archive_dir=str(folder), dry_run=False, parameters=task.parameters)
    done = run_step(step, engine_, folder, parameters)
    page = folder / step.page
    if page.exists():  # the full page, as `dbrunbook run` archives it
        render_html(page, f"{step.member.name} · {step.phase} · {task.target}")
    detail = done.outcome.detail if done.outcome is not None else {}
    return PhaseEvidence(step.phase, done.status, done.seconds, done.error or "", str(detail.get("decision", "")),
                         done.evidence(), json.loads(json.dumps(detail, default=str)))


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


# -- the rollout -----------------------------------------------------------------------------------------



def workers_needed(parallel: int, plan: list[list[str]]) -> int:
    """How many databases can run at once: ``parallel``, but no more than the largest wave holds (a
    worker process that no database will reach costs a second of CPU to start and stop)."""
    if parallel < 1:
        raise SpecError("--parallel", f"{parallel}: at least 1 database at once")
    return min(parallel, max(len(wave) for wave in plan))


def _warm_worker() -> None:
    """Import what every database's phases need, on each worker as the rollout starts."""
    import importlib


    pause_collector()
    for module in WARM_MODULES:
        importlib.import_module(module)
    settle()


def _close(client: Any, scheduler: str | None) -> None:
    client.close()
    if getattr(client, "cluster", None) is not None and not scheduler:
        client.cluster.close()


def _warm_chart() -> None:
    """matplotlib's imports, for the fleet page's chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _client(parallel: int, scheduler: str | None) -> Any:
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    # The scheduler's HTTP server on a free port: two fleets at once (or a dashboard already running)
    # must not compete for 8787.
    cluster = LocalCluster(n_workers=parallel, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster)


def fleet_run(runbook_ref: str, targets: list[str], phases: list[str], *, parameters: dict[str, object] | None = None,
              waves: str = "1,100%", parallel: int = 2, on_error: str = HALT, scheduler: str | None = None,
              notebooks: bool = False, echo: Callable[[str], None] | None = None) -> FleetResult:
    """Run the phases on every database, wave by wave, on Dask; the result says what happened to each."""
    if on_error not in (HALT, CONTINUE):
        raise SpecError("--on-error", f"{on_error!r}: halt or continue")
    if not targets:
        raise FleetError("the fleet has no database (an empty group?)")
    book = load_book(runbook_ref)
    checked = registry.check_parameters(phases, parameters or {})
    for ref in targets:
        if "://" in ref:
            raise TargetError("fleet targets are references (names, group/database, env:VAR), not URLs")
    production = [ref for ref in targets if resolve_target(ref).production]
    guarded = [p for p in phases if registry.phase_info(p).guarded_on_production]
    if production and guarded and checked.get("confirm") != "fleet":
        # The same consent a single run asks for, once for the whole fleet.
        raise FleetError(f"{', '.join(guarded)} on {len(production)} production database(s) needs -p confirm=fleet")
    sizes = parse_waves(waves, len(targets))
    plan, at = [], 0
    for size in sizes:
        plan.append(targets[at:at + size])
        at += size
    parallel = workers_needed(parallel, plan)
    fleet_id = new_run_id()
    folder = outputs_dir() / book.name / f"{utc_stamp()}_fleet_{fleet_id}"
    folder.mkdir(parents=True)
    result = FleetResult(book.name, fleet_id, folder, phases, plan, parallel, on_error, scheduler or "LocalCluster",
                         started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    began = time.perf_counter()
    say = echo or (lambda line: None)
    say(f"fleet {fleet_id}: {book.name} on {len(targets)} database(s), waves {[len(w) for w in plan]}, "
        f"{parallel} at once\n  archive: {folder}")
    client = _client(parallel, scheduler)
    # The fleet page's imports and templates (nbconvert, matplotlib: about 1.5 s), paid while the
    # databases run: the driver only waits for them.
    warming = warm_html(_warm_chart)
    # Every worker warms up at once, not each on its first database (the canary's worker included).
    warm = [client.submit(_warm_worker, workers=[address], pure=False)
            for address in client.scheduler_info().get("workers", {})]
    closing: threading.Thread | None = None
    try:
        from distributed import as_completed

        halted = False
        for number, wave in enumerate(plan, start=1):
            if halted:
                result.databases += [DatabaseEvidence(ref, number, Status.NOT_STARTED) for ref in wave]
                continue
            tasks = [DatabaseTask(str(book.path), ref, tuple(phases), checked,
                                  str(folder / "databases" / ref.replace("/", "__")), number, notebooks) for ref in wave]
            futures = client.map(run_database, tasks, pure=False)
            for future in as_completed(futures):
                done: DatabaseEvidence = future.result()
                result.databases.append(done)
                say(f"  wave {number} {done.target:<28} {done.status:<8} {done.seconds:6.1f}s"
                    + (f"  {done.error}" if done.error else ""))
            halted = on_error == HALT and any(d.status == Status.FAILED for d in result.databases)
        del warm
        # The cluster's shutdown (about 1.5 s, mostly waiting on its processes) goes on while the
        # archive is written.
        closing = threading.Thread(target=_close, args=(client, scheduler), name="dbrunbook-close-cluster")
        closing.start()
    finally:
        if closing is None:  # an error or a signal: close now
            _close(client, scheduler)
    try:
        order = {ref: i for i, ref in enumerate(targets)}
        result.databases.sort(key=lambda d: order.get(d.target, 0))
        result.seconds = round(time.perf_counter() - began, 2)
        warming.join()
        write_fleet_archive(result)
    finally:
        closing.join()
    return result


# -- evidence: fleet.json and one page -----------------------------------------------------------------



# -- status ------------------------------------------------------------------------------------------------

def fleet_status(runbook_ref: str, targets: list[str]) -> pd.DataFrame:
    """Every database's state for the runbook, as its own ledger has it."""
    book = load_book(runbook_ref)
    members = book.members
    rows = []
    for ref in targets:
        for member in members:
            try:
                with engine(resolve_target(ref), create=False).connect() as conn:
                    state = ledger.read_state(conn, member.name)
                    live = ledger.lock_held(conn, ledger.runbook_lock_key(member.name)) if state else False
                text, detail = ledger.describe_runbook(state, member, live=live)
            except Exception as exc:
                text, detail = "unreachable", str(exc).splitlines()[0]
            rows.append({"database": ref, "runbook": member.name, "state": text, "detail": detail})
    return pd.DataFrame(rows, columns=["database", "runbook", "state", "detail"])
