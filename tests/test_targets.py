"""Target resolution and redaction (no server needed: resolving never connects)."""
from __future__ import annotations

import pytest
from dbrunbook.errors import SpecError, TargetError
from dbrunbook.targets.resolve import resolve_target
from dbrunbook.targets.secrets import check_parameter_safe, redact

from .conftest import add_target


def test_default_targets_are_embedded_databases() -> None:
    dev, prod = resolve_target("dev"), resolve_target("prod")
    assert (dev.embedded_db, dev.production) == ("app_dev", False)
    assert (prod.embedded_db, prod.production) == ("app_prod", True)


def test_configured_target_reads_its_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    add_target("staging", {"url_env": "STAGING_URL", "production": True})
    monkeypatch.setenv("STAGING_URL", "postgresql://deploy:Hunter2Secret@db.internal:5432/app")
    target = resolve_target("staging")
    assert target.production and target.name == "staging"
    assert "Hunter2Secret" not in target.display_url and "***" in target.display_url
    assert redact("could not connect with Hunter2Secret") == "could not connect with ***"


def test_configured_target_with_missing_env_is_a_clear_error() -> None:
    add_target("broken", {"url_env": "NOT_SET_ANYWHERE"})
    with pytest.raises(TargetError, match="NOT_SET_ANYWHERE is not set"):
        resolve_target("broken")


def test_config_entry_needs_exactly_one_source() -> None:
    add_target("twice", {"url": "postgresql://a@b/c", "embedded": "x"})
    with pytest.raises(Exception, match="exactly one of url, url_env, embedded"):
        resolve_target("twice")
    add_target("twice", {"embedded": "x"})  # leave the config valid for later tests


def test_raw_urls_off_this_machine_count_as_production() -> None:
    assert resolve_target("postgresql://u@db.example.com/app").production
    assert not resolve_target("postgresql://u@localhost/app").production
    assert resolve_target("postgres://u@localhost/app").url.drivername == "postgresql+psycopg"


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DB", "postgresql://u:pw123456@localhost/app")
    target = resolve_target("env:MY_DB")
    assert target.name == "env:MY_DB" and target.url.password == "pw123456"
    with pytest.raises(TargetError, match="NOPE is not set"):
        resolve_target("env:NOPE")


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(TargetError, match="unknown target 'qa'.*dev.*prod"):
        resolve_target("qa")


def test_redact_hides_url_passwords_it_never_saw() -> None:
    assert redact("postgresql://app:n3ver-seen@h/db") == "postgresql://app:***@h/db"


def test_notebook_parameter_with_password_is_refused() -> None:
    with pytest.raises(TargetError, match="stored in clear"):
        check_parameter_safe("postgresql://u:pw@localhost/app")
    check_parameter_safe("dev")
    check_parameter_safe("env:DATABASE_URL")


def test_targets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBRUNBOOK_TARGETS", '{"ci_db": {"embedded": "ci_db", "production": true}}')
    target = resolve_target("ci_db")
    assert target.embedded_db == "ci_db" and target.production
    monkeypatch.setenv("DBRUNBOOK_TARGETS", "[1, 2]")
    with pytest.raises(SpecError, match="DBRUNBOOK_TARGETS: must be a JSON object"):
        resolve_target("ci_db")
