"""`keel worker` processes against a shared database: crashes, shutdown, two workers.

The runs file written by `test.record` counts how often each job's handler started and
finished, independently of what the jobs table says.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import create_engine, create_sessionmaker
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.settings import ROOT, Settings
from tests.conftest import keel_command
from tests.jobs.conftest import FAST

pytestmark = pytest.mark.usefixtures("settings")


@pytest.fixture
def worker_env(keel_env: dict[str, str]) -> dict[str, str]:
    return {**keel_env, **FAST, "WORKER_SHUTDOWN_GRACE": "5"}


class Workers:
    """`keel worker` subprocesses started by one test, all stopped at its end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            keel_command("worker", *args),
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    started = Workers(worker_env, tmp_path)
    yield started
    started.stop_all()


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, env_file=Path("/nonexistent"))


def run(coroutine):
    return asyncio.run(coroutine)


async def _enqueue_many(env: dict[str, str], count: int, payload: dict[str, object]) -> list[int]:
    engine = create_engine(_settings(env).db)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return [await enqueue(session, "test.record", payload) for _ in range(count)]
    finally:
        await engine.dispose()


async def _jobs(env: dict[str, str], *types: str) -> list[Job]:
    """The jobs of `types` (default the test's own, `test.record`: a worker started just
    before 03:00 UTC also enqueues the daily cleanup when the clock passes it)."""
    engine = create_engine(_settings(env).db)
    try:
        async with create_sessionmaker(engine)() as session:
            chosen = select(Job).where(Job.type.in_(types or ("test.record",)))
            return list(await session.scalars(chosen.order_by(Job.id)))
    finally:
        await engine.dispose()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_job_whose_worker_is_killed_runs_exactly_once_more_after_its_lease_expires(
    workers: Workers, worker_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    (job_id,) = run(_enqueue_many(worker_env, 1, {"path": str(runs), "sleep": 2, "steps": 4}))
    survivors = {workers.start().pid: None, workers.start().pid: None}
    wait_until(lambda: lines(runs) == [f"start {job_id} 1"], 60, "the first run to start")
    (running,) = run(_jobs(worker_env))
    doomed = next(p for p in workers.processes if f":{p.pid}:" in (running.lease_owner or ""))
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    survivors.pop(doomed.pid)
    wait_until(lambda: f"done {job_id}" in lines(runs), 60, "the second run to finish")
    time.sleep(1.0)  # a third run, if there were one, would have started by now
    assert lines(runs) == [f"start {job_id} 1", f"start {job_id} 2", f"done {job_id}"]
    (job,) = run(_jobs(worker_env))
    assert job.status == "succeeded" and job.attempts == 2
    assert job.last_error == "lease expired: the worker stopped renewing it"
    assert f":{next(iter(survivors))}:" in (job.lease_owner or "")


def test_sigterm_finishes_short_jobs_within_the_grace_period_releases_the_rest_and_exits_0(
    workers: Workers, worker_env: dict[str, str], tmp_path: Path
) -> None:
    short_runs, long_runs = tmp_path / "short", tmp_path / "long"
    (short,) = run(_enqueue_many(worker_env, 1, {"path": str(short_runs), "sleep": 1, "steps": 2}))
    (long,) = run(_enqueue_many(worker_env, 1, {"path": str(long_runs), "sleep": 20, "steps": 20}))
    process = workers.start("--concurrency", "2", WORKER_SHUTDOWN_GRACE="2")
    wait_until(lambda: lines(short_runs) and lines(long_runs), 60, "both jobs to start")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=6) == 0
    assert time.monotonic() - started < 4
    assert lines(short_runs)[-1] == f"done {short}"
    assert lines(long_runs) == [f"start {long} 1"]
    finished, released = run(_jobs(worker_env))
    assert finished.status == "succeeded"
    assert released.status == "queued" and released.attempts == 0
    assert released.lease_token is None


def test_two_workers_run_500_jobs_each_exactly_once_and_a_periodic_job_once_per_tick(
    workers: Workers, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # One pair of workers serves both checks: starting worker processes is most of the cost.
    runs, ticks = tmp_path / "runs", tmp_path / "ticks"
    ids = run(_enqueue_many(worker_env, 500, {"path": str(runs)}))
    # A lease long enough that only a bug, not SQLite's single writer being busy, runs a job
    # twice here; lease expiry has its own test above.
    env = {
        "WORKER_LEASE_SECONDS": "10",
        "JOB_MODULES": "tests.jobs.handlers,tests.jobs.periodic",
        "TICK_FILE": str(ticks),
    }
    first = workers.start("--concurrency", "8", **env)
    second = workers.start("--concurrency", "8", **env)
    wait_until(lambda: len(lines(runs)) >= 1000, 60, "500 jobs to finish")
    wait_until(lambda: lines(ticks).count("tick") >= 3, 60, "three ticks")
    for process in (first, second):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    counts = collections.Counter(lines(runs))
    assert all(counts[f"start {i} 1"] == 1 and counts[f"done {i}"] == 1 for i in ids)
    assert sum(counts.values()) == 1000
    jobs = run(_jobs(worker_env, "test.record", "test.tick"))
    records = [job for job in jobs if job.type == "test.record"]
    assert [job.id for job in records] == ids
    assert {job.status for job in records} == {"succeeded"}
    assert {job.attempts for job in records} == {1}
    assert len({job.lease_owner for job in records}) == 2  # both workers took a share

    keys = [job.unique_key for job in jobs if job.type == "test.tick"]
    assert len(keys) == len(set(keys)) == lines(ticks).count("tick")
    tick_times = [
        datetime.fromisoformat((key or "").removeprefix("schedule:test-tick:")) for key in keys
    ]
    assert len(set(tick_times)) == len(tick_times)
    assert all(tick.microsecond == 0 for tick in tick_times)  # whole seconds: one job per tick
