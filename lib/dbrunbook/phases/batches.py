"""Batches over a table in key order: keyset ranges (an index range scan however far the work has
gone), a batch size that adapts towards a target duration, the batch SQL run in the caller's
transaction, and the first row that fails alone found by bisection in rolled-back savepoints."""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from ..sql.statements import Statement, render, split_postgresql

MIN_BATCH, MAX_BATCH = 10, 100_000


@dataclass(frozen=True)
class Batch:
    number: int
    first: Any
    last: Any
    rows: int          # source rows in the batch
    written: int       # rows the batch SQL inserted
    size: int          # the batch size asked for
    ms: float


@dataclass
class Throttle:
    """The batch size adapts so that a batch takes about ``target_ms``; ``pause_ms`` between
    batches leaves the application room."""

    target_ms: float = 250.0
    pause_ms: float = 0.0
    min_size: int = MIN_BATCH
    max_size: int = MAX_BATCH

    def next_size(self, size: int, rows: int, ms: float) -> int:
        if rows < size or ms <= 0:  # a short last batch says nothing about speed
            return size
        # At most double or halve at once: one slow batch (a checkpoint, autovacuum) is noise.
        factor = min(2.0, max(0.5, self.target_ms / ms))
        return int(min(self.max_size, max(self.min_size, size * factor)))


def batch_statements(conn: psycopg.Connection[Any], text: str, where: str, first: Any, last: Any) -> list[Statement]:
    """The batch SQL for keys first..last, split by PostgreSQL's parser (the placeholders are
    rendered first: the text that runs is the text that was parsed, and the text an error shows)."""
    return split_postgresql(render(conn, text, {"first": first, "last": last}), where)


def batch_range(conn: psycopg.Connection[Any], source: str, key: str, after: Any, size: int) -> tuple[Any, Any, int]:
    """(first key, last key, rows) of the next batch after ``after``: keyset pagination, an
    index range scan however far the backfill has gone."""
    ident, table = sql.Identifier(key), sql.Identifier(source)
    where = sql.SQL("WHERE {} > %s").format(ident) if after is not None else sql.SQL("")
    row = conn.execute(sql.SQL("SELECT min(k), max(k), count(*) FROM (SELECT {} AS k FROM {} {} ORDER BY {} LIMIT %s) s")
                       .format(ident, table, where, ident), ((after, size) if after is not None else (size,))).fetchone()
    assert row is not None
    return row[0], row[1], int(row[2])


def run_batch(conn: psycopg.Connection[Any], text: str, where: str, first: Any, last: Any) -> int:
    """Run the batch SQL for keys first..last in the caller's transaction; rows written (a
    SELECT, such as the batch's FOR SHARE lock on its source rows, writes none)."""
    written = 0
    with conn.cursor() as cursor:
        for statement in batch_statements(conn, text, where, first, last):
            cursor.execute(statement.text.encode())
            if not (cursor.statusmessage or "").startswith("SELECT"):
                written += max(cursor.rowcount, 0)
    return written


def find_bad_key(conn: psycopg.Connection[Any], text: str, where: str, source: str, key: str,
                 first: Any, last: Any) -> Any:
    """The first key in first..last whose batch fails alone, by bisection; each try runs in a
    savepoint that is rolled back (GitLab's batched migrations split a failed batch the same way)."""
    ident, table = sql.Identifier(key), sql.Identifier(source)
    keys = [r[0] for r in conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} BETWEEN %s AND %s ORDER BY {}")
                                       .format(ident, table, ident, ident), (first, last)).fetchall()]

    def fails(lo: int, hi: int) -> bool:
        try:
            with conn.transaction(force_rollback=True):
                run_batch(conn, text, where, keys[lo], keys[hi])
        except psycopg.Error:
            return True
        return False

    lo, hi = 0, len(keys) - 1
    if not keys or not fails(lo, hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        else:
            lo = mid + 1
    return keys[lo]


def _batch_summary(frame: pd.DataFrame) -> pd.DataFrame:
    seconds = frame["ms"].sum() / 1000
    return pd.DataFrame([{"batches": len(frame), "rows": int(frame["rows"].sum()), "written": int(frame["written"].sum()),
                          "rows/s": round(frame["rows"].sum() / seconds) if seconds else None,
                          "median batch ms": round(float(frame["ms"].median()), 1),
                          "worst batch ms": round(float(frame["ms"].max()), 1),
                          "last size": int(frame["size"].iloc[-1])}])


def _progress_bar(factory: Callable[..., Any] | None, total: int, done: int) -> Any:
    """tqdm's text bar (rate, ETA) on stdout (on stderr the archive would show it as an error): it
    redraws in place in JupyterLab and in a terminal, and the archived notebook keeps its states."""
    from tqdm.std import tqdm

    return (factory or tqdm)(total=total + done, initial=done, unit=" rows", file=sys.stdout, mininterval=0.5, ascii=True,
                   ncols=100, desc="backfill")
