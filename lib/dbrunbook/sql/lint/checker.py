"""Putting lint together: the files of one migration (``lint_files``), or a folder's migrations
as one chain (``lint_chain``), through every rule of :mod:`dbrunbook.sql.lint.rules`, with the
numbering and squawk's findings beside them, in one :class:`LintResult`."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ...errors import SpecError
from ..statements import Statement, read_statements, split_statements
from .findings import ERROR, WARNING, Finding, LintResult
from .model import (
    _TYPE_NAMES,
    LiveColumns,
    Model,
    build_model,
    model_columns,
    model_indexes,
)
from .rules import Migration, Rollback, check_numbering, run_rules
from .squawk import SquawkOptions, _statements_or_none, squawk_findings


def read_for_lint(path: Path, name: str, role: str = "migration",
                  text: str | None = None) -> tuple[list[Statement], list[Finding]]:
    """A file's statements, or the finding that says why there are none: an empty or comment-only
    file, or one PostgreSQL's parser rejects (a down written for another database, ``DROP INDEX x
    ON t``), is a finding with its file and line, never a crash of the whole lint."""
    try:
        if text is None:
            return read_statements(path, "postgresql", name), []
        found = split_statements(text, name, "postgresql")
        if not found:
            raise SpecError(name, "holds no SQL statement")
        return found, []
    except SpecError as exc:
        if exc.message == "holds no SQL statement":
            if role == "rollback":
                return [], [Finding(WARNING, "irreversible", name, None, "", "the down file is empty (or comments "
                                    "only): this step cannot be undone", "write the statements that undo it, or "
                                    "declare the step irreversible")]
            return [], [Finding(WARNING, "empty-migration", name, None, "", "the file holds no SQL statement "
                                "(comments only?): applying it changes nothing", "remove it, or write what it should do")]
        where, _, line = exc.path.rpartition(":")
        foreign = " (written for another database?)" if role == "rollback" else ""
        return [], [Finding(ERROR, "syntax-error", where or exc.path, int(line) if line.isdigit() else None, "",
                            f"PostgreSQL cannot parse it{foreign}: {exc.message}", "write it in PostgreSQL's SQL")]


def _read_rollbacks(paths: list[Path], name: Any) -> tuple[list[Statement] | None, list[Finding]]:
    """The rollback's statements (None when a file is missing or none is declared, [] when they
    hold none) and the files that cannot be parsed, as findings."""
    if not paths or not all(p.is_file() for p in paths):
        return None, []
    out: list[Statement] = []
    problems: list[Finding] = []
    for path in paths:
        found, issues = read_for_lint(path, name(path), "rollback")
        out += found
        problems += [f for f in issues if f.rule == "syntax-error"]  # an empty one is rollback-missing
    return out, problems


def _history_statements(existing: list[Path]) -> list[Statement]:
    out: list[Statement] = []
    for path in existing:
        out += _statements_or_none(path, path.name) or []
    return out


def history_catalog(existing: list[Path]) -> tuple[LiveColumns, dict[str, list[list[str]]]]:
    """The schema the existing migrations build, read the way seed 001's reviewers read 008, 012
    and 014: column types and index column lists, by table. A file pglast cannot read is skipped
    (it only narrows what the rules can see; it is not what is being reviewed)."""
    statements: list[Statement] = []
    for path in existing:
        try:
            statements += read_statements(path, "postgresql", path.name)
        except SpecError:
            continue
    model = build_model(statements)  # every statement already parsed once in read_statements
    columns: LiveColumns = {table: {name: (col.type, col.length) for name, col in cols.items()}
                            for table, cols in model.tables.items()}
    indexes: dict[str, list[list[str]]] = {}
    for table, cols, _ in model.indexes:
        indexes.setdefault(table, []).append(cols)
    return columns, indexes


def _merge(history: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The live catalog wins for every table it has: it is what the migration will meet."""
    return {**history, **(live or {})}


def lint_files(files: list[Path], *, existing: list[Path] | None = None, live: LiveColumns | None = None,
               live_indexes: dict[str, list[list[str]]] | None = None, rollback: list[Path] | None = None,
               pg_version: str | None = None, squawk: bool = True,
               names: dict[Path, str] | None = None, squawk_options: SquawkOptions | None = None) -> LintResult:
    """Every rule over the migration files (read as one migration, in order). ``existing``: the
    project's migrations, for numbering and as the schema the migration builds on (a live
    catalog, when given, wins). ``rollback``: its files in the order they run; None skips the
    rollback rules, an empty list is a missing rollback. ``names``: how files are shown."""
    def name(path: Path) -> str:
        return (names or {}).get(path, path.name)

    statements: list[Statement] = []
    findings: list[Finding] = []
    for f in files:
        found, problems = read_for_lint(f, name(f))
        statements += found
        findings += problems
    history, history_indexes = history_catalog(existing or [])
    findings += check_numbering(files, existing or [], names)
    back: Rollback | None = None
    after: Model | None = None
    if rollback is not None:
        label = " + ".join(name(f) for f in rollback) or "(no rollback declared)"
        read, problems = _read_rollbacks(rollback, name)
        findings += problems
        if not (problems and not read):
            back = Rollback(label, read)
        if read:
            after = build_model(_history_statements(existing or []) + statements)
    findings += run_rules(Migration(statements, build_model(statements), _merge(history, live),
                                    _merge(history_indexes, live_indexes), rollback=back, after=after))
    if squawk:
        findings += squawk_findings(files, pg_version, names, squawk_options)
    return LintResult(findings, [name(f) for f in files])


def live_catalog(conn: Any) -> tuple[LiveColumns, dict[str, list[list[str]]]]:
    """Column types and index column lists of the user tables of a PostgreSQL target."""
    columns: LiveColumns = {}
    rows = conn.execute(sa.text(
        "SELECT c.relname, a.attname, format_type(a.atttypid, NULL), "
        "CASE WHEN a.atttypmod > 4 AND a.atttypid IN (1042, 1043) THEN a.atttypmod - 4 END "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbrunbook') AND n.nspname NOT LIKE 'pg_toast%'"))
    for table, column, type_, length in rows:
        columns.setdefault(table, {})[column] = (_TYPE_NAMES.get(type_, type_), length)
    indexes: dict[str, list[list[str]]] = {}
    rows = conn.execute(sa.text(
        "SELECT c.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbrunbook') GROUP BY c.relname, i.indexrelid"))
    for table, cols in rows:
        indexes.setdefault(table, []).append(list(cols))
    return columns, indexes


@dataclass(frozen=True)
class ChainLink:
    """One migration of a folder as the chain lints it: its up file and its down (if it has one),
    each with the name findings show; ``up_text`` / ``down_text`` where the layout keeps both in one
    file (goose, dbmate); ``in_transaction`` False where the source tool runs it outside one."""

    up: Path
    up_name: str
    down: Path | None = None
    down_name: str = ""
    up_text: str | None = None
    down_text: str | None = None
    in_transaction: bool = True


def numbering_finding(file: str, message: str, fix: str) -> Finding:
    """A folder's numbering problem (two ups with one version, a stray down) as a finding."""
    return Finding(ERROR, "migration-numbering", file, None, "", message, fix)


def lint_chain(links: list[ChainLink], numbering: list[Finding] | None = None, *, live: LiveColumns | None = None,
               live_indexes: dict[str, list[list[str]]] | None = None, pg_version: str | None = None,
               squawk: bool = True, squawk_options: SquawkOptions | None = None) -> LintResult:
    """A folder's migrations, in order, linted as one chain: each against the schema the ones before
    it built (renames followed, drops applied), its down against what it created and against the
    foreign keys it would break, beside the folder's ``numbering`` findings. An empty or
    unparsable file is a finding; the rest of the chain is still linted."""
    findings = list(numbering or [])
    acc = Model()
    names: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="dbrunbook-lint-") as folder:
        ups: list[Path] = []
        outside: set[Path] = set()
        for number, link in enumerate(links):
            statements, problems = read_for_lint(link.up, link.up_name, text=link.up_text)
            findings += problems
            # squawk reads files: a section of a file is given as a file of its own
            up = link.up if link.up_text is None else _written(Path(folder) / str(number), link.up.name, link.up_text)
            names[up] = link.up_name
            ups.append(up)
            if not link.in_transaction:
                outside.add(up)
            own = build_model(statements)
            history = acc.copy()  # as the migrations before this one left it
            columns = _merge(model_columns(acc), live)
            indexes = _merge(model_indexes(acc), live_indexes)
            build_model(statements, base=acc)
            back: Rollback | None = None
            if link.down is not None or link.down_text is not None:
                down, problems = read_for_lint(link.down or link.up, link.down_name, "rollback", text=link.down_text)
                findings += problems
                if down and statements:  # an empty down is already said: irreversible
                    back = Rollback(link.down_name, down)
            if statements:
                findings += run_rules(Migration(statements, own, columns, indexes, history=history, rollback=back,
                                                after=acc))
        if squawk and ups:
            findings += squawk_findings(ups, pg_version, names, squawk_options, outside=outside)
    return LintResult(findings, [link.up_name for link in links])


def _written(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name
