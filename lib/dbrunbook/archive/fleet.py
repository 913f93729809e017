"""A fleet rollout's evidence: each database's record (its phases, each step's evidence as data),
``fleet.json``, and one archived page (``fleet.ipynb`` and its HTML: the waves, a table per wave, a
chart of durations), built here, not executed. In JupyterLab its cells reload ``fleet.json``."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import sha256_file
from ..state import identity
from ..state.status import Status
from .manifest import MANIFEST
from .pages import render_html


@dataclass
class PhaseEvidence:
    phase: str
    status: str
    seconds: float
    error: str = ""
    decision: str = ""
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # each step's Evidence.to_dict(), by name
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatabaseEvidence:
    target: str
    wave: int
    status: str
    run_id: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str = ""
    state: str = ""
    fingerprint: str = ""
    worker: str = ""
    phases: list[PhaseEvidence] = field(default_factory=list)
    log: str = ""


@dataclass
class FleetResult:
    runbook: str
    fleet_id: str
    folder: Path
    phases: list[str]
    waves: list[list[str]]
    parallel: int
    on_error: str
    scheduler: str
    databases: list[DatabaseEvidence] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> list[DatabaseEvidence]:
        return [d for d in self.databases if d.status == Status.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"wave": d.wave, "database": d.target, "status": d.status, "state": d.state,
                              "seconds": d.seconds, "cpu s": d.cpu_seconds, "worker": d.worker, "run": d.run_id,
                              "error": d.error} for d in self.databases],
                            columns=["wave", "database", "status", "state", "seconds", "cpu s", "worker", "run",
                                     "error"])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.databases:
            out[d.status] = out.get(d.status, 0) + 1
        return out

    def render(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines = [f"fleet {self.fleet_id}: {self.runbook} ({','.join(self.phases)}) on {len(self.databases)} "
                 f"database(s) in {len(self.waves)} wave(s), {self.parallel} at once: {counts} in {self.seconds:.1f} s"]
        lines += [f"  wave {d.wave} {d.target}: FAILED: {d.error}" for d in self.failed]
        halted = [d for d in self.databases if d.status == Status.NOT_STARTED]
        if halted:
            lines.append(f"  halted after the first failure: {len(halted)} database(s) in later waves not started")
        lines.append(f"  archive: {self.folder}")
        return "\n".join(lines)


def write_fleet_archive(result: FleetResult) -> None:

    data = {"fleet_id": result.fleet_id, "runbook": result.runbook, "phases": result.phases,
            "waves": result.waves, "parallel": result.parallel, "on_error": result.on_error,
            "scheduler": result.scheduler, "started_at": result.started_at, "seconds": result.seconds,
            "operator": identity.operator(), "databases": [asdict(d) for d in result.databases]}
    (result.folder / "fleet.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    notebook = result.folder / "fleet.ipynb"
    write_fleet_notebook(result, notebook)
    render_html(notebook, f"{result.runbook} · fleet {','.join(result.phases)} · {len(result.databases)} databases · "
                          f"{'passed' if result.ok else 'failed'}")
    status = "passed" if result.ok else "failed"
    manifest = {"kind": "fleet", "runbook": result.runbook, "run_id": result.fleet_id,
                "target": f"(fleet of {len(result.databases)})", "production": False, "status": status,
                "started_at": result.started_at, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "operator": identity.operator(),
                "phases": [{"phase": f"fleet {','.join(result.phases)}", "status": status, "html": "fleet.html",
                            "duration_s": result.seconds}],
                "fleet": {"databases": len(result.databases), "counts": result.counts()},
                "error": "; ".join(f"{d.target}: {d.error}" for d in result.failed) or None,
                "output_files": {str(p.relative_to(result.folder)): sha256_file(p)
                                 for p in sorted(result.folder.rglob("*")) if p.is_file()}}
    (result.folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


#: Up to this many databases the chart has a labelled bar each; a bigger fleet gets one point each,
#: in rollout order (200 labelled bars take seconds to lay out and cannot be read).
LABELLED_BARS = 40


def durations_png(result: FleetResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [d for d in result.databases if d.status in (Status.PASSED, Status.FAILED)]
    colours: dict[str, str] = {Status.PASSED: "#188038", Status.FAILED: "#c5221f"}
    if len(ran) <= LABELLED_BARS:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * max(len(ran), 1)))
        ax.barh([f"w{d.wave} {d.target}" for d in ran], [d.seconds for d in ran],
                color=[colours[d.status] for d in ran])
        ax.invert_yaxis()
        ax.set_xlabel("seconds per database (all its phases)")
        ax.tick_params(axis="y", labelsize=7)
    else:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.scatter(range(1, len(ran) + 1), [d.seconds for d in ran], s=8, c=[colours[d.status] for d in ran])
        for wave in sorted({d.wave for d in ran})[1:]:  # where each later wave begins
            ax.axvline(next(i for i, d in enumerate(ran, start=1) if d.wave == wave) - 0.5, color="#999999", lw=0.8)
        ax.set_xlabel("database, in rollout order (grey lines: wave boundaries; the table names each)")
        ax.set_ylabel("seconds (all its phases)")
    ax.set_title(f"{result.runbook}: {len(ran)} database(s) ran, {result.parallel} at once", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_fleet_notebook(result: FleetResult, path: Path) -> None:
    """One page for the whole fleet, outputs included (built here, not executed: no kernel): the
    waves, a table per database, a chart of durations. Its cells reload fleet.json in JupyterLab."""
    import nbformat

    v4 = nbformat.v4
    frame = result.frame()
    counts = ", ".join(f"**{n} {s}**" for s, n in result.counts().items())
    verdict = "**PASSED**" if result.ok else f"**FAILED** on {len(result.failed)} database(s)"
    cells = [v4.new_markdown_cell(
        f"{verdict} · {result.runbook} · fleet {result.fleet_id}\n\n"
        f"# Fleet rollout: {result.runbook}\n\nPhases **{', '.join(result.phases)}** on {len(result.databases)} "
        f"database(s) in {len(result.waves)} wave(s) ({', '.join(str(len(w)) for w in result.waves)}), "
        f"{result.parallel} at once on {result.scheduler}, on error: {result.on_error}. {counts} in "
        f"{result.seconds:.1f} s. Each database keeps its own ledger (state, checksum, fingerprint, operator); "
        "its structured evidence is in `fleet.json`.")]
    load = "import dbrunbook\n\nfleet = dbrunbook.load_fleet('fleet.json')\n"
    for number, wave in enumerate(result.waves, start=1):
        rows = frame[frame["wave"] == number]
        cells.append(v4.new_markdown_cell(f"## Wave {number}: {len(wave)} database(s)"))
        cells.append(v4.new_code_cell(load + f"fleet.wave({number})", outputs=[v4.new_output(
            "display_data", data={"text/html": rows.to_html(index=False), "text/plain": rows.to_string(index=False)})]))
    cells.append(v4.new_markdown_cell("## Durations\nWall seconds per database, all its phases."))
    png = base64.b64encode(durations_png(result)).decode()
    cells.append(v4.new_code_cell(load + "fleet.chart()", outputs=[v4.new_output(
        "display_data", data={"image/png": png, "text/plain": "<durations chart>"})]))
    details = pd.DataFrame([{"database": d.target, "phase": p.phase, "status": p.status, "seconds": p.seconds,
                             "decision": p.decision, "evidence": ", ".join(p.steps), "error": p.error}
                            for d in result.databases for p in d.phases],
                           columns=["database", "phase", "status", "seconds", "decision", "evidence", "error"])
    cells.append(v4.new_markdown_cell("## Per database and phase\nWhat each step of each phase returned (its texts "
                                      "and tables) is in `fleet.json` (`databases[].phases[].steps`)."))
    cells.append(v4.new_code_cell(load + "fleet.phases()", outputs=[v4.new_output(
        "display_data", data={"text/html": details.to_html(index=False), "text/plain": details.to_string(index=False)})]))
    cells.append(v4.new_markdown_cell(cells[0].source.split("\n\n")[0]))
    nbformat.write(v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}}), str(path))


@dataclass
class LoadedFleet:
    """fleet.json read back, for the fleet page's cells in JupyterLab."""

    data: dict[str, Any]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: d[k] for k in ("wave", "target", "status", "state", "seconds", "cpu_seconds",
                                                   "worker", "run_id", "error")} for d in self.data["databases"]])

    def wave(self, number: int) -> pd.DataFrame:
        frame = self.frame()
        return frame[frame["wave"] == number]

    def phases(self) -> pd.DataFrame:
        return pd.DataFrame([{"database": d["target"], **{k: p[k] for k in ("phase", "status", "seconds", "decision",
                                                                            "error")}}
                             for d in self.data["databases"] for p in d["phases"]])

    def chart(self) -> Any:
        from IPython.display import Image

        result = FleetResult(self.data["runbook"], self.data["fleet_id"], Path("."), self.data["phases"],
                             self.data["waves"], self.data["parallel"], self.data["on_error"], self.data["scheduler"],
                             [DatabaseEvidence(**{k: v for k, v in d.items() if k != "phases"})
                              for d in self.data["databases"]])
        return Image(durations_png(result))


def load_fleet(path: str | Path) -> LoadedFleet:
    return LoadedFleet(json.loads(Path(path).read_text()))
