"""Drift: is each target still what its ledger says dbrunbook made it?

Three things are checked per target: the live schema against the schema the last committed change
recorded (:mod:`dbrunbook.state.schemas`: each object added, removed or changed out of band); each
applied runbook's migration against the checksum the ledger recorded (a file edited after it ran);
and the archive's seals of the target's runs (:func:`dbrunbook.archive.chain.verify_archive`). A
target that cannot be read is an error, not drift. Exit codes: :data:`DRIFT_EXIT` when anything
drifted, 1 on errors alone, 0 otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..archive import chain
from ..errors import DbrunbookError
from ..paths import outputs_dir, project_root
from ..runbook.sets import load_book
from ..runbook.spec import Runbook, load_runbook
from ..state import ledger, schemas, seals
from ..state.status import Status
from ..targets.connect import engine
from ..targets.resolve import resolve_target

#: The exit code of ``drift`` (and ``status``) when something drifted.
DRIFT_EXIT = 3


@dataclass
class TargetDrift:
    """One target's drift: its schema, its runbooks' files, its archive's seals."""

    target: str
    schema: schemas.SchemaDrift | None = None
    files: list[str] = field(default_factory=list)       # runbooks whose migration changed since applied
    seals: list[str] = field(default_factory=list)       # the archive's problems with this target's runs
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return bool((self.schema is not None and self.schema.drifted) or self.files or self.seals)

    def render(self) -> str:
        if self.error:
            return f"{self.target}: ERROR: {self.error}"
        head = f"{self.target}: {'DRIFT' if self.drifted else 'no drift'}"
        lines = [head, f"  schema: {self.schema.line() if self.schema else '(not read)'}"]
        if self.schema is not None and len(self.schema.differences):
            for row in self.schema.differences.itertuples():
                lines.append(f"    {row.change:<8} {row.kind} {row.object}")
        lines += [f"  file: {line}" for line in self.files]
        lines += [f"  archive: {line}" for line in self.seals]
        lines += [f"  note: {line}" for line in self.notes]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        differences = [] if self.schema is None else \
            [{k: str(v) for k, v in r.items()} for r in self.schema.differences.to_dict("records")]
        return {"target": self.target, "drifted": self.drifted, "error": self.error,
                "schema": None if self.schema is None else self.schema.line(), "differences": differences,
                "files": self.files, "seals": self.seals, "notes": self.notes}


@dataclass
class DriftReport:
    targets: list[TargetDrift]

    @property
    def drifted(self) -> bool:
        return any(t.drifted for t in self.targets)

    @property
    def exit_code(self) -> int:
        if self.drifted:
            return DRIFT_EXIT
        return 1 if any(t.error for t in self.targets) else 0

    def render(self) -> str:
        return "\n".join(t.render() for t in self.targets)

    def to_json(self) -> str:
        return json.dumps({"drifted": self.drifted, "targets": [t.record() for t in self.targets]}, indent=2)

    def _repr_markdown_(self) -> str:
        return "\n".join(f"```\n{t.render()}\n```" for t in self.targets)


def project_runbooks() -> dict[str, Runbook]:
    """The runbooks of the project, by name (a folder that does not load is left out: lint says why)."""
    found: dict[str, Runbook] = {}
    folder = project_root() / "runbooks"
    for path in sorted(folder.glob("*/runbook.yaml")) if folder.is_dir() else []:
        try:
            book = load_runbook(path.parent)
        except DbrunbookError:
            continue
        found[book.name] = book
    return found


def check_target(target_ref: str, books: list[Runbook] | None) -> TargetDrift:
    """One target's drift (``books``: the runbooks to check the files of; None: every runbook of the
    project the target's ledger knows)."""
    found = TargetDrift(target_ref)
    try:
        target = resolve_target(target_ref)
        found.target = target.name
        with engine(target, create=False).connect() as conn:
            found.schema = schemas.schema_drift(conn)
            known = ledger.runbooks_with_state(conn)
            states = {name: ledger.read_state(conn, name) for name in known}
            sealed = [s.run_id for s in seals.seals(conn, target.name)]
    except Exception as exc:  # an unreachable target is an error of this check, not drift
        found.error = " ".join(str(exc).split())[:300]
        return found
    chosen = books if books is not None else [b for name, b in project_runbooks().items() if name in known]
    if books is None:
        missing = sorted(set(known) - {b.name for b in chosen})
        if missing:
            found.notes.append(f"known to the ledger, not in this project: {', '.join(missing)}")
    for book in chosen:
        state = states.get(book.name)
        if state is None or state.state != Status.APPLIED or book.spec.repeatable:
            continue
        checksum = book.migration_checksum()
        if state.checksum != checksum:
            found.files.append(f"{book.name}: {book.script_name('migration')} changed since it was applied "
                               f"({(state.checksum or '?')[:12]} by {state.operator}, run {state.run_id}; now "
                               f"{checksum[:12]})")
    archived = set(chain.archived_runs()) & set(sealed)
    if sealed and not archived:
        found.notes.append(f"{len(sealed)} run(s) sealed in its ledger, none in this archive ({outputs_dir()}): "
                           "the seals were not checked")
    elif sealed:
        # Those this archive holds; one sealed between two it holds but gone from it is a deleted run.
        verified = chain.verify_archive(sorted(archived), by="dbrunbook drift")
        found.seals = [p.line() for p in verified.problems]
        first = min(sealed.index(r) for r in archived)
        found.seals += [f"{run}: deleted run: sealed in {target.name}'s ledger but not in the archive"
                        for run in sealed[first:] if run not in archived]
        found.notes += verified.notes
    return found


def check_drift(runbook_ref: str | None, target_refs: list[str]) -> DriftReport:
    """Drift on each target (see the module's docstring)."""
    books = None if runbook_ref is None else load_book(runbook_ref).members
    return DriftReport([check_target(ref, books) for ref in target_refs])
