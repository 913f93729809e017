"""Runbooks and sets: runbook.yaml, set.yaml, and migration folders as teams lay them out."""
