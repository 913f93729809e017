"""Loading runbook.yaml: strict validation with errors that name the file and the field."""
from __future__ import annotations

from pathlib import Path

import pytest
from dbrunbook.errors import SpecError
from dbrunbook.runbook.spec import load_runbook

from .conftest import SEED_000


def write_spec(folder: Path, text: str) -> None:
    (folder / "runbook.yaml").write_text(text)


def spec_error_after_edit(folder: Path, old: str, new: str) -> SpecError:
    """Load the runbook after replacing ``old`` by ``new`` (first occurrence) in its runbook.yaml."""
    write_spec(folder, (folder / "runbook.yaml").read_text().replace(old, new, 1))
    with pytest.raises(SpecError) as err:
        load_runbook(folder)
    return err.value


def test_seed_000_runbook_loads() -> None:
    book = load_runbook(SEED_000)
    assert book.name == "event_message_fk"
    fk = book.spec.expect.foreign_keys[0]
    assert (fk.name, fk.on_delete, fk.references.table) == ("Event_messageId_fkey", "CASCADE", "Message")
    assert book.spec.expect.columns[0].nullable is True
    assert {"migration.sql", "rollback.sql", "fixtures/before.sql"} <= set(book.sql_checksums())


def test_runbook_by_name_resolves_under_runbooks() -> None:
    assert load_runbook("event_message_fk").path == SEED_000


def test_unknown_key_names_file_and_field(runbook_copy: Path) -> None:
    err = spec_error_after_edit(runbook_copy, "  columns:\n", "  colums:\n")
    assert err.field == "expect.colums"
    assert str(runbook_copy / "runbook.yaml") in str(err)
    assert "unknown key" in str(err)


def test_wrong_type_names_field(runbook_copy: Path) -> None:
    err = spec_error_after_edit(runbook_copy, "nullable: true", "nullable: maybe")
    assert err.field == "expect.columns.0.nullable"
    assert "boolean" in str(err)


def test_missing_file_is_named(runbook_copy: Path) -> None:
    (runbook_copy / "rollback.sql").unlink()
    with pytest.raises(SpecError) as err:
        load_runbook(runbook_copy)
    assert err.value.field == "rollback"
    assert "rollback.sql" in str(err.value) and "not found" in str(err.value)


def test_bad_fk_action_is_refused(runbook_copy: Path) -> None:
    err = spec_error_after_edit(runbook_copy, "on_delete: cascade", "on_delete: explode")
    assert err.field == "expect.foreign_keys.0.on_delete"


def test_missing_required_key(runbook_copy: Path) -> None:
    write_spec(runbook_copy, "engine: postgresql\n")
    with pytest.raises(SpecError) as err:
        load_runbook(runbook_copy)
    assert err.value.field == "title" and "missing" in str(err.value)


def test_invalid_yaml_gives_line(runbook_copy: Path) -> None:
    write_spec(runbook_copy, "title: x\nexpect: [\n")
    with pytest.raises(SpecError, match=r"not valid YAML \(line \d+\)"):
        load_runbook(runbook_copy)


def test_not_a_runbook_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no runbook here"):
        load_runbook(tmp_path)


# -- several files per script (seed 001: 022 and 023) -------------------------------------------------

SEED_001 = SEED_000.parent / "saved_insights_customer"


def test_a_migration_of_several_files(tmp_path: Path) -> None:
    import shutil

    book = load_runbook(SEED_001)
    assert book.script_name("migration") == "022_add_customer_to_saved_insights.sql + 023_create_conversation_tables.sql"
    statements, wrapped = book.read_script("migration", "postgresql")
    # Each file's own BEGIN ... COMMIT is set aside; the files' statements follow in order.
    assert wrapped and [s.file for s in statements][:1] == ["saved_insights_customer/022_add_customer_to_saved_insights.sql"]
    assert statements[-1].file.endswith("023_create_conversation_tables.sql")
    assert not any(s.transaction_control for s in statements)
    # The fixture folder stands for its files, in name order, after reset.sql.
    assert book.fixture_files[0] == "fixtures/reset.sql"
    assert book.fixture_files[1:23] == [f"migrations/{p.name}" for p in sorted((SEED_001 / "migrations").glob("*.sql"))]
    assert len(book.existing_migrations) == 22
    # The ledger's checksum covers every file: editing the second one changes it.
    copy = tmp_path / "saved_insights_customer"
    shutil.copytree(SEED_001, copy)
    before = load_runbook(copy).migration_checksum()
    with (copy / "023_create_conversation_tables.sql").open("a") as handle:
        handle.write("\n-- edited\n")
    assert load_runbook(copy).migration_checksum() != before


def test_a_missing_variant_file_is_named(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "saved_insights_customer"
    shutil.copytree(SEED_001, copy)
    (copy / "proposed" / "019_create_conversation_tables.sql").unlink()
    with pytest.raises(SpecError) as err:
        load_runbook(copy)
    assert err.value.field == "review.variants.proposed.migration"
    assert "019_create_conversation_tables.sql" in str(err.value)
