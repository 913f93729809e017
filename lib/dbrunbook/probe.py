"""Performance evidence: generated data, timed access paths, EXPLAIN plans, a chart.

A probe times two ways of getting the same rows. For seed 000 the BEFORE path is the
application's old one (fetch every event of a type, keep those whose ``metadata.messageId``
matches, in the client) and the AFTER path the query by the new foreign key. Both run on the
same generated data, so the ratio compares access paths, not machines.
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from . import report
from .spec import ProbeQuery, ProbeSpec
from .statements import split_postgresql

CHART_FILE = "probe_timings.png"
_PLACEHOLDER = re.compile(r"%\((rows|value)\)s")


def plan_indexes(plan: Any) -> list[str]:
    """Every index an EXPLAIN (FORMAT JSON) plan tree scans."""
    found: list[str] = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Index Name" in node:
                found.append(str(node["Index Name"]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


class Probe:
    """One probe on one connection (inside the phase's transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], spec: ProbeSpec, rows: int) -> None:
        self.conn = conn
        self.spec = spec
        self.rows = rows
        self.generate_seconds = 0.0
        self.value: Any = None
        self.timings: dict[str, list[float]] = {}
        self.results: dict[str, set[Any]] = {}
        self.failures: list[str] = []

    @property
    def params(self) -> dict[str, Any]:
        return {"rows": self.rows, "value": self.value}

    def generate(self) -> pd.DataFrame:
        started = time.perf_counter()
        with self.conn.cursor() as cursor:
            for statement in split_postgresql(self.render(self.spec.generate), "runbook.yaml test.probe.generate"):
                cursor.execute(statement.text.encode())
            cursor.execute("ANALYZE")
            row = self._execute(cursor, self.spec.pick).fetchone()
            self.value = row[0] if row else None
            counts = cursor.execute(
                "SELECT relname AS table, n_live_tup AS rows FROM pg_stat_user_tables "
                "WHERE schemaname <> 'dbrunbook' ORDER BY n_live_tup DESC").fetchall()
        self.generate_seconds = time.perf_counter() - started
        frame = pd.DataFrame(counts, columns=["table", "rows"])
        frame["rows"] = [self._count(t) for t in frame["table"]]
        return frame

    def render(self, text: str) -> str:
        """The SQL with ``%(rows)s`` and ``%(value)s`` replaced by quoted literals: the text
        that runs is the text EXPLAIN shows and the parser splits."""
        return _PLACEHOLDER.sub(lambda m: sql.Literal(self.params[m.group(1)]).as_string(self.conn), text)

    def _execute(self, cursor: Any, text: str, prefix: str = "") -> Any:
        return cursor.execute((prefix + self.render(text)).encode())

    def _count(self, table: str) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        return int(row[0]) if row else 0

    def _fetch(self, query: ProbeQuery) -> set[Any]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            rows = self._execute(cursor, query.sql).fetchall()
        if query.client_filter:
            column, key = query.client_filter["column"], query.client_filter["key"]
            rows = [r for r in rows if isinstance(r[column], dict) and r[column].get(key) == self.value]
        return {next(iter(r.values())) for r in rows}

    def time_paths(self) -> pd.DataFrame:
        rows = []
        for name, query in (("before", self.spec.before), ("after", self.spec.after)):
            self._fetch(query)  # warm the cache: both paths are timed warm
            laps = []
            for _ in range(self.spec.repeat):
                started = time.perf_counter()
                self.results[name] = self._fetch(query)
                laps.append(time.perf_counter() - started)
            self.timings[name] = laps
            rows.append({"path": name, "how": query.label, "rows found": len(self.results[name]),
                         "median ms": round(statistics.median(laps) * 1000, 3),
                         "min ms": round(min(laps) * 1000, 3), "max ms": round(max(laps) * 1000, 3)})
        if self.results["before"] != self.results["after"]:
            self.failures.append(f"the two access paths disagree: {len(self.results['before'])} row(s) "
                                 f"before, {len(self.results['after'])} after")
        if not self.results["after"]:
            self.failures.append("the probed value matched no rows; the timings prove nothing")
        return pd.DataFrame(rows)

    @property
    def speedup(self) -> float:
        before = statistics.median(self.timings["before"])
        after = statistics.median(self.timings["after"])
        return before / after if after else float("inf")

    def verdict(self) -> str:
        claim = self.spec.claim
        text = f"**Measured speedup: {self.speedup:,.0f}x** (median BEFORE / median AFTER, same data, same connection)"
        if claim:
            text += (f"; the plan claimed **{claim:g}x** ({self.spec.claim_source or 'the seed'}). "
                     + ("The measurement meets the claim." if self.speedup >= claim else
                        "The measurement falls short of the claim on this data."))
            return text
        return text + "."

    def chart(self, folder: Path) -> Path | None:
        import matplotlib

        if not report.in_notebook():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 2.4))
        names = ["before", "after"]
        medians = [statistics.median(self.timings[n]) * 1000 for n in names]
        # Short labels: the long descriptions are in the table above, and would squash the bars.
        bars = ax.barh(["BEFORE", "AFTER"], medians, color=["#c5221f", "#188038"])
        ax.set_xscale("log")
        ax.set_xlabel("median ms (log scale)")
        ax.invert_yaxis()
        for bar, value in zip(bars, medians, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f} ms", va="center")
        ax.set_title(f"{self.rows:,} rows: {self.speedup:,.0f}x faster"
                     + (f" (plan claimed {self.spec.claim:g}x)" if self.spec.claim else ""))
        fig.tight_layout()
        path = folder / CHART_FILE
        fig.savefig(path, dpi=110)
        if report.in_notebook():
            from IPython.display import display

            display(fig)
        plt.close(fig)
        return path

    def explain(self) -> pd.DataFrame:
        rows = []
        for name, query in (("before", self.spec.before), ("after", self.spec.after)):
            with self.conn.cursor() as cursor:
                plan = self._execute(cursor, query.sql, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ").fetchone()
                text = self._execute(cursor, query.sql, "EXPLAIN (ANALYZE, BUFFERS) ").fetchall()
            indexes = plan_indexes(plan[0] if plan else None)
            report.say(f"**{name.upper()}: {query.label}**\n\n```\n" + "\n".join(r[0] for r in text) + "\n```")
            ok = True
            if query.uses_index:
                ok = query.uses_index in indexes
                if not ok:
                    self.failures.append(f"the {name} plan does not use {query.uses_index} "
                                         f"(it scans: {', '.join(indexes) or 'no index'})")
            rows.append({"path": name, "indexes scanned": ", ".join(indexes) or "(none)",
                         "must use": query.uses_index or "-",
                         "result": ("pass" if ok else "FAIL") if query.uses_index else "-"})
        frame = pd.DataFrame(rows)
        report.show(frame, caption="index use", status_column="result")
        return frame
