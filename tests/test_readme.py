"""Every command in the README's shell blocks runs as written (those that need no editing), in order,
and exits as the README says (`# ... exit N`, else 0)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

# Not run here: the quick start (CI runs it), JupyterLab (interactive), the demo (tests/test_demo.py).
_SKIP = ("python3 -m venv", ".venv/bin/jupyter", ".venv/bin/dbrunbook demo")


def readme_commands() -> list[tuple[str, int]]:
    text = (ROOT / "README.md").read_text()
    commands: list[tuple[str, int]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            line, _, comment = command.partition("#")
            if not line.strip() or line.strip().startswith(_SKIP) or "<" in line:
                continue
            code = re.search(r"exit (\d+)", comment)
            commands.append((" ".join(line.split()), int(code.group(1)) if code else 0))
    return commands


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 10 and any("papermill" in c for c, _ in commands)
    bin_dir = Path(sys.executable).parent
    for command, expected in commands:
        args = shlex.split(command)
        args[0] = str(bin_dir / Path(args[0]).name)  # this environment's .venv/bin
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
        assert done.returncode == expected, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_the_readme_quotes_the_error_the_tool_gives() -> None:
    import pytest
    import sqlalchemy as sa
    from dbrunbook import open_phase
    from dbrunbook.errors import StatementFailed

    from .conftest import connect, prepared_target

    quoted = re.search(r"`StatementFailed: (event_message_fk/migration\.sql:.*?)`", " ".join(
        (ROOT / "README.md").read_text().split()), re.S)
    assert quoted
    with prepared_target("event_message_fk", "rq") as target:
        with connect(target) as conn, conn.begin():
            conn.execute(sa.text('ALTER TABLE "Event" ADD COLUMN "messageId" TEXT'))  # by hand
        run = open_phase("schema", "event_message_fk", target)
        run.plan()
        with pytest.raises(StatementFailed) as failed:
            run.apply()
    assert str(failed.value) == quoted.group(1)
