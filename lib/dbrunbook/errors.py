"""The one user-facing error family of dbrunbook.

Every error a user can cause (bad input, refused guard, failed statement, failed check) is a
:class:`DbrunbookError`; the CLI prints its message as one line and exits non-zero, and in a
notebook it is shown as that one line instead of a traceback.
"""
from __future__ import annotations

from pathlib import Path


class DbrunbookError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is one readable line."""


class SpecError(DbrunbookError):
    """A runbook folder or its runbook.yaml is invalid."""

    def __init__(self, path: Path | str, message: str, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        self.message = message
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + message)


class TargetError(DbrunbookError):
    """A target reference cannot be resolved or reached."""


class GuardRefused(DbrunbookError):
    """A safety guard refused to run (production target, missing consent, ...)."""


class TargetBusy(GuardRefused):
    """Another run is moving the target (or the runbook) right now: nothing was done, and the same
    command will work once it has finished. EX_TEMPFAIL, so a scheduler retries later."""

    exit_code = 75


class RunLockBusy(TargetBusy):
    """Another deploy holds the target's run lock."""


class StatementFailed(DbrunbookError):
    """A SQL statement failed; carries where it came from."""

    def __init__(
        self,
        file: str,
        line: int,
        index: int,
        total: int,
        statement: str,
        message: str,
        sqlstate: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.index = index
        self.total = total
        self.statement = statement
        self.sqlstate = sqlstate
        self.message = message
        code = f" [{sqlstate}]" if sqlstate else ""
        head = " ".join(statement.split())
        if len(head) > 90:
            head = head[:87] + "..."
        super().__init__(
            f"{file}:{line}: statement {index} of {total} failed{code}: {message} -- in: {head}"
        )


class ChecksFailed(DbrunbookError):
    """One or more expectations or verifications did not hold."""

    def __init__(self, phase: str, failures: list[str]) -> None:
        self.phase = phase
        self.failures = failures
        shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
        super().__init__(f"{phase}: {len(failures)} check(s) failed: {shown}")


class PreconditionFailed(DbrunbookError):
    """A precondition query returned rows: the data would make the migration fail or lie."""

    def __init__(self, name: str, count: int, sample: str) -> None:
        self.name = name
        self.count = count
        super().__init__(f"precondition '{name}' failed: {count} offending row(s): {sample}; "
                         "nothing was changed")


class DriftError(DbrunbookError):
    """What is recorded in a target's ledger does not match the runbook's files."""


class PhaseFailed(DbrunbookError):
    """A phase notebook failed when run by the runner; its exit code is the one of the error the
    notebook raised (``TargetBusy: ...`` gives 75), so a scheduler can tell them apart."""

    def __init__(self, phase: str, notebook: str, message: str) -> None:
        self.phase = phase
        self.notebook = notebook
        self.exit_code = exit_code_of(message)
        super().__init__(f"phase {phase} failed ({notebook}): {message}")


def exit_code_of(error_line: str) -> int:
    """The exit code of the error an error line names (``ClassName: message``, as a notebook's
    failure reads): a :class:`DbrunbookError` subclass's own, else 1."""
    name = error_line.split(":", 1)[0].strip()
    pending: list[type[DbrunbookError]] = [DbrunbookError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return int(getattr(cls, "exit_code", 1))
        pending += cls.__subclasses__()
    return 1


class ReviewRejected(DbrunbookError):
    """The review found findings at or above its ``fail_on`` severity: no-go."""

    def __init__(self, count: int, fail_on: str, first: str) -> None:
        self.count = count
        self.fail_on = fail_on
        super().__init__(f"review: no-go, {count} finding(s) at {fail_on} or above; first: {first}")


class ArchiveError(DbrunbookError):
    """The archive cannot be written; raised before anything runs."""


class ArchiveNotWritten(DbrunbookError):
    """The phases ran (and what they applied is recorded in the ledger), but the archive could
    not be written; a distinct exit code, so a scheduler does not retry an applied migration."""

    exit_code = 4

    def __init__(self, why: str) -> None:
        super().__init__(f"applied, recorded in the ledger; archive not written: {why}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt, so both stop a run the same way
    (see :func:`dbrunbook.run.signals.install_sigterm`)."""
