"""Guards: no password reaches the archive by any parameter; production needs consent for every phase
that changes it (other than deploy and backfill), from the CLI and from JupyterLab alike."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbrunbook import commands, ledger, open_phase, registry
from dbrunbook.errors import GuardRefused, TargetError

from .conftest import apply_schema, cli, connect, prepared_pair

SECRET = "Sw33p-Pa55word"
URL = f"postgresql://app:{SECRET}@db.example.com:5432/app"


def _archive_text() -> str:
    out = Path(os.environ["DBRUNBOOK_OUTPUTS"])
    return "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()) if out.exists() else ""


@pytest.mark.parametrize("phase", registry.PHASE_NAMES)
def test_no_parameter_of_any_notebook_carries_a_password_into_the_archive(phase: str) -> None:
    before = sorted(Path(os.environ["DBRUNBOOK_OUTPUTS"]).rglob("*")) if Path(os.environ["DBRUNBOOK_OUTPUTS"]).exists() else []
    for name, param in registry.phase_info(phase).all_params().items():
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
            t = ledger.tables("postgresql")
            detail = conn.execute(sa.select(t.events.c.detail).where(t.events.c.run_id == run.run_id)).scalar_one()
        assert detail["consent"]["confirm"] == prod and detail["consent"]["by"]


def test_deploy_and_review_need_no_consent(tmp_path: Path) -> None:
    with prepared_pair("event_message_fk", "n") as (rehearsal, prod):
        apply_schema(rehearsal)
        for phase in ("review", "deploy", "code_verify"):
            run = open_phase(phase, "event_message_fk", prod, archive_dir=tmp_path)
            run.abandon()
