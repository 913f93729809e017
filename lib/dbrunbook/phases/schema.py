"""The schema phase: apply a runbook's migration to a development or rehearsal target and prove the
expectations (its preconditions first); the source tool's history is kept in step."""
from __future__ import annotations

from ..catalog.expectations import Expectations
from ..state import ledger, toolhistory
from ..state.status import Status
from .script import ScriptRun


class SchemaRun(ScriptRun):
    in_flight_state, done_state, action, done = Status.APPLYING, Status.APPLIED, "apply", "applied"

    @property
    def expectations(self) -> Expectations:
        return self.runbook.spec.expect

    def _check_before_applying(self, decision: ledger.Decision) -> None:
        if not decision.recovery:  # a resumed attempt met them the first time
            self._check_preconditions()

    def _record_done(self) -> str | None:
        return toolhistory.record_applied(self.conn, self.runbook.spec.origin,
                                          self.runbook.file(self.runbook.migration_files[0]), self.operator)
