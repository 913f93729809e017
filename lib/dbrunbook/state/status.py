"""Every status word dbrunbook writes or shows, spelled once.

A runbook's state on a target (``pending`` ... ``rolled_back``), a phase's or a run's outcome
(``passed``, ``failed``, ``noop``, ``paused``, ``interrupted``; ``running`` while it runs), a data
migration's status (``completed`` beside the others) and a fleet database's (``skipped``,
``not started``). The values are what the ledger, the manifests and the pages hold, so old ledgers
read as they were written; seed 002's ``rolled-back``, which data migrations recorded by earlier
releases hold, reads as ``rolled_back``.
"""
from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """Which way a phase moves a runbook's state: towards applied, or back."""

    FORWARD = "forward"
    BACKWARD = "backward"


class Status(StrEnum):
    # a runbook's state on a target (dbrunbook.state.ledger owns the moves between them)
    PENDING = "pending"            # no row: never applied here (or reset by prepare)
    APPLYING = "applying"          # a forward phase is running steps that commit on their own
    APPLIED = "applied"
    PARTIAL = "partial"            # a deploy stopped on its lock policy after some steps committed
    FAILED = "failed"              # a step failed after earlier ones committed (also an outcome)
    INTERRUPTED = "interrupted"    # a signal, or a kill (an ``applying`` nobody holds any more)
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    # a phase's or a run's outcome
    PASSED = "passed"
    NOOP = "noop"
    PAUSED = "paused"              # a backfill slice that stopped at a batch boundary, resumable
    RUNNING = "running"
    # a data migration's end
    COMPLETED = "completed"
    # a fleet database that needed nothing, or that a halt left alone
    SKIPPED = "skipped"
    NOT_STARTED = "not started"

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        if value == "rolled-back":  # seed 002's spelling, in data migrations recorded before
            return cls.ROLLED_BACK
        return None
