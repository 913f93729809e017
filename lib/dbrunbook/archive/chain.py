"""The tamper-evident archive: each run's manifest lists the sha256 of every file of its folder and
names the run before it on the same target with that run's manifest sha256; the target's ledger
seals each run with its own manifest's sha256. So a changed byte (a file's hash), an edited
manifest (the next manifest's record of it, and the ledger's seal), a deleted run (a record that
points at nothing), and a swapped run (a folder holding another run's manifest) each show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..files import sha256_file
from ..paths import outputs_dir
from ..state import identity, seals
from ..targets.connect import engine
from ..targets.resolve import resolve_target
from . import settle
from .manifest import MANIFEST, NOT_RUN_FILES


def manifest_sha256(folder: Path) -> str:
    return sha256_file(folder / MANIFEST)


def previous_seal(target: Any) -> dict[str, str] | None:
    """The newest run sealed on the target's ledger (the link the next manifest records), or None
    when there is none or the target cannot be read (the run will say why soon enough)."""
    try:
        with engine(target).connect() as conn:
            seal = seals.last_seal(conn, target.name)
    except Exception:
        return None
    return None if seal is None else {"run_id": seal.run_id, "manifest_sha256": seal.manifest_sha256}


def seal_run(target: Any, folder: Path, manifest: dict[str, Any]) -> str | None:
    """Record the run's final manifest sha256 in the target's ledger; None when sealed, else why not."""
    previous = manifest.get("previous") or {}
    seal = seals.Seal(run_id=str(manifest["run_id"]), runbook=str(manifest["runbook"]), target=target.name,
                       folder=_relative(folder), status=str(manifest["status"]),
                       manifest_sha256=manifest_sha256(folder), previous_run_id=previous.get("run_id"),
                       previous_sha256=previous.get("manifest_sha256"), operator=identity.operator(),
                       sealed_at=identity.now())
    try:
        with engine(target).begin() as conn:
            seals.record_seal(conn, seal)
    except Exception as exc:  # the run's own outcome stands; the missing seal is reported by verify
        return f"not sealed in {target.name}'s ledger: {str(exc).splitlines()[0]}"
    return None


def _relative(folder: Path) -> str:
    try:
        return str(folder.resolve().relative_to(outputs_dir()))
    except ValueError:
        return str(folder)


# -- verify -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    run_id: str
    kind: str       # changed file, missing file, unlisted file, edited manifest, deleted run, swapped run, not sealed
    message: str

    def line(self) -> str:
        return f"{self.run_id}: {self.kind}: {self.message}"


@dataclass
class Verification:
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [p.line() for p in self.problems] + [f"note: {n}" for n in self.notes]
        verdict = (f"archive verified: {len(self.checked)} run(s), every file, manifest and link intact" if self.ok else
                   f"archive NOT intact: {len(self.problems)} problem(s) in {len(self.checked)} run(s) checked")
        return "\n".join([*lines, verdict])

    def _repr_markdown_(self) -> str:
        """In a notebook: the verdict in bold, each problem and note as a line of its own."""
        *lines, verdict = self.render().splitlines()
        return "\n".join([f"**{verdict}**", "", *(f"- `{line}`" for line in lines)])


@dataclass(frozen=True)
class ArchivedRun:
    folder: Path
    manifest: dict[str, Any]
    sha256: str

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", ""))


def archived_runs(root: Path | None = None) -> dict[str, list[ArchivedRun]]:
    """Every run folder under the archive, by the run id its manifest names (a list: two folders
    claiming one run is itself a finding)."""
    found: dict[str, list[ArchivedRun]] = {}
    base = root or outputs_dir()
    for path in sorted(base.glob(f"*/*/{MANIFEST}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {"run_id": path.parent.name.rsplit("_", 1)[-1], "unreadable": True}
        run = ArchivedRun(path.parent, data, sha256_file(path))
        found.setdefault(run.run_id, []).append(run)
    return found


def verify_archive(run_ids: list[str] | None = None, *, check_ledgers: bool = True,
                   by: str = "dbrunbook archive verify") -> Verification:
    """Check every selected run (all when ``run_ids`` is None): its files against its manifest, its
    link to the run before it, and its seal in the target's ledger. A run whose process died before
    it finished is not tampering: it is settled from its ledger and sealed (:mod:`.settle`), and
    said in a note; one still running is left alone."""
    runs = archived_runs()
    result = Verification()
    selected = list(runs) if run_ids is None else run_ids
    unsettled: set[str] = set()
    for run_id in selected:
        for position, run in enumerate(runs.get(run_id, [])):
            if settle.is_killed(run.folder, run.manifest):
                found = settle_killed(run, by) if check_ledgers else settle.Incomplete(
                    run_id, run.folder, settle.stopped_during(run.manifest), "(not read)", False,
                    "the ledgers were not to be read")
                result.notes.append(found.line())
                runs[run_id][position] = ArchivedRun(run.folder, json.loads((run.folder / MANIFEST).read_text()),
                                                     sha256_file(run.folder / MANIFEST))
                if not found.settled:
                    unsettled.add(run_id)
            elif settle.is_running(run.manifest):
                result.notes.append(f"{run_id}: running now (during {settle.stopped_during(run.manifest)}): "
                                    "checked once it has finished")
                unsettled.add(run_id)
    for run_id in selected:
        if run_id not in runs:
            result.problems.append(Problem(run_id, "deleted run", "no folder in the archive holds this run"))
            continue
        for run in runs[run_id]:
            result.checked.append(run_id)
            if run_id in unsettled:
                continue  # its files are still being written, or were when it stopped: said in a note
            result.problems += _check_folder(run, len(runs[run_id]))
            result.problems += _check_link(run, runs)
    if check_ledgers:
        _check_seals(runs, [r for r in selected if r not in unsettled], run_ids is None, result)
    return result


def settle_killed(run: ArchivedRun, by: str) -> settle.Incomplete:
    """Settle a run folder left by a process that died, and seal it in its target's ledger."""
    found, target, manifest = settle.settle(run.folder, run.manifest, by)
    if target is None:
        return found
    why = seal_run(target, run.folder, manifest)
    return found if why is None else replace(found, settled=False, why_not=why)


def _check_folder(run: ArchivedRun, claims: int) -> list[Problem]:
    out: list[Problem] = []
    m, folder = run.manifest, run.folder
    if m.get("unreadable"):
        return [Problem(run.run_id, "edited manifest", f"{folder / MANIFEST} is not a readable manifest")]
    if claims > 1:
        out.append(Problem(run.run_id, "swapped run", f"{claims} folders hold a manifest of this run, one is {folder}"))
    if not folder.name.endswith(f"_{run.run_id}") or folder.parent.name != m.get("runbook"):
        out.append(Problem(run.run_id, "swapped run", f"folder {folder.parent.name}/{folder.name} holds the manifest of "
                                                      f"run {run.run_id} of {m.get('runbook')}"))
    listed: dict[str, str] = m.get("output_files") or {}
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            out.append(Problem(run.run_id, "missing file", name))
        elif sha256_file(path) != digest:
            out.append(Problem(run.run_id, "changed file", f"{name} (its sha256 is not the manifest's)"))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if name not in listed and name not in NOT_RUN_FILES:
            out.append(Problem(run.run_id, "unlisted file", f"{name} (added after the run)"))
    return out


def _check_link(run: ArchivedRun, runs: dict[str, list[ArchivedRun]]) -> list[Problem]:
    if "previous" not in run.manifest:
        return []  # archived before runs were chained: its files are still checked
    previous = run.manifest.get("previous") or {}
    before = previous.get("run_id")
    if not before:
        return []
    if before not in runs:
        return [Problem(run.run_id, "deleted run", f"the run before it on {run.manifest.get('target')}, {before}, "
                                                   "is not in the archive")]
    if all(r.sha256 != previous.get("manifest_sha256") for r in runs[before]):
        return [Problem(before, "edited manifest", f"its manifest is not the one run {run.run_id} recorded after it")]
    return []


def _check_seals(runs: dict[str, list[ArchivedRun]], selected: list[str], everything: bool,
                 result: Verification) -> None:
    """Each selected run against its seal; with everything, also seals whose run is gone."""
    by_target: dict[str, list[str]] = {}
    for run_id in selected:
        for run in runs.get(run_id, []):
            if run.manifest.get("kind") == "fleet":  # each database's runs are in its own ledger
                continue
            by_target.setdefault(str(run.manifest.get("target")), []).append(run_id)
    for name, ids in sorted(by_target.items()):
        try:
            target = resolve_target(name)
            with engine(target, create=False).connect() as conn:
                sealed = {s.run_id: s for s in seals.seals(conn, name)}
        except Exception as exc:
            result.notes.append(f"{name}'s ledger was not read ({str(exc).splitlines()[0]}): its runs were checked "
                                "against their files and the chain only")
            continue
        for run_id in ids:
            seal = sealed.get(run_id)
            if seal is None and all("previous" not in r.manifest for r in runs[run_id]):
                result.notes.append(f"{run_id} was archived before runs were sealed: its files were checked")
            elif seal is None:
                result.problems.append(Problem(run_id, "not sealed", f"{name}'s ledger has no seal for this run"))
            elif all(r.sha256 != seal.manifest_sha256 for r in runs[run_id]):
                result.problems.append(Problem(run_id, "edited manifest", f"its manifest is not the one sealed in "
                                                                          f"{name}'s ledger"))
        if everything:
            for run_id, seal in sealed.items():
                if run_id not in runs:
                    result.problems.append(Problem(run_id, "deleted run", f"sealed in {name}'s ledger "
                                                                          f"({seal.folder}) but not in the archive"))
