"""``dbrunbook``: a thin shell over :mod:`dbrunbook.cli.commands`.

Exit codes: 0 success; 1 a failed phase, check, refused guard or any dbrunbook error (one line on
stderr saying what and where); 2 bad usage.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from .. import __version__
from ..errors import DbrunbookError
from ..paths import project_root
from ..run import signals, startup

#: The folder layouts ``lint --layout`` and ``import --format`` accept: the names of
#: :data:`dbrunbook.runbook.layouts.LAYOUTS` (spelled here so that ``--help`` does not import the
#: readers; tests/test_layouts.py keeps the two equal).
LAYOUT_NAMES = ("sqitch", "prisma", "diesel", "flyway", "pop", "updown", "goose", "dbmate", "numbered")


def _parameter(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    # YAML scalars, as papermill's own -y does: 5 -> int, true -> bool, text -> str.
    return key.strip(), yaml.safe_load(value) if value else ""


#: What each exit code means, for schedulers (``--help`` prints it; the README has the same table).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "done: passed, or nothing to do (already applied, verified)"),
    (1, "failed: a phase, a check or a command failed; the line on stderr says what and where"),
    (2, "usage: the command line is wrong (an unknown option, a missing argument, a duration that does not "
        "parse); nothing was run"),
    (3, "drift: drift or status found the target changed out of band or a migration edited "
        "(db status: the server is not running)"),
    (4, "applied and recorded in the ledger, but the archive could not be written: do not retry the change"),
    (75, "busy: another run is moving the target or the runbook right now; retry later (EX_TEMPFAIL)"),
    (130, "interrupted by SIGINT; the ledger says where it stopped"),
    (143, "interrupted by SIGTERM; the ledger says where it stopped"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbrunbook", description="Database migrations run as Jupyter runbooks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES))
    parser.add_argument("--version", action="version", version=f"dbrunbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    init = sub.add_parser("init", help="make a folder (or a team's repository) a dbrunbook project")
    init.add_argument("dir", nargs="?", default=".", help="the folder (default: here); made if missing")
    init.add_argument("--import", dest="import_from", metavar="FOLDER",
                      help="also import this migration folder as a runbook set under runbooks/")

    new = sub.add_parser("new", help="scaffold runbooks/NAME from a migration's SQL, its expectations generated")
    new.add_argument("name")
    new.add_argument("--from", dest="from_sql", metavar="FILE.sql", help="the migration (default: a template)")
    new.add_argument("--rollback", dest="rollback_sql", metavar="FILE.sql",
                     help="its rollback (default: generated where every statement can be inverted)")
    new.add_argument("--dev", default="dev", help="the target whose schema the migration starts from (default dev)")

    notebooks = sub.add_parser("notebooks", help="which notebook each phase runs: the project's own, or the packaged one")
    notebooks.add_argument("action", nargs="?", choices=["list", "path", "eject"], default="list")
    notebooks.add_argument("phases", nargs="*", help="for path: one phase; for eject: phases (default: every one)")

    lab = sub.add_parser("lab", help="JupyterLab on a working copy of a phase notebook, runbook and target preset")
    lab.add_argument("runbook", nargs="?", help="the runbook (default: the notebook's own default)")
    lab.add_argument("--phase", default="schema")
    lab.add_argument("--target", help="default: the phase's (dev; prod for deploy)")
    lab.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    lab.add_argument("--print", dest="print_only", action="store_true",
                     help="write the working copy and print the command, without starting JupyterLab")

    db = sub.add_parser("db", help="the embedded PostgreSQL (the default database)")
    db.add_argument("action", choices=["start", "stop", "status", "url", "psql"])
    db.add_argument("name", nargs="?", help="for url and psql: the target (default dev)")
    db.add_argument("--target", help="for url and psql: the target (default dev)")
    db.epilog = "for psql: arguments after -- go to psql (dbrunbook db psql dev -- -c 'SELECT 1')"

    prepare = sub.add_parser("prepare", help="load a runbook's 'before' fixture into a target")
    prepare.add_argument("runbook")
    prepare.add_argument("--target", required=True)

    run = sub.add_parser("run", help="run phase notebooks with Papermill into the archive")
    run.add_argument("runbook")
    run.add_argument("--target", required=True)
    run.add_argument("--phases", default="schema", help="comma-separated, in order (default: schema)")
    run.add_argument("-p", "--parameter", action="append", type=_parameter, default=[],
                     metavar="KEY=VALUE", help="extra notebook parameter (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="roll every phase back at its end")
    run.add_argument("--max-duration", metavar="DURATION",
                     help="a time window for work in batches (30m, 2h, 1h30m): the backfill stops at the first "
                          "batch boundary after it, paused; the same command resumes")

    status = sub.add_parser("status", help="what the target's ledger says about a runbook")
    status.add_argument("runbook")
    status.add_argument("--target", required=True)

    drift = sub.add_parser("drift", help="compare each target with what its ledger says dbrunbook made it "
                                         "(exit 3 on drift)")
    drift.add_argument("runbook", nargs="?", help="a runbook or set (default: every runbook the ledger knows)")
    where = drift.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="a target")
    where.add_argument("--group", help="a group of targets in dbrunbook.yaml")
    drift.add_argument("--format", choices=["text", "json"], default="text")

    lint = sub.add_parser("lint", help="review migration files or a runbook before anything runs")
    lint.add_argument("paths", nargs="+",
                      help="SQL files, a runbook (its migration and rollback), or a migration folder (one chain)")
    lint.add_argument("--format", choices=["text", "json"], default="text")
    lint.add_argument("--fail-on", choices=["error", "warning", "info"], default="error",
                      help="exit 1 when a finding is at least this severe (default: error)")
    lint.add_argument("--target", help="also check against this target's live catalog")
    lint.add_argument("--existing", help="folder of the migrations already numbered (NNN_name.sql)")
    lint.add_argument("--rollback", help="the rollback script to check against the files")
    lint.add_argument("--pg-version", help="the server version squawk assumes (default: the target's)")
    lint.add_argument("--no-squawk", action="store_true", help="only dbrunbook's own rules")
    lint.add_argument("--variant", help="a runbook's review variant instead of its migration (e.g. proposed)")
    lint.add_argument("--layout", choices=LAYOUT_NAMES,
                      help="a migration folder's layout (default: detected from its files)")
    lint.add_argument("--assume-in-transaction", dest="in_transaction", action="store_true", default=None,
                      help="tell squawk every file runs in one transaction (default: each file that can, as the "
                           "schema phase runs it)")
    lint.add_argument("--no-assume-in-transaction", dest="in_transaction", action="store_false",
                      help="tell squawk no file runs in a transaction")
    lint.add_argument("--squawk-exclude", default="", help="squawk rules to leave out, comma-separated")
    lint.add_argument("--squawk-include", default="", help="squawk's opt-in rules to add, comma-separated")

    imported = sub.add_parser("import", help="a team's migration folder as a runbook set, one runbook per migration")
    imported.add_argument("src", help="the migration folder")
    imported.add_argument("--into", required=True, help="the set folder to write (or add new migrations to)")
    imported.add_argument("--format", dest="layout", choices=LAYOUT_NAMES,
                          help="the folder's layout (default: detected from its files)")

    rehearse = sub.add_parser("rehearse", help="schema, rollback, schema for each member on a scratch target")
    rehearse.add_argument("runbook", help="a runbook or a runbook set")
    rehearse.add_argument("--target", required=True, help="a scratch target (never production)")
    rehearse.add_argument("--format", choices=["table", "json"], default="table")

    history = sub.add_parser("history", help="every run, newest first: the archive joined with the targets' ledgers")
    history.add_argument("--runbook")
    history.add_argument("--target")
    history.add_argument("--since", help="30m, 12h, 7d, 2w, or a date (2026-11-01)")
    history.add_argument("--format", choices=["table", "json"], default="table")
    history.add_argument("--no-ledgers", action="store_true", help="the archive alone (no database is read)")

    archived = sub.add_parser("archive", help="the archive: its index page, and a check of every file and link")
    archived.add_argument("action", choices=["index", "verify"])
    archived.add_argument("runs", nargs="*", help="for verify: run ids or run folders")
    archived.add_argument("--all", action="store_true", dest="every", help="for verify: every run in the archive")
    archived.add_argument("--no-ledgers", action="store_true",
                          help="for verify: files and chain only, no target's ledger is read")

    approve = sub.add_parser("approve", help="record, in the target's ledger, an approval of the runbook as it is now")
    approve.add_argument("runbook")
    approve.add_argument("--target", required=True)
    approve.add_argument("--as", dest="approver", help="who approves (default: $DBRUNBOOK_OPERATOR, else user@host)")
    approve.add_argument("--note", help="why, or what was checked")

    fleet = sub.add_parser("fleet", help="one runbook to many databases, in waves, on Dask")
    fleet.add_argument("action", choices=["run", "status"])
    fleet.add_argument("runbook")
    chosen = fleet.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--group", help="a group of targets in dbrunbook.yaml")
    chosen.add_argument("--targets", help="target names, comma-separated, in order")
    fleet.add_argument("--phases", default="deploy", help="for run: comma-separated, in order (default: deploy)")
    fleet.add_argument("-p", "--parameter", action="append", type=_parameter, default=[], metavar="KEY=VALUE")
    fleet.add_argument("--waves", default="1,100%", help="cumulative: 1,10%%,100%% (default: a canary, then all)")
    fleet.add_argument("--parallel", type=int, default=2, help="databases at once within a wave (default 2)")
    fleet.add_argument("--on-error", choices=["halt", "continue"], default="halt")
    fleet.add_argument("--scheduler", help="a running Dask scheduler's address (default: a LocalCluster here)")
    fleet.add_argument("--notebooks", action="store_true",
                       help="also archive a full notebook per database and phase (slower: a kernel per database)")

    demo = sub.add_parser("demo", help="play the seed-000 runbook on the embedded dev and prod databases")
    demo.add_argument("--all", action="store_true", dest="all_runbooks",
                      help="every example runbook, each on its own databases, then a summary table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Everything after a bare "--" belongs to psql (dbrunbook db psql dev -- -c 'SELECT 1').
    extra = words[words.index("--") + 1:] if "--" in words else []
    args = build_parser().parse_args(words[:words.index("--")] if "--" in words else words)
    args.psql_args = extra
    try:
        _start_kernel_ahead(args)
        return _dispatch(args)
    except DbrunbookError as exc:
        return _fail(_redact(str(exc)), getattr(exc, "exit_code", 1))
    except KeyboardInterrupt as stop:
        print(f"dbrunbook: interrupted by {signals.name_of(stop)}", file=sys.stderr)
        return signals.EXIT_CODE[signals.name_of(stop)]
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _fail("output closed early (broken pipe)", 1)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", 1)
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if os.environ.get("DBRUNBOOK_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        return _fail(f"unexpected {type(exc).__name__}: {_redact(text)} (set DBRUNBOOK_DEBUG=1 for the traceback; "
                     "please report it)", 1)


def entry() -> None:
    """The console script: :func:`main`, then exit with its code. After ``run`` the interpreter is
    left without its teardown (unloading some 1,500 modules costs about 0.4 s of every unattended
    run): the run has settled its ledger and archive and shut its kernel down by then, and the
    exit handlers still run."""
    # Paused for the imports to come; the first phase, or the page warm-up's end, turns it back on.
    startup.pause_collector()
    words = sys.argv[1:]
    code = main(words)
    if words[:1] == ["run"]:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()  # what a normal exit runs first: no handler is skipped
        os._exit(code)
    sys.exit(code)


def _redact(text: str) -> str:
    from ..targets.secrets import redact

    return redact(text)


def _start_kernel_ahead(args: argparse.Namespace) -> None:
    """For ``run``: start its kernel before the CLI imports the library, so that on two cores both
    start at once. Not for a raw URL (it reaches the kernel in an environment variable set later),
    and not outside a project (the command refuses that itself)."""
    if args.command != "run" or "://" in (args.target or ""):
        return
    try:
        root = project_root()
    except DbrunbookError:
        return
    from ..run.kernel import start_ahead

    start_ahead(root)


def _fail(line: str, code: int) -> int:
    try:
        print(f"dbrunbook: error: {line}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return code


def _dispatch(args: argparse.Namespace) -> int:
    from ..run import runner
    from ..sql import lint as lint_
    from ..targets.secrets import redact
    from . import commands, demo

    if args.command == "init":
        print(commands.init(args.dir, args.import_from).render())
        return 0
    # Every other command works in a project, found as git finds its repository; outside one it
    # refuses here, before any server is started or anything written.
    project_root()
    if args.command == "new":
        print(commands.new(args.name, from_sql=args.from_sql, rollback_sql=args.rollback_sql, dev=args.dev).render())
        return 0
    if args.command == "notebooks":
        if args.action == "path":
            if len(args.phases) != 1:
                return _fail("notebooks path: name one phase (dbrunbook notebooks path schema)", 2)
            print(commands.notebook_path(args.phases[0]))
            return 0
        print(commands.notebooks_eject(args.phases).render() if args.action == "eject" else
              commands.notebooks_list().render())
        return 0
    if args.command == "lab":
        working = commands.lab(args.runbook, args.phase, args.target)
        print(working.render())
        if args.print_only:
            return 0
        return working.launch(no_browser=args.no_browser)
    if args.command == "db":
        if args.action == "start":
            state = commands.db_start()
            print(f"embedded PostgreSQL running (pid {state.pid}), data in {state.pgdata}")
        elif args.action == "stop":
            print("embedded PostgreSQL stopped" if commands.db_stop() else "embedded PostgreSQL was not running")
        elif args.action == "status":
            state = commands.db_status()
            print(f"running (pid {state.pid}), data in {state.pgdata}" if state.running
                  else f"not running, data in {state.pgdata}")
            return 0 if state.running else 3
        elif args.action == "url":
            print(commands.db_url(args.name or args.target or "dev"))
        else:
            return commands.db_psql(args.name or args.target or "dev", args.psql_args)
        return 0
    if args.command == "prepare":
        prepared = commands.prepare(args.runbook, args.target)
        print(prepared.render())
        return 0
    if args.command == "run":
        phases = commands.parse_phases(args.phases)
        if args.max_duration is not None:
            from ..durations import parse_duration

            try:
                parse_duration(args.max_duration, "--max-duration")
            except DbrunbookError as exc:
                return _fail(str(exc), 2)
            args.parameter.append(("max_duration", args.max_duration))
        signals.install_sigterm()
        try:
            # The run id and archive first, then each phase as it ends, flushed: a piped log shows progress.
            result = commands.run(args.runbook, args.target, phases, parameters=dict(args.parameter),
                                  dry_run=args.dry_run, echo=lambda line: print(line, flush=True))
        except runner.RunInterrupted as stopped:
            print(f"dbrunbook: {redact(str(stopped))}", file=sys.stderr, flush=True)
            # The ledger and the manifest are settled; what is left of Papermill's event loop would
            # only print its dead kernel's tasks at interpreter exit: leave now, with the one line.
            sys.stdout.flush()
            os._exit(stopped.exit_code)
        if result.error:
            print(f"  error: {result.error}")
        runner.raise_for_failure(result)
        return 0
    if args.command == "status":
        members = commands.status_set(args.runbook, args.target)
        if members is not None:
            for report in members:
                print(f"{report.runbook}: {report.state} - {report.detail}")
            if members and members[0].schema is not None:
                print(("SCHEMA DRIFT: " if members[0].schema.drifted else "schema: ") + members[0].schema.line())
            return max((m.exit_code for m in members), default=0)
        shown = commands.status(args.runbook, args.target)
        print(shown.render())
        return shown.exit_code
    if args.command == "drift":
        from ..run import drift as drift_

        refs = commands.target_refs(args.target, args.group)
        drifted = drift_.check_drift(args.runbook, refs)
        print(drifted.to_json() if args.format == "json" else drifted.render())
        return drifted.exit_code
    if args.command == "rehearse":
        from ..run.rehearse import rehearse as rehearse_

        rehearsal = rehearse_(args.runbook, args.target)
        folder = rehearsal.archive()
        print(rehearsal.to_json() if args.format == "json" else rehearsal.render() + f"\n  archive: {folder}")
        return 0 if rehearsal.ok else 1
    if args.command == "import":
        print(commands.import_set(args.src, args.into, args.layout).render())
        return 0
    if args.command == "lint":
        options = lint_.SquawkOptions(tuple(r for r in args.squawk_exclude.split(",") if r.strip()),
                                      tuple(r for r in args.squawk_include.split(",") if r.strip()),
                                      args.in_transaction)
        linted = commands.lint(args.paths, target_ref=args.target, existing=args.existing, rollback=args.rollback,
                               pg_version=args.pg_version, squawk=not args.no_squawk, variant=args.variant,
                               layout=args.layout, squawk_options=options)
        print(linted.to_json() if args.format == "json" else linted.render())
        return 1 if lint_.reaches(linted.findings, args.fail_on) else 0
    if args.command == "history":
        from ..archive import history as history_

        since = history_.parse_since(args.since) if args.since else None
        found, notes = history_.runs(runbook=args.runbook, target=args.target, since=since, ledgers=not args.no_ledgers)
        print(history_.render_history(found, args.format))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    if args.command == "archive":
        from ..archive import chain
        from ..archive import history as history_

        if args.action == "index":
            print(f"archive index: {history_.write_index()}")
            return 0
        if not args.runs and not args.every:
            return _fail("archive verify: name runs (ids or folders) or give --all", 2)
        ids = None if args.every else [Path(r).name.rsplit("_", 1)[-1] if "/" in r or Path(r).is_dir() else r
                                       for r in args.runs]
        verified = chain.verify_archive(ids, check_ledgers=not args.no_ledgers)
        print(verified.render())
        return 0 if verified.ok else 1
    if args.command == "approve":
        print(commands.approve(args.runbook, args.target, approver=args.approver, note=args.note).render())
        return 0
    if args.command == "fleet":
        from ..run import fleet as fleet_

        refs = fleet_.group_targets(args.group) if args.group else [r.strip() for r in args.targets.split(",")
                                                                       if r.strip()]
        if args.action == "status":
            print(fleet_.fleet_status(args.runbook, refs).to_string(index=False))
            return 0
        rollout = fleet_.fleet_run(args.runbook, refs, commands.parse_phases(args.phases),
                                   parameters=dict(args.parameter), waves=args.waves, parallel=args.parallel,
                                   on_error=args.on_error, scheduler=args.scheduler, notebooks=args.notebooks,
                                   echo=lambda line: print(line, flush=True))
        print(rollout.render())
        if not rollout.ok:
            return _fail(f"fleet {rollout.fleet_id}: {len(rollout.failed)} database(s) failed"
                         + (", the rollout halted" if args.on_error == "halt" else ""), 1)
        return 0
    if args.command == "demo" and args.all_runbooks:
        rows = demo.demo_all()
        print()
        print(demo.demo_table(rows))
        if any(row.status == "failed" for row in rows):
            print("dbrunbook: error: demo --all: a run failed (see above)", file=sys.stderr)
            return 1
        print("demo --all passed")
        return 0
    if args.command == "demo":
        print("demo: seed 000 (Add messageId FK to Event table) on the embedded PostgreSQL;")
        print("      'prod' here is a stand-in database on the same embedded server.")
        steps = demo.demo()
        ok = bool(steps) and all(step.ok for step in steps)
        if not ok:
            print("dbrunbook: error: demo failed (see above)", file=sys.stderr)
            return 1
        print("demo passed")
        return 0
    raise AssertionError(args.command)
