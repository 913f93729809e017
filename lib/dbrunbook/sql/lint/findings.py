"""A finding (severity, rule, where, statement, message, fix), the severities, and a lint's result."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (INFO, WARNING, ERROR)


FINDING_COLUMNS = ["severity", "rule", "where", "statement", "message", "fix"]


@dataclass(frozen=True)
class Finding:
    severity: str
    rule: str
    file: str
    line: int | None
    statement: str
    message: str
    fix: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.rule}: {self.message}"


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    import pandas as pd  # for the notebook's table; `run` and `lint` do not need it

    return pd.DataFrame([{"severity": f.severity, "rule": f.rule, "where": f.where, "statement": f.statement,
                          "message": f.message, "fix": f.fix} for f in findings], columns=FINDING_COLUMNS)


def reaches(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether any finding is at least as severe as ``fail_on``."""
    floor = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(f.severity) >= floor for f in findings)


@dataclass
class LintResult:
    findings: list[Finding]
    files: list[str]

    def frame(self) -> pd.DataFrame:
        return findings_frame(self.findings)

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "findings": [{**asdict(f), "where": f.where} for f in self.findings]},
                          indent=2)

    def render(self) -> str:
        if not self.findings:
            return f"{len(self.files)} file(s) checked: no findings"
        lines = [f"{f.where}: {f.severity}: {f.rule}: {f.message}" + (f"\n    fix: {f.fix}" if f.fix else "")
                 for f in sorted(self.findings, key=lambda f: (-SEVERITIES.index(f.severity), f.file, f.line or 0))]
        counts = {s: sum(1 for f in self.findings if f.severity == s) for s in reversed(SEVERITIES)}
        return "\n".join(lines + [", ".join(f"{n} {s}(s)" for s, n in counts.items() if n)])
