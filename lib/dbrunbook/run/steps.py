"""One phase of one runbook, run by an engine into a run's folder: the one place the single run
(:mod:`.runner`), each database of a fleet (:mod:`.fleet`) and rehearse (:mod:`.rehearse`)
execute a phase notebook and learn how it ended.

An engine runs the phase's notebook: :class:`KernelEngine` under Papermill in a kernel, into the
archived page a reviewer reads; :class:`CellsEngine` runs the notebook's own code cells in this
process, without a kernel or a page (their results are kept as data). Either way the phase leaves
its outcome record (:mod:`dbrunbook.phases.outcome`) in the folder, and that is what the step
reports: the runner does not ask the ledger again, and no engine reads another's objects.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..phases import registry
from ..phases.base import abandon_current
from ..phases.evidence import Evidence
from ..phases.notebooks import NotebookSource, notebook_source
from ..phases.outcome import Outcome, read_outcome
from ..runbook.spec import Runbook
from ..state.status import Status
from ..targets.secrets import redact
from .engine import execute_phase


@dataclass(frozen=True)
class Step:
    """One phase of one member, the ``number``-th of its run; ``label`` names its page."""

    member: Runbook
    phase: str
    number: int
    label: str

    @property
    def page(self) -> str:
        return f"{self.number:02d}_{self.label}.ipynb"


def plan_steps(members: list[Runbook], phases: list[str], *, single: bool) -> list[Step]:
    """The run's steps in order (a backward phase over the members in reverse); a set's pages are
    named ``<member>_<phase>``, a single runbook's ``<phase>``."""
    return [Step(member, phase, number, phase if single else f"{member.name}_{phase}")
            for number, (member, phase) in enumerate(registry.in_order(members, phases), start=1)]


class Engine(Protocol):
    """How a phase notebook is executed: into ``output`` (a page, if the engine makes one), with
    the cells' results in ``namespace`` (if it keeps them)."""

    def execute(self, notebook: Path, output: Path, parameters: dict[str, object],
                namespace: dict[str, Any]) -> None: ...


@dataclass
class KernelEngine:
    """Papermill in a kernel (the run's, kept across its phases): the archived page."""

    kernel: Any
    cwd: Path

    def execute(self, notebook: Path, output: Path, parameters: dict[str, object],
                namespace: dict[str, Any]) -> None:
        execute_phase(notebook, output, parameters, self.cwd, self.kernel)


class CellsEngine:
    """The notebook's code cells in this process, in a fresh namespace, no kernel and no page: the
    parameters cell's defaults, then the given values (Papermill's order). A failing cell raises."""

    def execute(self, notebook: Path, output: Path, parameters: dict[str, object],
                namespace: dict[str, Any]) -> None:
        execute_cells(notebook, parameters, namespace)


def execute_cells(notebook: Path, parameters: dict[str, Any], namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a phase notebook's code cells in ``namespace`` (a fresh one by default), the parameters
    cell's defaults then the given values, without a kernel. An exception in a cell propagates;
    the namespace keeps what the cells before it returned."""
    node = json.loads(notebook.read_text())
    namespace = {} if namespace is None else namespace
    namespace["__name__"] = "__dbrunbook_phase__"
    for number, cell in enumerate(c for c in node["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"<{notebook.name} cell {number}>", "exec"), namespace)  # noqa: S102 - our own notebooks
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            namespace.update(parameters)
    return namespace


@dataclass
class StepResult:
    """How a step ended: ``passed`` when its notebook ran to its end, ``failed`` (with the error's
    one line) otherwise; ``outcome`` is what the phase recorded; ``unsaved`` says why the page could
    not be written after the phase had recorded its end (its work is done: do not run it again)."""

    step: Step
    status: Status
    seconds: float
    error: str | None = None
    outcome: Outcome | None = None
    unsaved: str | None = None
    namespace: dict[str, Any] = field(default_factory=dict)
    #: The exception itself, where the phase ran in this process (a kernel's stays in the kernel).
    exception: BaseException | None = None
    #: The notebook that ran: the project's own, or the packaged one.
    source: NotebookSource | None = None

    @property
    def warnings(self) -> list[str]:
        return self.outcome.warnings if self.outcome is not None and self.status == Status.PASSED else []

    def evidence(self) -> dict[str, dict[str, Any]]:
        """What each step of the page returned, as data, in the page's order (cells run here only)."""
        return {name: value.to_dict() for name, value in self.namespace.items()
                if isinstance(value, Evidence) and not name.startswith("_")}


def step_parameters(step: Step, *, runbook: str, target: str, run_id: str, archive_dir: str, dry_run: bool,
                    parameters: dict[str, object]) -> dict[str, object]:
    """The notebook's parameters: the ones every phase takes, then the run's ``-p`` values this
    phase declares (each notebook gets only its own: Papermill would warn about the rest)."""
    own = registry.phase_info(step.phase).all_params()
    return {"runbook": runbook, "target": target, "run_id": run_id, "archive_dir": archive_dir,
            "dry_run": dry_run, **{k: v for k, v in parameters.items() if k in own}}


def run_step(step: Step, engine: Engine, folder: Path, parameters: dict[str, object]) -> StepResult:
    """Execute the step's phase notebook; a signal (KeyboardInterrupt) goes to the caller, which
    settles the run."""
    began = time.perf_counter()
    namespace: dict[str, Any] = {}
    status, error, unsaved, raised = Status.PASSED, None, None, None
    source = notebook_source(step.phase)
    try:
        engine.execute(source.path, folder / step.page, parameters, namespace)
    except Exception as exc:  # papermill raises its own error for a failed cell
        status, error, raised = Status.FAILED, error_line(exc), exc
        ended = read_outcome(folder, step.member.name, step.phase)
        if type(exc).__name__ != "PapermillExecutionError" and ended is not None and ended.status != Status.FAILED:
            # The phase ran to its end and recorded it; it was the saving that failed.
            status, error, unsaved = Status.PASSED, None, f"{step.page}: {error}"
    return StepResult(step, status, round(time.perf_counter() - began, 3), error,
                      read_outcome(folder, step.member.name, step.phase), unsaved, namespace, raised, source)


def error_line(exc: BaseException) -> str:
    """A failure as one line (a cell's error as Papermill names it), passwords hidden."""
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))


@contextmanager
def in_process() -> Iterator[CellsEngine]:
    """The engine for phases run in this process, whatever it leaves behind closed afterwards (a
    phase left open by a failing cell is rolled back, its connection released)."""
    try:
        yield CellsEngine()
    finally:
        abandon_current()
