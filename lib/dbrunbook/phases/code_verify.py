"""The code_verify phase: does the application use the new schema the way the plan says?

Seed 000's Phase 3 changed five files so that events are written and read through the new
``Event.messageId`` foreign key instead of the ``metadata`` JSON. The runbook turns that list
into rules over an application tree: forbidden idioms (the plan's BEFORE code), required ones
(the AFTER code), and checks on the Prisma schema. Findings come as a ``file:line`` table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import SpecError
from ..runbook.sections import CodeRule, CodeVerifySpec, PrismaModel, PrismaSpec
from ..runbook.spec import Runbook
from ..state.status import Status
from ..targets.resolve import Target
from . import report
from .base import PhaseRun
from .evidence import step

FINDING_COLUMNS = ["rule", "kind", "file", "line", "found", "message"]
_SKIP_DIRS = {".git", "node_modules", ".next", "dist", "build", "__pycache__"}


@dataclass(frozen=True)
class Finding:
    rule: str
    kind: str
    file: str
    line: int | None
    found: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.rule}: {self.message}"


# -- the application tree ----------------------------------------------------------------------

def iter_files(root: Path, patterns: list[str]) -> list[Path]:
    """Files under ``root`` matching any glob pattern (``**`` spans folders)."""
    found: set[Path] = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and not _SKIP_DIRS.intersection(path.relative_to(root).parts):
                found.add(path)
    return sorted(found)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _excerpt(text: str, match: re.Match[str]) -> str:
    """The matched line, or the whole match on one line when it spans several."""
    if "\n" in match.group(0).strip():
        shown = " ".join(match.group(0).split())
    else:
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.start())
        shown = text[start:end if end != -1 else len(text)].strip()
    return shown if len(shown) <= 100 else shown[:97] + "..."


@dataclass
class RuleResult:
    rule: CodeRule
    files: int = 0
    matches: int = 0
    findings: list[Finding] = field(default_factory=list)


_CODE_SUFFIXES = {".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".prisma"}


def blank_comments(text: str) -> str:
    """The code with its ``//`` and ``/* */`` comments blanked (same length, same lines), so a rule
    matches what the code does, not what a comment says (``// Direct FK query``). String and
    template literals are kept: a ``//`` inside a URL string is not a comment."""
    out = list(text)
    i, quote = 0, ""
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = len(text) if end == -1 else end + 2
            out[i:end] = [c if c == "\n" else " " for c in text[i:end]]
            i = end
            continue
        i += 1
    return "".join(out)


def check_rule(root: Path, rule: CodeRule) -> RuleResult:
    pattern = re.compile(rule.forbid or rule.require or "", re.MULTILINE)
    result = RuleResult(rule)
    for path in iter_files(root, rule.files):
        result.files += 1
        text = path.read_text(errors="replace")
        if path.suffix in _CODE_SUFFIXES:
            text = blank_comments(text)
        relative = str(path.relative_to(root))
        for match in pattern.finditer(text):
            result.matches += 1
            if rule.forbid is not None:
                result.findings.append(Finding(rule.id, "forbidden", relative, _line_of(text, match.start()),
                                               _excerpt(text, match), rule.message))
    if rule.require is not None and result.matches < rule.min:
        where = ", ".join(rule.files)
        found = "no file matches" if result.files == 0 else f"{result.matches} match(es) in {result.files} file(s)"
        result.findings.append(Finding(rule.id, "required", where, None, found,
                                       f"{rule.message} (need at least {rule.min})"))
    return result


# -- Prisma schema ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrismaField:
    name: str
    type: str
    attributes: str
    line: int


@dataclass
class PrismaBlock:
    name: str
    line: int
    fields: dict[str, PrismaField] = field(default_factory=dict)
    indexes: list[tuple[list[str], int]] = field(default_factory=list)


_MODEL = re.compile(r"^\s*model\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(\w+)\s+([\w.]+(?:\[\])?\??)\s*(.*)$")
_BLOCK_INDEX = re.compile(r"^\s*@@index\(\s*(?:fields:\s*)?\[([^\]]*)\]")


def _strip_comment(line: str) -> str:
    # Prisma has // comments only; a string literal holding "//" is rare enough in schemas.
    return line.split("//", 1)[0].rstrip()


def _names(listing: str) -> list[str]:
    # "messageId(sort: Desc), b" -> ["messageId", "b"]
    return [part.split("(")[0].strip() for part in listing.split(",") if part.strip()]


def parse_prisma(text: str) -> dict[str, PrismaBlock]:
    """The models of a Prisma schema: fields (type as written) and ``@@index`` lists, with lines."""
    models: dict[str, PrismaBlock] = {}
    current: PrismaBlock | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if current is None:
            found = _MODEL.match(line)
            if found:
                current = models[found.group(1)] = PrismaBlock(found.group(1), number)
            continue
        if line.strip() == "}":
            current = None
            continue
        index = _BLOCK_INDEX.match(line)
        if index:
            current.indexes.append((_names(index.group(1)), number))
            continue
        if line.strip().startswith("@@") or not line.strip():
            continue
        parsed = _FIELD.match(line)
        if parsed:
            name, type_, attributes = parsed.groups()
            current.fields[name] = PrismaField(name, type_, attributes, number)
    return models


def _relation_args(attributes: str) -> dict[str, str]:
    found = re.search(r"@relation\((.*)\)", attributes)
    if not found:
        return {}
    args: dict[str, str] = {}
    for key in ("fields", "references"):
        listing = re.search(rf"{key}:\s*\[([^\]]*)\]", found.group(1))
        if listing:
            args[key] = ",".join(_names(listing.group(1)))
    delete = re.search(r"onDelete:\s*(\w+)", found.group(1))
    if delete:
        args["onDelete"] = delete.group(1)
    return args


def check_prisma_model(models: dict[str, PrismaBlock], expected: PrismaModel, file: str) -> list[Finding]:
    def finding(line: int | None, found: str, message: str) -> Finding:
        return Finding(f"prisma:{expected.model}", "prisma", file, line, found, message)

    block = models.get(expected.model)
    if block is None:
        return [finding(None, "(no such model)", f"model {expected.model} is not declared")]
    out = []
    for name, type_ in expected.fields.items():
        actual = block.fields.get(name)
        if actual is None:
            out.append(finding(block.line, f"model {expected.model}", f"field {name} {type_} is missing"))
        elif actual.type != type_:
            out.append(finding(actual.line, f"{name} {actual.type}", f"field {name} must be {type_}"))
    for relation in expected.relations:
        actual = block.fields.get(relation.field)
        want = f"{relation.field} {relation.model}? @relation(fields: [{', '.join(relation.fields)}], " \
               f"references: [{', '.join(relation.references)}]" + \
               (f", onDelete: {relation.on_delete})" if relation.on_delete else ")")
        if actual is None:
            out.append(finding(block.line, f"model {expected.model}", f"relation missing: {want}"))
            continue
        args = _relation_args(actual.attributes)
        problems = []
        if actual.type.rstrip("?[]") != relation.model:
            problems.append(f"type {actual.type}, not {relation.model}")
        if args.get("fields") != ",".join(relation.fields):
            problems.append(f"fields [{args.get('fields', '')}]")
        if args.get("references") != ",".join(relation.references):
            problems.append(f"references [{args.get('references', '')}]")
        if relation.on_delete and args.get("onDelete") != relation.on_delete:
            problems.append(f"onDelete {args.get('onDelete', '(default)')}")
        if problems:
            out.append(finding(actual.line, f"{actual.name} {actual.type} {actual.attributes}".strip()[:100],
                               f"relation must be {want}; found {', '.join(problems)}"))
    declared = [columns for columns, _ in block.indexes]
    for columns in expected.indexes:
        if columns not in declared:
            out.append(finding(block.line, f"model {expected.model}",
                               f"@@index([{', '.join(columns)}]) is missing"))
    return out


def check_prisma(root: Path, spec: PrismaSpec) -> list[Finding]:
    path = root / spec.file
    if not path.is_file():
        return [Finding("prisma", "prisma", spec.file, None, "(file not found)",
                        "the Prisma schema the runbook names is not in the application tree")]
    models = parse_prisma(path.read_text())
    return [f for model in spec.models for f in check_prisma_model(models, model, spec.file)]


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([{"rule": f.rule, "kind": f.kind, "file": f.file, "line": f.line,
                          "found": f.found, "message": f.message} for f in findings],
                        columns=FINDING_COLUMNS)


# -- the phase ----------------------------------------------------------------------------------------

class CodeVerifyRun(PhaseRun):
    """Rules over an application tree; the ledger records the verdict on the target."""

    default_action = "verify code"

    def __init__(self, phase: str, runbook: Runbook, target: Target, *, app: str = "",
                 **kwargs: object) -> None:
        super().__init__(phase, runbook, target, **kwargs)  # type: ignore[arg-type]
        self.spec: CodeVerifySpec = runbook.spec.code_verify or CodeVerifySpec()
        self.app_root = self._resolve_app(app)
        self.results: list[RuleResult] = []
        self.findings: list[Finding] = []

    def _resolve_app(self, app: str) -> Path | None:
        if not app and not self.spec.app:
            return None
        root = Path(app) if app else self.runbook.path / self.spec.app
        if not root.is_dir():
            self._fail(SpecError(str(root), "the application tree to verify is not a folder",
                                 "app parameter" if app else "code_verify.app"))
        return root.resolve()

    @step
    def describe(self) -> pd.DataFrame:
        """The rules, as declared."""
        self._guard_open()
        if self.spec.why:
            report.say(self.spec.why)
        rows = [{"rule": r.id, "kind": "forbidden" if r.forbid else f"required (min {r.min})",
                 "pattern": r.forbid or r.require, "files": ", ".join(r.files), "why": r.message}
                for r in self.spec.rules]
        if self.spec.prisma:
            for model in self.spec.prisma.models:
                what = [f"{k} {v}" for k, v in model.fields.items()] + \
                       [f"{r.field} -> {r.model}({', '.join(r.references)})"
                        + (f" onDelete {r.on_delete}" if r.on_delete else "") for r in model.relations] + \
                       [f"@@index([{', '.join(i)}])" for i in model.indexes]
                rows.append({"rule": f"prisma:{model.model}", "kind": "prisma schema", "pattern": "; ".join(what),
                             "files": self.spec.prisma.file, "why": "the ORM schema declares what the migration created"})
        frame = pd.DataFrame(rows, columns=["rule", "kind", "pattern", "files", "why"])
        where = f"`{self.app_root}`" if self.app_root else "(no application tree)"
        report.say(f"**Application tree:** {where}")
        report.show(frame, caption="rules")
        return frame

    @step
    def verify(self) -> pd.DataFrame:
        """Run every rule; one row per rule with its verdict."""
        self._guard_open()
        if self.app_root is None:
            report.say("**Nothing to verify:** this runbook declares no `code_verify` rules or application "
                       "tree, so the phase passes.")
            return pd.DataFrame(columns=["rule", "files scanned", "matches", "findings", "result"])
        self.results = [check_rule(self.app_root, rule) for rule in self.spec.rules]
        rows = [{"rule": r.rule.id, "files scanned": r.files, "matches": r.matches,
                 "findings": len(r.findings), "result": "pass" if not r.findings else "FAIL"}
                for r in self.results]
        self.findings = [f for r in self.results for f in r.findings]
        if self.spec.prisma:
            prisma = check_prisma(self.app_root, self.spec.prisma)
            self.findings += prisma
            rows.append({"rule": "prisma schema", "files scanned": 1, "matches": "-",
                         "findings": len(prisma), "result": "pass" if not prisma else "FAIL"})
        frame = pd.DataFrame(rows)
        report.show(frame, caption="verdict per rule", status_column="result")
        return frame

    @step
    def show_findings(self) -> pd.DataFrame:
        """Every finding as ``file:line``: what was found, and what the plan wants instead."""
        self._guard_open()
        frame = findings_frame(self.findings)
        self.failures = [str(f) for f in self.findings]
        if self.findings:
            report.say(f"**{len(self.findings)} finding(s):** the code does not yet follow the plan.")
            report.show(frame, caption="findings")
        else:
            report.say("**No findings:** the application follows the plan.")
        self.detail.update({"app": str(self.app_root) if self.app_root else None,
                            "findings": len(self.findings)})
        return frame

    @step
    def finish(self) -> None:
        """Record the verdict; raise when there is any finding."""
        self._guard_open()
        self._raise_for_failures()
        self._commit("verify code", Status.PASSED if self.app_root else Status.NOOP)
        report.say(f"**code_verify passed** and was recorded on {self.target.name} (run {self.run_id}).")
