"""What ran where: every run from the archive's manifests joined with the targets' ledgers
(``dbrunbook history``), and the archive's index page (``outputs/index.html``), one
self-contained page a reviewer opens without Jupyter or a network.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import load_config
from ..errors import DbrunbookError
from ..paths import outputs_dir, project_root
from ..runbook.sets import RunbookSet
from ..runbook.spec import Runbook, load_runbook
from ..state import approvals, ledger, seals, storage
from ..state.approvals import plan_checksums, plan_sha256
from ..state.status import Status
from ..targets.connect import engine
from ..targets.resolve import resolve_target
from . import chain
from .manifest import MANIFEST

if TYPE_CHECKING:
    import pandas as pd

INDEX = "index.html"
COLUMNS = ["started_at", "runbook", "target", "production", "phases", "status", "operator", "duration_s",
           "approval", "run_id", "archive"]
_SINCE = re.compile(r"^(\d+)\s*([mhdw])$")


@dataclass(frozen=True)
class RunRow:
    started_at: str
    runbook: str
    target: str
    production: bool
    phases: str
    status: str
    operator: str
    duration_s: float
    approval: str
    run_id: str
    archive: str            # the run folder, or why there is none
    error: str = ""
    sealed: str = ""        # yes / no / "" when the ledger was not read
    pages: tuple[str, ...] = ()


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` back from now, or an ISO date/time."""
    now = now or datetime.now(UTC)
    found = _SINCE.match(text.strip())
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DbrunbookError(f"--since {text!r}: give a duration (30m, 12h, 7d, 2w) or a date (2026-11-01)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _approval(manifest: dict[str, Any]) -> str:
    approval = manifest.get("approval")
    if not approval:
        return ""
    return f"{approval.get('approver')} at {str(approval.get('approved_at', ''))[:16]}"


def _row(run: chain.ArchivedRun) -> RunRow:
    m = run.manifest
    phases = m.get("phases") or []
    try:
        duration = (datetime.fromisoformat(m["finished_at"]) - datetime.fromisoformat(m["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        duration = float(sum(p.get("duration_s", 0) for p in phases))
    pages = tuple(p["html"] for p in phases if p.get("html"))
    return RunRow(str(m.get("started_at", "")), str(m.get("runbook", "")), str(m.get("target", "")),
                  bool(m.get("production")), ",".join(str(p.get("phase")) for p in phases), str(m.get("status", "")),
                  str(m.get("operator", "")), round(duration, 1), _approval(m), run.run_id, str(run.folder),
                  str(m.get("error") or ""), pages=pages)


def runs(*, runbook: str | None = None, target: str | None = None, since: datetime | None = None,
         ledgers: bool = True) -> tuple[list[RunRow], list[str]]:
    """Every run, newest first, and notes (a ledger that could not be read). With ``ledgers``,
    each target's ledger is joined: runs it recorded that have no archive (a notebook stepped
    through in JupyterLab, a prepare) are listed too, and each archived run says whether it is sealed."""
    archived = [run for found in chain.archived_runs().values() for run in found]
    rows = {run.run_id: _row(run) for run in archived}
    notes: list[str] = []
    if ledgers:
        names = sorted({r.target for r in rows.values()} | ({target} if target else set()))
        for name in names:
            notes += _join_ledger(name, rows)
    selected = [r for r in rows.values()
                if (runbook is None or r.runbook == runbook) and (target is None or r.target == target)
                and (since is None or _when(r.started_at) >= since)]
    return sorted(selected, key=lambda r: r.started_at, reverse=True), notes


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _join_ledger(name: str, rows: dict[str, RunRow]) -> list[str]:

    try:
        target = resolve_target(name)
        with engine(target, create=False).connect() as conn:
            if not storage.ledger_exists(conn):
                return []
            sealed = {s.run_id for s in seals.seals(conn, name)}
            t = storage.tables(conn.dialect.name)
            events = [dict(e) for e in conn.execute(t.events.select().where(t.events.c.target == name)
                                                    .order_by(t.events.c.id)).mappings().all()]
    except Exception as exc:
        return [f"{name}'s ledger was not read: {str(exc).splitlines()[0]}"]
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(str(event["run_id"]), []).append(event)
    for run_id, found in by_run.items():
        if run_id in rows:
            rows[run_id] = RunRow(**{**asdict(rows[run_id]), "sealed": "yes" if run_id in sealed else "no"})
            continue
        first, last = found[0], found[-1]
        status = next((e["status"] for e in found if e["status"] == Status.FAILED), last["status"])
        rows[run_id] = RunRow(
            first["started_at"].isoformat(timespec="seconds"), str(first["runbook"]), name, target.production,
            ",".join(dict.fromkeys(str(e["phase"]) for e in found)), str(status), str(first["operator"]),
            round(sum(float(e["duration_s"] or 0) for e in found), 1), "", run_id,
            "(no archive)", str(last.get("error") or ""), "no")
    return []


def history_frame(rows: list[RunRow]) -> pd.DataFrame:
    import pandas as pd  # for readers: a run refreshes the index without it

    frame = pd.DataFrame([asdict(r) for r in rows], columns=[*COLUMNS, "error", "sealed"])
    frame["production"] = frame["production"].map(lambda p: "PRODUCTION" if p else "")
    return frame


def render_history(rows: list[RunRow], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([{k: v for k, v in asdict(r).items() if k != "pages"} for r in rows], indent=2)
    if not rows:
        return "no runs match"
    frame = history_frame(rows)[[c for c in COLUMNS]]
    return frame.to_string(index=False)


# -- the index page ------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f1f1f; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
.filters { margin: .8em 0; display: flex; gap: .8em; flex-wrap: wrap; }
table { border-collapse: collapse; width: 100%; table-layout: auto; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top;
         white-space: normal; overflow-wrap: anywhere; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr.failed td, tr.interrupted td { background: #fdecea; }
tr.failed td.status, tr.interrupted td.status { color: #b3261e; font-weight: bold; }
tr.passed td.status { color: #146c2e; font-weight: bold; }
.prod { background: #b3261e; color: #fff; padding: 0 .4em; border-radius: 3px; font-size: .85em; }
.error { color: #b3261e; font-size: .9em; }
.hidden { display: none; }
"""

_SCRIPT = """
function filterRuns() {
  const want = {};
  for (const s of document.querySelectorAll('select[data-col]')) { want[s.dataset.col] = s.value; }
  const text = document.getElementById('q').value.toLowerCase();
  for (const row of document.querySelectorAll('tbody tr')) {
    let show = Object.keys(want).every(k => !want[k] || row.dataset[k] === want[k]);
    if (text && !row.textContent.toLowerCase().includes(text)) show = false;
    row.classList.toggle('hidden', !show);
  }
}
"""


def _select(column: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return (f'<label>{label} <select data-col="{column}" onchange="filterRuns()">'
            f'<option value="">all</option>{options}</select></label>')


def index_html(rows: list[RunRow], base: Path) -> str:
    """The archive's index: every run with links to its pages and manifest, filterable by runbook,
    target and status; failures in red, production runs flagged. No external resource."""
    body = []
    for r in rows:
        folder = Path(r.archive)
        rel = folder.relative_to(base).as_posix() if folder.is_absolute() and folder.is_relative_to(base) else ""
        links = " ".join(f'<a href="{html.escape(rel)}/{html.escape(page)}">{html.escape(page.removesuffix(".html"))}</a>'
                         for page in r.pages) if rel else html.escape(r.archive)
        manifest = f' <a href="{html.escape(rel)}/{MANIFEST}">manifest</a>' if rel else ""
        error = f'<div class="error">{html.escape(r.error)}</div>' if r.error else ""
        prod = ' <span class="prod">PRODUCTION</span>' if r.production else ""
        body.append(
            f'<tr class="{html.escape(r.status)}" data-runbook="{html.escape(r.runbook)}" '
            f'data-target="{html.escape(r.target)}" data-status="{html.escape(r.status)}">'
            f"<td>{html.escape(r.started_at.replace('T', ' '))}</td><td>{html.escape(r.runbook)}</td>"
            f"<td>{html.escape(r.target)}{prod}</td><td>{html.escape(r.phases)}</td>"
            f'<td class="status">{html.escape(r.status)}{error}</td><td>{html.escape(r.operator)}</td>'
            f"<td>{r.duration_s:g} s</td><td>{html.escape(r.approval)}</td>"
            f"<td><code>{html.escape(r.run_id)}</code></td><td>{links}{manifest}</td></tr>")
    failed = sum(r.status in (Status.FAILED, Status.INTERRUPTED) for r in rows)
    production = sum(r.production for r in rows)
    filters = "".join([
        _select("runbook", "runbook", sorted({r.runbook for r in rows})),
        _select("target", "target", sorted({r.target for r in rows})),
        _select("status", "status", sorted({r.status for r in rows})),
        '<label>search <input id="q" oninput="filterRuns()"></label>'])
    heads = "".join(f"<th>{h}</th>" for h in ("started (UTC)", "runbook", "target", "phases", "status", "operator",
                                              "duration", "approval", "run", "pages"))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>dbrunbook archive · {len(rows)} runs · {failed} failed</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>dbrunbook archive</h1><p>{len(rows)} run(s), <b>{failed} failed or interrupted</b>, "
            f"{production} on production. Generated {datetime.now(UTC).isoformat(timespec='seconds')}; "
            f"<code>dbrunbook archive verify --all</code> checks every file against its manifest.</p>"
            f'<div class="filters">{filters}</div><table><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></body></html>\n")


def write_index(root: Path | None = None) -> Path:
    """Write ``outputs/index.html`` from the archive alone (no database needed to read it)."""
    base = root or outputs_dir()
    rows, _ = runs(ledgers=False)
    base.mkdir(parents=True, exist_ok=True)
    path = base / INDEX
    partial = path.with_name(INDEX + ".tmp")
    partial.write_text(index_html(rows, base.resolve()))
    partial.replace(path)
    return path


# -- the overview (notebooks/overview.ipynb) --------------------------------------------------------------

@dataclass
class Overview:
    """Every runbook on every target with its state, the latest runs, and what production waits
    for; renders itself in JupyterLab (links relative to ``base``, the notebook's folder)."""

    states: pd.DataFrame
    recent: list[RunRow]
    pending: pd.DataFrame
    notes: list[str]
    base: Path

    def _runs_html(self) -> str:
        rows = []
        for r in self.recent:
            folder = Path(r.archive)
            links = " ".join(f'<a href="{html.escape(_link(folder / page, self.base))}">{html.escape(page)}</a>'
                             for page in r.pages) if folder.is_absolute() else html.escape(r.archive)
            prod = " <b>PRODUCTION</b>" if r.production else ""
            rows.append(f"<tr><td>{html.escape(r.started_at)}</td><td>{html.escape(r.runbook)}</td>"
                        f"<td>{html.escape(r.target)}{prod}</td><td>{html.escape(r.phases)}</td>"
                        f"<td>{html.escape(r.status)}</td><td>{html.escape(r.approval)}</td><td>{links}</td></tr>")
        head = "".join(f"<th>{h}</th>" for h in ("started", "runbook", "target", "phases", "status", "approval", "pages"))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def _repr_html_(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<h3>State of every runbook on every target</h3>{self.states.to_html(index=False)}"
                f"<h3>Production: what waits, and its approval</h3>{self.pending.to_html(index=False)}"
                f"<h3>Latest runs</h3>{self._runs_html()}" + (f"<ul>{notes}</ul>" if notes else ""))

    def render(self) -> str:
        return "\n\n".join([self.states.to_string(index=False), self.pending.to_string(index=False),
                            render_history(self.recent), *[f"note: {n}" for n in self.notes]])


def _link(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(path, base)).as_posix()


def overview(targets: list[str] | None = None, *, last: int = 20, base: Path | None = None) -> Overview:
    """What a reviewer or an engineer wants first: states, pending production work, latest runs."""
    root = project_root()
    books = [load_runbook(p) for p in sorted((root / "runbooks").iterdir()) if (p / "runbook.yaml").is_file()]
    names = targets if targets is not None else sorted({"dev", "prod", *load_config().targets})
    states, pending, notes = [], [], []
    for name in names:
        try:
            target = resolve_target(name)
            with engine(target, create=False).connect() as conn:
                for book in books:
                    state = ledger.read_state(conn, book.name)
                    recorded = approvals.recorded_approvals(conn, book.name)
                    if state is None and not recorded:
                        continue  # never run here: not this target's runbook
                    live = ledger.lock_held(conn, ledger.runbook_lock_key(book.name)) if state else False
                    text, detail = ledger.describe_runbook(state, book, live=live)
                    states.append({"runbook": book.name, "target": name,
                                   "production": "PRODUCTION" if target.production else "", "state": text,
                                   "detail": detail})
                    if target.production and not text.startswith(Status.APPLIED):
                        current = plan_sha256(plan_checksums(book))
                        approval = ("none" if not recorded else
                                    f"{recorded[0].approver}: " + ("valid" if recorded[0].plan_sha256 == current
                                                                   else "VOID (the files changed since)"))
                        pending.append({"runbook": book.name, "target": name, "state": text, "approval": approval})
        except Exception as exc:
            notes.append(f"{name}: not read ({str(exc).splitlines()[0]})")
    recent, more = runs(ledgers=False)
    import pandas as pd

    return Overview(pd.DataFrame(states, columns=["runbook", "target", "production", "state", "detail"]),
                    recent[:last], pd.DataFrame(pending, columns=["runbook", "target", "state", "approval"]),
                    notes + more, (base or root / "notebooks").resolve())


def passed_review(book: Runbook | RunbookSet, checksums: dict[str, str]) -> str | None:
    """The newest archived run with a passed review of these exact files, or None."""
    found: list[tuple[str, str]] = []
    for runs in chain.archived_runs().values():
        for run in runs:
            m = run.manifest
            reviewed = [p for p in m.get("phases") or [] if str(p.get("phase", "")).endswith("review")]
            if (m.get("runbook") == book.name and m.get("runbook_files") == checksums and reviewed
                    and all(p.get("status") == Status.PASSED for p in reviewed)):
                found.append((str(m.get("started_at", "")), run.run_id))
    return max(found)[1] if found else None
