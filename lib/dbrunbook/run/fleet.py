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

import base64
import contextlib
import fnmatch
import io
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DbrunbookError, SpecError, TargetError
from ..phases.evidence import Evidence
from ..state import ledger

HALT, CONTINUE = "halt", "continue"
PASSED, FAILED, SKIPPED, NOT_STARTED = "passed", "failed", "skipped", "not started"
FORWARD_PHASES = ("schema", "deploy")


class FleetError(DbrunbookError):
    """A fleet run could not start, or ended with failed databases (the report says which)."""


# -- targets and waves ------------------------------------------------------------------------------------

def group_targets(name: str) -> list[str]:
    """The target references of a group, in a stable order."""
    from ..targets.resolve import GROUP_SEP, engine, load_config, resolve_target

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


@dataclass
class PhaseEvidence:
    phase: str
    status: str
    seconds: float
    error: str = ""
    decision: str = ""
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # each step's Evidence.to_dict(), by name
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatabaseEvidence:
    target: str
    wave: int
    status: str
    run_id: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str = ""
    state: str = ""
    fingerprint: str = ""
    worker: str = ""
    phases: list[PhaseEvidence] = field(default_factory=list)
    log: str = ""


def _skip_reason(book: Any, target: Any, phases: tuple[str, ...]) -> str | None:
    """Why this database needs nothing (already where the phases take it), or None."""
    from ..targets.resolve import engine

    with engine(target).connect() as conn:
        state = ledger.read_state(conn, book.name)
    checksum = book.migration_checksum()
    if all(p in FORWARD_PHASES for p in phases) and state is not None and state.state == ledger.APPLIED \
            and state.checksum == checksum:
        return f"already applied ({checksum[:12]})"
    if list(phases) == ["rollback"] and (state is None or state.state in (ledger.PENDING, ledger.ROLLED_BACK)):
        return "nothing to roll back"
    return None


def execute_cells(notebook: Path, parameters: dict[str, Any], namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a phase notebook's code cells in ``namespace`` (a fresh one by default), the parameters
    cell's defaults then the given values (Papermill's order), without a kernel. An exception in a
    cell propagates; the namespace keeps what the cells before it returned."""
    node = json.loads(notebook.read_text())
    namespace = {} if namespace is None else namespace
    namespace["__name__"] = "__dbrunbook_phase__"
    for number, cell in enumerate(c for c in node["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"<{notebook.name} cell {number}>", "exec"), namespace)  # noqa: S102 - our own notebooks
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            namespace.update(parameters)
    return namespace


def _steps(namespace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evidence each step of the page returned, as data, in the page's order."""
    return {name: value.to_dict() for name, value in namespace.items()
            if isinstance(value, Evidence) and not name.startswith("_")}


def run_database(task: DatabaseTask) -> DatabaseEvidence:
    """The phases on one database, in this process: what a Dask worker runs."""
    from ..paths import phase_notebook, project_root
    from ..phases import base as phase_module
    from ..runbook.sets import resolve_set
    from ..runbook.spec import load_runbook
    from ..state.ledger import new_run_id
    from ..targets.resolve import engine, redact, resolve_target
    from .kernel import run_kernel

    started, cpu = time.perf_counter(), time.process_time()
    evidence = DatabaseEvidence(task.target, task.wave, PASSED, worker=_worker_name())
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            target = resolve_target(task.target)
            book: Any = resolve_set(task.runbook)
            members = book.members if book is not None else [load_runbook(task.runbook)]
            reasons = [_skip_reason(m, target, task.phases) for m in members]
            if all(reasons):
                evidence.status, evidence.error = SKIPPED, str(reasons[0])
            else:
                evidence.run_id = new_run_id()
                folder = Path(task.archive_dir)
                folder.mkdir(parents=True, exist_ok=True)
                steps = [(phase, member) for phase in task.phases
                         for member in (list(reversed(members)) if phase == "rollback" else members)]
                with contextlib.ExitStack() as stack:
                    kernel = stack.enter_context(run_kernel(folder, project_root())) if task.notebooks else None
                    for number, (phase, member) in enumerate(steps, start=1):
                        one = _run_phase(phase_notebook(phase), phase, member.path, task, evidence.run_id, folder,
                                         kernel, number)
                        evidence.phases.append(one)
                        if one.status != PASSED:
                            evidence.status, evidence.error = FAILED, one.error
                            raise _Stop()
    except _Stop:
        pass
    except Exception as exc:  # a database that cannot be reached is this database's failure
        evidence.status, evidence.error = FAILED, redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
    finally:
        phase_module.abandon_current()
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


class _Stop(Exception):
    """A phase failed: the database's later phases do not run."""


def _run_phase(notebook: Path, phase: str, runbook: Path, task: DatabaseTask, run_id: str,
               folder: Path, kernel: Any = None, number: int = 1) -> PhaseEvidence:
    from ..phases import registry
    from ..targets.resolve import redact

    own = set(registry.phase_info(phase).all_params())
    parameters = {"runbook": str(runbook), "target": task.target, "run_id": run_id, "archive_dir": str(folder),
                  "dry_run": False, **{k: v for k, v in task.parameters.items() if k in own}}
    began = time.perf_counter()
    namespace: dict[str, Any] = {}
    try:
        if kernel is not None:  # the full page, as `dbrunbook run` archives it
            from ..paths import project_root
            from .runner import execute_phase, render_html

            output = folder / f"{number:02d}_{phase}.ipynb"
            try:
                execute_phase(notebook, output, parameters, project_root(), kernel)
            finally:
                if output.exists():
                    render_html(output, f"{Path(runbook).name} · {phase} · {task.target}")
        else:
            execute_cells(notebook, parameters, namespace)
        status, error = PASSED, ""
    except Exception as exc:
        status, error = FAILED, redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
    run = namespace.get("run")
    detail = dict(getattr(run, "detail", {}) or {})
    return PhaseEvidence(phase, status, round(time.perf_counter() - began, 3), error,
                         str(detail.get("decision", "")), _steps(namespace),
                         json.loads(json.dumps(detail, default=str)))


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


# -- the rollout -----------------------------------------------------------------------------------------

@dataclass
class FleetResult:
    runbook: str
    fleet_id: str
    folder: Path
    phases: list[str]
    waves: list[list[str]]
    parallel: int
    on_error: str
    scheduler: str
    databases: list[DatabaseEvidence] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> list[DatabaseEvidence]:
        return [d for d in self.databases if d.status == FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"wave": d.wave, "database": d.target, "status": d.status, "state": d.state,
                              "seconds": d.seconds, "cpu s": d.cpu_seconds, "worker": d.worker, "run": d.run_id,
                              "error": d.error} for d in self.databases],
                            columns=["wave", "database", "status", "state", "seconds", "cpu s", "worker", "run",
                                     "error"])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.databases:
            out[d.status] = out.get(d.status, 0) + 1
        return out

    def render(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines = [f"fleet {self.fleet_id}: {self.runbook} ({','.join(self.phases)}) on {len(self.databases)} "
                 f"database(s) in {len(self.waves)} wave(s), {self.parallel} at once: {counts} in {self.seconds:.1f} s"]
        lines += [f"  wave {d.wave} {d.target}: FAILED: {d.error}" for d in self.failed]
        halted = [d for d in self.databases if d.status == NOT_STARTED]
        if halted:
            lines.append(f"  halted after the first failure: {len(halted)} database(s) in later waves not started")
        lines.append(f"  archive: {self.folder}")
        return "\n".join(lines)


def workers_needed(parallel: int, plan: list[list[str]]) -> int:
    """How many databases can run at once: ``parallel``, but no more than the largest wave holds (a
    worker process that no database will reach costs a second of CPU to start and stop)."""
    if parallel < 1:
        raise SpecError("--parallel", f"{parallel}: at least 1 database at once")
    return min(parallel, max(len(wave) for wave in plan))


def _warm_worker() -> None:
    """Import what every database's phases need, on each worker as the rollout starts."""
    import importlib

    from .kernel import WARM_MODULES
    from .startup import pause_collector, settle

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
    from ..paths import outputs_dir
    from ..phases import registry
    from ..runbook.sets import resolve_set
    from ..runbook.spec import load_runbook
    from ..state.ledger import new_run_id
    from ..targets.resolve import resolve_target
    from .runner import utc_stamp, warm_html

    if on_error not in (HALT, CONTINUE):
        raise SpecError("--on-error", f"{on_error!r}: halt or continue")
    if not targets:
        raise FleetError("the fleet has no database (an empty group?)")
    book: Any = resolve_set(runbook_ref) or load_runbook(runbook_ref)
    checked = registry.check_parameters(phases, parameters or {})
    for ref in targets:
        if "://" in ref:
            raise TargetError("fleet targets are references (names, group/database, env:VAR), not URLs")
    production = [ref for ref in targets if resolve_target(ref).production]
    if production and any(p in ("schema", "test", "rollback", "clean_slate") for p in phases):
        # The same consent a single run asks for, once for the whole fleet.
        if checked.get("confirm") != "fleet":
            raise FleetError(f"{', '.join(p for p in phases if p != 'deploy')} on {len(production)} production "
                             "database(s) needs -p confirm=fleet")
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
                result.databases += [DatabaseEvidence(ref, number, NOT_STARTED) for ref in wave]
                continue
            tasks = [DatabaseTask(str(book.path), ref, tuple(phases), checked,
                                  str(folder / "databases" / ref.replace("/", "__")), number, notebooks) for ref in wave]
            futures = client.map(run_database, tasks, pure=False)
            for future in as_completed(futures):
                done: DatabaseEvidence = future.result()
                result.databases.append(done)
                say(f"  wave {number} {done.target:<28} {done.status:<8} {done.seconds:6.1f}s"
                    + (f"  {done.error}" if done.error else ""))
            halted = on_error == HALT and any(d.status == FAILED for d in result.databases)
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

def write_fleet_archive(result: FleetResult) -> None:
    from ..archive.chain import MANIFEST
    from ..runbook.spec import sha256_file
    from .runner import render_html

    data = {"fleet_id": result.fleet_id, "runbook": result.runbook, "phases": result.phases,
            "waves": result.waves, "parallel": result.parallel, "on_error": result.on_error,
            "scheduler": result.scheduler, "started_at": result.started_at, "seconds": result.seconds,
            "operator": ledger.operator(), "databases": [asdict(d) for d in result.databases]}
    (result.folder / "fleet.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    notebook = result.folder / "fleet.ipynb"
    write_fleet_notebook(result, notebook)
    render_html(notebook, f"{result.runbook} · fleet {','.join(result.phases)} · {len(result.databases)} databases · "
                          f"{'passed' if result.ok else 'failed'}")
    status = "passed" if result.ok else "failed"
    manifest = {"kind": "fleet", "runbook": result.runbook, "run_id": result.fleet_id,
                "target": f"(fleet of {len(result.databases)})", "production": False, "status": status,
                "started_at": result.started_at, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "operator": ledger.operator(),
                "phases": [{"phase": f"fleet {','.join(result.phases)}", "status": status, "html": "fleet.html",
                            "duration_s": result.seconds}],
                "fleet": {"databases": len(result.databases), "counts": result.counts()},
                "error": "; ".join(f"{d.target}: {d.error}" for d in result.failed) or None,
                "output_files": {str(p.relative_to(result.folder)): sha256_file(p)
                                 for p in sorted(result.folder.rglob("*")) if p.is_file()}}
    (result.folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


#: Up to this many databases the chart has a labelled bar each; a bigger fleet gets one point each,
#: in rollout order (200 labelled bars take seconds to lay out and cannot be read).
LABELLED_BARS = 40


def durations_png(result: FleetResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [d for d in result.databases if d.status in (PASSED, FAILED)]
    colours = {PASSED: "#188038", FAILED: "#c5221f"}
    if len(ran) <= LABELLED_BARS:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * max(len(ran), 1)))
        ax.barh([f"w{d.wave} {d.target}" for d in ran], [d.seconds for d in ran],
                color=[colours[d.status] for d in ran])
        ax.invert_yaxis()
        ax.set_xlabel("seconds per database (all its phases)")
        ax.tick_params(axis="y", labelsize=7)
    else:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.scatter(range(1, len(ran) + 1), [d.seconds for d in ran], s=8, c=[colours[d.status] for d in ran])
        for wave in sorted({d.wave for d in ran})[1:]:  # where each later wave begins
            ax.axvline(next(i for i, d in enumerate(ran, start=1) if d.wave == wave) - 0.5, color="#999999", lw=0.8)
        ax.set_xlabel("database, in rollout order (grey lines: wave boundaries; the table names each)")
        ax.set_ylabel("seconds (all its phases)")
    ax.set_title(f"{result.runbook}: {len(ran)} database(s) ran, {result.parallel} at once", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_fleet_notebook(result: FleetResult, path: Path) -> None:
    """One page for the whole fleet, outputs included (built here, not executed: no kernel): the
    waves, a table per database, a chart of durations. Its cells reload fleet.json in JupyterLab."""
    import nbformat

    v4 = nbformat.v4
    frame = result.frame()
    counts = ", ".join(f"**{n} {s}**" for s, n in result.counts().items())
    verdict = "**PASSED**" if result.ok else f"**FAILED** on {len(result.failed)} database(s)"
    cells = [v4.new_markdown_cell(
        f"{verdict} · {result.runbook} · fleet {result.fleet_id}\n\n"
        f"# Fleet rollout: {result.runbook}\n\nPhases **{', '.join(result.phases)}** on {len(result.databases)} "
        f"database(s) in {len(result.waves)} wave(s) ({', '.join(str(len(w)) for w in result.waves)}), "
        f"{result.parallel} at once on {result.scheduler}, on error: {result.on_error}. {counts} in "
        f"{result.seconds:.1f} s. Each database keeps its own ledger (state, checksum, fingerprint, operator); "
        "its structured evidence is in `fleet.json`.")]
    load = "import dbrunbook.run.fleet\n\nfleet = dbrunbook.run.fleet.load_fleet('fleet.json')\n"
    for number, wave in enumerate(result.waves, start=1):
        rows = frame[frame["wave"] == number]
        cells.append(v4.new_markdown_cell(f"## Wave {number}: {len(wave)} database(s)"))
        cells.append(v4.new_code_cell(load + f"fleet.wave({number})", outputs=[v4.new_output(
            "display_data", data={"text/html": rows.to_html(index=False), "text/plain": rows.to_string(index=False)})]))
    cells.append(v4.new_markdown_cell("## Durations\nWall seconds per database, all its phases."))
    png = base64.b64encode(durations_png(result)).decode()
    cells.append(v4.new_code_cell(load + "fleet.chart()", outputs=[v4.new_output(
        "display_data", data={"image/png": png, "text/plain": "<durations chart>"})]))
    details = pd.DataFrame([{"database": d.target, "phase": p.phase, "status": p.status, "seconds": p.seconds,
                             "decision": p.decision, "evidence": ", ".join(p.steps), "error": p.error}
                            for d in result.databases for p in d.phases],
                           columns=["database", "phase", "status", "seconds", "decision", "evidence", "error"])
    cells.append(v4.new_markdown_cell("## Per database and phase\nWhat each step of each phase returned (its texts "
                                      "and tables) is in `fleet.json` (`databases[].phases[].steps`)."))
    cells.append(v4.new_code_cell(load + "fleet.phases()", outputs=[v4.new_output(
        "display_data", data={"text/html": details.to_html(index=False), "text/plain": details.to_string(index=False)})]))
    cells.append(v4.new_markdown_cell(cells[0].source.split("\n\n")[0]))
    nbformat.write(v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}}), str(path))


@dataclass
class LoadedFleet:
    """fleet.json read back, for the fleet page's cells in JupyterLab."""

    data: dict[str, Any]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: d[k] for k in ("wave", "target", "status", "state", "seconds", "cpu_seconds",
                                                   "worker", "run_id", "error")} for d in self.data["databases"]])

    def wave(self, number: int) -> pd.DataFrame:
        frame = self.frame()
        return frame[frame["wave"] == number]

    def phases(self) -> pd.DataFrame:
        return pd.DataFrame([{"database": d["target"], **{k: p[k] for k in ("phase", "status", "seconds", "decision",
                                                                            "error")}}
                             for d in self.data["databases"] for p in d["phases"]])

    def chart(self) -> Any:
        from IPython.display import Image

        result = FleetResult(self.data["runbook"], self.data["fleet_id"], Path("."), self.data["phases"],
                             self.data["waves"], self.data["parallel"], self.data["on_error"], self.data["scheduler"],
                             [DatabaseEvidence(**{k: v for k, v in d.items() if k != "phases"})
                              for d in self.data["databases"]])
        return Image(durations_png(result))


def load_fleet(path: str | Path) -> LoadedFleet:
    return LoadedFleet(json.loads(Path(path).read_text()))


# -- status ------------------------------------------------------------------------------------------------

def fleet_status(runbook_ref: str, targets: list[str]) -> pd.DataFrame:
    """Every database's state for the runbook, as its own ledger has it."""
    from ..runbook.sets import resolve_set
    from ..runbook.spec import load_runbook
    from ..targets.resolve import engine, resolve_target

    book: Any = resolve_set(runbook_ref) or load_runbook(runbook_ref)
    members = book.members if hasattr(book, "members") else [book]
    rows = []
    for ref in targets:
        for member in members:
            try:
                with engine(resolve_target(ref), create=False).connect() as conn:
                    state = ledger.read_state(conn, member.name)
                    live = ledger.lock_held(conn, ledger.runbook_lock_key(member.name)) if state else False
                text, detail = ledger.describe(state, member.migration_checksum(), live=live,
                                               script=member.script_name("migration"))
            except Exception as exc:
                text, detail = "unreachable", str(exc).splitlines()[0]
            rows.append({"database": ref, "runbook": member.name, "state": text, "detail": detail})
    return pd.DataFrame(rows, columns=["database", "runbook", "state", "detail"])
