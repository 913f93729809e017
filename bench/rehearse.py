"""The rehearsal (schema, rollback, schema per member, with every check) against psql -1 -f.

A Prisma-shaped folder of N migrations (default 40: tables, indexes, foreign keys added after their
tables, columns, NOT NULL, type widenings) is imported as a runbook set. In one run, on two fresh
databases of the embedded server:

  psql       the bundled psql, `psql -1 -f` of each member's up, its generated down, its up again;
  rehearse   `dbrunbook rehearse` of the set: the same statements, through the schema and rollback
             phases in-process (ledger, fingerprints, expectations, verdicts).

It prints seconds per member for each and the ratio rehearse / psql.

    .venv/bin/python bench/rehearse.py [--members 40]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def folder(root: Path, members: int) -> Path:
    src = root / "migrations"
    for n in range(1, members + 1):
        step = src / f"2024010100{n:04d}_step{n}"
        step.mkdir(parents=True)
        kind = n % 4
        if kind == 1:
            sql = (f'CREATE TABLE "T{n}" ("id" SERIAL NOT NULL, "name" TEXT, "ref" INTEGER,\n'
                   f'  CONSTRAINT "T{n}_pkey" PRIMARY KEY ("id"));\nCREATE INDEX "T{n}_name_idx" ON "T{n}"("name");\n')
        elif kind == 2:
            sql = (f'ALTER TABLE "T{n - 1}" ADD CONSTRAINT "T{n - 1}_ref_fkey" FOREIGN KEY ("ref") '
                   f'REFERENCES "T{n - 1}"("id") ON DELETE SET NULL;\n')
        elif kind == 3:
            sql = f'ALTER TABLE "T{n - 2}" ADD COLUMN "note" VARCHAR(50);\nALTER TABLE "T{n - 2}" ALTER COLUMN "name" SET NOT NULL;\n'
        else:
            sql = f'ALTER TABLE "T{n - 3}" ALTER COLUMN "note" SET DATA TYPE VARCHAR(200);\n'
        (step / "migration.sql").write_text(sql)
    return src


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbrb-bench-"))
    os.environ.setdefault("DBRUNBOOK_HOME", str(ROOT))
    os.environ["DBRUNBOOK_PGDATA"] = str(work / "pgdata")
    os.environ["DBRUNBOOK_OUTPUTS"] = str(work / "outputs")
    os.environ["DBRUNBOOK_TARGETS"] = '{"bench_psql": {"embedded": "bench_psql"}, "bench_rehearse": {"embedded": "bench_rehearse"}}'
    from dbrunbook.cli import commands
    from dbrunbook.run.rehearse import rehearse
    from dbrunbook.runbook import sets
    from dbrunbook.targets import embedded

    try:
        imported = commands.import_set(str(folder(work, args.members)), str(work / "set"))
        members = sets.load_members(work / "set")
        assert len(imported.added) == args.members == len(members)
        embedded.ensure_database("bench_psql")
        url = commands.db_url("bench_psql")
        psql = str(embedded.client_binary("psql"))
        started = time.perf_counter()
        for member in members:
            for name in ("migration.sql", "rollback.sql", "migration.sql"):
                done = subprocess.run([psql, url, "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(member / name)],
                                      capture_output=True, text=True)
                if done.returncode:
                    print(f"psql failed on {member.name}/{name}: {done.stderr.strip()}", file=sys.stderr)
                    return 1
        baseline = time.perf_counter() - started
        embedded.ensure_database("bench_rehearse")
        started = time.perf_counter()
        result = rehearse(str(work / "set"), "bench_rehearse")
        rehearsed = time.perf_counter() - started
        if not result.ok:
            print(result.render(), file=sys.stderr)
            return 1
        n = len(members)
        print(f"{n} members, each: up, down, up")
        print(f"  psql -1 -f   {baseline:7.2f} s   {baseline / n * 1000:7.1f} ms/member")
        print(f"  rehearse     {rehearsed:7.2f} s   {rehearsed / n * 1000:7.1f} ms/member   "
              f"({sum(v.verdict == 'round-trip' for v in result.verdicts)} round-trip)")
        print(f"  ratio rehearse / psql: {rehearsed / baseline:.1f}x")
        return 0
    finally:
        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)  # a benchmark leaves nothing behind


if __name__ == "__main__":
    sys.exit(main())
