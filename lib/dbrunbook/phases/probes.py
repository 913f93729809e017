"""Performance evidence: generated data, timed access paths, EXPLAIN plans, charts, index sizes.

A probe times two ways of getting the same rows on the same generated data. For seed 000 the
BEFORE path is the application's old one (fetch every event of a type, keep those whose
``metadata.messageId`` matches, in the client) and the AFTER path the query by the new foreign
key. For seed 003 both paths are the same query, BEFORE with the migration's index hidden (dropped
in a savepoint that is rolled back). Either way the ratio compares access paths, not machines.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from pglast.stream import RawStream
from psycopg import sql

from ..runbook.sections import IndexSize, ProbeData, ProbeQuery, ProbeSpec, WriteCost
from ..sql.statements import parse_one, render, split_postgresql
from . import report

CHART_FILE = "probe_timings.png"


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


def generate_data(conn: psycopg.Connection[Any], data: ProbeData, rows: int) -> tuple[pd.DataFrame, float]:
    """Run the generator with ``rows``, ANALYZE, and count the rows of every user table."""
    started = time.perf_counter()
    with conn.cursor() as cursor:
        for statement in split_postgresql(render(conn, data.generate, {"rows": rows}), "runbook.yaml test.data.generate"):
            cursor.execute(statement.text.encode())
        cursor.execute("ANALYZE")
        tables = [r[0] for r in cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() ORDER BY relname").fetchall()]
        counts = []
        for table in tables:
            row = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            counts.append({"table": table, "rows": int(row[0]) if row else 0})
    return pd.DataFrame(counts, columns=["table", "rows"]), time.perf_counter() - started


@contextmanager
def hidden_indexes(conn: psycopg.Connection[Any], names: list[str]) -> Iterator[None]:
    """Run the block as if these indexes did not exist: dropped in a savepoint, rolled back."""
    if not names:
        yield
        return
    conn.execute("SAVEPOINT dbrunbook_hide")
    try:
        for name in names:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        yield
    finally:
        conn.execute("ROLLBACK TO SAVEPOINT dbrunbook_hide")
        conn.execute("RELEASE SAVEPOINT dbrunbook_hide")


class Probe:
    """One probe on one connection (inside the phase's transaction)."""

    def __init__(self, conn: psycopg.Connection[Any], spec: ProbeSpec, rows: int) -> None:
        self.conn = conn
        self.spec = spec
        self.rows = rows
        self.value: Any = None
        self.timings: dict[str, list[float]] = {}
        self.results: dict[str, set[Any]] = {}
        self.failures: list[str] = []

    @property
    def params(self) -> dict[str, Any]:
        return {"rows": self.rows, "value": self.value}

    def pick(self) -> Any:
        row = self.conn.execute(render(self.conn, self.spec.pick, self.params).encode()).fetchone()
        self.value = row[0] if row else None
        if self.value is None:
            self.failures.append(f"probe '{self.spec.name}': its pick query returned nothing to probe")
        return self.value

    def _fetch(self, query: ProbeQuery) -> set[Any]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
            rows = cursor.execute(render(self.conn, query.sql, self.params).encode()).fetchall()
        if query.client_filter:
            column, key = query.client_filter["column"], query.client_filter["key"]
            rows = [r for r in rows if isinstance(r[column], dict) and r[column].get(key) == self.value]
        return {next(iter(r.values())) for r in rows}

    def paths(self) -> tuple[tuple[str, ProbeQuery], tuple[str, ProbeQuery]]:
        return ("before", self.spec.before), ("after", self.spec.after)

    def time_paths(self) -> pd.DataFrame:
        rows = []
        for name, query in self.paths():
            with hidden_indexes(self.conn, query.without_indexes):
                self._fetch(query)  # warm the cache: both paths are timed warm
                laps = []
                for _ in range(self.spec.repeat):
                    started = time.perf_counter()
                    self.results[name] = self._fetch(query)
                    laps.append(time.perf_counter() - started)
            self.timings[name] = laps
            rows.append({"probe": self.spec.name, "path": name, "how": query.label,
                         "rows found": len(self.results[name]),
                         "median ms": round(statistics.median(laps) * 1000, 3),
                         "min ms": round(min(laps) * 1000, 3), "max ms": round(max(laps) * 1000, 3)})
        if self.results["before"] != self.results["after"]:
            self.failures.append(f"probe '{self.spec.name}': the two access paths disagree "
                                 f"({len(self.results['before'])} row(s) before, {len(self.results['after'])} after)")
        if not self.results["after"]:
            self.failures.append(f"probe '{self.spec.name}': the probed value matched no rows; the timings prove nothing")
        return pd.DataFrame(rows)

    def median_ms(self, path: str) -> float:
        return statistics.median(self.timings[path]) * 1000

    @property
    def speedup(self) -> float:
        after = self.median_ms("after")
        return self.median_ms("before") / after if after else float("inf")

    def verdict(self) -> str:
        text = (f"**{self.spec.name}: {self.speedup:,.0f}x faster** (median BEFORE {self.median_ms('before'):.2f} ms / "
                f"median AFTER {self.median_ms('after'):.2f} ms, same data, same connection)")
        claim = self.spec.claim
        if not claim:
            return text + "."
        met = "meets the claim" if self.speedup >= claim else "FALLS SHORT of the claim on this data"
        return f"{text}; the plan claimed **{claim:g}x** ({self.spec.claim_source or 'the seed'}): the measurement {met}."

    def shortfall(self) -> str | None:
        """The claim this measurement falls short of, in one line; None when it holds."""
        claim = self.spec.claim
        if not claim or self.speedup >= claim:
            return None
        return (f"probe '{self.spec.name}': measured {self.speedup:,.1f}x, short of the claimed {claim:g}x "
                f"({self.spec.claim_source or 'the plan'})")

    def explain(self) -> list[dict[str, str]]:
        rows = []
        for name, query in self.paths():
            text = render(self.conn, query.sql, self.params)
            with hidden_indexes(self.conn, query.without_indexes), self.conn.cursor() as cursor:
                plan = cursor.execute(("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text).encode()).fetchone()
                lines = cursor.execute(("EXPLAIN (ANALYZE, BUFFERS) " + text).encode()).fetchall()
            indexes = plan_indexes(plan[0] if plan else None)
            hidden = f" (without {', '.join(query.without_indexes)})" if query.without_indexes else ""
            report.say(f"**{self.spec.name}, {name.upper()}{hidden}: {query.label}**\n\n```\n"
                       + "\n".join(r[0] for r in lines) + "\n```")
            ok = query.uses_index is None or query.uses_index in indexes
            if not ok:
                self.failures.append(f"probe '{self.spec.name}': the {name} plan does not use {query.uses_index} "
                                     f"(it scans: {', '.join(indexes) or 'no index'})")
            rows.append({"probe": self.spec.name, "path": name, "indexes scanned": ", ".join(indexes) or "(none)",
                         "must use": query.uses_index or "-",
                         "result": ("pass" if ok else "FAIL") if query.uses_index else "-"})
        return rows


def chart(probes: list[Probe], rows: int, folder: Path) -> Path:
    """One horizontal bar chart of every probe's BEFORE and AFTER medians (log scale)."""
    import matplotlib

    if not report.in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colours = [], [], []
    for probe in probes:
        for which, colour in (("before", "#c5221f"), ("after", "#188038")):
            # Short labels: the long descriptions are in the table, and would squash the bars.
            labels.append(f"{probe.spec.name}: {which.upper()}")
            values.append(probe.median_ms(which))
            colours.append(colour)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.55 * len(labels)))
    bars = ax.barh(labels, values, color=colours)
    ax.set_xscale("log")
    ax.set_xlabel("median ms (log scale)")
    ax.invert_yaxis()
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f} ms", va="center")
    claims = ", ".join(f"{p.spec.name}: {p.speedup:,.0f}x" + (f" (claimed {p.spec.claim:g}x)" if p.spec.claim else "")
                       for p in probes)
    ax.set_title(f"{rows:,} generated rows. {claims}", fontsize=9)
    fig.tight_layout()
    path = folder / CHART_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    report.image(path.read_bytes(), path.name)
    return path


def _variant(definition: str, name: str, *, full: bool) -> str:
    """The index's definition under another name; ``full``: without its WHERE and uniqueness."""
    node: Any = parse_one(definition)
    node.idxname = name
    if full:
        node.whereClause = None
        node.unique = False
    return str(RawStream()(node))


def _built_size(conn: psycopg.Connection[Any], definition: str, name: str, *, full: bool) -> int:
    conn.execute(_variant(definition, name, full=full).encode())
    row = conn.execute("SELECT pg_relation_size(to_regclass(%s))", (sql.Identifier(name).as_string(conn),)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def index_sizes(conn: psycopg.Connection[Any], sizes: list[IndexSize]
                ) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """Each index's size and usage counters; with ``compare_full``, the size of the same index
    without its WHERE clause, built in a savepoint and rolled back. Also the size claims that fall
    short, each with the runbook's reason to let it pass as a warning (empty: it fails)."""
    rows, failures = [], []
    shortfalls: list[tuple[str, str]] = []
    for item in sizes:
        found = conn.execute(
            "SELECT s.relname, pg_get_indexdef(s.indexrelid), pg_relation_size(s.indexrelid), s.idx_scan, "
            "s.idx_tup_read, s.idx_tup_fetch FROM pg_stat_user_indexes s WHERE s.indexrelname = %s "
            "AND s.schemaname = current_schema()", (item.index,)).fetchone()
        if found is None:
            failures.append(f"index {item.index} does not exist")
            rows.append({"index": item.index, "table": "-"})
            continue
        table, definition, size, scans, read, fetched = found
        row: dict[str, Any] = {"index": item.index, "table": table, "bytes": size,
                               "size": _pretty(size), "idx_scan": scans, "idx_tup_read": read, "idx_tup_fetch": fetched}
        if item.compare_full:
            # Both built fresh on the same rows, so neither carries the other's page splits.
            conn.execute("SAVEPOINT dbrunbook_size")
            try:
                partial = _built_size(conn, definition, f"{item.index}_cmp_partial"[:63], full=False)
                full = _built_size(conn, definition, f"{item.index}_cmp_full"[:63], full=True)
            finally:
                conn.execute("ROLLBACK TO SAVEPOINT dbrunbook_size")
                conn.execute("RELEASE SAVEPOINT dbrunbook_size")
            row["built fresh: as defined"] = partial
            row["built fresh: without WHERE"] = full
            saved = (1 - partial / full) * 100 if full else 0.0
            row["partial saves"] = f"{saved:.0f}%" if full else "-"
            if item.claim_smaller_pct is not None:
                row["claimed"] = f"{item.claim_smaller_pct:g}% ({item.claim_source or 'the plan'})"
                if saved < item.claim_smaller_pct:
                    shortfalls.append((f"index {item.index}: the partial index is {saved:.0f}% smaller than the full one, "
                                       f"short of the claimed {item.claim_smaller_pct:g}% "
                                       f"({item.claim_source or 'the plan'})", item.claim_warn))
        rows.append(row)
    columns = ["index", "table", "bytes", "size", "built fresh: as defined", "built fresh: without WHERE",
               "partial saves", "claimed", "idx_scan", "idx_tup_read", "idx_tup_fetch"]
    frame = pd.DataFrame(rows)
    return frame[[c for c in columns if c in frame.columns]], failures, shortfalls


def _pretty(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def write_overhead(conn: psycopg.Connection[Any], cost: WriteCost) -> tuple[dict[str, Any], str | None]:
    """The write's median time with the indexes and without them (hidden in a savepoint), each
    run rolled back, the two alternating so that drift (a checkpoint, the cache) hits both alike.
    Returns the table row and, when the overhead exceeds the claim, the shortfall in one line."""
    text = render(conn, cost.sql, {"rows": cost.rows})
    laps: dict[str, list[float]] = {"with": [], "without": []}

    def once(hidden: list[str]) -> float:
        conn.execute("SAVEPOINT dbrunbook_write")
        try:
            for name in hidden:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            started = time.perf_counter()
            conn.execute(text.encode())
            return time.perf_counter() - started
        finally:
            conn.execute("ROLLBACK TO SAVEPOINT dbrunbook_write")
            conn.execute("RELEASE SAVEPOINT dbrunbook_write")

    once([])  # warm: both sides are timed warm
    for lap in range(cost.repeat):
        for which in (("with", "without") if lap % 2 == 0 else ("without", "with")):
            laps[which].append(once([] if which == "with" else cost.indexes))
    with_ms, without_ms = (statistics.median(laps[k]) * 1000 for k in ("with", "without"))
    overhead = (with_ms / without_ms - 1) * 100 if without_ms else 0.0
    row: dict[str, Any] = {"write": cost.name, "rows": cost.rows, "indexes": ", ".join(cost.indexes),
                           "median ms without": round(without_ms, 2), "median ms with": round(with_ms, 2),
                           "overhead": f"{overhead:+.0f}%"}
    if cost.claim_max_pct is None:
        return row, None
    row["claimed"] = f"at most +{cost.claim_max_pct:g}% ({cost.claim_source or 'the plan'})"
    if overhead <= cost.claim_max_pct:
        return row, None
    return row, (f"write '{cost.name}': the new indexes cost {overhead:+.0f}% per write, above the claimed "
                 f"+{cost.claim_max_pct:g}% ({cost.claim_source or 'the plan'})")
