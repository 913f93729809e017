"""Lock impact of applying seed 000's migration while the application writes.

On a 1M-row "Event" table, with a writer process inserting and updating events in a loop (each
its own short transaction), the migration is applied twice, on two identical databases:

  naive   migration.sql as one script in one transaction (what `prisma migrate deploy` does);
  deploy  the deploy phase: run lock, online steps (CREATE INDEX CONCURRENTLY, FK NOT VALID +
          VALIDATE), each under lock_timeout with retries.

For each, from one run: the writer's max stall (its slowest transaction while the migration ran),
p99 latency, and failed transactions. The deploy path must keep the max stall within one
lock_timeout plus a small margin, with zero failed writer transactions.

    .venv/bin/python bench/lock_impact.py [--rows 1000000] [--lock-timeout-ms 500]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "event_message_fk"
MARGIN_MS = 250  # scheduling noise on a 2-core machine, on top of one lock_timeout


def libpq_url(target: str) -> str:
    from dbrunbook.targets.connect import engine
    from dbrunbook.targets.resolve import resolve_target

    return engine(resolve_target(target)).url.set(drivername="postgresql").render_as_string(hide_password=False)


def load(target: str, rows: int) -> None:
    """The seed-000 fixture, then `rows` events spread over rows/20 messages."""
    from dbrunbook.cli import commands

    commands.prepare(RUNBOOK, target, allow_production=True)
    with psycopg.connect(libpq_url(target), autocommit=True) as conn:
        conn.execute("""INSERT INTO "Message" ("id", "conversationId", "role", "content")
                        SELECT 'b_msg_' || g, 'b_conv_' || (g %% 500), 'assistant', 'answer ' || g
                        FROM generate_series(1, %s) AS g""", (max(rows // 20, 1),))
        conn.execute("""INSERT INTO "Event" ("id", "sessionId", "eventType", "metadata")
                        SELECT 'b_evt_' || g, 'b_conv_' || (g %% 500), 'user_message',
                               jsonb_build_object('messageId', 'b_msg_' || (1 + g %% %s), 'feedbackType', 'helpful')
                        FROM generate_series(1, %s) AS g""", (max(rows // 20, 1), rows))
        conn.execute("VACUUM ANALYZE")


def writer(url: str, rows: int, stop: mp.synchronize.Event, ready: mp.synchronize.Event,
           out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Insert and update events, one short transaction each; report (start, seconds, ok)."""
    samples: list[tuple[float, float, bool]] = []
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as conn:
        n = 0
        ready.set()
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                if n % 2:
                    conn.execute("""INSERT INTO "Event" ("id", "sessionId", "eventType", "metadata")
                                    VALUES (%s, 'b_conv_1', 'copy', '{"copyUsage": null}')""", (f"w_{os.getpid()}_{n}",))
                else:
                    conn.execute("""UPDATE "Event" SET "metadata" = jsonb_set("metadata", '{n}', to_jsonb(%s::int))
                                    WHERE "id" = %s""", (n, f"b_evt_{rng.randint(1, rows)}"))
                ok = True
            except psycopg.Error:
                ok = False
            samples.append((started, time.perf_counter() - started, ok))
    out.put(samples)


def naive(target: str) -> None:
    from dbrunbook.runbook.spec import load_runbook

    book = load_runbook(RUNBOOK)
    script = book.file(book.migration_files[0]).read_text()
    with psycopg.connect(libpq_url(target)) as conn:  # one transaction, as a migration tool runs it
        conn.execute(script.encode())
        conn.commit()


def through_deploy(target: str, rehearsal: str, lock_timeout_ms: int) -> None:
    from dbrunbook import open_phase

    # The phase's evidence (what a notebook would show) is not this benchmark's output.
    with tempfile.TemporaryDirectory() as archive, contextlib.redirect_stdout(io.StringIO()):
        run = open_phase("deploy", RUNBOOK, target, rehearsal=rehearsal, archive_dir=archive,
                         lock_timeout_ms=lock_timeout_ms)
        run.acquire_run_lock()
        run.preflight()
        run.plan()
        run.apply()
        run.verify()
        run.finish()


def measure(label: str, target: str, rows: int, migrate) -> dict[str, object]:  # type: ignore[no-untyped-def]
    stop, ready = mp.Event(), mp.Event()
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    proc = mp.Process(target=writer, args=(libpq_url(target), rows, stop, ready, out))
    proc.start()
    ready.wait(30)
    time.sleep(1.0)  # the writer's steady state before the migration
    began = time.perf_counter()
    migrate()
    ended = time.perf_counter()
    time.sleep(1.0)
    stop.set()
    samples = out.get(timeout=60)
    proc.join(30)
    # Transactions that overlapped the migration (started before it ended, finished after it began).
    during = [(s, d, ok) for s, d, ok in samples if s < ended and s + d > began]
    latencies = sorted(d for _, d, _ in during)
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else 0.0
    return {"path": label, "migration s": round(ended - began, 3), "writer txns": len(during),
            "p99 ms": round(p99 * 1000, 1), "max stall ms": round(max(latencies, default=0) * 1000, 1),
            "median ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
            "failed txns": sum(1 for _, _, ok in during if not ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lock-timeout-ms", type=int, default=500)
    args = parser.parse_args()

    os.environ.setdefault("DBRUNBOOK_HOME", str(ROOT))
    config = Path(tempfile.mkdtemp(prefix="dbrb-bench-")) / "dbrunbook.yaml"
    config.write_text("targets:\n"
                      "  bench_rehearsal: {embedded: bench_lock_rehearsal}\n"
                      "  bench_naive: {embedded: bench_lock_naive, production: true}\n"
                      "  bench_deploy: {embedded: bench_lock_deploy, production: true}\n")
    os.environ["DBRUNBOOK_CONFIG"] = str(config)
    from dbrunbook import open_phase
    from dbrunbook.targets import embedded

    print(f"loading {args.rows:,} events into two databases on the embedded PostgreSQL ...", flush=True)
    for target in ("bench_naive", "bench_deploy"):
        load(target, args.rows)
    from dbrunbook.cli import commands

    commands.prepare(RUNBOOK, "bench_rehearsal")
    with contextlib.redirect_stdout(io.StringIO()):
        rehearsal = open_phase("schema", RUNBOOK, "bench_rehearsal")
        rehearsal.plan(), rehearsal.apply(), rehearsal.check_expectations(), rehearsal.finish()

    import pandas as pd

    results = [measure("naive (one transaction)", "bench_naive", args.rows, lambda: naive("bench_naive")),
               measure(f"deploy phase (lock_timeout {args.lock_timeout_ms} ms)", "bench_deploy", args.rows,
                       lambda: through_deploy("bench_deploy", "bench_rehearsal", args.lock_timeout_ms))]
    frame = pd.DataFrame(results)
    print()
    print(f"seed 000 migration on {args.rows:,} events, writer inserting/updating events concurrently")
    print(frame.to_string(index=False))
    naive_stall, deploy_stall = results[0]["max stall ms"], results[1]["max stall ms"]
    print(f"\nmax stall ratio naive / deploy: {naive_stall / max(deploy_stall, 0.001):.1f}x")  # type: ignore[operator]
    bound = args.lock_timeout_ms + MARGIN_MS
    ok = deploy_stall <= bound and results[1]["failed txns"] == 0  # type: ignore[operator]
    print(f"deploy path: max stall {deploy_stall} ms (bound: one lock_timeout + {MARGIN_MS} ms = {bound} ms), "
          f"{results[1]['failed txns']} failed writer transaction(s): {'OK' if ok else 'NOT MET'}")
    for name in ("bench_lock_rehearsal", "bench_lock_naive", "bench_lock_deploy"):
        embedded.drop_database(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
