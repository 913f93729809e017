"""The test phase: behaviour tests declared in the runbook, plus a performance probe.

Each case runs in its own savepoint, rolled back afterwards, inside one transaction that is
rolled back at the end too: the phase leaves no data behind, only its ledger event. A case's
outcome is judged on its last statement: rows, a value, a row count, or a SQLSTATE.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
import psycopg.errors

from . import ledger, probe, report
from .errors import SpecError
from .phase import BasePhase
from .spec import BehaviourCase, BehaviourSpec, CaseOutcome, Runbook
from .statements import split_postgresql
from .targets import Target

CASE_COLUMNS = ["case", "expected", "actual", "result"]


@dataclass(frozen=True)
class CaseResult:
    case: str
    expected: str
    actual: str
    passed: bool


def resolve_sqlstate(expected: str) -> str:
    """A SQLSTATE code or class as given, or the code of a condition name."""
    text = expected.strip()
    if len(text) in (2, 5) and text[:2].isalnum() and text.upper() == text:
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


def judge(outcome: CaseOutcome, rows: list[dict[str, Any]] | None, error: psycopg.Error | None) -> tuple[bool, str]:
    """Whether what happened matches the declared outcome, and what happened, in words."""
    if error is not None:
        state = error.sqlstate or "?"
        name = type(error).__name__
        actual = f"error {state} ({name}): {str(error).splitlines()[0] if str(error) else ''}"
        if outcome.sqlstate is None:
            return False, actual
        return state.startswith(resolve_sqlstate(outcome.sqlstate)), actual
    got = [{k: _plain(v) for k, v in row.items()} for row in rows or []]
    if outcome.sqlstate is not None:
        return False, f"no error; {len(got)} row(s)"
    if outcome.rows is not None:
        return got == outcome.rows, f"rows = {json.dumps(got, default=str)}"
    if outcome.count is not None:
        return len(got) == outcome.count, f"count = {len(got)}"
    value = next(iter(got[0].values())) if got and got[0] else None
    return value == outcome.value, f"value = {json.dumps(value, default=str)}"


def run_case(conn: psycopg.Connection[Any], case: BehaviourCase, setup: str, number: int) -> CaseResult:
    """One case in a savepoint that is always rolled back."""
    file = f"runbook.yaml test.cases[{number}] ({case.name})"
    statements = (split_postgresql(setup, "runbook.yaml test.setup") if setup.strip() else []) + \
        split_postgresql(case.sql, file)
    rows: list[dict[str, Any]] | None = None
    error: psycopg.Error | None = None
    cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
    cursor.execute("SAVEPOINT dbrunbook_case")
    try:
        for statement in statements:
            cursor.execute(statement.text.encode())
            rows = cursor.fetchall() if cursor.description else None
    except psycopg.Error as exc:
        error = exc
    finally:
        cursor.execute("ROLLBACK TO SAVEPOINT dbrunbook_case")
        cursor.execute("RELEASE SAVEPOINT dbrunbook_case")
    passed, actual = judge(case.expect, rows, error)
    return CaseResult(case.name, describe_outcome(case.expect), actual, passed)


def cases_frame(results: list[CaseResult]) -> pd.DataFrame:
    return pd.DataFrame([{"case": r.case, "expected": r.expected, "actual": r.actual,
                          "result": "pass" if r.passed else "FAIL"} for r in results], columns=CASE_COLUMNS)


class BehaviourRun(BasePhase):
    """Behaviour cases and a performance probe, all rolled back."""

    default_action = "test"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, rows: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(phase, runbook, target, **kwargs)  # type: ignore[arg-type]
        self.spec: BehaviourSpec = runbook.spec.test or BehaviourSpec()
        self.rows = int(rows) if rows else (self.spec.probe.rows if self.spec.probe else 0)
        self.results: list[CaseResult] = []
        self.probe_run: probe.Probe | None = None

    def behaviour(self) -> pd.DataFrame:
        """Every declared case, each in a savepoint that is rolled back."""
        self._guard_open()
        if not self.spec.cases:
            report.say("**No behaviour cases** are declared for this runbook.")
            return cases_frame([])
        self.results = [run_case(self.raw, case, self.spec.setup, number)
                        for number, case in enumerate(self.spec.cases)]
        for result in self.results:
            if not result.passed:
                self.failures.append(f"case '{result.case}': expected {result.expected}, got {result.actual}")
        frame = cases_frame(self.results)
        report.say(f"**Behaviour:** {sum(r.passed for r in self.results)} of {len(self.results)} case(s) passed.")
        report.show(frame, status_column="result")
        self.detail["cases"] = {r.case: r.passed for r in self.results}
        return frame

    def generate(self) -> pd.DataFrame:
        """Generate the probe's rows (rolled back with everything else at the end)."""
        self._guard_open()
        if self.spec.probe is None:
            report.say("**No performance probe** is declared for this runbook.")
            return pd.DataFrame()
        if self.spec.probe.why:
            report.say(self.spec.probe.why)
        self.probe_run = probe.Probe(self.raw, self.spec.probe, self.rows)
        frame = self.probe_run.generate()
        report.say(f"**Generated** {self.rows:,} rows' worth of data in {self.probe_run.generate_seconds:.1f} s "
                   "(inside this phase's transaction; rolled back at the end) and ANALYZEd the tables.")
        report.show(frame, caption="rows in the probed tables")
        return frame

    def time_access_paths(self) -> pd.DataFrame:
        """Median timings of the BEFORE and AFTER access paths, a chart, and the speedup."""
        self._guard_open()
        if self.probe_run is None:
            return pd.DataFrame()
        frame = self.probe_run.time_paths()
        report.show(frame, caption=f"median of {self.spec.probe.repeat if self.spec.probe else 0} runs each")
        self.probe_run.chart(self.archive_dir)
        report.say(self.probe_run.verdict())
        self.failures += self.probe_run.failures
        self.detail["speedup"] = round(self.probe_run.speedup, 1)
        return frame

    def explain(self) -> pd.DataFrame:
        """EXPLAIN (ANALYZE, BUFFERS) of both paths; the AFTER plan must use the declared index."""
        self._guard_open()
        if self.probe_run is None:
            return pd.DataFrame()
        frame = self.probe_run.explain()
        self.failures += [f for f in self.probe_run.failures if f not in self.failures]
        return frame

    def finish(self) -> None:
        """Roll back every row the phase made; record the verdict; raise on any failure."""
        self._guard_open()
        self.conn.rollback()
        self.conn.begin()
        self._raise_for_failures()
        self._commit("test", ledger.PASSED if (self.spec.cases or self.spec.probe) else ledger.NOOP)
        report.say(f"**test passed** on {self.target.name}: every case held and the probe's evidence is above; "
                   f"nothing the phase wrote was kept (run {self.run_id}).")
