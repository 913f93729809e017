"""The tests' forked command line (tests/cli_fork.py) answers as a fresh ``python -m dbrunbook`` does:
same exit code, output and error line, with the call's own environment and working folder."""
from __future__ import annotations

import os

from .conftest import cli


def test_a_forked_command_answers_as_a_fresh_one(tmp_path: os.PathLike[str], target: str) -> None:
    calls = [
        ("status", "event_message_fk", "--target", "dev"),  # exit 0, a report on stdout
        ("status", "no_such_runbook", "--target", "dev"),  # exit 2, one error line on stderr
        ("lint", "event_message_fk", "--format", "json", "--no-squawk"),
    ]
    for args in calls:
        forked, fresh = cli(*args), cli(*args, fresh=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), args
    # Each call's environment, not the server's: without the session's config, its named target is unknown.
    missing = {"DBRUNBOOK_CONFIG": str(os.path.join(tmp_path, "absent.yaml"))}
    assert cli("status", "event_message_fk", "--target", target).returncode == 0
    forked, fresh = cli("status", "event_message_fk", "--target", target, env=missing), \
        cli("status", "event_message_fk", "--target", target, env=missing, fresh=True)
    assert forked.returncode == fresh.returncode != 0, forked.stderr
    assert forked.stderr == fresh.stderr and target in forked.stderr
