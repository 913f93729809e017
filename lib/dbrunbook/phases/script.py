"""The phases that apply one of the runbook's scripts as written: ``schema`` (the migration, forward)
and ``rollback`` (its rollback, backward), the registry's ``script`` and ``direction`` of each.

Both hold one transaction from the first look at the schema to :meth:`ScriptRun.finish`, which
commits only when every check passed (and never in a dry run); a script with a statement that
cannot run in a transaction runs one statement at a time, each written ahead in the ledger. A
failure rolls back, records ``failed`` in the ledger on a separate connection, and raises one
readable line. What differs between the two directions is in :class:`SchemaRun` and
:class:`RollbackRun`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from ..catalog import introspect
from ..catalog.expectations import Expectations
from ..errors import (
    ChecksFailed,
    DbrunbookError,
    GuardRefused,
    SpecError,
    StatementFailed,
)
from ..runbook.spec import Runbook
from ..sql import effects
from ..sql.execute import (
    Executed,
    executed_frame,
    run_autocommit_statement,
    run_statement,
    statements_frame,
)
from ..sql.statements import Statement, units
from ..state import ledger
from ..state.status import Direction, Status
from ..targets.resolve import Target
from . import registry, report
from .base import PhaseRun
from .evidence import step

APPLY = "apply"
NOOP = "noop"


@dataclass(frozen=True)
class Plan:
    decision: str
    statements: list[Statement]
    in_transaction: bool
    reason: str


class ScriptRun(PhaseRun):
    """Apply the phase's script in the phase's transaction and prove the result."""

    #: The ledger's words for this direction: the state while a step-by-step attempt is in flight,
    #: the state when it is done, the event's action, and how the page says it is done.
    in_flight_state: Status
    done_state: Status
    action: str
    done: str

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, dry_run: bool = False,
                 run_id: str = "", archive_dir: str | Path = "", confirm: str = "") -> None:
        info = registry.phase_info(phase)
        if info.script is None or info.direction is None:
            raise SpecError(phase, f"phase {phase} applies no script of the runbook")
        self.kind, self.direction = info.script, info.direction
        super().__init__(phase, runbook, target, dry_run=dry_run, run_id=run_id, archive_dir=archive_dir,
                         confirm=confirm)
        self.before: introspect.Snapshot | None = None
        self.plan_: Plan | None = None
        self.executed: list[Executed] | None = None
        self.decision: ledger.Decision | None = None

    # -- what the notebook calls, in order ------------------------------------------------

    @property
    def script(self) -> str:
        return self.runbook.script_name(self.kind)

    @property
    def expectations(self) -> Expectations:
        """What must hold once the script has run."""
        raise NotImplementedError

    @step
    def plan(self) -> Plan:
        """Read the script, decide what to do from the ledger, and show both."""
        self._guard_open()
        try:
            statements, wrapped = self.runbook.read_script(self.kind, self.target.dialect)
        except DbrunbookError as exc:
            self._fail(exc)
        blocking = [s for s in statements if not s.transactional]
        # The source tool ran it outside a transaction (goose NO TRANSACTION): so does this phase.
        declared_outside = not self.runbook.spec.in_transaction and bool(statements)
        in_transaction = not blocking and not declared_outside
        self.checksums = self.runbook.sql_checksums()
        checksum = self.runbook.migration_checksum()
        state = self.state
        live = ledger.lock_held(self.conn, ledger.runbook_lock_key(self.runbook.name))
        self.decision = ledger.decide(
            self.direction, state, checksum, live=live,
            script=self.runbook.display(self.runbook.script_name("migration")), target=self.target.name,
            repeatable=self.runbook.spec.repeatable)
        if self.decision.error is not None:
            self._fail(self.decision.error)
        decision = NOOP if self.decision.action == Status.NOOP else APPLY
        reason = self.decision.reason + (": nothing to apply, the expectations are verified again"
                                         if self.direction == Direction.FORWARD and decision == NOOP else "")
        if decision == APPLY and not self.decision.recovery:
            reason += f": run {self.script}"
        if blocking and self.dry_run:
            first = blocking[0]
            self._fail(GuardRefused(
                f"{first.file}:{first.line}: statement {first.index} cannot run inside a transaction "
                f"({first.summary}), so a dry run cannot rehearse it and roll it back"))
        if declared_outside and self.dry_run:
            self._fail(GuardRefused(f"{self.runbook.name}/runbook.yaml says in_transaction: false, so a dry run "
                                    "cannot rehearse the script and roll it back"))
        if decision == APPLY:
            self._check_before_applying(self.decision)
        self.plan_ = Plan(decision, statements, in_transaction, reason)
        state_text = "none" if state is None else f"{self.decision.state} (checksum {(state.checksum or '')[:12]})"
        lines = [f"**Ledger state on {self.target.name}:** {state_text}", f"**Decision:** {reason}"]
        if wrapped and in_transaction:
            lines.append("**The author's own transaction:** the script's `BEGIN` ... `COMMIT` runs inside the "
                         "phase's one transaction, with its checks and ledger entry: what the author grouped is "
                         "applied whole or not at all, and so is the rest.")
        elif wrapped:
            lines.append("**The author's own transaction:** each `BEGIN` ... `COMMIT` of the script runs as one "
                         "transaction, written ahead in the ledger as one step; a failure inside it leaves it undone.")
        if not statements:
            lines.append(f"**{self.script} holds no statement** (empty, or comments only): running it changes "
                         "nothing; the phase passes and the ledger records it like any other.")
        if blocking or declared_outside:
            names = ", ".join(f"#{s.index} (line {s.line})" for s in blocking)
            why = (f"statement(s) {names} cannot run inside a transaction block (e.g. CREATE INDEX CONCURRENTLY)"
                   if blocking else "runbook.yaml says `in_transaction: false` (its source tool runs it outside a "
                                    "transaction)")
            lines.append(f"**Not in one transaction:** {why}. The script runs one "
                         "statement at a time in autocommit; a failure part-way leaves the earlier "
                         f"statements applied, and {self.runbook.script_name('rollback')} is the way back.")
        else:
            lines.append("**Transaction:** all statements, the checks and the ledger entry run in one "
                         "transaction; nothing is committed unless every check passes.")
        report.say("\n\n".join(lines))
        report.show(statements_frame(statements), caption=self.script)
        return self.plan_

    @step
    def snapshot(self) -> introspect.Snapshot:
        """Fingerprint the schema before anything changes."""
        self._guard_open()
        self.before = introspect.snapshot(self.conn)
        report.say(f"**Schema fingerprint before:** `{self.before.fingerprint}`")
        report.show(self.before.summary(), caption="objects in the schema")
        return self.before

    @step
    def apply(self) -> pd.DataFrame:
        """Run the script (or nothing, for a verified no-op)."""
        self._guard_open()
        plan = self._require_plan()
        if self.before is None:
            # The ledger must hold the schema as it was before the script, even if the
            # fingerprint cell was skipped.
            self.before = introspect.snapshot(self.conn)
        if plan.decision == NOOP:
            self.executed = []
            report.say(f"**Nothing to run:** {plan.reason}.")
            return executed_frame([])
        self._before_statements(plan.statements)
        try:
            if plan.in_transaction:
                self.executed = self._run_in_transaction(plan.statements)
            else:
                self.executed = self._run_autocommit(plan.statements)
        except StatementFailed as exc:
            if not plan.in_transaction and exc.index > 1:
                exc.args = (f"{exc} (autocommit: statements 1 to {exc.index - 1} stay applied and the ledger says "
                            f"failed; fix and run {self.phase} again to resume, or run the rollback phase)",)
            self._fail(exc)
        except DbrunbookError as exc:
            self._fail(exc)
        except KeyboardInterrupt:
            self.interrupted()
            raise
        self.detail["statements"] = len(self.executed)
        frame = executed_frame(self.executed)
        total = sum(e.seconds for e in self.executed)
        report.say(f"**Ran {len(self.executed)} statement(s)** in {total * 1000:.1f} ms"
                   + (" (not committed yet)." if plan.in_transaction else " (autocommit)."))
        report.show(frame)
        return frame

    @step
    def check_expectations(self) -> pd.DataFrame:
        """Check every declared expectation against the schema as it is now."""
        self._guard_open()
        return self._check(self.expectations, verify=self.direction == Direction.FORWARD)

    @step
    def show_diff(self) -> pd.DataFrame:
        """What changed in the schema since :meth:`snapshot`."""
        self._guard_open()
        if self.before is None:
            raise DbrunbookError("take the snapshot (run.snapshot()) before asking for a diff")
        after = introspect.snapshot(self.conn)
        frame = introspect.diff(self.before, after)
        report.say(f"**Schema fingerprint now:** `{after.fingerprint}` "
                   f"({'unchanged' if after.fingerprint == self.before.fingerprint else f'{len(frame)} change(s)'})")
        report.show(frame, status_column="change")
        return frame

    @step
    def finish(self) -> None:
        """Commit (or roll back a dry run), record the outcome, and raise if anything failed."""
        self._guard_open()
        plan = self._require_plan()
        if self.executed is None:
            self._fail(DbrunbookError(f"{self.phase}: the script was never applied (run.apply())"))
        if self.failures:
            self._fail(ChecksFailed(self.phase, self.failures))
        action = self._action(plan)
        if self.dry_run:
            self.conn.rollback()
            self._record(action, Status.PASSED)
            self._close()
            report.say(f"**Dry run passed and was rolled back:** nothing was committed to {self.target.name}.")
            return
        if not plan.in_transaction:
            self.conn.commit()
            self.conn.begin()
        if plan.decision == APPLY:
            self._move(self.done_state, self.conn)
            kept = self._record_done()
            if kept:
                self.detail["tool_history"] = kept
                report.say(f"**The source tool's history, kept in step:** {kept}.")
        event = self._event(action, Status.PASSED if plan.decision == APPLY else Status.NOOP)
        ledger.record_event(self.conn, event)
        self.conn.commit()
        self._recorded(event)
        self._close()
        done = self.done if plan.decision == APPLY else "verified (no-op)"
        report.say(f"**{self.phase} passed:** {self.runbook.name} {done} on {self.target.name} and recorded "
                   f"in its ledger (run {self.run_id}).")

    # -- internals ------------------------------------------------------------------------

    def _check_before_applying(self, decision: ledger.Decision) -> None:
        """What must hold before the script may run (a failure refuses, nothing changed)."""

    def _before_statements(self, statements: list[Statement]) -> None:
        """Called just before the script's statements run."""

    def _record_done(self) -> str | None:
        """In the transaction that records the script done: keep the source tool's history in step
        (what it recorded, or None)."""
        return None

    def _action(self, plan: Plan) -> str:
        return "verify" if plan.decision == NOOP else self.action

    def _move(self, new: str, conn: sa.Connection, **fields: object) -> ledger.State:
        """Move the runbook's state; the schema as it was before this attempt goes along, and the
        ledger keeps it only when this is the first attempt of the cycle."""
        assert self.before is not None  # apply() always takes it
        moved = ledger.move(
            conn, self.runbook.name, new, checksum=self.runbook.migration_checksum(), checksums=self.checksums,
            run_id=self.run_id, operator=self.operator, phase=self.phase, snapshot_before=self.before.objects,
            schema_after=introspect.snapshot(conn), **fields)
        self.in_flight = new in ledger.IN_FLIGHT
        return moved

    def _skip_done(self, raw: Any, stmt: Statement) -> bool:
        """In recovery (the target is part-way), whether this statement's effect is in place; an
        invalid index a killed CONCURRENTLY build left is dropped so that it is built again."""
        if self.decision is None or not self.decision.recovery:
            return False
        found = effects.statement_effects(stmt)
        state = effects.state_of(raw, found)
        if state == effects.INVALID:
            for effect in found or ():
                if effect.kind == "index":
                    effects.drop_invalid_index(raw, effect, concurrently=not stmt.transactional)
            return False
        return state == effects.DONE

    def _run_in_transaction(self, statements: list[Statement]) -> list[Executed]:
        done: list[Executed] = []
        skipped = []
        for stmt in statements:
            if self._skip_done(self.raw, stmt):
                skipped.append(stmt.index)
                continue
            done.append(run_statement(self.conn, stmt, len(statements)))
        if skipped:
            report.say(f"**Already done, skipped:** statement(s) {', '.join(map(str, skipped))} (their effect is in "
                       "the catalog: an earlier attempt committed them).")
        return done

    def _checksums(self) -> dict[str, str]:
        """The SQL files this phase used (empty if it failed before reading them)."""
        names = {*self.runbook.migration_files, *self.runbook.script_files(self.kind)}
        return {name: digest for name, digest in self.checksums.items() if name in names}

    def _run_autocommit(self, statements: list[Statement]) -> list[Executed]:
        """One statement at a time, each committing on its own (an author's ``BEGIN`` ... ``COMMIT``
        as one transaction), written ahead in the ledger: the intent before each step, the outcome
        after it, so a kill at any instant leaves a ledger naming the step that may be half done."""
        self.conn.commit()  # nothing written yet; leaves no transaction holding locks
        auto = self._hold_runbook_lock()
        # A step is what commits on its own: a statement, or an author's BEGIN ... COMMIT group.
        steps = units(statements)
        with self.engine.begin() as conn:
            self._move(self.in_flight_state, conn,
                       step=0, steps=len(steps), steps_done=0, step_sql=None, error=None)
        done: list[Executed] = []
        for number, unit in enumerate(steps, start=1):
            first = unit[0]
            summary = first.summary if len(unit) == 1 else \
                f"BEGIN ... COMMIT of {len(unit)} statements ({first.file}:{first.line}-{unit[-1].line})"
            with self.engine.begin() as conn:
                ledger.step_intent(conn, self.runbook.name, number, len(steps), summary)
            if self._unit_done(auto, unit):
                report.say(f"**Already done, skipped:** statement {first.index} ({summary}).")
            elif len(unit) == 1:
                done.append(run_autocommit_statement(auto, first, len(statements)))
            else:
                with auto.transaction():  # the author's group: committed whole, or rolled back whole
                    done += [run_autocommit_statement(auto, stmt, len(statements)) for stmt in unit]
            with self.engine.begin() as conn:
                ledger.step_outcome(conn, self.runbook.name, number)
        self.conn.begin()
        return done

    def _unit_done(self, raw: Any, unit: list[Statement]) -> bool:
        """In recovery, whether a step's effect is in place: a group committed whole or not at all,
        so one of its statements whose effect the catalog shows tells for all of them."""
        if len(unit) == 1:
            return self._skip_done(raw, unit[0])
        return any(self._skip_done(raw, stmt) for stmt in unit if effects.statement_effects(stmt))

    def _failed_action(self) -> str:
        return self._action(self.plan_) if self.plan_ is not None else self.action

    def _require_plan(self) -> Plan:
        if self.plan_ is None:
            self.plan()
        assert self.plan_ is not None
        return self.plan_
