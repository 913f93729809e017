"""Lint: what a reviewer of a migration should catch before anything runs.

Two sources of findings, one table: squawk (unsafe DDL, :mod:`.squawk`) and our own rules
(:mod:`.rules`, a registry), which read the statements as parsed by PostgreSQL's own parser and
know about the rest of the project: the migrations already numbered, the tables created earlier in
the same migration, and (given a target) the live catalog.
"""
from __future__ import annotations

from .checker import (
           ChainLink,
           history_catalog,
           lint_chain,
           lint_files,
           live_catalog,
           numbering_finding,
           read_for_lint,
)
from .findings import (
           ERROR,
           INFO,
           SEVERITIES,
           WARNING,
           Finding,
           LintResult,
           findings_frame,
           reaches,
)
from .model import LiveColumns, Model, build_model
from .rules import RULES, Migration, Rollback, check_numbering, run_rules
from .squawk import SquawkOptions, squawk_findings

__all__ = ["ERROR", "INFO", "RULES", "SEVERITIES", "WARNING", "ChainLink", "Finding", "LintResult", "LiveColumns",
           "Migration", "Model", "Rollback", "SquawkOptions", "build_model", "check_numbering", "findings_frame",
           "history_catalog", "lint_chain", "lint_files", "live_catalog", "numbering_finding", "read_for_lint",
           "reaches", "run_rules", "squawk_findings"]
