"""The backfill phase against one INSERT ... SELECT of the same rows (seed 002).

On N generated messages (default 1,000,000) with attachments and tool calls in jsonb arrays, in
one run on one database:

  single   the runbook's batch SQL over the whole key range, one statement each, one transaction;
  batched  the backfill phase: keyset batches, each committed with its checkpoint in the ledger,
           the batch size adapting to the runbook's target batch duration.

It prints one table (seconds, messages/s, rows written, batches, worst batch) and the ratio
batched / single. The batched path should stay within 15% of the single statement while every
batch stays well under a second; the script exits 1 when either is not met.

    .venv/bin/python bench/backfill.py [--messages 1000000] [--target-batch-ms 250]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from dbrunbook.phases.batches import run_batch

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "normalize_attachments"
TOLERANCE = 1.15
WORST_BATCH_MS = 1000.0
SEED_RATE = 136.1  # messages/s, seed 002's own backfill (Convex, 834 messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--target-batch-ms", type=int, default=250)
    args = parser.parse_args()

    os.environ.setdefault("DBRUNBOOK_HOME", str(ROOT))
    config = Path(tempfile.mkdtemp(prefix="dbrb-bench-")) / "dbrunbook.yaml"
    config.write_text("targets:\n  bench_backfill: {embedded: bench_backfill}\n")
    os.environ["DBRUNBOOK_CONFIG"] = str(config)
    import pandas as pd
    from dbrunbook import open_phase
    from dbrunbook.cli import commands
    from dbrunbook.targets import embedded

    print(f"loading {args.messages:,} messages into the embedded PostgreSQL ...", flush=True)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        commands.prepare(RUNBOOK, "bench_backfill")
        schema = open_phase("schema", RUNBOOK, "bench_backfill")
        schema.plan(), schema.apply(), schema.check_expectations(), schema.finish()
        run = open_phase("backfill", RUNBOOK, "bench_backfill", generate=args.messages)
        run.plan()
    db = run.db
    db.commit()
    db.autocommit = True  # VACUUM cannot run in a transaction block
    db.execute("VACUUM ANALYZE messages")
    db.autocommit = False
    db.execute("SELECT count(*), sum(length(attachments::text)) FROM messages")  # both paths start warm
    first, last = db.execute("SELECT min(id), max(id) FROM messages").fetchone()  # type: ignore[misc]
    db.rollback()

    started = time.perf_counter()
    single_rows = run_batch(db, run.batch_sql, run.batch_file, first, last)
    db.commit()
    single_s = time.perf_counter() - started
    db.execute('TRUNCATE attachments, "toolCalls"')
    db.commit()
    db.autocommit = True
    db.execute("VACUUM attachments")
    db.execute('VACUUM "toolCalls"')
    db.execute("CHECKPOINT")
    run.abandon()

    with quiet:
        run = open_phase("backfill", RUNBOOK, "bench_backfill", target_batch_ms=args.target_batch_ms)
        run.plan()
        started = time.perf_counter()
        run.run(progress=_silent)
        batched_s = time.perf_counter() - started
        verification = run.verify()
        run.finish()
    batches = run._batches_frame()
    batched_rows = int(batches["written"].sum())
    worst = float(batches["ms"].max())
    ratio = batched_s / single_s
    frame = pd.DataFrame([
        {"path": "single INSERT ... SELECT (one transaction)", "seconds": round(single_s, 2),
         "messages/s": round(args.messages / single_s), "rows written": single_rows, "batches": 1,
         "worst batch ms": round(single_s * 1000, 1)},
        {"path": f"backfill phase (target {args.target_batch_ms} ms/batch)", "seconds": round(batched_s, 2),
         "messages/s": round(args.messages / batched_s), "rows written": batched_rows, "batches": len(batches),
         "worst batch ms": round(worst, 1)},
        {"path": "seed 002's backfill (Convex, 834 messages)", "seconds": 6.13, "messages/s": SEED_RATE,
         "rows written": 76, "batches": 9, "worst batch ms": None},
    ])
    print()
    print(f"seed 002 backfill over {args.messages:,} messages")
    print(frame.to_string(index=False))
    print(f"\nbatched / single: {ratio:.3f} (tolerance {TOLERANCE:.2f}); median batch "
          f"{batches['ms'].median():.0f} ms, worst {worst:.0f} ms; verification: "
          + ", ".join(f"{c} {r}" for c, r in zip(verification["check"], verification["result"], strict=True)))
    ok = ratio <= TOLERANCE and worst < WORST_BATCH_MS and single_rows == batched_rows
    print(f"{'OK' if ok else 'NOT MET'}: within {round((TOLERANCE - 1) * 100)}% of one statement, every batch under "
          f"{WORST_BATCH_MS:.0f} ms, same rows written")
    embedded.drop_database("bench_backfill")
    return 0 if ok else 1


def _silent(**kwargs: object) -> object:
    from tqdm.std import tqdm

    return tqdm(disable=True, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
