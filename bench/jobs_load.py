"""The job queue on PostgreSQL: enqueue rates, worker throughput, enqueue→start latency.

    .venv/bin/python bench/jobs_load.py [--jobs 20000] [--producer-tasks 16,64]
Needs PostgreSQL and Valkey/Redis on 127.0.0.1. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.jobs.services.registry import JobContext, job_handler
from bench.common import (
    ROOT,
    environment,
    keel,
    percentile,
    recreate_database,
    run_keel,
    settings_of,
    stop_processes,
)

DATABASE = "keel_bench_jobs"
HISTORY = 100_000
SEQUENTIAL = 2_000
PRODUCER_TASKS = (16, 64)
URGENT = -10


@job_handler("bench.noop", timeout=30, max_attempts=1)
async def noop(ctx: JobContext[dict[str, object]]) -> None:
    """Do nothing: what is measured is the queue."""


def bench_environment(var_dir: Path) -> dict[str, str]:
    return environment(
        var_dir,
        DATABASE,
        JOB_MODULES="bench.jobs_load",
        WORKER_POLL_INTERVAL="1",
        DB_POOL_SIZE="20",
    )


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        from app.core.db import create_engine, create_sessionmaker
        from app.core.events import Events
        from app.core.store import create_store
        from app.jobs.services.queue import subscribe_wake_ups

        self.env = env
        settings = settings_of(env)
        self.connections = settings.db.pool_size + settings.db.max_overflow
        self.engine = create_engine(settings.db)
        self.sessionmaker = create_sessionmaker(self.engine)
        self.store = create_store(settings.store)
        self.events = Events()
        subscribe_wake_ups(self.events, self.store)
        self.workers: list[subprocess.Popen[bytes]] = []

    async def close(self) -> None:
        await self.store.close()
        await self.engine.dispose()

    async def sql(self, statement: str, **params: object) -> object:
        from sqlalchemy import text

        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(text(statement), params)
            return result.scalar() if result.returns_rows else None

    async def seed_history(self) -> None:
        await self.sql(
            """
            INSERT INTO jobs (type, queue, payload, status, priority, run_at, attempts,
                max_attempts, progress, progress_message, created_at, started_at, finished_at,
                updated_at, lease_owner)
            SELECT 'bench.noop', 'default', '{}', 'succeeded', 0, t, 1, 1, 100, '',
                t, t, t, t, 'history'
            FROM (SELECT now() - (n || ' seconds')::interval AS t
                  FROM generate_series(1, :history) AS n) AS s
            """,
            history=HISTORY,
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
        from app.jobs.services.queue import enqueue

        async with self.sessionmaker() as session:
            async with session.begin():
                await enqueue(session, "bench.noop", priority=priority)
            await self.events.deliver(session)

    async def enqueue_batches(self, count: int, size: int = 100) -> float:
        from app.jobs.services.queue import enqueue_many

        started = time.perf_counter()
        for _ in range(count // size):
            async with self.sessionmaker() as session:
                async with session.begin():
                    await enqueue_many(session, "bench.noop", [{}] * size)
                await self.events.deliver(session)
        return (count // size * size) / (time.perf_counter() - started)

    async def enqueue_in_transactions(self, count: int, size: int = 100) -> float:
        """`enqueue()` called once per job, `size` calls to a transaction: a service that
        adds its jobs one by one inside its own change."""
        from app.jobs.services.queue import enqueue

        started = time.perf_counter()
        for _ in range(count // size):
            async with self.sessionmaker() as session:
                async with session.begin():
                    for _ in range(size):
                        await enqueue(session, "bench.noop")
                await self.events.deliver(session)
        return (count // size * size) / (time.perf_counter() - started)

    async def enqueue_sequentially(self, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await self.enqueue_one()
        return count / (time.perf_counter() - started)

    async def enqueue_concurrently(self, count: int, tasks: int) -> float:
        """`tasks` concurrent tasks of this one process, each enqueueing single jobs in
        transactions of their own, as a web process does under concurrent requests: the
        commits stay durable, and PostgreSQL's group commit lets them share disk flushes."""

        async def producer(share: int) -> None:
            for _ in range(share):
                await self.enqueue_one()

        started = time.perf_counter()
        await asyncio.gather(*(producer(count // tasks) for _ in range(tasks)))
        return (count // tasks * tasks) / (time.perf_counter() - started)

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
                subprocess.Popen(keel("worker", "--concurrency", "32"), env=self.env, cwd=ROOT)
            )

    def stop_workers(self) -> None:
        for code in stop_processes(*self.workers, timeout=30):
            if code != 0:
                print(f"worker exited with {code}")
        self.workers = []

    async def wait_until_drained(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while await self.sql("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"):
            if time.monotonic() > deadline:
                sys.exit("the workers did not drain the queue in time")
            await asyncio.sleep(0.05)

    async def wait_for_workers(self, count: int) -> None:
        from app.jobs.services.worker import list_workers

        deadline = time.monotonic() + 30
        # The workers are other processes: the store's registry is the only thing to poll.
        while len(await list_workers(self.store)) < count:
            if time.monotonic() > deadline:
                sys.exit(f"{count} workers did not register within 30 s")
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


async def main(jobs: int, producer_tasks: tuple[int, ...]) -> None:
    await recreate_database(DATABASE)
    with tempfile.TemporaryDirectory(prefix="keel-bench-jobs-") as var_dir:
        env = bench_environment(Path(var_dir))
        run_keel(env, "db", "upgrade")
        bench = Bench(env)
        try:
            await bench.seed_history()
            print(f"history: {HISTORY:,} finished jobs")

            mark = await bench.last_id()
            sequential_count = min(SEQUENTIAL, jobs // 10)
            concurrent_count = jobs // 2 // len(producer_tasks)
            sequential = await bench.enqueue_sequentially(sequential_count)
            concurrent = [
                (tasks, await bench.enqueue_concurrently(concurrent_count, tasks))
                for tasks in producer_tasks
            ]
            calls_count = min(SEQUENTIAL * 2, jobs // 5)
            calls = await bench.enqueue_in_transactions(calls_count)
            batched_count = (
                jobs - sequential_count - calls_count - concurrent_count * len(producer_tasks)
            )
            batched = await bench.enqueue_batches(batched_count)
            print("enqueue, one producer process, durable commits:")
            print(
                f"  one transaction per job, one after another:  {sequential:>8,.0f}/s "
                f"({sequential_count:,} jobs; each commit waits for its own disk flush)"
            )
            for tasks, rate in concurrent:
                print(
                    f"  one transaction per job, {tasks:>3} concurrent tasks: {rate:>8,.0f}/s "
                    f"({concurrent_count:,} jobs, pool of {bench.connections} connections; "
                    "group commit shares the flushes)"
                )
            print(
                f"  enqueue() per job, 100 jobs per transaction:  {calls:>8,.0f}/s "
                f"({calls_count:,} jobs)"
            )
            print(
                f"  enqueue_many, 100 jobs per transaction:       {batched:>8,.0f}/s "
                f"({batched_count:,} jobs)"
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
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per phase (20,000)")
    parser.add_argument(
        "--producer-tasks",
        default=",".join(map(str, PRODUCER_TASKS)),
        help="concurrent enqueueing tasks to measure, comma-separated (16,64)",
    )
    args = parser.parse_args()
    tasks = tuple(int(n) for n in args.producer_tasks.split(","))
    asyncio.run(main(args.jobs, tasks))
