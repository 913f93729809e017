"""squawk's findings (the ``squawk-cli`` wheel, its JSON reporter): unsafe DDL, which we do not
re-implement, told how each file will really run (in one transaction or not)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...errors import DbrunbookError, SpecError
from ..statements import Statement, read_statements
from .findings import ERROR, WARNING, Finding


def squawk_binary() -> Path:
    beside = Path(sys.executable).parent / "squawk"
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which("squawk")) else None)
    if found is None:
        raise DbrunbookError("squawk not found (pip install squawk-cli, as requirements.txt does)")
    return found


@dataclass(frozen=True)
class SquawkOptions:
    """How squawk is run: its rule selection, and whether it is told the script runs in one
    transaction (``None``: tell it so for every file whose statements can, as the schema phase
    runs them)."""

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    assume_in_transaction: bool | None = None


def squawk_findings(files: list[Path], pg_version: str | None = None,
                    names: dict[Path, str] | None = None, options: SquawkOptions | None = None) -> list[Finding]:
    """squawk's findings for these files, with the line of the statement they are about."""
    options = options or SquawkOptions()
    statements = {f: _statements_or_none(f, (names or {}).get(f, f.name)) for f in files}
    groups: dict[bool, list[Path]] = {}
    for f in files:
        found = statements[f]
        # A file that runs in the phase's transaction is linted as such: no "can't be rerun"
        # for what the transaction makes atomic, and the in-transaction rules where they apply.
        in_transaction = options.assume_in_transaction if options.assume_in_transaction is not None else \
            bool(found) and all(s.transactional for s in found or ())
        groups.setdefault(in_transaction, []).append(f)
    out = []
    for in_transaction, group in groups.items():
        out += _run_squawk(group, pg_version, names, options, in_transaction, statements)
    return out


def _statements_or_none(path: Path, name: str) -> list[Statement] | None:
    try:
        return read_statements(path, "postgresql", name)
    except SpecError:
        return None


def _run_squawk(files: list[Path], pg_version: str | None, names: dict[Path, str] | None, options: SquawkOptions,
                in_transaction: bool, statements: dict[Path, list[Statement] | None]) -> list[Finding]:
    if not files:
        return []
    args = [str(squawk_binary()), "--reporter", "json"]
    if pg_version:
        args.append(f"--pg-version={pg_version}")
    if options.exclude:
        args.append(f"--exclude={','.join(options.exclude)}")
    if options.include:
        args.append(f"--include={','.join(options.include)}")
    if in_transaction:
        args.append("--assume-in-transaction")
    done = subprocess.run(args + [str(f) for f in files], capture_output=True, text=True, timeout=300)
    try:
        raw = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise DbrunbookError(f"squawk failed: {(done.stderr or done.stdout).strip()[:300]}") from None
    out = []
    for item in raw:
        path = Path(item["file"])
        line = int(item.get("line") or 0) + 1
        stmt = _statement_at(statements.get(path) or [], line)
        out.append(Finding(ERROR if str(item.get("level", "")).lower() == "error" else WARNING,
                           f"squawk:{item['rule_name']}", (names or {}).get(path, path.name),
                           stmt.line if stmt else line, stmt.summary if stmt else "", item["message"],
                           _with_deploy_note(item["rule_name"], item.get("help") or "")))
    return out


# squawk rules whose remedy the deploy phase applies by itself (online.derive_steps and its lock
# policy): the finding stands for the script as written, and the reviewer learns what deploy does.
DEPLOY_HANDLES = {
    "require-concurrent-index-creation": "an index on an existing table is built CONCURRENTLY",
    "adding-foreign-key-constraint": "a foreign key is added NOT VALID, then validated",
    "require-lock-timeout": "every step runs under lock_timeout, with retries",
    "require-statement-timeout": "every step runs under statement_timeout",
}


def _with_deploy_note(rule: str, help_text: str) -> str:
    note = DEPLOY_HANDLES.get(rule)
    return f"{help_text} (the deploy phase does this: {note})".strip() if note else help_text


def _statement_at(statements: list[Statement], line: int) -> Statement | None:
    before = [s for s in statements if s.line <= line]
    return before[-1] if before else None
