"""The test phase: behaviour tests declared in the runbook, plus a performance probe.

Each case runs in its own savepoint, rolled back afterwards, inside one transaction that is
rolled back at the end too: the phase leaves no data behind, only its ledger event. A case's
outcome is judged on its last statement: rows, a value, a row count, or a SQLSTATE.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
import psycopg.errors

from ..dialects import Dialect
from ..errors import GuardRefused, SpecError
from ..runbook.sections import BehaviourCase, BehaviourSpec, CaseOutcome
from ..runbook.spec import Runbook
from ..sql.statements import Statement, split_statements
from ..state.status import Status
from ..targets.connect import psycopg_connect
from ..targets.resolve import Target
from . import probes, report
from .base import PhaseRun
from .evidence import step

CASE_COLUMNS = ["case", "expected", "actual", "result"]


@dataclass(frozen=True)
class CaseResult:
    case: str
    expected: str
    actual: str
    passed: bool
    rows: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class DbError:
    """A database error as a case sees it: SQLSTATE on PostgreSQL, SQLite's extended result
    code name (``SQLITE_CONSTRAINT_UNIQUE``) on SQLite."""

    code: str
    name: str
    message: str


def db_error(exc: BaseException) -> DbError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, sqlite3.Error):
        return DbError(getattr(exc, "sqlite_errorname", "SQLITE_ERROR"), type(exc).__name__, first)
    return DbError(getattr(exc, "sqlstate", None) or "?", type(exc).__name__, first)


def resolve_sqlstate(expected: str) -> str:
    """A SQLSTATE code or class, or SQLite result code name, as given; or the code of a
    PostgreSQL condition name."""
    text = expected.strip()
    if text.startswith("SQLITE_") or (len(text) in (2, 5) and text[:2].isalnum() and text.upper() == text):
        return text
    try:
        return str(psycopg.errors.lookup(text).sqlstate)
    except KeyError:
        raise SpecError("runbook.yaml", f"unknown SQLSTATE condition {expected!r}", "test.cases.expect.sqlstate") from None


def _plain(value: Any) -> Any:
    """Database values as YAML would write them, so declared rows compare naturally."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (dict, list)):
        return json.loads(json.dumps(value, default=str))
    return str(value)


def describe_outcome(outcome: CaseOutcome) -> str:
    kind = outcome.kind
    if kind == "sqlstate":
        assert outcome.sqlstate is not None
        code = resolve_sqlstate(outcome.sqlstate)
        return f"error {outcome.sqlstate}" + (f" ({code})" if code != outcome.sqlstate else "")
    return f"{kind} = {json.dumps(getattr(outcome, kind), default=str)}"


def judge(outcome: CaseOutcome, rows: list[dict[str, Any]] | None, error: DbError | None) -> tuple[bool, str]:
    """Whether what happened matches the declared outcome, and what happened, in words."""
    if error is not None:
        actual = f"error {error.code} ({error.name}): {error.message}"
        if outcome.sqlstate is None:
            return False, actual
        return error.code.startswith(resolve_sqlstate(outcome.sqlstate)), actual
    got = [{k: _plain(v) for k, v in row.items()} for row in rows or []]
    if outcome.sqlstate is not None:
        return False, f"no error; {len(got)} row(s)"
    if outcome.rows is not None:
        return got == outcome.rows, f"rows = {json.dumps(got, default=str)}"
    if outcome.count is not None:
        return len(got) == outcome.count, f"count = {len(got)}"
    value = next(iter(got[0].values())) if got and got[0] else None
    return value == outcome.value, f"value = {json.dumps(value, default=str)}"


def _split(text: str, file: str, dialect: str) -> list[Statement]:
    # A one-line case may be written without its ';', which a splitter that looks for the end
    # of each statement (SQLite's) needs to see.
    text = text.rstrip()
    return split_statements(text if text.endswith(";") else text + ";", file, Dialect(dialect))


def run_case(conn: Any, case: BehaviourCase, setup: str, number: int, dialect: str = "postgresql") -> CaseResult:
    """One case, on a DB-API connection, in a savepoint that is always rolled back."""
    file = f"runbook.yaml test.cases[{number}] ({case.name})"
    statements = (_split(setup, "runbook.yaml test.setup", dialect) if setup.strip() else []) + \
        _split(case.sql, file, dialect)
    rows: list[dict[str, Any]] | None = None
    error: DbError | None = None
    cursor = conn.cursor()
    cursor.execute("SAVEPOINT dbrunbook_case")
    try:
        for statement in statements:
            cursor.execute(statement.text)
            if cursor.description:
                names = [d[0] for d in cursor.description]
                rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            else:
                rows = None
    except (psycopg.Error, sqlite3.Error) as exc:
        error = db_error(exc)
    finally:
        cursor.execute("ROLLBACK TO SAVEPOINT dbrunbook_case")
        cursor.execute("RELEASE SAVEPOINT dbrunbook_case")
        cursor.close()
    passed, actual = judge(case.expect, rows, error)
    return CaseResult(case.name, describe_outcome(case.expect), actual, passed, rows)


def cases_frame(results: list[CaseResult]) -> pd.DataFrame:
    return pd.DataFrame([{"case": r.case, "expected": r.expected, "actual": r.actual,
                          "result": "pass" if r.passed else "FAIL"} for r in results], columns=CASE_COLUMNS)


@dataclass
class RaceSession:
    session: int
    outcome: str          # "committed", "failed", "fetched"
    sqlstate: str
    waited_ms: float
    detail: str


@dataclass(frozen=True)
class RaceTally:
    succeeded: int
    failed: dict[str, int]
    fetched: int

    @classmethod
    def of(cls, sessions: list[RaceSession]) -> RaceTally:
        failed: dict[str, int] = {}
        for s in sessions:
            if s.outcome != "committed":
                failed[s.sqlstate] = failed.get(s.sqlstate, 0) + 1
        return cls(sum(s.outcome == "committed" for s in sessions), failed,
                   sum(s.outcome == "fetched" for s in sessions))

    def matches(self, want: Any) -> bool:
        failed = sum(self.failed.values())
        state = resolve_sqlstate(want.sqlstate) if want.sqlstate else None
        right_error = state is None or all(code.startswith(state) for code in self.failed)
        return (self.succeeded, failed, self.fetched) == (want.succeeded, want.failed, want.fetched) and right_error

    def __str__(self) -> str:
        errors = ", ".join(f"{n} x {code}" for code, n in self.failed.items()) or "none"
        return f"{self.succeeded} committed, failed: {errors}, {self.fetched} fetched"


def race(target: Target, run_id: str, case: Any) -> list[RaceSession]:
    """Run ``case.sql`` in ``case.sessions`` real sessions released together by a barrier; each
    holds its transaction ``hold_ms`` before committing, so the others meet it; a failed session
    runs the fallback. The cleanup runs last, committed, whatever happened."""
    import threading

    import psycopg


    barrier = threading.Barrier(case.sessions)
    results: list[RaceSession] = []
    lock = threading.Lock()

    def one(number: int) -> None:
        with psycopg_connect(target, f"dbrunbook test {run_id} race {number}", autocommit=False) as conn:
            barrier.wait(timeout=30)
            started = time.perf_counter()
            try:
                conn.execute(case.sql.encode())
                waited = (time.perf_counter() - started) * 1000
                conn.execute("SELECT pg_sleep(%s)", (case.hold_ms / 1000,))
                conn.commit()
                entry = RaceSession(number, "committed", "", round(waited, 1), "")
            except psycopg.Error as exc:
                waited = (time.perf_counter() - started) * 1000
                conn.rollback()
                code = exc.sqlstate or "?"
                detail = (exc.diag.message_primary or str(exc)).strip()
                outcome = "failed"
                if case.fallback:
                    rows = conn.execute(case.fallback.encode()).fetchall()
                    conn.rollback()
                    outcome, detail = ("fetched", f"{detail}; the fallback fetched {len(rows)} row(s)") if rows \
                        else ("failed", f"{detail}; the fallback found nothing")
                entry = RaceSession(number, outcome, code, round(waited, 1), detail)
        with lock:
            results.append(entry)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, case.sessions + 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        with psycopg_connect(target, f"dbrunbook test {run_id} race cleanup") as conn:
            conn.execute(case.cleanup.encode())
    return sorted(results, key=lambda s: s.session)


class BehaviourRun(PhaseRun):
    """Behaviour cases, performance probes and index sizes, all rolled back."""

    default_action = "test"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, rows: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(phase, runbook, target, **kwargs)  # type: ignore[arg-type]
        self.spec: BehaviourSpec = runbook.spec.test or BehaviourSpec()
        if not target.dialect.explains and (self.spec.data or self.spec.probes or self.spec.index_sizes
                                               or self.spec.write_costs):
            self._fail(GuardRefused(f"test: performance probes and index sizes use PostgreSQL's EXPLAIN (FORMAT JSON) "
                                    f"and pg_relation_size; target {target.name} is {target.dialect}: declare "
                                    "behaviour cases only"))
        self.rows = int(rows) if rows else (self.spec.data.rows if self.spec.data else 0)
        self.results: list[CaseResult] = []
        self.probes: list[probes.Probe] = []

    @property
    def declared(self) -> bool:
        return bool(self.spec.cases or self.spec.probes or self.spec.index_sizes or self.spec.concurrency
                    or self.spec.write_costs)

    @step
    def concurrency(self) -> pd.DataFrame:
        """Cases raced by several real sessions at once; each must end as the runbook says."""
        self._guard_open()
        if not self.spec.concurrency:
            report.say("**No concurrency cases** are declared for this runbook.")
            return pd.DataFrame()
        if not self.target.dialect.sessions:
            self._fail(GuardRefused("test: concurrency cases race PostgreSQL sessions; "
                                    f"target {self.target.name} is {self.target.dialect}"))
        frames = []
        for case in self.spec.concurrency:
            if case.why:
                report.say(case.why)
            sessions = race(self.target, self.run_id, case)
            frame = pd.DataFrame([vars(s) for s in sessions])
            got = RaceTally.of(sessions)
            ok = got.matches(case.expect)
            waited = max((s.waited_ms for s in sessions), default=0.0)
            if not ok:
                self.failures.append(f"race '{case.name}': expected {case.expect.succeeded} to succeed, "
                                     f"{case.expect.failed} to fail and {case.expect.fetched} to fetch; got {got}")
            elif case.sessions > 1 and waited < case.hold_ms / 2:
                self.failures.append(f"race '{case.name}': no session waited for another ({waited:.0f} ms): "
                                     "they did not meet, so the race proves nothing")
            report.say(f"**{case.name}:** {case.sessions} sessions at once: {got}; the longest wait "
                       f"{waited:.0f} ms ({'as the runbook says' if ok else 'NOT as the runbook says'}).")
            report.show(frame, status_column="outcome")
            frames.append(frame.assign(case=case.name))
        return pd.concat(frames, ignore_index=True)

    @step
    def behaviour(self) -> pd.DataFrame:
        """Every declared case, each in a savepoint that is rolled back."""
        self._guard_open()
        if not self.spec.cases:
            report.say("**No behaviour cases** are declared for this runbook.")
            return cases_frame([])
        self.results = [run_case(self.raw, case, self.spec.setup, number, self.target.dialect)
                        for number, case in enumerate(self.spec.cases)]
        for result in self.results:
            if not result.passed:
                self.failures.append(f"case '{result.case}': expected {result.expected}, got {result.actual}")
        frame = cases_frame(self.results)
        report.say(f"**Behaviour:** {sum(r.passed for r in self.results)} of {len(self.results)} case(s) passed.")
        report.show(frame, status_column="result")
        for case, result in zip(self.spec.cases, self.results, strict=True):
            if case.show and result.rows is not None:
                report.show(pd.DataFrame(result.rows), caption=f"{case.name}: the rows it returned")
        self.detail["cases"] = {r.case: r.passed for r in self.results}
        return frame

    @step
    def generate(self) -> pd.DataFrame:
        """Generate the probes' data (rolled back with everything else at the end)."""
        self._guard_open()
        if self.spec.data is None:
            report.say("**No generated data** is declared for this runbook.")
            return pd.DataFrame(columns=["table", "rows"])
        if self.spec.data.why:
            report.say(self.spec.data.why)
        frame, seconds = probes.generate_data(self.raw, self.spec.data, self.rows)
        self.probes = [probes.Probe(self.raw, spec, self.rows) for spec in self.spec.probes]
        for item in self.probes:
            item.pick()
        report.say(f"**Generated** with rows = {self.rows:,} in {seconds:.1f} s (inside this phase's transaction; "
                   "rolled back at the end) and ANALYZEd the tables.")
        report.show(frame, caption="rows per table now")
        return frame

    @step
    def time_access_paths(self) -> pd.DataFrame:
        """Median timings of each probe's BEFORE and AFTER paths, a chart, and the speedups."""
        self._guard_open()
        live = [p for p in self.probes if p.value is not None]
        if not live:
            report.say("**No probes** to time.")
            return pd.DataFrame()
        frames = []
        for item in live:
            if item.spec.why:
                report.say(item.spec.why)
            frames.append(item.time_paths())
        frame = pd.concat(frames, ignore_index=True)
        report.show(frame, caption="median of several warm runs each")
        probes.chart(live, self.rows, self.archive_dir)
        report.say("\n\n".join(item.verdict() for item in live))
        self.detail["speedups"] = {item.spec.name: round(item.speedup, 1) for item in live}
        self._collect_probe_failures()
        return frame

    @step
    def explain(self) -> pd.DataFrame:
        """EXPLAIN (ANALYZE, BUFFERS) of every path; AFTER plans must use the declared index."""
        self._guard_open()
        rows = [row for item in self.probes if item.value is not None for row in item.explain()]
        frame = pd.DataFrame(rows, columns=["probe", "path", "indexes scanned", "must use", "result"])
        report.show(frame, caption="index use", status_column="result")
        self._collect_probe_failures()
        return frame

    @step
    def index_sizes(self) -> pd.DataFrame:
        """Sizes and usage counters of the declared indexes (partial against full where asked)."""
        self._guard_open()
        if not self.spec.index_sizes:
            report.say("**No index sizes** are declared for this runbook.")
            return pd.DataFrame()
        frame, failures, shortfalls = probes.index_sizes(self.raw, self.spec.index_sizes)
        self.failures += failures
        for line, reason in shortfalls:
            self._claim_short(line, reason, timed=False)
        report.say("Sizes from `pg_relation_size`, counters from `pg_stat_user_indexes` as of the server's "
                   "last statistics flush (this phase's own queries are not in them yet). Where a partial index is compared with its full equivalent, "
                   "both are built fresh on the same rows, in a savepoint that is rolled back: `bytes` is the "
                   "live index, grown by inserts, and not comparable with a fresh build.")
        report.show(frame, caption="index sizes")
        return frame

    @step
    def write_overhead(self) -> pd.DataFrame:
        """What the new indexes cost the declared writes, with against without (rolled back)."""
        self._guard_open()
        if not self.spec.write_costs:
            report.say("**No write costs** are declared for this runbook.")
            return pd.DataFrame()
        rows = []
        for cost in self.spec.write_costs:
            if cost.why:
                report.say(cost.why)
            row, shortfall = probes.write_overhead(self.raw, cost)
            rows.append(row)
            if shortfall:
                self._claim_short(shortfall, cost.claim_warn, timed=False)
        frame = pd.DataFrame(rows)
        report.show(frame, caption="write overhead of the new indexes (each run rolled back)")
        self.detail["write_overhead"] = [{k: str(v) for k, v in row.items()} for row in rows]
        return frame

    def _collect_probe_failures(self) -> None:
        self.failures += [f for item in self.probes for f in item.failures if f not in self.failures]
        for item in self.probes:
            line = item.shortfall() if item.value is not None and item.timings else None
            if line:
                self._claim_short(line, item.spec.claim_warn)

    def _claim_short(self, line: str, reason: str, timed: bool = True) -> None:
        """A claim the measurement falls short of fails the phase, unless the runbook marked it
        ``warn`` with a reason: then it is a warning the runner puts at the top of the page and in
        its summary (through the ledger event's detail). Timing claims hold at the data size the
        runbook declares: measured on fewer rows (``-p rows``), a shortfall is a warning that says so."""
        declared = self.spec.data.rows if self.spec.data else 0
        if not reason and timed and self.rows < declared:
            reason = f"measured on {self.rows:,} generated rows, fewer than the {declared:,} the runbook checks its claims at"
        if reason:
            warning = f"{line}; accepted as a warning: {reason}"
            warnings = self.detail.setdefault("warnings", [])
            if isinstance(warnings, list) and warning not in warnings:
                warnings.append(warning)
                report.say(f"**Warning:** {warning}")
        else:
            failure = f"{line} (give the claim a claim_warn reason to accept the shortfall)"
            if failure not in self.failures:
                self.failures.append(failure)

    @step
    def finish(self) -> None:
        """Roll back every row the phase made; record the verdict; raise on any failure."""
        self._guard_open()
        self._collect_probe_failures()
        self.conn.rollback()
        self.conn.begin()
        self._raise_for_failures()
        self._commit("test", Status.PASSED if self.declared else Status.NOOP)
        report.say(f"**test passed** on {self.target.name}: every case held and the probes' evidence is above; "
                   f"nothing the phase wrote was kept (run {self.run_id}).")
