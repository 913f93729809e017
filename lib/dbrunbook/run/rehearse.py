"""Rehearsal: every rollback proven on a scratch target before anyone needs it.

Member by member, in order: take the fingerprint, apply the migration, roll it back, check the
fingerprint is the one from before, apply it again (``schema, rollback, schema``), then go on to the
next member from there. Each member gets one verdict from a fixed vocabulary: ``round-trip``,
``irreversible`` (declared, with the reasons), ``empty-down``, ``foreign-syntax`` (a down written for
another database), ``rollback-failed`` (with the statement and error), ``rollback-differs`` (with the
diff); and ``apply-failed`` when the migration itself does not apply, after which the chain stops.

The phases are the schema and rollback notebooks' own cells, run in this process by the runner's
step (:mod:`.steps`), all of one rehearsal in one run folder under one run id: their outcome
records, the rollback's backups of what it drops, and the rehearsal's page and JSON.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..archive.manifest import new_run_folder
from ..archive.pages import render_html
from ..catalog import introspect
from ..errors import DbrunbookError, GuardRefused, SpecError
from ..phases import report
from ..runbook.sets import resolve_set
from ..runbook.spec import Runbook, load_runbook
from ..state import ledger
from ..state.identity import new_run_id
from ..state.status import Status
from ..targets.connect import engine
from ..targets.resolve import resolve_target
from . import startup
from .steps import Engine, Step, in_process, run_step, step_parameters

VERDICTS = ("round-trip", "irreversible", "empty-down", "foreign-syntax", "rollback-failed", "rollback-differs",
            "apply-failed")
#: Verdicts a rehearsal passes with.
PASSING = ("round-trip", "irreversible")


@dataclass
class Verdict:
    member: str
    verdict: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Rehearsal:
    target: str
    verdicts: list[Verdict]
    name: str = ""
    run_id: str = ""
    folder: Path | None = None

    @property
    def ok(self) -> bool:
        return all(v.verdict in PASSING for v in self.verdicts)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(v) for v in self.verdicts], columns=["member", "verdict", "detail", "seconds"])

    def to_json(self) -> str:
        return json.dumps({"target": self.target, "ok": self.ok, "members": [asdict(v) for v in self.verdicts]},
                          indent=2)

    def archive(self) -> Path:
        """The report as a page in the rehearsal's run folder (a notebook and its HTML, with the JSON
        beside it)."""
        import nbformat

        name, run_id = self.name, self.run_id
        folder = self.folder if self.folder is not None else new_run_folder(name, run_id)
        rows = "\n".join(f"| {v.member} | `{v.verdict}` | {v.seconds:.2f} | {v.detail.replace('|', '/')} |"
                         for v in self.verdicts)
        verdict = "every member passed" if self.ok else "NOT every member passed"
        notebook = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# Rehearsal of {name} on {self.target}\n\nRun {run_id}: each member "
                                          "applied, rolled back (the schema fingerprint must be the one from before) "
                                          f"and applied again, in order. **Result: {verdict}.**"),
            nbformat.v4.new_markdown_cell("| member | verdict | seconds | detail |\n|---|---|---|---|\n" + rows)])
        page = folder / "01_rehearse.ipynb"
        nbformat.write(notebook, str(page))
        render_html(page)
        (folder / "rehearsal.json").write_text(self.to_json() + "\n")
        return folder

    def render(self) -> str:
        width = max((len(v.member) for v in self.verdicts), default=6)
        lines = [f"{v.member:<{width}}  {v.verdict:<16} {v.seconds:6.2f}s  {v.detail}".rstrip() for v in self.verdicts]
        counts = {k: sum(v.verdict == k for v in self.verdicts) for k in VERDICTS}
        lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no members")
        return "\n".join(lines)


def _fingerprint(target: str) -> introspect.Snapshot:
    with engine(resolve_target(target)).connect() as conn:
        return introspect.snapshot(conn)


@dataclass
class _Run:
    """Where the rehearsal's phases run: one engine, one folder, one run id, steps numbered."""

    engine: Engine
    folder: Path
    run_id: str
    steps: int = 0


def _phase(phase: str, book: Runbook, target: str, run: _Run) -> None:
    """One phase, as its notebook runs it, in this process; its failure raised as it was."""
    run.steps += 1
    step = Step(book, phase, run.steps, f"{book.name}_{phase}")
    done = run_step(step, run.engine, run.folder, step_parameters(
        step, runbook=str(book.path), target=target, run_id=run.run_id, archive_dir=str(run.folder), dry_run=False,
        parameters={}))
    if done.status != Status.PASSED:
        raise done.exception if isinstance(done.exception, DbrunbookError) else DbrunbookError(done.error or "failed")


def rehearse_member(book: Runbook, target: str, run: _Run) -> Verdict:
    import time

    started = time.perf_counter()

    def done(verdict: str, detail: str = "") -> Verdict:
        return Verdict(book.name, verdict, detail, round(time.perf_counter() - started, 2))

    with report.quiet():
        if not book.rollback_files:
            empty = [r for r in book.spec.irreversible if "is empty" in r]
            try:
                _phase("schema", book, target, run)
            except DbrunbookError as exc:
                return done("apply-failed", str(exc))
            if empty:
                return done("empty-down", "; ".join(empty))
            return done("irreversible", "; ".join(book.spec.irreversible) or "no rollback declared")
        try:
            book.read_script("rollback", "postgresql")
        except SpecError as exc:
            if "syntax error" in exc.message:
                try:
                    _phase("schema", book, target, run)
                except DbrunbookError:
                    pass
                return done("foreign-syntax", str(exc))
            raise
        before = _fingerprint(target)
        try:
            _phase("schema", book, target, run)
        except DbrunbookError as exc:
            return done("apply-failed", str(exc))
        try:
            _phase("rollback", book, target, run)
        except DbrunbookError as exc:
            now = _fingerprint(target)
            if now.fingerprint != before.fingerprint and "fingerprint" in str(exc):
                diff = introspect.diff(before, now)
                shown = "; ".join(f"{r.change} {r.kind} {r.object}" for r in diff.head(5).itertuples())
                return done("rollback-differs", f"{len(diff)} difference(s): {shown}")
            return done("rollback-failed", str(exc))
        try:
            _phase("schema", book, target, run)
        except DbrunbookError as exc:
            return done("rollback-differs", f"applying again after the rollback failed: {exc}")
    return done("round-trip")


def rehearse(ref: str, target_ref: str) -> Rehearsal:
    """Rehearse a runbook, or a set member by member in order, on a scratch target."""
    startup.settle()  # the phases run in this process: the CLI's imports are done
    target = resolve_target(target_ref)
    if target.production:
        raise GuardRefused(f"rehearse refused: {target.name} is marked production; rehearse on a scratch target")
    found = resolve_set(ref)
    members = found.members if found is not None else [load_runbook(ref)]
    with engine(target).connect() as conn:
        applied = [m.name for m in members if (s := ledger.read_state(conn, m.name)) is not None
                   and s.state != Status.ROLLED_BACK]
    if applied:
        raise GuardRefused(f"rehearse refused: {', '.join(applied[:3])}{' ...' if len(applied) > 3 else ''} already "
                           f"applied on {target.name}; a rehearsal starts where the first member starts: use a fresh "
                           "scratch target")
    name, run_id = Path(found.path if found is not None else members[0].path).name, new_run_id()
    folder = new_run_folder(name, run_id)
    verdicts: list[Verdict] = []
    with in_process() as engine_:
        run = _Run(engine_, folder, run_id)
        for book in members:
            verdict = rehearse_member(book, target_ref, run)
            verdicts.append(verdict)
            if verdict.verdict == "apply-failed":
                break  # later members build on this one
    return Rehearsal(target.name, verdicts, name, run_id, folder)
