"""What a phase costs above its SQL: `dbrunbook run` of seed 000's schema+rollback against `psql -1 -f`.

On one embedded database prepared from seed 000's fixture, paired and alternating, N times (default 5):

  psql       the bundled psql, `psql -1 -f migration.sql` then `psql -1 -f rollback.sql`;
  run        `dbrunbook run event_message_fk --target bench --phases schema,rollback` (two archived,
             checked, rendered phases: ledger, fingerprints, expectations, HTML);
  in-process the same two phase notebooks' cells run in this process (what a fleet worker does).

It prints the medians (wall and CPU of the process and its children) and the overhead per phase above
the SQL: (run - psql) / 2. Goal (issue 15): at most 1.5 s per phase; it exits 1 when missed.

    .venv/bin/python bench/overhead.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "event_message_fk"
GOAL_S = 1.5


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - started, children_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbrb-overhead-"))
    os.environ.setdefault("DBRUNBOOK_HOME", str(ROOT))
    os.environ["DBRUNBOOK_PGDATA"] = str(work / "pgdata")
    os.environ["DBRUNBOOK_OUTPUTS"] = str(work / "outputs")
    os.environ["DBRUNBOOK_CONFIG"] = str(work / "dbrunbook.yaml")
    (work / "dbrunbook.yaml").write_text("targets:\n  bench: {embedded: bench}\n")
    from dbrunbook.cli import commands
    from dbrunbook.phases.notebooks import phase_notebook
    from dbrunbook.run import steps
    from dbrunbook.targets import embedded

    try:
        commands.prepare(RUNBOOK, "bench")
        socket_dir = embedded.ensure_running()
        psql = [str(embedded.client_binary("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir),
                "-U", embedded.SUPERUSER, "-d", "bench", "-1", "-f"]
        book = ROOT / "runbooks" / RUNBOOK
        env = os.environ.copy()
        cli = [sys.executable, "-m", "dbrunbook", "run", RUNBOOK, "--target", "bench", "--phases", "schema,rollback"]
        rows: dict[str, list[tuple[float, float]]] = {"psql": [], "run": [], "in-process": []}
        for _ in range(args.repeat):
            wall_a, cpu_a = timed([*psql, str(book / "migration.sql")], env)
            wall_b, cpu_b = timed([*psql, str(book / "rollback.sql")], env)
            rows["psql"].append((wall_a + wall_b, cpu_a + cpu_b))
            rows["run"].append(timed(cli, env))
            (work / "inproc").mkdir(exist_ok=True)
            cpu, started = time.process_time(), time.perf_counter()
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                for phase in ("schema", "rollback"):
                    steps.execute_cells(phase_notebook(phase), {"runbook": RUNBOOK, "target": "bench", "run_id": "",
                                                                "archive_dir": str(work / "inproc"), "dry_run": False})
            rows["in-process"].append((time.perf_counter() - started, time.process_time() - cpu))
        median = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
        for name, (wall, cpu) in median.items():
            print(f"{name:<11} wall {wall:6.3f} s   cpu {cpu:6.3f} s")
        per_phase = (median["run"][0] - median["psql"][0]) / 2
        inproc = (median["in-process"][0] - median["psql"][0]) / 2
        print(f"dbrunbook run: {per_phase:.2f} s per phase above the SQL (goal {GOAL_S} s); in-process: "
              f"{inproc:.2f} s per phase; run / psql = {median['run'][0] / median['psql'][0]:.0f}x")
        return 0 if per_phase <= GOAL_S else 1
    finally:
        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)  # a benchmark leaves nothing behind


if __name__ == "__main__":
    sys.exit(main())
