"""squawk's findings (the ``squawk-cli`` wheel, its JSON reporter): unsafe DDL, which we do not
re-implement, told how each file will really run (in one transaction or not)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import DbrunbookError, SpecError
from ..statements import Statement, read_sql_text, read_statements
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


def squawk_findings(files: list[Path], pg_version: str | None = None, names: dict[Path, str] | None = None,
                    options: SquawkOptions | None = None, *, outside: set[Path] | None = None) -> list[Finding]:
    """squawk's findings for these files, with the line of the statement they are about. Each file
    is linted as the phase will run it: one whose statements all run in one transaction with
    ``--assume-in-transaction`` (no "can't be rerun" for what the transaction makes atomic), its
    author's own ``BEGIN`` / ``COMMIT`` blanked out first (they run inside the phase's transaction:
    no transaction-nesting); any other as written, squawk reading its transactions itself. ``outside``:
    files their source tool runs outside a transaction (goose NO TRANSACTION)."""
    options = options or SquawkOptions()
    statements = {f: _statements_or_none(f, (names or {}).get(f, f.name)) for f in files}
    groups: dict[bool, list[Path]] = {}
    for f in files:
        found = statements[f]
        in_transaction = options.assume_in_transaction if options.assume_in_transaction is not None else \
            bool(found) and all(s.transactional for s in found or ()) and f not in (outside or set())
        groups.setdefault(in_transaction, []).append(f)
    out = []
    with tempfile.TemporaryDirectory(prefix="dbrunbook-squawk-") as folder:
        for in_transaction, group in groups.items():
            given = {f: (_masked(f, statements[f] or [], Path(folder) / str(n)) if in_transaction else f)
                     for n, f in enumerate(group)}
            out += _run_squawk(given, pg_version, names, options, in_transaction, statements)
    return out


def _masked(path: Path, statements: list[Statement], folder: Path) -> Path:
    """The file with its transaction control statements blanked (lines kept: findings point at
    the same lines), when it has any; else the file itself."""
    control = [s for s in statements if s.transaction_control]
    if not control:
        return path
    text = read_sql_text(path)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    chars = list(text)
    for stmt in control:
        at = text.find(stmt.text, starts[stmt.line - 1] if stmt.line - 1 < len(starts) else 0)
        if at < 0:
            continue
        end = at + len(stmt.text)
        end += 1 if text[end:end + 1] == ";" else 0
        for i in range(at, end):
            chars[i] = chars[i] if chars[i] == "\n" else " "
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / path.name
    copy.write_text("".join(chars))
    return copy


def _statements_or_none(path: Path, name: str) -> list[Statement] | None:
    try:
        return read_statements(path, "postgresql", name)
    except SpecError:
        return None


def _run_squawk(files: dict[Path, Path], pg_version: str | None, names: dict[Path, str] | None,
                options: SquawkOptions, in_transaction: bool,
                statements: dict[Path, list[Statement] | None]) -> list[Finding]:
    """squawk over ``files`` (each original file -> the file squawk reads), findings on the originals."""
    if not files:
        return []
    original = {str(given): path for path, given in files.items()}
    args = [str(squawk_binary()), "--reporter", "json"]
    if pg_version:
        args.append(f"--pg-version={pg_version}")
    if options.exclude:
        args.append(f"--exclude={','.join(options.exclude)}")
    if options.include:
        args.append(f"--include={','.join(options.include)}")
    if in_transaction:
        args.append("--assume-in-transaction")
    done = subprocess.run(args + [str(f) for f in files.values()], capture_output=True, text=True, timeout=300)
    try:
        raw = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise DbrunbookError(f"squawk failed: {(done.stderr or done.stdout).strip()[:300]}") from None
    out = []
    for item in raw:
        path = original.get(str(item["file"]), Path(item["file"]))
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
