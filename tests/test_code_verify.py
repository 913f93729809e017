"""code_verify: the seed's BEFORE code fails with file:line findings, its AFTER code passes."""
from __future__ import annotations

from pathlib import Path

import pytest
from dbrunbook import open_phase
from dbrunbook.errors import ChecksFailed, SpecError
from dbrunbook.phases import code_verify
from dbrunbook.runbook.sections import CodeRule, PrismaModel, PrismaRelation
from dbrunbook.runbook.spec import load_runbook
from dbrunbook.state import ledger

from .conftest import SEED_000, cli, connect

BEFORE = SEED_000 / "sample_app" / "before"
AFTER = SEED_000 / "sample_app" / "after"


def run_code_verify(target: str, app: str = "") -> code_verify.CodeVerifyRun:
    run = open_phase("code_verify", "event_message_fk", target, app=app)
    run.describe()
    run.verify()
    run.show_findings()
    return run


def test_after_tree_passes_and_is_recorded(target: str) -> None:
    run = run_code_verify(target)  # the runbook's default app tree is the seed's AFTER code
    assert run.app_root == AFTER.resolve()
    assert run.findings == []
    assert all(r.matches >= r.rule.min for r in run.results if r.rule.require)
    run.finish()
    with connect(target) as conn:
        event = ledger.events_frame(conn, "event_message_fk", limit=1).iloc[0]
    assert (event["phase"], event["status"]) == ("code_verify", "passed")


def test_before_tree_fails_with_the_seeds_findings(target: str) -> None:
    run = run_code_verify(target, app=str(BEFORE))
    where = {(f.rule, f.file, f.line) for f in run.findings}
    # The plan's Phase 3 BEFORE code, place by place.
    assert ("events-filtered-in-memory", "app/api/feedback/message/route.ts", 14) in where  # copy duplicate check
    assert ("events-filtered-in-memory", "app/api/feedback/message/route.ts", 62) in where  # feedback duplicate check
    assert ("events-filtered-in-memory", "app/dashboard/[chatbotId]/debug/page.tsx", 17) in where
    assert ("messageid-read-from-metadata", "app/api/events/route.ts", 17) in where  # bookmark handling
    assert ("messageid-stored-in-metadata", "app/api/bookmarks/route.ts", 11) in where
    assert {f.rule for f in run.findings if f.kind == "required"} == {
        "feedback-creates-set-fk", "events-route-sets-fk", "bookmark-sets-fk", "feedback-queries-by-fk",
        "debug-page-queries-by-fk", "chunk-job-selects-fk", "events-route-strips-messageid"}
    prisma = {f.message for f in run.findings if f.kind == "prisma"}
    assert prisma == {
        "field messageId String? is missing",
        "relation missing: message Message? @relation(fields: [messageId], references: [id], onDelete: Cascade)",
        "@@index([messageId]) is missing",
        "field events Event[] is missing",
    }
    with pytest.raises(ChecksFailed, match=r"app/api/events/route.ts:17: messageid-read-from-metadata"):
        run.finish()
    with connect(target) as conn:
        event = ledger.events_frame(conn, "event_message_fk", limit=1).iloc[0]
    assert (event["phase"], event["status"]) == ("code_verify", "failed")


def test_unattended_run_fails_on_before_code(target: str) -> None:
    failed = cli("run", "event_message_fk", "--target", target, "--phases", "code_verify", "-p", f"app={BEFORE}")
    assert failed.returncode == 1
    assert "code_verify: 24 check(s) failed" in failed.stderr  # 23, and events-route-strips-messageid (seed 000 case 6)
    passed = cli("run", "event_message_fk", "--target", target, "--phases", "code_verify")
    assert passed.returncode == 0, passed.stdout + passed.stderr


def test_missing_app_tree_is_a_clear_error(target: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="app parameter: the application tree to verify is not a folder"):
        open_phase("code_verify", "event_message_fk", target, app=str(tmp_path / "nope"))


# -- the pieces, as plain functions ----------------------------------------------------------

def test_forbidden_pattern_reports_each_match_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.ts").write_text("ok\nconst x = metadata?.messageId;\n\nmetadata.messageId\n")
    (tmp_path / "b.py").write_text("metadata.messageId\n")
    rule = CodeRule(id="r", forbid=r"\bmetadata\??\.messageId\b", files=["**/*.ts"], message="m")
    result = code_verify.check_rule(tmp_path, rule)
    assert [(f.file, f.line) for f in result.findings] == [("a.ts", 2), ("a.ts", 4)]
    assert result.files == 1


def test_required_pattern_counts_across_lines(tmp_path: Path) -> None:
    (tmp_path / "r.ts").write_text("prisma.event.create({\n  data: {\n    messageId: id,\n")
    rule = CodeRule(id="r", require=r"create\(\{\s*data:\s*\{\s*messageId:", files=["r.ts"], min=1, message="m")
    assert code_verify.check_rule(tmp_path, rule).findings == []
    twice = rule.model_copy(update={"min": 2})
    [finding] = code_verify.check_rule(tmp_path, twice).findings
    assert finding.kind == "required" and "need at least 2" in finding.message


def test_rule_needs_exactly_one_valid_pattern() -> None:
    with pytest.raises(ValueError, match="exactly one of forbid or require"):
        CodeRule(id="r", forbid="a", require="b", message="m")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        CodeRule(id="r", forbid="(", message="m")


def test_prisma_relation_with_the_wrong_on_delete() -> None:
    models = code_verify.parse_prisma((AFTER / "prisma/schema.prisma").read_text().replace(
        "onDelete: Cascade)\n  sessionId", "onDelete: SetNull)\n  sessionId"))
    expected = PrismaModel(model="Event", fields={"messageId": "String?"}, indexes=[["messageId"]],
                           relations=[PrismaRelation(field="message", model="Message", fields=["messageId"],
                                                     references=["id"], on_delete="Cascade")])
    [finding] = code_verify.check_prisma_model(models, expected, "schema.prisma")
    assert finding.line == 22 and "found onDelete SetNull" in finding.message


def test_prisma_parser_reads_fields_and_indexes() -> None:
    models = code_verify.parse_prisma((AFTER / "prisma/schema.prisma").read_text())
    event = models["Event"]
    assert event.fields["messageId"].type == "String?"
    assert event.fields["chunkIds"].type == "String[]"
    assert [cols for cols, _ in event.indexes][0] == ["messageId"]


def test_the_runbook_declares_the_sample_app() -> None:
    spec = load_runbook("event_message_fk").spec.code_verify
    assert spec is not None and (SEED_000 / spec.app).is_dir()


def test_rules_match_code_not_comments(tmp_path: Path) -> None:
    """A rule requiring a FK query must not be satisfied by a comment that says so."""
    (tmp_path / "a.ts").write_text("const url = 'https://example.com'; // Direct FK query\n"
                                   "/* where: { messageId: messageId } */\n"
                                   "const x = 1;\n")
    blanked = code_verify.blank_comments((tmp_path / "a.ts").read_text())
    assert "https://example.com" in blanked and "Direct" not in blanked and "messageId" not in blanked
    assert blanked.count("\n") == 3
    rule = CodeRule(id="r", require=r"where:\s*\{[^}]*messageId", files=["*.ts"], message="m")
    [finding] = code_verify.check_rule(tmp_path, rule).findings
    assert finding.kind == "required"
