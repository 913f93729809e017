"""How a phase ended, in its own words: the record it leaves beside its page.

A phase run writes this when it closes, after its ledger event is committed: the event's status
and action, its error, and its detail (the decision it took, the warnings a runbook accepts, the
approval a deploy found). The runner, the fleet and rehearse read it, whatever engine ran the
phase (a kernel under Papermill, or the notebook's cells in their own process), instead of asking
the ledger again. A phase opened by hand (no ``archive_dir``) writes none.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FOLDER = "outcomes"


@dataclass(frozen=True)
class Outcome:
    runbook: str
    phase: str
    run_id: str
    action: str
    status: str
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.detail.get("warnings", [])]

    @property
    def approval(self) -> dict[str, Any] | None:
        found = self.detail.get("approval")
        return found if isinstance(found, dict) else None


def outcome_path(folder: Path, runbook: str, phase: str) -> Path:
    return Path(folder) / FOLDER / f"{runbook}.{phase}.json"


def write_outcome(folder: Path, outcome: Outcome) -> Path:
    """Write the record whole (a kill mid-write leaves the last one, or none)."""
    path = outcome_path(folder, outcome.runbook, outcome.phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(asdict(outcome), default=str, indent=1) + "\n")
    partial.replace(path)
    return path


def read_outcome(folder: Path, runbook: str, phase: str) -> Outcome | None:
    """The phase's record in ``folder``, or None (it never got as far as recording anything)."""
    path = outcome_path(folder, runbook, phase)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Outcome(**{k: v for k, v in data.items() if k in Outcome.__dataclass_fields__})
