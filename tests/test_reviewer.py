"""The reviewer's desk: history, the archive's index page, the tamper-evident archive, recorded
approvals, and pages that read offline with their status at the top."""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from dbrunbook.archive import history
from dbrunbook.targets import embedded

from .conftest import SEED_000, add_target, cli, prepared_pair

RUNBOOK = "event_message_fk"


@dataclass
class Archive:
    outputs: Path
    target: str
    runs: list[str]      # run ids, oldest first: passed, failed, passed
    env: dict[str, str]

    def folder(self, run_id: str) -> Path:
        return next(self.outputs.glob(f"*/*_{run_id}"))


def run_id_of(stdout: str) -> str:
    found = re.search(r"\(run ([0-9a-f]{12})\)", stdout)
    assert found, stdout
    return found.group(1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """A private archive with three runs on one target: passed, failed (a broken copy), passed."""
    base = tmp_path_factory.mktemp("reviewer")
    outputs = base / "outputs"
    env = {"DBRUNBOOK_OUTPUTS": str(outputs)}
    name = f"rv_{uuid.uuid4().hex[:10]}"
    add_target(name, {"embedded": name})
    embedded.ensure_database(name)
    broken = base / RUNBOOK
    shutil.copytree(SEED_000, broken)
    (broken / "migration.sql").write_text((broken / "migration.sql").read_text() + "\nALTER TABLE nowhere ADD x int;\n")
    try:
        assert cli("prepare", RUNBOOK, "--target", name, env=env).returncode == 0
        runs = []
        for ref, phases in ((RUNBOOK, "schema,rollback"), (str(broken), "schema"), (RUNBOOK, "schema")):
            done = cli("run", ref, "--target", name, "--phases", phases, env=env)
            assert done.returncode == (1 if ref == str(broken) else 0), done.stdout + done.stderr
            runs.append(run_id_of(done.stdout))
        yield Archive(outputs, name, runs, env)
    finally:
        embedded.drop_database(name)


def test_history_lists_every_run_newest_first_and_filters(archive: Archive) -> None:
    shown = cli("history", "--target", archive.target, "--format", "json", env=archive.env)
    assert shown.returncode == 0, shown.stderr
    rows = [r for r in json.loads(shown.stdout) if r["archive"].startswith(str(archive.outputs))]
    assert [r["run_id"] for r in rows] == archive.runs[::-1]
    assert [r["status"] for r in rows] == ["passed", "failed", "passed"]
    assert rows[1]["error"].startswith("PapermillExecutionError") or "nowhere" in rows[1]["error"]
    assert rows[2]["phases"] == "schema,rollback" and rows[0]["sealed"] == "yes"
    assert all(r["operator"] and r["duration_s"] > 0 and not r["production"] for r in rows)
    # The ledger's own runs without an archive (prepare) are listed too, and said to be so.
    everything = json.loads(cli("history", "--target", archive.target, "--format", "json", env=archive.env).stdout)
    assert any(r["phases"] == "prepare" and r["archive"] == "(no archive)" for r in everything)
    table = cli("history", "--runbook", RUNBOOK, "--since", "1h", env=archive.env)
    assert all(run in table.stdout for run in archive.runs)
    assert "started_at" in table.stdout.splitlines()[0]
    later = cli("history", "--since", "2999-01-01", "--no-ledgers", env=archive.env)
    assert later.stdout.strip() == "no runs match"
    other = cli("history", "--runbook", "no_such_runbook", env=archive.env)
    assert other.stdout.strip() == "no runs match"
    bad = cli("history", "--since", "yesterday", env=archive.env)
    assert bad.returncode == 1 and "--since 'yesterday'" in bad.stderr


def test_the_index_lists_every_run_with_links_that_resolve_and_loads_nothing(archive: Archive) -> None:
    page = (archive.outputs / history.INDEX).read_text()  # refreshed by every run
    for run in archive.runs:
        assert f"<code>{run}</code>" in page
    links = re.findall(r'href="([^"]+)"', page)
    assert links and all((archive.outputs / link).is_file() for link in links), links
    assert len([link for link in links if link.endswith(".html")]) == 4  # schema, rollback, schema, schema
    failed = re.search(rf'<tr class="failed"[^>]*>(?:(?!</tr>).)*{archive.runs[1]}', page, re.S)
    assert failed, "the failed run is marked"
    assert 'data-runbook="event_message_fk"' in page and "filterRuns()" in page
    assert not re.search(r"""(?:src|href)=["']https?://""", page)
    assert "<title>dbrunbook archive · " in page


def test_the_overview_shows_each_state_and_reads_no_dropped_database(archive: Archive) -> None:
    seen = history.overview([archive.target, "no_such_db_target"])
    row = seen.states.set_index("runbook").loc[RUNBOOK]
    assert row["target"] == archive.target and row["state"] == "applied (up to date)"
    assert any(n.startswith("no_such_db_target: not read") for n in seen.notes)
    assert "<h3>Latest runs</h3>" in seen._repr_html_()


def test_verify_passes_an_untouched_archive_and_catches_each_tampering(archive: Archive) -> None:
    verified = cli("archive", "verify", "--all", env=archive.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "archive verified: 3 run(s)" in verified.stdout
    first, failed, last = (archive.folder(r) for r in archive.runs)

    def verify() -> str:
        done = cli("archive", "verify", "--all", env=archive.env)
        assert done.returncode == 1, done.stdout
        return done.stdout

    # A changed byte in a page.
    page = first / "01_schema.html"
    original = page.read_bytes()
    page.write_bytes(original.replace(b"passed", b"pasSed", 1))
    assert f"{archive.runs[0]}: changed file: 01_schema.html" in verify()
    page.write_bytes(original)
    # An edited manifest (the middle run's): the next run recorded its hash, the ledger sealed it.
    manifest = failed / "manifest.json"
    kept = manifest.read_text()
    manifest.write_text(kept.replace('"status": "failed"', '"status": "passed"'))
    out = verify()
    assert f"{archive.runs[1]}: edited manifest: its manifest is not the one run {archive.runs[2]} recorded" in out
    assert f"{archive.runs[1]}: edited manifest: its manifest is not the one sealed in" in out
    manifest.write_text(kept)
    # A deleted run.
    aside = first.parent.parent / "aside"
    shutil.move(first, aside)
    out = verify()
    assert f"{archive.runs[0]}: deleted run: sealed in {archive.target}'s ledger" in out
    assert f"the run before it on {archive.target}, {archive.runs[0]}, is not in the archive" in out
    shutil.move(aside, first)
    # Two runs swapped (each folder now holds the other's files).
    swap = first.with_name("swap")
    first.rename(swap)
    last.rename(first)
    swap.rename(last)
    assert "swapped run" in verify()
    swap = first.with_name("swap")
    first.rename(swap)
    last.rename(first)
    swap.rename(last)
    # A file added afterwards.
    (last / "notes.txt").write_text("added later")
    assert f"{archive.runs[2]}: unlisted file: notes.txt" in verify()
    (last / "notes.txt").unlink()
    again = cli("archive", "verify", *archive.runs, env=archive.env)
    assert again.returncode == 0, again.stdout


def test_a_failed_run_has_its_error_in_the_manifest_and_on_top_of_its_page(archive: Archive) -> None:
    folder = archive.folder(archive.runs[1])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] and "nowhere" in manifest["error"]
    node = nbformat.read(str(folder / "01_schema.ipynb"), as_version=4)
    top, bottom = "".join(node.cells[0].source), "".join(node.cells[-1].source)
    assert top == bottom and top.startswith(f"**FAILED** · {RUNBOOK} · schema · {archive.target} · failed")
    assert "**Error:**" in top and "nowhere" in top
    page = (folder / "01_schema.html").read_text()
    assert f"<title>{RUNBOOK} · schema · {archive.target} · failed</title>" in page


def test_pages_are_self_contained_wrap_their_tables_and_keep_the_sql_that_ran(archive: Archive) -> None:
    folder = archive.folder(archive.runs[0])
    page = (folder / "01_schema.html").read_text()
    assert f"<title>{RUNBOOK} · schema · {archive.target} · passed</title>" in page
    assert page.index("**PASSED**" if "**PASSED**" in page else "<strong>PASSED</strong>") < page.index("Expectations")
    assert not re.search(r"""<(?:script|link|img|iframe)\b[^>]*(?:src|href)=["']https?://""", page)
    for block in re.findall(r"<(script|style)\b[^>]*>(.*?)</\1>", page, re.S):
        assert not re.search(r"https?://", block[1]), block[1][:200]
    assert "white-space: normal !important" in page and "overflow-x: visible !important" in page
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("sql/migration.sql", "sql/rollback.sql"):
        assert (folder / name).read_text() == (SEED_000 / name.removeprefix("sql/")).read_text()
        assert manifest["output_files"][name] == manifest["sql_files"][name.removeprefix("sql/")]


# -- approvals -----------------------------------------------------------------------------------------

@pytest.fixture
def approvals_on() -> Iterator[None]:
    """This session's dbrunbook.yaml with approvals required (the project default)."""
    path = Path(os.environ["DBRUNBOOK_CONFIG"])
    kept = path.read_text()
    config = yaml.safe_load(kept) or {}
    config["approvals"] = {"required": True}
    path.write_text(yaml.safe_dump(config))
    try:
        yield
    finally:
        current = yaml.safe_load(path.read_text()) or {}
        current["approvals"] = (yaml.safe_load(kept) or {}).get("approvals", {})
        path.write_text(yaml.safe_dump(current))


def test_a_production_deploy_needs_an_approval_of_the_exact_files_by_someone_else(
        approvals_on: None, tmp_path: Path) -> None:
    env = {"DBRUNBOOK_OUTPUTS": str(tmp_path / "outputs"), "DBRUNBOOK_OPERATOR": "olga"}
    book = tmp_path / RUNBOOK
    shutil.copytree(SEED_000, book)
    with prepared_pair(RUNBOOK, "ap") as (rehearsal, prod):
        early = cli("approve", str(book), "--target", prod, "--as", "alice", env=env)
        assert early.returncode == 1 and "no passed review of event_message_fk as its files are now" in early.stderr
        reviewed = cli("run", str(book), "--target", rehearsal, "--phases", "review,schema", env=env)
        assert reviewed.returncode == 0, reviewed.stdout + reviewed.stderr
        review_run = run_id_of(reviewed.stdout)

        def deploy() -> str:
            done = cli("run", str(book), "--target", prod, "--phases", "deploy", "-p", f"rehearsal={rehearsal}",
                       env=env)
            return done.stdout + done.stderr

        assert "deploy refused: no approval is recorded for event_message_fk on" in deploy()
        self_approved = cli("approve", str(book), "--target", prod, env=env)  # the operator herself
        assert self_approved.returncode == 0 and "by olga" in self_approved.stdout
        assert "deploy refused: the only approval is by olga, who is deploying (four eyes" in deploy()
        assert cli("approve", str(book), "--target", prod, "--as", "alice", "--note", "read the plan",
                   env=env).returncode == 0
        waiting = history.overview([prod]).pending.set_index("runbook")
        assert waiting.loc[RUNBOOK, "approval"] == "alice: valid" and waiting.loc[RUNBOOK, "state"] == "pending"
        # Editing any file of the runbook voids the approval (the SQL is untouched: only the approval is at stake).
        spec = book / "runbook.yaml"
        spec.write_text(spec.read_text().replace("title:", "title: (edited)", 1))
        assert "deploy refused: the files changed since alice's approval" in deploy() and "runbook.yaml" in deploy()
        status = cli("status", str(book), "--target", prod, env=env)
        assert "approval: alice at" in status.stdout and "VOID: the files changed since" in status.stdout
        spec.write_text(spec.read_text().replace("title: (edited)", "title:", 1))
        passed = deploy()
        assert "deploy       passed" in passed, passed
        folder = Path(re.search(r"archive: (\S+)", passed).group(1))  # type: ignore[union-attr]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["approval"]["approver"] == "alice" and manifest["approval"]["review_run_id"] == review_run
        assert "Approved</strong> by alice" in (folder / "01_deploy.html").read_text()
        shown = json.loads(cli("history", "--target", prod, "--format", "json", env=env).stdout)
        assert shown[0]["approval"].startswith("alice at") and shown[0]["production"] is True
        status = cli("status", str(book), "--target", prod, env=env)
        assert "approval: alice at" in status.stdout and "covers the files as they are now" in status.stdout
