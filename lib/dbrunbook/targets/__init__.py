"""Targets: where a runbook runs (names, URLs, the embedded server), and secrets kept out of sight."""
