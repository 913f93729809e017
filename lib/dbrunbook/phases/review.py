"""The review phase: lint and live preflight, one findings table, a go/no-go verdict.

Seed 001 is a review done by reading: a migration number already taken, customer and user
references stored as VARCHAR, a CHECK near its VARCHAR limit, rollback scripts to write. This
phase finds those before anything runs, with the target's own catalog and activity as context,
and records its verdict in the target's ledger. It changes nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..catalog import expect, preflight
from ..errors import ReviewRejected, SpecError
from ..runbook.spec import Runbook
from ..sql import lint, locks
from ..sql.statements import Statement, read_statements
from ..state.status import Status
from ..targets.resolve import Target
from . import report
from .base import PhaseRun
from .evidence import step

GO, NO_GO = "GO", "NO-GO"


class ReviewRun(PhaseRun):
    """Review a runbook's migration (or one of its declared variants) against a live target."""

    default_action = "review"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, variant: str = "", existing: str = "",
                 fail_on: str = lint.ERROR, squawk: bool = True, long_transaction_s: float = 60.0,
                 **kwargs: Any) -> None:
        super().__init__(phase, runbook, target, **kwargs)
        if fail_on not in lint.SEVERITIES:
            self._fail(SpecError("fail_on parameter", f"must be one of {', '.join(lint.SEVERITIES)}, not {fail_on!r}"))
        self.variant, self.fail_on, self.use_squawk = variant, fail_on, bool(squawk)
        self.long_transaction_s = float(long_transaction_s)
        try:
            self.files, self.rollback_files, self.why = runbook.review_scripts(variant)
        except SpecError as exc:
            self._fail(exc)
        self.existing = sorted(Path(existing).glob("*.sql")) if existing else runbook.existing_migrations
        self.checksums = {name: runbook.checksum(name) for name in [*self.files, *self.rollback_files]}
        self.findings: list[lint.Finding] = []
        self.statements: list[Statement] = []
        self.locks: list[locks.TableLock] = []
        self.detail.update({"variant": variant or None, "files": self.files, "rollback": self.rollback_files})

    # -- what the notebook calls, in order ------------------------------------------------

    def _read(self) -> list[Statement]:
        """The statements under review (a file with none is a no-op, which lint says)."""
        try:
            return [s for name in self.files for s in read_statements(self.runbook.file(name), "postgresql",
                                                                      self.runbook.display(name), empty=True)]
        except SpecError as exc:
            self._fail(exc)

    @step
    def scripts(self) -> pd.DataFrame:
        """What is under review: the files, in the order they would run."""
        self._guard_open()
        if self.why:
            report.say(f"**Variant `{self.variant}`.** {self.why}")
        self.statements = self._read()
        rows = [{"role": role, "file": self.runbook.display(name), "sha256": self.checksums[name][:12]}
                for role, names in (("migration", self.files), ("rollback", self.rollback_files)) for name in names]
        existing = f"{len(self.existing)} file(s), latest `{self.existing[-1].name}`" if self.existing else "none given"
        report.say(f"**Existing migrations:** {existing}. **Fail on:** {self.fail_on} or above."
                   + ("" if self.rollback_files else " **No rollback declared.**"))
        frame = pd.DataFrame(rows, columns=["role", "file", "sha256"])
        report.show(frame, caption=f"{len(self.statements)} statement(s) under review")
        return frame

    @step
    def lint(self) -> pd.DataFrame:
        """squawk and our own rules, with the target's catalog and server version as context."""
        self._guard_open()
        live, live_indexes = lint.live_catalog(self.conn)
        version = self.conn.dialect.server_version_info or ()
        names = {self.runbook.file(n): self.runbook.display(n) for n in [*self.files, *self.rollback_files]}
        result = lint.lint_files([self.runbook.file(n) for n in self.files], existing=self.existing, live=live,
                                 live_indexes=live_indexes, rollback=[self.runbook.file(n) for n in self.rollback_files],
                                 pg_version=".".join(str(p) for p in version[:2]) or None, squawk=self.use_squawk,
                                 names=names)
        self.findings += result.findings
        statements = self.statements or self._read()
        extra = preflight.extension_findings(self.raw, statements, self.target.name)
        extra += preflight.partitioned_index_findings(statements, preflight.partitions_of(self.raw))
        self.findings += extra
        result = lint.LintResult(result.findings + extra, result.files)
        frame = result.frame()
        report.say(f"**Lint:** {_counts(result.findings)}." + ("" if self.use_squawk else " (squawk not run)"))
        report.show(frame, caption="lint findings", status_column="severity")
        return frame

    @step
    def locks_taken(self) -> pd.DataFrame:
        """The lock each statement takes on each table, when run as written."""
        self._guard_open()
        if not self.statements:
            self.scripts()
        self.locks = locks.statement_locks(self.statements, preflight.index_tables(self.raw),
                                               preflight.fk_parents(self.raw))
        frame = locks.locks_frame(self.locks)
        report.show(frame, caption="locks per statement")
        return frame

    @step
    def tables(self) -> pd.DataFrame:
        """Size and estimated rows of each existing table the migration locks."""
        self._guard_open()
        frame = preflight.table_sizes(self.raw, locks.strongest_locks(self.locks))
        report.show(frame, caption="tables the migration locks (existing ones)")
        return frame

    @step
    def activity(self) -> dict[str, pd.DataFrame]:
        """Sessions holding locks on those tables, and long transactions, right now."""
        self._guard_open()
        self.conn.rollback()  # activity is snapshotted per transaction: read it fresh
        self.conn.begin()
        strongest = locks.strongest_locks(self.locks)
        holders = preflight.lock_holders(self.raw, sorted(strongest))
        long_txns = preflight.long_transactions(self.raw, self.long_transaction_s)
        self.findings += preflight.holder_findings(self.runbook.name, strongest, holders)
        self.findings += preflight.long_transaction_findings(self.runbook.name, long_txns)
        report.show(holders, caption="other sessions with locks on those tables")
        report.show(long_txns, caption=f"transactions open longer than {self.long_transaction_s:g} s")
        return {"lock holders": holders, "long transactions": long_txns}

    @step
    def invalid_indexes(self) -> pd.DataFrame:
        """Indexes a failed concurrent build left invalid."""
        self._guard_open()
        invalid = preflight.invalid_indexes(self.raw)
        created = {name for kind, name, _, _ in lint.build_model(self.statements).created if kind == "index"}
        self.findings += preflight.invalid_index_findings(self.runbook.name, invalid, created)
        report.show(invalid, caption="invalid indexes")
        return invalid

    @step
    def preconditions(self) -> pd.DataFrame:
        """The runbook's precondition queries: each must return no rows."""
        self._guard_open()
        results = expect.check_preconditions(self.conn, self.runbook.spec.preconditions)
        for result in results:
            if not result.ok:
                self.findings.append(lint.Finding(
                    lint.ERROR, "precondition", self.runbook.name, None, result.precondition.name,
                    f"{len(result.offenders)} offending row(s): {result.precondition.why or result.precondition.sql}",
                    "fix the data first; the schema and deploy phases refuse while this holds"))
                report.show(result.offenders, caption=f"offending rows for '{result.precondition.name}'")
        frame = expect.preconditions_frame(results)
        report.show(frame, caption="preconditions", status_column="result")
        return frame

    @step
    def verdict(self) -> pd.DataFrame:
        """Every finding in one table, most severe first, and the go/no-go."""
        self._guard_open()
        ordered = sorted(self.findings, key=lambda f: -lint.SEVERITIES.index(f.severity))  # stable: file order
        frame = lint.findings_frame(ordered)
        blocking = [f for f in ordered if lint.reaches([f], self.fail_on)]
        self.failures = [str(f) for f in blocking]
        self.detail.update({"verdict": NO_GO if blocking else GO, "findings": _count_map(self.findings)})
        word = NO_GO if blocking else GO
        report.say(f"## Verdict: {word}\n{_counts(self.findings)}; "
                   + (f"{len(blocking)} at {self.fail_on} or above." if blocking
                      else f"nothing at {self.fail_on} or above."))
        report.show(frame, caption="findings", status_column="severity")
        return frame

    @step
    def finish(self) -> None:
        """Record the verdict in the ledger; raise on no-go."""
        self._guard_open()
        if "verdict" not in self.detail:
            self.verdict()
        if self.failures:
            self._fail(ReviewRejected(len(self.failures), self.fail_on, self.failures[0]))
        self._commit("review", Status.PASSED)
        report.say(f"**Review passed (GO)** and was recorded on {self.target.name} (run {self.run_id}).")


def _count_map(findings: list[lint.Finding]) -> dict[str, int]:
    return {s: sum(1 for f in findings if f.severity == s) for s in reversed(lint.SEVERITIES)}


def _counts(findings: list[lint.Finding]) -> str:
    counts = _count_map(findings)
    return ", ".join(f"{n} {s}(s)" for s, n in counts.items())
