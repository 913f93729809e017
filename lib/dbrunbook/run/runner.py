"""The runner: a runbook's (or a set's) phases, in order, each phase notebook executed by Papermill
into the run's archive folder (:mod:`dbrunbook.archive.manifest`), rendered for reviewers
(:mod:`dbrunbook.archive.pages`) and sealed in the target's ledger when the run ends.

Parameters carry only a target *reference*; a raw URL given on the command line travels to the
kernel in an environment variable, never in a parameter. A signal during a phase stops its kernel
and settles the ledger; one during the runner's own bookkeeping is held (:mod:`.signals`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from ..archive import chain, history
from ..archive.manifest import (
    MANIFEST,
    PhaseResult,
    RunResult,
    copy_sql,
    git_commit,
    hold_run_lock,
    new_run_folder,
    scrub_secrets,
    write_manifest,
)
from ..archive.pages import (
    page_title,
    put_status_on_page,
    put_warnings_on_top,
    render_html,
    warm_exporter,
)
from ..errors import ArchiveError, ArchiveNotWritten, PhaseFailed
from ..paths import outputs_dir, project_root
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook
from ..state import identity, ledger, storage
from ..state.status import Status
from ..targets.connect import engine
from ..targets.resolve import ENV_PREFIX, Target
from . import signals, startup
from .kernel import KERNEL_LOG, run_kernel, stderr_to
from .steps import KernelEngine, Step, error_line, plan_steps, run_step, step_parameters

URL_ENV = "DBRUNBOOK_TARGET_URL"



def target_parameter(target: Target, target_ref: str) -> str:
    """What the notebook receives as ``target``: a name, or ``env:VAR`` for a raw URL."""
    if "://" in target_ref:
        os.environ[URL_ENV] = target_ref
        return ENV_PREFIX + URL_ENV
    return target_ref


def warm_html(*also: Callable[[], None]) -> threading.Thread:
    """:func:`warm_exporter` (then ``also``) in a thread, while the work before the first page goes
    on. Join it before rendering: one exporter is not shared by two threads at once. Start it once
    the calling thread has done its own imports: two threads importing one package at once can fail
    on Python 3.11."""
    def _warm() -> None:
        warm_exporter()
        for warm in also:
            warm()
        startup.settle()  # the CLI's last imports are done

    thread = threading.Thread(target=_warm, name="dbrunbook-warm-html", daemon=True)
    thread.start()
    return thread


def _relative(path: Path, root: Path) -> str:
    """Paths handed to a notebook, relative to the project root (the kernel's working folder)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def stop_kernel(target: Target, run_id: str) -> None:
    """After a signal: kill the kernel (and anything it started), then end the run's database
    sessions, so that no statement goes on and no late write lands after the ledger is settled.
    Open transactions roll back with their sessions; session locks go with them."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            continue
    if not target.dialect.sessions:
        return
    import sqlalchemy as sa


    with engine(target).connect() as conn:
        pattern = f"dbrunbook % {run_id}%"
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name LIKE :p AND pid <> pg_backend_pid()"), {"p": pattern})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :p AND pid <> pg_backend_pid()"),
                {"p": pattern}).scalar():
            time.sleep(0.05)
        conn.commit()


def settle_interrupted(book: Runbook, target: Target, run_id: str, phase: str, why: str, started: datetime) -> str:
    """The ledger's record of a run stopped from outside; returns the runbook's state now."""
    with engine(target).begin() as conn:
        storage.ensure_ledger(conn)
        return ledger.settle_interrupt(conn, runbook=book.name, run_id=run_id, phase=phase, target=target.name,
                                       why=why, started_at=started)


class RunInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM, after the runner settled the ledger and the manifest."""

    def __init__(self, signal_name: str, line: str, result: RunResult) -> None:
        self.signal_name, self.result = signal_name, result
        self.exit_code = signals.EXIT_CODE[signal_name]
        super().__init__(line)


def run_phases(book: Runbook | RunbookSet, target: Target, target_ref: str, phases: list[str],
               parameters: dict[str, object], *, dry_run: bool = False,
               echo: Callable[[str], None] | None = None) -> RunResult:
    """Execute the phases in order into a new archive folder. The manifest is written first
    (marked incomplete) and again after each phase, so a killed run still leaves one. A signal
    during a phase stops the kernel, settles the ledger and raises :class:`RunInterrupted`; one
    during the runner's own bookkeeping is held (:mod:`dbrunbook.run.signals`) and stops the run before
    its next phase, or, after the last, is noted in the result of the completed run. A runbook set
    runs each phase over its members in order (a rollback in reverse), one page per member and
    phase, in one archive."""
    with signals.held() as held:
        result = _run_phases(book, target, target_ref, phases, parameters, held, dry_run=dry_run, echo=echo)
        if held.received:
            result.notes.append(f"{held.received} received after the last phase had ended: the run finished and is "
                                "archived; nothing was stopped")
        return result


def _run_phases(book: Runbook | RunbookSet, target: Target, target_ref: str, phases: list[str],
                parameters: dict[str, object], held: signals.HeldSignals, *, dry_run: bool,
                echo: Callable[[str], None] | None) -> RunResult:
    root = project_root()
    run_id = identity.new_run_id()
    try:
        folder = new_run_folder(book.name, run_id)
        result = RunResult(book.name, target.name, run_id, folder, previous=chain.previous_seal(target),
                           git=git_commit(root))
        started = datetime.now(UTC)
        write_manifest(folder, book, target, result, started, dry_run, parameters, status="running")
    except OSError as exc:
        raise ArchiveError(f"cannot write the archive under {outputs_dir()}: {exc.strerror or exc}; nothing was run") \
            from None
    with hold_run_lock(folder):
        return _run_in_folder(book, target, target_ref, phases, parameters, held, folder, result, started, root,
                              dry_run=dry_run, echo=echo)


def _run_in_folder(book: Runbook | RunbookSet, target: Target, target_ref: str, phases: list[str],
                   parameters: dict[str, object], held: signals.HeldSignals, folder: Path, result: RunResult,
                   started: datetime, root: Path, *, dry_run: bool, echo: Callable[[str], None] | None) -> RunResult:
    run_id = result.run_id
    if echo is not None:
        echo(f"{book.name} on {target.name} (run {run_id}):\n  archive: {folder}")
    if not dry_run:
        done_already = nothing_to_do(book, target, phases)
        if done_already is not None:
            return _record_nothing_to_do(book, target, phases, parameters, folder, result, started, done_already,
                                         echo)
    copy_sql(book, folder)
    steps = plan_steps(book.members, phases, single=book.members[:1] == [book])
    unwritten: str | None = None  # the archive failed after what the phases applied was recorded
    # A raw URL reaches the notebooks as env:VAR: set before the kernel starts, which inherits it.
    target_param = target_parameter(target, target_ref)
    import papermill  # noqa: F401 - here, while a kernel started ahead is still importing the library
    # The whole run with fd 2 on the kernel's log: a kernel killed by a signal makes the client
    # say so ("Kernel died ..."), which must not bury the one line the runner prints.
    with stderr_to(folder / KERNEL_LOG), run_kernel(folder, root) as kernel:
        # Only now: the kernel's start imports IPython and ipykernel here, and so does the warm-up
        # (a fresh clone's first demo died of KeyError: 'IPython' when they overlapped).
        warming = warm_html()
        engine_ = KernelEngine(kernel, root)
        for step in steps:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            began = time.perf_counter()
            given = step_parameters(step, runbook=_relative(step.member.path, root), target=target_param,
                                    run_id=run_id, archive_dir=_relative(folder, root), dry_run=dry_run,
                                    parameters=parameters)
            try:
                write_manifest(folder, book, target, result, started, dry_run, parameters, status="running",
                               running=step.label)
            except OSError as exc:
                unwritten = f"{MANIFEST}: {exc.strerror or exc}"
                break
            try:
                with held.let_through():  # a signal stops the notebook at once, and one held stops it here
                    done = run_step(step, engine_, folder, given)
            except KeyboardInterrupt as stop:
                _interrupted(stop, book, step, target, result, at, began, started, dry_run, parameters)
            status, error, unwritten = done.status, done.error, done.unsaved or unwritten
            if done.outcome is not None and done.outcome.approval:
                result.approval = done.outcome.approval
            output = folder / step.page
            if done.warnings and output.exists():
                put_warnings_on_top(output, done.warnings)
            html = None
            if output.exists():
                try:
                    title = page_title(step.member.name, step.phase, target, status)
                    put_status_on_page(output, title, status, error)
                    warming.join()
                    html = render_html(output, title).name
                except OSError as exc:
                    unwritten = f"{output.with_suffix('.html').name}: {exc.strerror or exc}"
                except Exception as exc:
                    error = (error + "; " if error else "") + f"HTML rendering failed: {error_line(exc)}"
                    status = Status.FAILED
            result.phases.append(PhaseResult(step.label, f"{step.phase}.ipynb", status, at, done.seconds,
                                             step.page, html, error, done.warnings,
                                             done.source.record() if done.source else None))
            try:
                write_manifest(folder, book, target, result, started, dry_run, parameters, status="running")
            except OSError as exc:
                unwritten = f"{MANIFEST}: {exc.strerror or exc}"
            if echo is not None:
                echo(result.render_phase(result.phases[-1]))
            if status != Status.PASSED or unwritten:
                break
    try:
        scrubbed = scrub_secrets(folder)
        if scrubbed:
            result.error = ("a password was found in the archive and scrubbed from: "
                            + ", ".join(p.name for p in scrubbed))
        sealed = write_manifest(folder, book, target, result, started, dry_run, parameters)
    except OSError as exc:
        unwritten = unwritten or f"{MANIFEST}: {exc.strerror or exc}"
    else:
        _seal(target, sealed, result)
    if unwritten:
        raise ArchiveNotWritten(f"{unwritten} (run {run_id}, {folder})")
    return result


#: Phases whose whole work the ledger can tell is done before any notebook runs.
_DECIDED_BY_THE_LEDGER = frozenset({"schema", "deploy", "rollback"})


def nothing_to_do(book: Runbook | RunbookSet, target: Target, phases: list[str]) -> list[str] | None:
    """Why every step of the run is a no-op (each member already where the phase takes it, with the
    same checksum, and the target's schema as its ledger last recorded it), or None when there is
    work, or a check only a notebook does (review, test, ...), or anything the ledger cannot say."""
    if not phases or not set(phases) <= _DECIDED_BY_THE_LEDGER or not book.members:
        return None
    from ..phases.registry import in_order, phase_info
    from ..state import schemas

    reasons: list[str] = []
    try:
        with engine(target, create=False).connect() as conn:
            found = schemas.schema_drift(conn)
            if not found.known or found.drifted or found.part_way:
                return None
            for member, phase in in_order(book.members, phases):
                direction = phase_info(phase).direction
                state = ledger.read_state(conn, member.name)
                live = ledger.lock_held(conn, ledger.runbook_lock_key(member.name)) if state else False
                decision = ledger.decide(str(direction), state, member.migration_checksum(), live=live,
                                         repeatable=member.spec.repeatable)
                if decision.action != Status.NOOP:
                    return None
                reasons.append(f"{member.name} {phase}: {decision.reason}")
    except Exception:  # a target the check cannot read: the phases run and say why
        return None
    return reasons + [f"the schema of {target.name} is as its ledger recorded it"]


def _record_nothing_to_do(book: Runbook | RunbookSet, target: Target, phases: list[str],
                          parameters: dict[str, object], folder: Path, result: RunResult, started: datetime,
                          reasons: list[str], echo: Callable[[str], None] | None) -> RunResult:
    """A small record instead of executed notebooks: the manifest says what was found, sealed like
    any run, so history lists it and a scheduler reads exit 0 with "nothing to do"."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    result.nothing_to_do = reasons
    result.phases = [PhaseResult(phase, f"{phase}.ipynb", Status.NOOP, at, 0.0, "", None) for phase in phases]
    sealed = write_manifest(folder, book, target, result, started, False, parameters)
    _seal(target, sealed, result)
    if echo is not None:
        echo("\n".join(f"  nothing to do: {why}" for why in reasons))
    return result


def _seal(target: Target, manifest: Path, result: RunResult) -> None:
    """Seal the finished run in the target's ledger and refresh the archive's index page; neither
    changes the run's outcome, and either failing is said in the run's summary."""
    why = chain.seal_run(target, manifest.parent, json.loads(manifest.read_text()))
    if why:
        result.notes.append(why)
    try:
        history.write_index()
    except OSError as exc:
        result.notes.append(f"the archive index was not refreshed: {exc.strerror or exc}")


def _interrupted(stop: KeyboardInterrupt, book: Runbook | RunbookSet, step: Step, target: Target, result: RunResult,
                 at: str, began: float, started: datetime, dry_run: bool, parameters: dict[str, object]) -> NoReturn:
    signal_name = signals.name_of(stop)
    why = f"interrupted by {signal_name} {'before' if signals.was_held(stop) else 'during'} {step.phase}"
    stop_kernel(target, result.run_id)
    state = settle_interrupted(step.member, target, result.run_id, step.phase, why, started)
    result.phases.append(PhaseResult(step.label, f"{step.phase}.ipynb", Status.INTERRUPTED, at,
                                     round(time.perf_counter() - began, 3), step.page, None, why))
    result.error = why
    scrub_secrets(result.folder)
    manifest = write_manifest(result.folder, book, target, result, started, dry_run, parameters,
                              status=Status.INTERRUPTED)
    _seal(target, manifest, result)
    line = (f"{why} of {book.name} on {target.name} (run {result.run_id}); the ledger says {state}; "
            f"archive {result.folder} (incomplete)")
    raise RunInterrupted(signal_name, line, result) from None


def raise_for_failure(result: RunResult) -> None:
    """Raise :class:`PhaseFailed` for the first failed phase of a run."""
    for phase in result.phases:
        if phase.status not in (Status.PASSED, Status.NOOP):
            raise PhaseFailed(phase.phase, phase.output, phase.error or "failed")
    if result.error:
        raise PhaseFailed("archive", MANIFEST, result.error)
