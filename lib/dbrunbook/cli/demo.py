"""The demo: the example runbooks (seeds 000 to 004) played end to end on embedded databases.

The examples are the project's own ``runbooks/`` when it has them (this repository), else the ones
the package ships, so ``dbrunbook demo`` works in any project, straight after ``init``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..archive import manifest
from ..config import TARGETS_ENV
from ..dialects import Dialect
from ..paths import examples_dir, project_root
from ..phases import registry
from ..run.kernel import kept_kernels
from ..runbook.spec import Runbook, load_runbook
from .commands import approve, prepare, run

DEMO_RUNBOOK = "event_message_fk"
# The seed-000 flow: rehearse everything on dev (clean_slate confirmed for dev only; the rollback
# rehearsal proves the way back), then deploy to prod, rehearsed on dev.
APPROVE = "approve"  # a flow step that records an approval instead of running phases
DEMO_APPROVER = "reviewer (demo)"
DEMO_FLOW: tuple[tuple[str, tuple[str, ...], dict[str, object]], ...] = (
    ("dev", ("review", "schema", "clean_slate", "code_verify", "test", "rollback", "schema"), {"confirm": "dev"}),
    ("prod", (APPROVE,), {}),
    ("prod", ("deploy",), {"rehearsal": "dev"}),
)


@dataclass(frozen=True)
class DemoStep:
    target: str
    phases: list[str]
    result: manifest.RunResult
    #: "passed", or "refused (expected)" for a review whose no-go is the evidence (seed 001's proposal).
    outcome: str = "passed"

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


# (target, phases, parameters[, the review verdict expected: "no-go" makes a refusal the evidence])
Flow = list[tuple[str, list[str], dict[str, object]] | tuple[str, list[str], dict[str, object], str]]


def play_flow(book: Runbook, flow: Flow, echo: Callable[[str], None] = print) -> list[DemoStep]:
    """Prepare every target of the flow from the runbook's fixture, then run each target's phases
    in order, archiving every run; stops at the first failed run. A step expecting a no-go passes
    when the review refuses with its verdict, and fails otherwise."""
    runbook = str(book.path)
    for target_ref in dict.fromkeys(step[0] for step in flow):
        prepared = prepare(runbook, target_ref, allow_production=True)
        echo(prepared.render())
    steps: list[DemoStep] = []
    for target_ref, phases, parameters, *expected in flow:
        if phases == [APPROVE]:
            # A second person approves the plan the dev run reviewed, as seed 001 asks ("Get team
            # approval before proceeding"); the production deploy then finds it in the ledger.
            echo(approve(runbook, target_ref, approver=DEMO_APPROVER, note="demo: reviewed and rehearsed on dev").render())
            continue
        shown = "".join(f" {k}={v}" for k, v in parameters.items())
        echo(f"running {book.name} on {target_ref}: {', '.join(phases)}" + (f" ({shown.strip()})" if shown else "")
             + (" - the plan's reviewers said no-go: a refusal is expected" if expected == ["no-go"] else ""))
        result = run(runbook, target_ref, phases, parameters=parameters)
        if expected == ["no-go"]:
            refused = not result.ok and "ReviewRejected" in (result.phases[-1].error or "")
            outcome = "refused (expected)" if refused else "failed"
        else:
            outcome = "passed" if result.ok else "failed"
        steps.append(DemoStep(target_ref, phases, result, outcome))
        echo(result.render() + (f"\n  {outcome}" if expected else ""))
        if outcome == "failed":
            break
    return steps


def demo(echo: Callable[[str], None] = print) -> list[DemoStep]:
    """The seed-000 flow on the embedded dev and prod databases, its runs in one kernel."""
    with kept_kernels():
        return play_flow(example(DEMO_RUNBOOK), [(t, list(phases), params) for t, phases, params in DEMO_FLOW],
                         echo)


@dataclass(frozen=True)
class DemoRow:
    runbook: str
    target: str
    phases: str
    status: str
    duration_s: float
    archive: str


def runbook_flow(book: Runbook) -> Flow:
    """A runbook's demo flow on its own two databases: review (PostgreSQL runbooks), every
    declared phase rehearsed on ``<name>_dev`` (with a rollback rehearsal), then deploy on
    ``<name>_prod``."""
    dev, prod = f"{book.name}_dev", f"{book.name}_prod"
    spec = book.spec
    declared = [phase for phase, section in (("clean_slate", spec.clean_slate), ("backfill", spec.backfill),
                                             ("code_verify", spec.code_verify), ("test", spec.test))
                if section is not None]
    dev_params: dict[str, object] = {"confirm": dev} if spec.clean_slate else {}
    review = ["review"] if Dialect(spec.engine) in registry.phase_info("review").dialects else []
    # Production gets the data migration too, as in seed 002 ("Production deployed | Cleanup
    # complete"): backfill, verification, dual-read, then the cleanup and the final schema.
    # A variant the plan's reviewers sent back is reviewed first: its no-go is archived as evidence.
    refused: Flow = [(dev, ["review"], {"variant": name}, "no-go") for name, variant in spec.review.variants.items()
                     if variant.verdict == "no-go" and review]
    deploy_params: dict[str, object] = {"rehearsal": dev}
    if spec.backfill is not None and spec.backfill.cleanup is not None:
        deploy_params["cleanup"] = True
    return [*refused, (dev, [*review, "schema", *declared, "rollback", "schema"], dev_params), (prod, [APPROVE], {}),
            (prod, ["deploy", *(["backfill"] if spec.backfill else [])], deploy_params)]


def examples_folder() -> Path:
    """The project's ``runbooks/`` when it holds the examples, else the package's own."""
    own = project_root() / "runbooks"
    return own if (own / DEMO_RUNBOOK / "runbook.yaml").is_file() else examples_dir()


def example(name: str) -> Runbook:
    return load_runbook(examples_folder() / name)


def demo_runbooks() -> list[Runbook]:
    folder = examples_folder()
    return [load_runbook(path) for path in sorted(folder.iterdir()) if (path / "runbook.yaml").is_file()]


def demo_all(echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Every example runbook, each on its own embedded databases; one summary row per run."""
    books = demo_runbooks()
    extra = json.loads(os.environ.get(TARGETS_ENV) or "{}")
    # The project's dbrunbook.yaml names these targets too (so status knows them afterwards);
    # they are set here as well for a project, or a test session, whose config does not.
    for book in books:
        for suffix, production in (("dev", False), ("prod", True)):
            name = f"{book.name}_{suffix}"
            entry: dict[str, object] = {"sqlite_file": name} if Dialect(book.spec.engine).file \
                else {"embedded": f"demo_{name}"}
            extra.setdefault(name, {**entry, "production": production})
    # The kernels Papermill starts inherit this: the notebooks resolve the same names.
    os.environ[TARGETS_ENV] = json.dumps(extra)
    rows: list[DemoRow] = []
    with kept_kernels():  # one kernel for every runbook's runs
        for book in books:
            for step in play_flow(book, runbook_flow(book), echo):
                result = step.result
                rows.append(DemoRow(book.name, step.target, ",".join(p.phase for p in result.phases),
                                    "no-go(expected)" if step.outcome == "refused (expected)" else step.outcome,
                                    round(sum(p.duration_s for p in result.phases), 1), str(result.folder)))
    return rows


def demo_table(rows: list[DemoRow]) -> str:
    import pandas as pd

    frame = pd.DataFrame([vars(r) for r in rows], columns=list(DemoRow.__dataclass_fields__))
    frame = frame.rename(columns={"duration_s": "duration s"})
    return frame.to_string(index=False)
