"""A phase's steps return their evidence as objects that render themselves; the library prints nothing."""
from __future__ import annotations

import pandas as pd
import pytest
from dbrunbook.cli import commands
from dbrunbook.errors import ChecksFailed
from dbrunbook.phases import report
from dbrunbook.phases.base import open_phase
from dbrunbook.phases.evidence import Evidence, Table, Text, step

from .conftest import connect


class Steps:
    phase = "demo"

    @step
    def count(self, n: int) -> int:
        report.say(f"**Counted** {n}.")
        report.show(pd.DataFrame({"n": [n], "result": ["pass"]}), caption="counts", status_column="result")
        return n

    @step
    def outer(self) -> str:
        report.say("outer first")
        self.count(2)  # a step inside a step: what it says belongs to this one too
        return "done"

    @step
    def failing(self) -> None:
        report.say("**Found** one bad row.")
        raise ChecksFailed("demo", ["one bad row"])

    @step
    def outer_failing(self) -> None:
        report.say("before the failure")
        self.failing()


def test_a_step_returns_its_value_and_blocks_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    found = Steps().count(3)
    assert isinstance(found, Evidence) and found.step == "demo.count" and found.value == 3
    assert found.texts == ["**Counted** 3."]
    assert found.table("counts").to_dict("records") == [{"n": 3, "result": "pass"}]
    assert found.tables[0].status_column == "result"
    assert capsys.readouterr().out == ""
    assert str(found) == "**Counted** 3.\ncounts\n n result\n 3   pass"
    assert found._repr_markdown_() == "**Counted** 3.\n\n*counts*\n\n| n | result |\n|---|---|\n| 3 | pass |"
    assert found.to_dict() == {"step": "demo.count", "texts": ["**Counted** 3."],
                               "tables": [{"caption": "counts", "rows": [{"n": 3, "result": "pass"}]}]}
    with pytest.raises(KeyError, match="demo.count shows no table captioned 'other'"):
        found.table("other")


def test_a_step_inside_a_step_says_it_into_the_outer_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    found = Steps().outer()
    assert found.value == "done"
    assert [type(b) for b in found.blocks] == [Text, Text, Table]
    assert found.texts == ["outer first", "**Counted** 2."]
    assert capsys.readouterr().out == ""


def test_a_failing_step_shows_what_it_found_then_raises(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ChecksFailed, match="one bad row"):
        Steps().failing()
    assert capsys.readouterr().out == "**Found** one bad row.\n"
    # Inside another step, the failing step's blocks go to the outer one, shown once, in order.
    with pytest.raises(ChecksFailed):
        Steps().outer_failing()
    assert capsys.readouterr().out == "before the failure\n**Found** one bad row.\n"


def test_a_real_phase_step_is_evidence_with_its_frame_and_its_verdict(target: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    commands.prepare("event_message_fk", target)
    capsys.readouterr()
    run = open_phase("schema", "event_message_fk", target)
    assert run.opening is not None and "| **phase** | schema |" in run.opening.texts[0]
    plan = run.plan()
    assert plan.value.decision == "apply" and plan.table("migration.sql").shape[0] == len(plan.value.statements)
    before = run.snapshot()
    assert before.texts == [f"**Schema fingerprint before:** `{before.value.fingerprint}`"]
    run.apply()
    checks = run.check_expectations()
    assert checks.table() is checks.value and set(checks.value["result"]) == {"pass"}
    assert checks.texts == [f"**Expectations:** {len(checks.value)} of {len(checks.value)} passed."]
    finished = run.finish()
    assert finished.value is None and finished.texts[0].startswith("**schema passed:** event_message_fk applied")
    assert capsys.readouterr().out == ""  # every step said it into its evidence; nothing was printed
    with connect(target) as conn:
        assert conn.exec_driver_sql('SELECT count(*) FROM information_schema.columns '
                                    "WHERE column_name = 'messageId'").scalar() == 1


def test_the_archive_verdict_renders_itself_for_the_overview_page() -> None:
    from dbrunbook.archive.chain import Verification

    shown = Verification(checked=["r1", "r2"], notes=["run r3 has no manifest yet"])._repr_markdown_()
    assert shown == ("**archive verified: 2 run(s), every file, manifest and link intact**\n\n"
                     "- `note: run r3 has no manifest yet`")
