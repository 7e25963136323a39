"""The job queue on PostgreSQL: enqueue rate, throughput of two `keel worker` processes,
and enqueue→start latency when idle and under a backlog, with 100,000 finished jobs in
the history (they must not slow the claim: the claim index covers queued rows only).

Phases, on 127.0.0.1 only, in a fresh database `keel_bench_jobs`:
  1. seed 100,000 finished jobs;
  2. one producer enqueues 20,000 no-op jobs, no worker running: 2,000 one transaction
     each, half from 8 concurrent connections one transaction each, the rest with
     `enqueue_many` 100 per transaction: enqueues/s of each way;
  3. the claim query's plan (which index, how long) with all of that in the table;
     two `keel worker --concurrency 32` processes drain the 20,000: jobs/s, from the first
     start to the last finish as the database recorded them;
  4. idle: 200 jobs enqueued one at a time, 20 ms apart: enqueue→start p50/p99;
  5. under a backlog: 20,000 jobs enqueued with `enqueue_many` while the workers run, and
     meanwhile an urgent job (priority -10) every 20 ms: jobs/s, enqueue→start p50/p99
     of the urgent jobs, and how long the backlog waited.
Targets (2 cores): ≥ 5,000 jobs/s with two workers, ≥ 2,500 enqueues/s from one producer,
p50 enqueue→start < 50 ms idle.

    .venv/bin/python bench/jobs_load.py [--jobs 20000]
Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Valkey/Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.jobs.registry import JobContext, job_handler

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "keel_bench_jobs"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
HISTORY = 100_000
PRODUCERS = 8
URGENT = -10


@job_handler("bench.noop", timeout=30, max_attempts=1)
async def noop(ctx: JobContext[dict[str, object]]) -> None:
    """Do nothing: what is measured is the queue."""


def environment(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VALKEY_", "DB_"))}
    env.update(
        VAR_DIR=str(var_dir),
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DATABASE}",
        VALKEY_URL="redis://127.0.0.1:6379/14",
        VALKEY_KEY_PREFIX=f"keelbench{os.getpid()}:",
        APP_ENV="development",
        LOG_LEVEL="WARNING",
        JOB_MODULES="bench.jobs_load",
        WORKER_POLL_INTERVAL="1",
        DB_POOL_SIZE="20",
    )
    return env


async def recreate_database() -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        from app.core.db import create_engine, create_sessionmaker
        from app.core.store import create_store
        from app.settings import Settings

        self.env = env
        settings = Settings.from_env(env, env_file=Path("/nonexistent"))
        self.engine = create_engine(settings.db)
        self.sessionmaker = create_sessionmaker(self.engine)
        self.store = create_store(settings.store)
        self.workers: list[subprocess.Popen[bytes]] = []

    async def close(self) -> None:
        await self.store.close()
        await self.engine.dispose()

    async def sql(self, statement: str) -> object:
        from sqlalchemy import text

        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(text(statement))
            return result.scalar() if result.returns_rows else None

    async def seed_history(self) -> None:
        await self.sql(
            f"""
            INSERT INTO jobs (type, queue, payload, status, priority, run_at, attempts,
                max_attempts, progress, progress_message, created_at, started_at, finished_at,
                updated_at, lease_owner)
            SELECT 'bench.noop', 'default', '{{}}', 'succeeded', 0, t, 1, 1, 100, '',
                t, t, t, t, 'history'
            FROM (SELECT now() - (n || ' seconds')::interval AS t
                  FROM generate_series(1, {HISTORY}) AS n) AS s
            """
        )
        await self.sql("ANALYZE jobs")

    async def claim_plan(self) -> str:
        """How the claim's row choice runs with the history and the queued jobs in place."""
        from sqlalchemy import text

        async with self.sessionmaker() as session, session.begin():
            plan = (
                await session.execute(
                    text(
                        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM jobs "
                        "WHERE status = 'queued' AND queue = 'default' AND run_at <= now() "
                        "ORDER BY priority, run_at, id LIMIT 10 FOR UPDATE SKIP LOCKED"
                    )
                )
            ).scalar_one()
            await session.rollback()
        top = plan[0]
        node = top["Plan"]
        while "Plans" in node and "Index Name" not in node:
            node = node["Plans"][0]
        return f"{node.get('Index Name', node['Node Type'])}, {top['Execution Time']:.2f} ms"

    async def enqueue_one(self, priority: int = 0) -> None:
        from app.jobs.queue import enqueue, wake_workers

        async with self.sessionmaker() as session:
            async with session.begin():
                await enqueue(session, "bench.noop", priority=priority)
            await wake_workers(self.store, session)

    async def enqueue_batches(self, count: int, size: int = 100) -> float:
        from app.jobs.queue import enqueue_many, wake_workers

        started = time.perf_counter()
        for _ in range(count // size):
            async with self.sessionmaker() as session:
                async with session.begin():
                    await enqueue_many(session, "bench.noop", [{}] * size)
                await wake_workers(self.store, session)
        return (count // size * size) / (time.perf_counter() - started)

    async def enqueue_sequentially(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await self.enqueue_one()
        return count / (time.perf_counter() - started)

    async def enqueue_concurrently(self, count: int) -> float:
        async def producer(share: int) -> None:
            for _ in range(share):
                await self.enqueue_one()

        started = time.perf_counter()
        await asyncio.gather(*(producer(count // PRODUCERS) for _ in range(PRODUCERS)))
        return (count // PRODUCERS * PRODUCERS) / (time.perf_counter() - started)

    async def probe_until_drained(self) -> None:
        """Enqueue an urgent job every 20 ms while the backlog lasts."""
        await asyncio.sleep(0.1)
        while await self.sql("SELECT count(*) FROM jobs WHERE status = 'queued'"):
            await self.enqueue_one(priority=URGENT)
            await asyncio.sleep(0.02)
        await self.wait_until_drained()

    def start_workers(self, count: int = 2) -> None:
        for _ in range(count):
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app", "worker", "--concurrency", "32"],
                    env=self.env,
                    cwd=ROOT,
                )
            )

    def stop_workers(self) -> None:
        for process in self.workers:
            process.send_signal(signal.SIGTERM)
        for process in self.workers:
            if process.wait(timeout=30) != 0:
                print(f"worker exited with {process.returncode}")
        self.workers = []

    async def wait_until_drained(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while await self.sql("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"):
            if time.monotonic() > deadline:
                sys.exit("the workers did not drain the queue in time")
            await asyncio.sleep(0.05)

    async def wait_for_workers(self, count: int) -> None:
        from app.jobs.worker import list_workers

        while len(await list_workers(self.store)) < count:
            await asyncio.sleep(0.1)

    async def run_figures(
        self, since_id: int, priority: int | None = None
    ) -> tuple[float, list[float]]:
        """jobs/s (first start to last finish) and enqueue→start latencies (ms) since an id."""
        from sqlalchemy import text

        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000, "
                        "EXTRACT(EPOCH FROM max(finished_at) OVER () - min(started_at) OVER ()) "
                        "FROM jobs WHERE id > :since AND status = 'succeeded' "
                        "AND (CAST(:priority AS int) IS NULL OR priority = :priority)"
                    ),
                    {"since": since_id, "priority": priority},
                )
            ).all()
        latencies = [float(row[0]) for row in rows]
        span = float(rows[0][1]) if rows else 0.0
        return (len(rows) / span if span else 0.0), latencies

    async def last_id(self) -> int:
        return int(await self.sql("SELECT coalesce(max(id), 0) FROM jobs") or 0)


async def main(jobs: int) -> None:
    await recreate_database()
    with tempfile.TemporaryDirectory(prefix="keel-bench-jobs-") as var_dir:
        env = environment(Path(var_dir))
        subprocess.run(
            [sys.executable, "-m", "app", "db", "upgrade"], env=env, cwd=ROOT, check=True
        )
        bench = Bench(env)
        try:
            await bench.seed_history()
            print(f"history: {HISTORY:,} finished jobs")

            mark = await bench.last_id()
            sequential = await bench.enqueue_sequentially(2_000)
            concurrent = await bench.enqueue_concurrently(jobs // 2)
            batched = await bench.enqueue_batches(jobs - jobs // 2 - 2_000)
            print(
                f"enqueue, one producer: {sequential:,.0f}/s one transaction per job, "
                f"{concurrent:,.0f}/s one transaction per job from {PRODUCERS} connections, "
                f"{batched:,.0f}/s with enqueue_many (100 per transaction)"
            )

            print(f"claim query with history and {jobs:,} queued: {await bench.claim_plan()}")
            bench.start_workers(2)
            await bench.wait_until_drained()
            rate, _ = await bench.run_figures(mark)
            print(f"throughput, two workers, {jobs:,} queued jobs: {rate:,.0f} jobs/s")
            await bench.wait_for_workers(2)

            mark = await bench.last_id()
            for _ in range(200):
                await bench.enqueue_one()
                await asyncio.sleep(0.02)
            await bench.wait_until_drained()
            _, idle = await bench.run_figures(mark)
            print(
                f"enqueue→start when idle: p50 {percentile(idle, 0.5):.1f} ms, "
                f"p99 {percentile(idle, 0.99):.1f} ms ({len(idle)} jobs)"
            )

            mark = await bench.last_id()
            probing = asyncio.create_task(bench.probe_until_drained())
            produced = await bench.enqueue_batches(jobs)
            await probing
            rate, waits = await bench.run_figures(mark, priority=0)
            _, urgent = await bench.run_figures(mark, priority=URGENT)
            print(
                f"under a backlog ({jobs:,} jobs enqueued at {produced:,.0f}/s with enqueue_many "
                f"while two workers run): {rate:,.0f} jobs/s; enqueue→start of an urgent job "
                f"(priority {URGENT}) p50 {percentile(urgent, 0.5):.1f} ms, "
                f"p99 {percentile(urgent, 0.99):.1f} ms ({len(urgent)} jobs); "
                f"queue wait of the backlog p50 {percentile(waits, 0.5):.0f} ms, "
                f"p99 {percentile(waits, 0.99):.0f} ms"
            )
        finally:
            bench.stop_workers()
            await bench.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().jobs))
