"""The ledger each target keeps: runbook states, the moves between them, and events.

The ``state`` package alone owns what ran on a target, as pgroll's ``pkg/state`` owns its state:
the tables (:mod:`.storage`), the states and the transitions between them and the one decision
every phase and ``dbrunbook status`` take from a state (here), data migrations
(:mod:`.checkpoints`), seals (:mod:`.seals`) and approvals (:mod:`.approvals`). No module outside
it writes SQL against those tables.

Steps that commit on their own (an autocommit script, each online deploy step, each backfill
batch) are written ahead: the intent before the step, the outcome after it, so a kill at any
instant leaves a ledger that names the step that may be half done.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    import pandas as pd

    from ..runbook.spec import Runbook

from ..catalog.introspect import Snapshot
from ..dialects import Dialect
from ..errors import DbrunbookError, DriftError, TargetBusy
from . import schemas
from .identity import now, operator
from .status import Direction, Status
from .storage import _STATE_V2_COLUMNS, ledger_exists, tables

#: A runbook's states on a target.
STATES = (Status.PENDING, Status.APPLYING, Status.APPLIED, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED,
          Status.ROLLING_BACK, Status.ROLLED_BACK)
IN_FLIGHT = (Status.APPLYING, Status.ROLLING_BACK)

#: state -> the states it may move to. Anything else is a bug or a race, and raises.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.APPLYING, Status.APPLIED}),
    # Back to where it was when the attempt applied nothing (a lock timeout on step 1).
    Status.APPLYING: frozenset({Status.APPLYING, Status.APPLIED, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED,
                                Status.PENDING, Status.ROLLED_BACK}),
    Status.APPLIED: frozenset({Status.APPLIED, Status.ROLLING_BACK, Status.ROLLED_BACK}),
    Status.PARTIAL: frozenset({Status.APPLYING, Status.APPLIED, Status.PARTIAL, Status.ROLLING_BACK,
                               Status.ROLLED_BACK}),
    Status.FAILED: frozenset({Status.APPLYING, Status.APPLIED, Status.ROLLING_BACK, Status.ROLLED_BACK}),
    Status.INTERRUPTED: frozenset({Status.APPLYING, Status.APPLIED, Status.ROLLING_BACK, Status.ROLLED_BACK}),
    Status.ROLLING_BACK: frozenset({Status.ROLLING_BACK, Status.ROLLED_BACK, Status.FAILED, Status.INTERRUPTED}),
    Status.ROLLED_BACK: frozenset({Status.APPLYING, Status.APPLIED}),
}



# -- decisions ------------------------------------------------------------------------------------
APPLY, RESUME, REFUSE = "apply", "resume", "refuse"



class IllegalTransition(DbrunbookError):
    """A state change the model does not allow (a bug, or two runs racing)."""

    def __init__(self, runbook: str, old: str, new: str) -> None:
        self.old, self.new = old, new
        allowed = ", ".join(sorted(TRANSITIONS.get(old, ()))) or "nothing"
        super().__init__(f"ledger: {runbook} cannot go from {old} to {new} (from {old}: {allowed})")


# -- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    run_id: str
    runbook: str
    phase: str
    action: str
    status: str
    target: str
    operator: str
    started_at: datetime
    finished_at: datetime
    dry_run: bool = False
    error: str | None = None
    checksums: dict[str, str] | None = None
    detail: dict[str, Any] | None = None


def record_event(conn: Connection, event: Event) -> None:
    t = tables(conn.dialect.name)
    conn.execute(t.events.insert().values(
        run_id=event.run_id, runbook=event.runbook, phase=event.phase, action=event.action,
        status=event.status, target=event.target, operator=event.operator,
        started_at=event.started_at, finished_at=event.finished_at,
        duration_s=(event.finished_at - event.started_at).total_seconds(),
        dry_run=event.dry_run, error=event.error, checksums=event.checksums or {},
        detail=event.detail,
    ))


def events_frame(conn: Connection, runbook: str, limit: int = 50) -> pd.DataFrame:
    """The latest events of a runbook on this target, newest first."""
    import pandas as pd  # frames are for readers; a run's start does not pay for pandas

    columns = ["run_id", "phase", "action", "status", "dry_run", "operator", "started_at",
               "duration_s", "error"]
    if not ledger_exists(conn):
        return pd.DataFrame(columns=columns)
    t = tables(conn.dialect.name)
    query = (sa.select(*[t.events.c[c] for c in columns]).where(t.events.c.runbook == runbook)
             .order_by(t.events.c.id.desc()).limit(limit))
    return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)


def run_events(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The events one run recorded, oldest first."""
    if not ledger_exists(conn):
        return []
    t = tables(conn.dialect.name)
    rows = conn.execute(sa.select(t.events).where(t.events.c.run_id == run_id).order_by(t.events.c.id))
    return [dict(r) for r in rows.mappings()]


# -- runbook state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class State:
    runbook: str
    state: str
    checksum: str | None
    checksums: dict[str, str]
    run_id: str
    operator: str
    updated_at: datetime
    fingerprint_before: str | None
    fingerprint_after: str | None
    snapshot_before: dict[str, str] | None
    phase: str | None = None
    step: int | None = None
    steps: int | None = None
    steps_done: int | None = None
    step_sql: str | None = None
    error: str | None = None


def read_state(conn: Connection, runbook: str) -> State | None:
    if not ledger_exists(conn):
        return None
    t = tables(conn.dialect.name)
    columns = [c for c in State.__dataclass_fields__ if c in t.state.c]
    try:
        row = conn.execute(sa.select(*[t.state.c[c] for c in columns])
                           .where(t.state.c.runbook == runbook)).mappings().first()
    except sa.exc.ProgrammingError:
        # A version-1 ledger not upgraded yet (read-only commands do not upgrade): its columns only.
        conn.rollback()
        old = [c for c in columns if c not in {col.name for col in _STATE_V2_COLUMNS()}]
        row = conn.execute(sa.select(*[t.state.c[c] for c in old])
                           .where(t.state.c.runbook == runbook)).mappings().first()
    if row is None:
        return None
    return State(**dict(row))


def _write(conn: Connection, state: State) -> None:
    t = tables(conn.dialect.name)
    values = {k: getattr(state, k) for k in State.__dataclass_fields__}
    conn.execute(t.state.delete().where(t.state.c.runbook == state.runbook))
    conn.execute(t.state.insert().values(**values))


def check_transition(runbook: str, old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(runbook, old, new)


def move(conn: Connection, runbook: str, new: str, *, schema_after: Snapshot | None = None, **changes: Any) -> State:
    """Move a runbook to ``new`` (checked against :data:`TRANSITIONS`) with the given fields;
    the fingerprint before is never overwritten once recorded for the current cycle (see
    :func:`first_snapshot`). ``schema_after``: the schema as the move leaves it, its fingerprint
    recorded on the state and, when the move ends an attempt, the whole of it for drift
    (:func:`dbrunbook.state.schemas.record_schema`)."""
    if schema_after is not None:
        changes["fingerprint_after"] = schema_after.fingerprint
    current = read_state(conn, runbook)
    old = current.state if current is not None else Status.PENDING
    check_transition(runbook, old, new)
    base = current or State(runbook=runbook, state=Status.PENDING, checksum=None, checksums={}, run_id="",
                            operator=operator(), updated_at=now(), fingerprint_before=None,
                            fingerprint_after=None, snapshot_before=None)
    snapshot = changes.pop("snapshot_before", None)
    if first_snapshot(current) and snapshot is not None:
        changes["snapshot_before"] = snapshot
        changes["fingerprint_before"] = Snapshot(snapshot).fingerprint
    updated = replace(base, state=new, updated_at=now(), **changes)
    if new in (Status.APPLIED, Status.ROLLED_BACK):  # a finished attempt has no step in flight
        updated = replace(updated, step=None, steps=None, steps_done=None, step_sql=None, error=None)
    _write(conn, updated)
    if schema_after is not None and new in (Status.APPLIED, Status.ROLLED_BACK):
        schemas.record_schema(conn, run_id=updated.run_id, runbook=runbook, phase=updated.phase or new,
                              snapshot=schema_after)
    return updated


def first_snapshot(current: State | None) -> bool:
    """Whether an attempt starting now is the first of its cycle, so that the schema as it is
    now is the "before" a rollback must restore: never applied, or rolled back since. A
    resume (partial, failed, interrupted) or a re-verification keeps the recorded one."""
    return current is None or current.state == Status.ROLLED_BACK or current.snapshot_before is None


def restore(conn: Connection, previous: State | None, runbook: str) -> None:
    """Put back the state an attempt started from, when the attempt applied nothing."""
    current = read_state(conn, runbook)
    old = current.state if current is not None else Status.PENDING
    back = previous.state if previous is not None else Status.PENDING
    check_transition(runbook, old, back)
    t = tables(conn.dialect.name)
    if previous is None:
        conn.execute(t.state.delete().where(t.state.c.runbook == runbook))
    else:
        _write(conn, previous)


def step_intent(conn: Connection, runbook: str, step: int, steps: int, sql: str) -> None:
    """Before a step that commits on its own: which one is in flight (written ahead)."""
    _progress(conn, runbook, step=step, steps=steps, step_sql=sql[:500])


def step_outcome(conn: Connection, runbook: str, step: int) -> None:
    """After that step committed (or was found done): steps 1..step are done."""
    _progress(conn, runbook, steps_done=step)


def _progress(conn: Connection, runbook: str, **values: Any) -> None:
    t = tables(conn.dialect.name)
    done = conn.execute(t.state.update().where(t.state.c.runbook == runbook, t.state.c.state.in_(IN_FLIGHT))
                        .values(updated_at=now(), **values))
    if done.rowcount != 1:
        current = read_state(conn, runbook)
        raise IllegalTransition(runbook, current.state if current else Status.PENDING, "a step in flight")


def reset(conn: Connection, runbook: str) -> None:
    """Forget a runbook on this target (``prepare`` only: it reloads the "before" fixture)."""
    t = tables(conn.dialect.name)
    conn.execute(t.state.delete().where(t.state.c.runbook == runbook))
    conn.execute(t.migrations.delete().where(t.migrations.c.runbook == runbook))


def runbooks_with_state(conn: Connection) -> list[str]:
    """The runbooks this target has a state for."""
    if not ledger_exists(conn):
        return []
    t = tables(conn.dialect.name)
    return [str(r[0]) for r in conn.execute(sa.select(t.state.c.runbook).order_by(t.state.c.runbook))]


def settle_interrupt(conn: Connection, *, runbook: str, run_id: str, phase: str, target: str, why: str,
                     started_at: datetime) -> str:
    """What a runner records after it stopped a run from outside (its kernel is gone): an attempt
    this run had in flight becomes ``interrupted`` (the steps done stay done), a backfill it was
    running is ``paused`` at its checkpoint, and the event says so. Returns the state now."""
    state = read_state(conn, runbook)
    if state is not None and state.state in IN_FLIGHT and state.run_id == run_id:
        state = move(conn, runbook, Status.INTERRUPTED, error=why)
    t = tables(conn.dialect.name)
    # A backfill this run was in stops where its checkpoint is (no row is touched where none ran).
    conn.execute(t.migrations.update().where(t.migrations.c.runbook == runbook, t.migrations.c.run_id == run_id,
                                             t.migrations.c.status == Status.RUNNING)
                 .values(status=Status.PAUSED, error=why, updated_at=now()))
    record_event(conn, Event(run_id=run_id, runbook=runbook, phase=phase, action="interrupted", status=Status.INTERRUPTED,
                             target=target, operator=operator(), started_at=started_at, finished_at=now(),
                             error=why, detail={"in_flight": in_flight_text(state) if state else ""}))
    return effective_state(state, live=False)


# -- who is running: liveness through session advisory locks ---------------------------------------

def runbook_lock_key(runbook: str) -> str:
    """The session advisory lock a run holds while it moves this runbook step by step."""
    return f"dbrunbook.runbook:{runbook}"


def lock_held(conn: Connection, key: str) -> bool:
    """Whether another session holds the advisory lock ``key`` on this database now."""
    if not Dialect(conn.dialect.name).sessions:
        return False
    return bool(conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND objid = (hashtext(:key)::bigint & 4294967295)::oid AND pid <> pg_backend_pid() "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"),
        {"key": key}).scalar())


def effective_state(state: State | None, live: bool) -> str:
    """The state as it truly is: an attempt in flight that no live session holds was killed."""
    if state is None:
        return Status.PENDING
    if state.state in IN_FLIGHT and not live:
        return Status.INTERRUPTED
    return state.state


# -- the one decision ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What a phase does given the ledger: ``apply``, ``resume``, ``noop`` or ``refuse``."""

    action: str
    state: str                   # the effective state it was taken from
    reason: str
    error: DbrunbookError | None = None
    #: Steps whose effect is already in the catalog are skipped (the target is part-way).
    recovery: bool = False


def in_flight_text(state: State) -> str:
    """``step 2 of 4: CREATE INDEX ...`` for a state with a step in flight."""
    if not state.step:
        return ""
    done = state.steps_done or 0
    if done >= state.step:
        return f"after step {state.step} of {state.steps} ({done} done)"
    # A step that failed or hit its lock timeout rolled back whole; only a killed one may be half done.
    maybe = "" if state.state in (Status.FAILED, Status.PARTIAL) else "; it may be half done"
    return f"at step {state.step} of {state.steps} ({done} done{maybe}): {state.step_sql or '?'}"


def decide(direction: str, state: State | None, checksum: str, *, live: bool = False,
           script: str = "the migration", target: str = "", repeatable: bool = False) -> Decision:
    """The one decision, taken by schema, deploy and rollback, and shown by ``status``.

    Forward: apply (pending, rolled back), noop (applied, same checksum), resume (part-way,
    same checksum), refuse (drift, or another run in flight); a script changed after a step-by-step
    attempt failed at its first step is applied (nothing of it stayed); a repeatable migration (Flyway's
    ``R__``) changed since it was applied is applied again instead of refused. Backward: apply from applied or
    any part-way state (recovery), noop when there is nothing to undo, refuse while in flight."""
    current = effective_state(state, live)
    where = f" on {target}" if target else ""
    if state is not None and current in IN_FLIGHT:
        return Decision(REFUSE, current, "another run is in flight", TargetBusy(
            f"refused: run {state.run_id} ({state.operator}) is {current.replace('_', ' ')} {state.runbook}{where} "
            f"right now ({in_flight_text(state) or 'starting'}); wait for it"))
    if direction == Direction.BACKWARD:
        if current in (Status.PENDING, Status.ROLLED_BACK):
            what = "already rolled back" if current == Status.ROLLED_BACK else "never applied on this target"
            return Decision(Status.NOOP, current, f"{what}: nothing to undo, the reverse expectations are verified again")
        assert state is not None
        if current == Status.APPLIED:
            return Decision(APPLY, current, f"applied at {state.updated_at:%Y-%m-%d %H:%M} UTC by {state.operator}")
        return Decision(APPLY, current, f"{describe(state, checksum, live=live)[1]}: undo what was done; steps "
                        "whose object is already gone are skipped", recovery=True)
    if current in (Status.PENDING, Status.ROLLED_BACK):
        return Decision(APPLY, current, "not applied on this target yet" if current == Status.PENDING
                        else "rolled back earlier: apply again")
    assert state is not None
    if state.checksum != checksum and repeatable and current == Status.APPLIED:
        was = (state.checksum or "?")[:12]
        return Decision(APPLY, current, f"repeatable, and {script} changed since it was applied ({was} at "
                                        f"{state.updated_at:%Y-%m-%d %H:%M} UTC; now {checksum[:12]}): apply it again")
    if state.checksum != checksum and current == Status.FAILED and not state.steps_done:
        # A step-by-step attempt that failed at its first step committed nothing of the script (a
        # group is rolled back whole; an invalid index a failed CONCURRENTLY build left is dropped in
        # recovery): the fixed file is what runs now, as goose or dbmate users expect.
        return Decision(APPLY, current, f"failed at its first step, before any of it was committed; {script} changed "
                                        f"since ({(state.checksum or '?')[:12]} -> {checksum[:12]}): apply it",
                        recovery=True)
    if state.checksum != checksum:
        return Decision(REFUSE, current, "drift", DriftError(
            f"{script} changed since it was {current.replace('_', ' ')}{where} ({(state.checksum or '?')[:12]} at "
            f"{state.updated_at:%Y-%m-%d %H:%M} by {state.operator}; the file is now {checksum[:12]}): "
            "roll back first, or restore the file"))
    if current == Status.APPLIED:
        return Decision(Status.NOOP, current, f"already applied with this checksum ({checksum[:12]}) at "
                        f"{state.updated_at:%Y-%m-%d %H:%M} UTC by {state.operator}")
    return Decision(RESUME, current, f"{describe(state, checksum, live=live)[1]}: resume; every step is checked "
                    "against the catalog and the ones already done are skipped", recovery=True)


def describe(state: State | None, checksum: str, *, live: bool = False, script: str = "the migration",
             repeatable: bool = False) -> tuple[str, str]:
    """(state, one line of detail) for ``dbrunbook status`` and the decisions' reasons."""
    current = effective_state(state, live)
    if state is None:
        return Status.PENDING, f"{script} ({checksum[:12]}) has not been applied here"
    when = f"{state.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    run = f"run {state.run_id} by {state.operator}"
    if current == Status.APPLIED:
        if state.checksum != checksum and repeatable:
            return "applied (changed: runs again)", (f"applied {state.checksum[:12] if state.checksum else '?'}; "
                                                     f"{script} is now {checksum[:12]} and is repeatable")
        if state.checksum != checksum:
            return "applied (DRIFT)", (f"applied {state.checksum[:12] if state.checksum else '?'} but {script} "
                                       f"is now {checksum[:12]}")
        return "applied (up to date)", f"{script} {checksum[:12]} applied {when} by {state.operator}, run {state.run_id}"
    if current == Status.ROLLED_BACK:
        return "rolled back", f"rolled back {when} by {state.operator}, run {state.run_id}"
    direction = "rolling back" if state.state == Status.ROLLING_BACK or state.phase == "rollback" else "applying"
    step = in_flight_text(state)
    if current in IN_FLIGHT:
        return current.replace("_", " "), f"{direction} now ({run}) {step}".rstrip()
    if current == Status.INTERRUPTED:
        killed = "" if state.state == Status.INTERRUPTED else " (killed: no live session holds it)"
        return (f"interrupted {step}".rstrip(),
                f"{state.phase or direction} interrupted{killed} {when}, {run}; run it again to resume, or run the "
                "rollback phase")
    if current == Status.PARTIAL:
        return "partial", (f"a deploy stopped part-way {when} ({run}) {step}; deploy again to resume, or roll back"
                           .replace("  ", " "))
    return (f"failed {step}".rstrip(),
            f"{state.phase or direction} failed {when} ({run}): {state.error or '?'}; fix and run again to resume, "
            "or run the rollback phase")


def describe_runbook(state: State | None, book: Runbook, *, live: bool = False) -> tuple[str, str]:
    """:func:`describe` for a loaded runbook: its migration's checksum and name, and whether it is
    repeatable."""
    return describe(state, book.migration_checksum(), live=live, script=book.script_name("migration"),
                    repeatable=book.spec.repeatable)
