"""Guards: no password reaches the archive by any parameter; production needs consent for every phase
that changes it (other than deploy and backfill), from the CLI and from JupyterLab alike."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook import open_phase
from dbrunbook.cli import commands
from dbrunbook.errors import GuardRefused, TargetError
from dbrunbook.phases import registry
from dbrunbook.state import storage
from dbrunbook.targets import embedded

from .conftest import apply_schema, cli, connect, prepared_pair

SECRET = "Sw33p-Pa55word"
URL = f"postgresql://app:{SECRET}@db.example.com:5432/app"


def _archive_text() -> str:
    out = Path(os.environ["DBRUNBOOK_OUTPUTS"])
    return "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()) if out.exists() else ""


@pytest.mark.parametrize("phase", registry.PHASE_NAMES)
def test_no_parameter_of_any_notebook_carries_a_password_into_the_archive(phase: str) -> None:
    before = sorted(Path(os.environ["DBRUNBOOK_OUTPUTS"]).rglob("*")) if Path(os.environ["DBRUNBOOK_OUTPUTS"]).exists() else []
    for name in registry.phase_info(phase).all_params():
        if name in ("runbook", "target", "run_id", "archive_dir", "dry_run"):
            continue  # set by the runner, not by -p: the runner refuses them itself
        with pytest.raises(TargetError, match=f"parameter {name} carries a password"):
            commands.run("event_message_fk", "dev", [phase], parameters={name: URL})
        # Straight into the lib (JupyterLab, the plain Papermill CLI): refused before connecting.
        with pytest.raises(TargetError, match=f"parameter {name} carries a password"):
            open_phase(phase, "event_message_fk", "dev", **{name: URL})
    for name in ("target", "runbook"):
        with pytest.raises(TargetError, match=f"parameter {name} carries a password"):
            open_phase(phase, URL if name == "runbook" else "event_message_fk", URL if name == "target" else "dev")
    after = sorted(Path(os.environ["DBRUNBOOK_OUTPUTS"]).rglob("*")) if Path(os.environ["DBRUNBOOK_OUTPUTS"]).exists() else []
    assert after == before  # refused before anything was written
    assert SECRET not in _archive_text()


def test_the_cli_refuses_a_password_in_a_parameter_in_one_line() -> None:
    done = cli("run", "event_message_fk", "--target", "dev", "--phases", "deploy", "-p", f"rehearsal={URL}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "dbrunbook: error: parameter rehearsal carries a password, and notebook parameters are stored in clear in "
        "the archive; pass a target name (dbrunbook.yaml) or env:VAR (the URL in an environment variable) instead"]
    assert SECRET not in done.stdout + done.stderr and SECRET not in _archive_text()


@pytest.mark.parametrize("phase", ["schema", "test", "rollback"])
def test_production_needs_consent_for_every_phase_that_changes_it(phase: str, tmp_path: Path) -> None:
    with prepared_pair("event_message_fk", "g") as (rehearsal, prod):
        apply_schema(rehearsal)
        if phase in ("rollback", "test"):  # the migration on prod, deployed the production way
            done = cli("run", "event_message_fk", "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}")
            assert done.returncode == 0, done.stdout + done.stderr
        state_before = commands.status("event_message_fk", prod).state
        # From JupyterLab (the lib), without consent and with the wrong one: refused, nothing changed.
        for confirm in ("", "dev", prod.upper()):
            with pytest.raises(GuardRefused, match=f"{phase} refused: target {prod} is marked production"):
                open_phase(phase, "event_message_fk", prod, confirm=confirm)
        done = cli("run", "event_message_fk", "--target", prod, "--phases", phase)
        assert done.returncode == 1
        line = done.stderr.strip().splitlines()[-1]
        assert f"consent with -p confirm={prod}" in line, line
        if phase == "schema":
            assert "--phases deploy" in line
        assert commands.status("event_message_fk", prod).state == state_before
        # With consent: it runs, and the consent is in the ledger.
        run = open_phase(phase, "event_message_fk", prod, confirm=prod, archive_dir=tmp_path,
                         **({"rows": 1000} if phase == "test" else {}))
        steps = {"schema": ("plan", "apply", "check_expectations", "finish"),
                 "rollback": ("plan", "apply", "check_expectations", "verify_restored", "finish"),
                 "test": ("behaviour", "finish")}[phase]
        for step in steps:
            getattr(run, step)()
        with connect(prod) as conn:
            t = storage.tables("postgresql")
            detail = conn.execute(sa.select(t.events.c.detail).where(t.events.c.run_id == run.run_id)).scalar_one()
        assert detail["consent"]["confirm"] == prod and detail["consent"]["by"]


def test_deploy_and_review_need_no_consent(tmp_path: Path) -> None:
    """On a production target, the phases made for it or read-only open without ``confirm`` (and
    record no consent), while a phase that changes the target refuses there without it."""
    with prepared_pair("event_message_fk", "n") as (rehearsal, prod):
        apply_schema(rehearsal)
        for phase in ("review", "deploy", "code_verify"):
            run = open_phase(phase, "event_message_fk", prod, archive_dir=tmp_path)
            assert run.target.production and run.phase == phase and "consent" not in run.detail, phase
            run.abandon()
        with pytest.raises(GuardRefused, match="consent with -p confirm="):
            open_phase("schema", "event_message_fk", prod, archive_dir=tmp_path)


# -- paths stay inside the runbook ----------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("migration", "../elsewhere.sql"), ("rollback", "/tmp/outside.sql"), ("fixture", "../elsewhere.sql"),
])
def test_a_path_leaving_the_runbook_folder_is_refused_naming_the_field(key: str, value: str,
                                                                     runbook_copy: Path) -> None:
    import yaml
    from dbrunbook.errors import SpecError
    from dbrunbook.runbook.spec import load_runbook

    (runbook_copy.parent / "elsewhere.sql").write_text("SELECT 1;\n")
    Path("/tmp/outside.sql").write_text("SELECT 1;\n")
    spec = runbook_copy / "runbook.yaml"
    raw = yaml.safe_load(spec.read_text())
    raw[key] = value
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=f"runbook.yaml: {key}: {value} resolves outside the runbook folder"):
        load_runbook(runbook_copy)


def test_a_symlink_pointing_out_of_the_runbook_is_refused(runbook_copy: Path, tmp_path: Path) -> None:
    from dbrunbook.errors import SpecError
    from dbrunbook.runbook.spec import load_runbook

    outside = tmp_path / "other.sql"
    outside.write_text("DROP TABLE \"Event\";\n")
    (runbook_copy / "migration.sql").unlink()
    (runbook_copy / "migration.sql").symlink_to(outside)
    with pytest.raises(SpecError, match="migration: migration.sql resolves outside the runbook folder"):
        load_runbook(runbook_copy)


def test_the_manifest_hashes_the_sql_that_ran(target: str) -> None:
    import json

    from dbrunbook.files import sha256_file

    from .conftest import ROOT
    from .test_run import archive_of

    commands.prepare("event_message_fk", target)
    done = cli("run", "event_message_fk", "--target", target, "--phases", "schema,code_verify")
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((archive_of(done.stdout) / "manifest.json").read_text())
    book = ROOT / "runbooks" / "event_message_fk"
    assert manifest["sql_files"] == {name: sha256_file(book / name)
                                     for name in ("migration.sql", "rollback.sql", "fixtures/before.sql")}
    assert manifest["code_verify_app"] == str((book / "sample_app" / "after").resolve())


# -- every failure is one line ---------------------------------------------------------------------

def _one_line(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_every_failure_the_cli_meets_is_one_line(runbook_copy: Path, tmp_path: Path) -> None:
    closed = json.dumps({"closed": {"url": "postgresql://app:pw@127.0.0.1:1/x"}})
    line = _one_line(cli("status", "event_message_fk", "--target", "closed", env={"DBRUNBOOK_TARGETS": closed}))
    assert "cannot connect to postgresql://app:***@127.0.0.1:1/x" in line and "pw@" not in line
    line = _one_line(cli("prepare", "event_message_fk", "--target", "closed", env={"DBRUNBOOK_TARGETS": closed}))
    assert "cannot connect" in line
    # A user and database the real server does not know: the connect fails the same way, in one line.
    from dbrunbook.targets.connect import engine
    from dbrunbook.targets.resolve import resolve_target

    socket = engine(resolve_target("dev")).url.query["host"]
    wrong = json.dumps({"wrong": {"url": f"postgresql://nobody:bad@/nowhere?host={socket}"}})
    line = _one_line(cli("status", "event_message_fk", "--target", "wrong", env={"DBRUNBOOK_TARGETS": wrong}))
    assert "cannot connect to" in line and "nobody" in line and "bad@" not in line, line
    # Not a database we run on: named as the user wrote it, not as an internal variable.
    line = _one_line(cli("run", "event_message_fk", "--target", "mysql://u:secret@h/db", "--phases", "schema"))
    assert "mysql is not supported" in line and "DBRUNBOOK_TARGET_URL" not in line and "secret" not in line
    # A runbook.yaml that is not UTF-8.
    spec = runbook_copy / "runbook.yaml"
    spec.write_bytes(spec.read_bytes().replace(b"title:", b"title: caf\xe9 -", 1))
    line = _one_line(cli("status", str(runbook_copy), "--target", "dev"))
    assert "runbook.yaml: not UTF-8 text" in line
    # An archive folder that cannot be written: refused before anything runs.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line(cli("run", "event_message_fk", "--target", "dev", "--phases", "schema",
                         env={"DBRUNBOOK_OUTPUTS": str(blocker / "outputs")}))
    assert "cannot write the archive" in line and "nothing was run" in line


def test_a_reader_that_goes_away_is_not_a_traceback() -> None:
    from .conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "dbrunbook", "lint", "saved_insights_customer", "--variant",
                             "proposed", "--format", "json", "--no-squawk"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert err.strip().splitlines() == ["dbrunbook: error: output closed early (broken pipe)"], err


def test_a_byte_order_mark_is_set_aside(runbook_copy: Path, target: str) -> None:
    migration = runbook_copy / "migration.sql"
    migration.write_bytes(b"\xef\xbb\xbf" + migration.read_bytes())
    commands.prepare(str(runbook_copy), target)
    apply_schema(target, runbook_copy)
    assert commands.status(str(runbook_copy), target).state == "applied (up to date)"


# -- the project, from any folder -----------------------------------------------------------------

def test_commands_find_their_project_from_any_folder(tmp_path: Path) -> None:
    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "DBRUNBOOK_HOME"}
    outside = subprocess.run([sys.executable, "-m", "dbrunbook", "prepare", str(ROOT / "runbooks" / "event_message_fk"),
                              "--target", "dev"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    line = _one_line(outside)
    assert "not inside a dbrunbook project" in line and "DBRUNBOOK_HOME" in line
    assert list(tmp_path.iterdir()) == []  # no .dbrunbook, no server, no archive here
    inside = subprocess.run([sys.executable, "-m", "dbrunbook", "status", "event_message_fk", "--target", "dev"],
                            cwd=ROOT / "runbooks" / "event_message_fk" / "fixtures", capture_output=True, text=True,
                            env=env, timeout=120)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.startswith("runbook event_message_fk on dev:")
    home = subprocess.run([sys.executable, "-m", "dbrunbook", "status", "event_message_fk", "--target", "dev"],
                          cwd=tmp_path, capture_output=True, text=True, env={**env, "DBRUNBOOK_HOME": str(ROOT)},
                          timeout=120)
    assert home.returncode == 0, home.stderr


# -- an archive that fails after the commit --------------------------------------------------------

def test_an_archive_failing_after_the_commit_says_applied_and_exits_4(target: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from dbrunbook.cli import main as cli_module
    from dbrunbook.run import runner

    commands.prepare("event_message_fk", target)
    real = runner.new_run_folder

    def folder_with_a_blocked_page(runbook: str, run_id: str) -> Path:
        made = real(runbook, run_id)
        (made / "01_schema.html").mkdir()  # the page cannot be written where it belongs
        return made

    monkeypatch.setattr(runner, "new_run_folder", folder_with_a_blocked_page)
    code = cli_module.main(["run", "event_message_fk", "--target", target, "--phases", "schema"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1, err
    assert err[0].startswith("dbrunbook: error: applied, recorded in the ledger; archive not written: 01_schema.html")
    assert commands.status("event_message_fk", target).state == "applied (up to date)"


# -- db url and db psql ------------------------------------------------------------------------------

def test_db_url_is_what_psql_takes_and_db_psql_opens_the_bundled_one(target: str) -> None:
    url = cli("db", "url", target)
    assert url.returncode == 0 and url.stdout.startswith("postgresql://"), url.stderr
    psql = embedded.client_binary("psql")
    direct = subprocess.run([str(psql), url.stdout.strip(), "-Atc", "SELECT current_database()"],
                            capture_output=True, text=True, timeout=60)
    assert direct.stdout.strip() == target, direct.stderr
    opened = cli("db", "psql", target, "--", "-Atc", "SELECT 40 + 2")
    assert opened.returncode == 0 and opened.stdout.strip() == "42", opened.stderr


# -- unattended output -------------------------------------------------------------------------------

def test_a_piped_run_shows_its_id_and_each_phase_as_it_ends(target: str) -> None:
    from .conftest import ROOT

    commands.prepare("event_message_fk", target)
    proc = subprocess.Popen([sys.executable, "-m", "dbrunbook", "run", "event_message_fk", "--target", target,
                             "--phases", "schema,rollback"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    head = proc.stdout.readline()
    assert head.startswith(f"event_message_fk on {target} (run ") and proc.poll() is None
    assert proc.stdout.readline().strip().startswith("archive: ")
    schema = proc.stdout.readline()
    assert schema.split()[:2] == ["schema", "passed"] and proc.poll() is None  # the rollback is still to come
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert out.split()[:2] == ["rollback", "passed"] and err == ""


def test_kernel_noise_is_dropped_from_its_log(tmp_path: Path) -> None:
    from dbrunbook.run.kernel import tidy_kernel_log

    log = tmp_path / "kernel_stderr.log"
    log.write_text("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication...\n"
                   "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.\n")
    tidy_kernel_log(log)
    assert not log.exists()
    log.write_text("KeyboardInterrupt caught in kernel\nAssertion failed: something real (src/mailbox.cpp:99)\n")
    tidy_kernel_log(log)
    assert log.read_text() == "Assertion failed: something real (src/mailbox.cpp:99)\n"


def test_the_demo_all_targets_are_known_to_status_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's dbrunbook.yaml names every target demo --all plays on, so `dbrunbook status
    <runbook> --target <runbook>_dev` finds them after the demo."""
    from dbrunbook.cli.demo import demo_runbooks
    from dbrunbook.config import load_config

    from .conftest import ROOT

    monkeypatch.delenv("DBRUNBOOK_CONFIG", raising=False)
    monkeypatch.delenv("DBRUNBOOK_TARGETS", raising=False)
    config = load_config(ROOT)
    for book in demo_runbooks():
        dev, prod = config.targets[f"{book.name}_dev"], config.targets[f"{book.name}_prod"]
        assert prod.production and not dev.production
        if book.spec.engine == "postgresql":
            assert (dev.embedded, prod.embedded) == (f"demo_{book.name}_dev", f"demo_{book.name}_prod")
        else:
            assert (dev.sqlite_file, prod.sqlite_file) == (f"{book.name}_dev", f"{book.name}_prod")
