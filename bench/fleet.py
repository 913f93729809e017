"""A fleet rollout on Dask: seed 000's schema phase on N tenant databases, with 1 worker and with 2.

N embedded databases (default 200) are cloned from one template holding seed 000's "before" schema
and fixture; `dbrunbook fleet run` applies the schema phase to all of them (a canary wave, then the
rest) on a LocalCluster of 1 worker process, and of 2. Each rollout gets the same start: its own
embedded server, the template and its clones made, then a CHECKPOINT, so that none is timed while the
server writes back what cloning or another rollout left (200 clones write some 1.6 GB of WAL, past
max_wal_size: a second rollout on a shared server ran beside checkpoints). The pair is measured
``--repeat`` times (default 3), in alternating order (1 then 2, 2 then 1, ...): on this shared 2-core
machine one rollout's time varies by up to a fifth from run to run. It prints every rollout, then
the medians: wall seconds, databases per second, the CPU the workers spent per database-phase (their
own process time, the phase cells in-process, no kernel) and the speed-up of 2 workers over 1 (median
against median). Goals (issue 15): at most 0.3 s CPU per database-phase, and 2 workers at least 1.6x
faster than 1 on the 2-core machine; it exits 1 when either is missed.

    .venv/bin/python bench/fleet.py [--databases 200] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "event_message_fk"
CPU_GOAL, SPEEDUP_GOAL = 0.3, 1.6


def clone(template: str, names: list[str]) -> None:
    """``names`` as copies of ``template``, then a checkpoint: the copies are on disk before any timing."""
    import psycopg
    from dbrunbook.targets import embedded
    from psycopg import sql

    socket_dir = embedded.ensure_running()
    with psycopg.connect(embedded.conninfo("postgres", socket_dir), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        conn.execute("CHECKPOINT")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbrb-fleet-"))
    os.environ.setdefault("DBRUNBOOK_HOME", str(ROOT))
    os.environ["DBRUNBOOK_OUTPUTS"] = str(work / "outputs")
    config = work / "dbrunbook.yaml"
    config.write_text("targets:\n  bench_template: {embedded: bench_template}\n"
                      "groups:\n  w1: {pattern: 'bench_w1_*', server: dev}\n  w2: {pattern: 'bench_w2_*', server: dev}\n")
    os.environ["DBRUNBOOK_CONFIG"] = str(config)
    from dbrunbook.targets import embedded

    try:
        rows = []
        for repeat in range(args.repeat):
            for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                row = rollout(work / f"pgdata_{repeat}_w{workers}", workers, args.databases)
                if row is None:
                    return 1
                rows.append(row)
                print(json.dumps(row))
        medians = [{"workers": workers, "rollouts": len(mine := [r for r in rows if r["workers"] == workers]),
                    "wall s": round(statistics.median(r["wall s"] for r in mine), 1),
                    "databases/s": round(args.databases / statistics.median(r["wall s"] for r in mine), 1),
                    "worker CPU s per database-phase (median)": round(statistics.median(
                        r["worker CPU s per database-phase (median)"] for r in mine), 3),
                    "mean": round(statistics.median(r["mean"] for r in mine), 3)} for workers in (1, 2)]
        speedup = medians[0]["wall s"] / medians[1]["wall s"]
        print(json.dumps(medians, indent=1))
        print(f"2 workers / 1 worker: {speedup:.2f}x faster, median against median (goal {SPEEDUP_GOAL}x); "
              f"worker CPU per database-phase {max(m['mean'] for m in medians)} s (goal {CPU_GOAL} s)")
        return 0 if speedup >= SPEEDUP_GOAL and max(r["mean"] for r in rows) <= CPU_GOAL else 1
    finally:
        embedded.stop()
        # A fleet's databases and archive take gigabytes: a benchmark leaves nothing behind.
        shutil.rmtree(work, ignore_errors=True)


def rollout(pgdata: Path, workers: int, databases: int) -> dict[str, object] | None:
    """One timed rollout on a server of its own (``pgdata``), removed afterwards; None if it failed."""
    from dbrunbook.cli import commands
    from dbrunbook.run import fleet
    from dbrunbook.targets import embedded

    os.environ["DBRUNBOOK_PGDATA"] = str(pgdata)
    try:
        commands.prepare(RUNBOOK, "bench_template")
        clone("bench_template", [f"bench_w{workers}_{i:04d}" for i in range(databases)])
        refs = fleet.group_targets(f"w{workers}")
        assert len(refs) == databases, refs[:3]
        started = time.perf_counter()
        result = fleet.fleet_run(RUNBOOK, refs, ["schema"], waves="1,100%", parallel=workers)
        wall = time.perf_counter() - started
        if not result.ok or any(d.status != "passed" for d in result.databases):
            print(result.render(), file=sys.stderr)
            return None
        cpu = [d.cpu_seconds for d in result.databases]
        per = [d.seconds for d in result.databases]
        return {"workers": workers, "databases": databases, "wall s": round(wall, 1),
                "databases/s": round(databases / wall, 1),
                "worker CPU s per database-phase (median)": round(statistics.median(cpu), 3),
                "mean": round(statistics.mean(cpu), 3), "wall s per database (median)": round(statistics.median(per), 3)}
    finally:
        embedded.stop()
        shutil.rmtree(pgdata, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
