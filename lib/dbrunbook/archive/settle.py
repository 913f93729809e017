"""Run folders left by a process that died (SIGKILL, a crash, a lost machine): told apart from
tampering, and settled from the ledger.

A runner holds its folder's run lock (:func:`dbrunbook.archive.manifest.hold_run_lock`) and writes
the manifest, marked "running" with the phase starting, around each phase. A folder whose manifest
still says "running" while no process holds the lock was left by a process that died: the files it
wrote after its last manifest are what it was doing, not additions. Settling such a folder reads the
target's ledger (the events the run recorded, the state it left), writes the manifest again with
status ``interrupted``, every file the folder holds, the phases the ledger recorded after the last
manifest, and a ``settled`` record saying when, by which command and from what; the archive's chain
(:mod:`.chain`) then seals it in the target's ledger. A run that had finished is never settled:
a file added to it stays an unlisted file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import sha256_file
from ..state import identity, ledger
from ..state.status import Status
from ..targets.connect import engine
from ..targets.resolve import Target, resolve_target
from ..targets.secrets import redact
from .manifest import MANIFEST, NOT_RUN_FILES, run_alive


@dataclass(frozen=True)
class Incomplete:
    """A run folder whose process is gone before it finished, and what was done about it."""

    run_id: str
    folder: Path
    phase: str          # what it was running when it stopped
    ledger: str         # what the ledger says of it
    settled: bool
    why_not: str = ""   # when it could not be settled (its ledger could not be read)

    def line(self) -> str:
        said = f"incomplete: the process stopped during {self.phase}; the ledger says {self.ledger}"
        return (f"{self.run_id}: {said}; its manifest was settled from the ledger and sealed" if self.settled
                else f"{self.run_id}: {said}; not settled ({self.why_not})")


def is_running(manifest: dict[str, Any]) -> bool:
    """The manifest was written by a run that had not finished."""
    return manifest.get("complete") is False and manifest.get("status") == "running"


def is_killed(folder: Path, manifest: dict[str, Any]) -> bool:
    """Left by a process that died: "running", and nobody holds the folder's run lock."""
    return is_running(manifest) and not run_alive(folder)


def stopped_during(manifest: dict[str, Any]) -> str:
    running = manifest.get("running_phase")
    if running:
        return str(running)
    phases = manifest.get("phases") or []
    return f"the phase after {phases[-1]['phase']}" if phases else "its first phase"


def settle(folder: Path, manifest: dict[str, Any], by: str) -> tuple[Incomplete, Target | None, dict[str, Any]]:
    """Write a killed run's manifest again from its target's ledger (see the module's docstring):
    what was done, the target whose ledger seals it (None: not settled), and the new manifest."""
    run_id, phase = str(manifest.get("run_id", "")), stopped_during(manifest)
    try:
        target = resolve_target(str(manifest.get("target")))
        with engine(target, create=False).connect() as conn:
            events = ledger.run_events(conn, run_id)
            state = ledger.read_state(conn, str(manifest.get("runbook")))
            live = ledger.lock_held(conn, ledger.runbook_lock_key(state.runbook)) if state is not None else False
    except Exception as exc:  # an unreachable or unknown target: the folder stays as it is
        return Incomplete(run_id, folder, phase, "(not read)", False, str(exc).splitlines()[0]), None, manifest
    said = _ledger_says(state, run_id, live, events)
    recorded = manifest.get("phases") or []
    later = [{"phase": e["phase"], "notebook": f"{e['phase']}.ipynb", "status": str(e["status"]),
              "started_at": str(e["started_at"]), "duration_s": float(e.get("duration_s") or 0), "output": "",
              "html": None, "error": e.get("error"), "warnings": [], "recorded_by": "ledger"}
             for e in events[len(recorded):] if e["phase"] != "prepare"]
    settled = dict(manifest)
    settled.update({
        "status": Status.INTERRUPTED, "complete": False, "running_phase": None,
        "error": manifest.get("error") or f"the process stopped during {phase} (killed, or it crashed)",
        "phases": [*recorded, *later],
        "output_files": {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
                         if p.is_file() and str(p.relative_to(folder)) not in NOT_RUN_FILES},
        "settled": {"at": identity.now().isoformat(timespec="seconds"), "by": by, "operator": identity.operator(),
                    "stopped_during": phase, "ledger": said,
                    "why": "no process held the run's folder: it stopped before it finished"},
    })
    path = folder / MANIFEST
    partial = path.with_name(MANIFEST + ".tmp")
    partial.write_text(redact(json.dumps(settled, indent=2, default=str)) + "\n")
    partial.replace(path)
    return Incomplete(run_id, folder, phase, said, True), target, settled


def _ledger_says(state: ledger.State | None, run_id: str, live: bool, events: list[dict[str, Any]]) -> str:
    if state is not None and state.run_id == run_id:
        text, _ = ledger.describe(state, state.checksum or "", live=live)
        return text
    if events:
        last = events[-1]
        return f"its last event was {last['phase']} {last['status']}"
    return "nothing of this run (no phase of it finished)"
