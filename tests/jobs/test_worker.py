"""The worker loop in-process, on both legs: stopping with every slot busy, heartbeats."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.metrics import TOTALS_KEY
from app.core.store import Store, create_store
from app.jobs.models import Job
from app.jobs.services.metrics import GIVEN_BACK, JOBS_PROCESSED
from app.jobs.services.queue import enqueue
from app.jobs.services.registry import JOB_TYPES, JobType
from app.jobs.services.worker import PeriodicTask, Worker, list_workers
from app.settings import Settings
from tests.jobs.conftest import PLUGIN, ended_within, fast, running_worker, wait_for_status

Sessions = async_sessionmaker[AsyncSession]


async def test_a_stop_with_every_slot_busy_releases_the_jobs_after_the_grace_period(
    settings: Settings, sessionmaker: Sessions, tmp_path: Path
) -> None:
    async with sessionmaker() as session, session.begin():
        job_id = await enqueue(
            session, "test.record", {"path": str(tmp_path / "runs"), "sleep": 20, "steps": 20}
        )
    async with running_worker(settings, sessionmaker, shutdown_grace=0.3) as worker:
        worker.concurrency = 1
        await wait_for_status(sessionmaker, job_id, {"running"})
        assert [w["running"] for w in await list_workers(worker.store)] in ([0], [1])
        started = time.monotonic()
    assert time.monotonic() - started < 2
    job = await wait_for_status(sessionmaker, job_id, {"queued"})
    assert job.attempts == 0 and job.lease_token is None


async def test_a_stop_is_prompt_when_a_cancellation_comes_out_of_a_periodic_task_as_an_error(
    settings: Settings, sessionmaker: Sessions
) -> None:
    """A cancellation that meets a database or store command can come out of it as another
    error (the connection is torn down mid-command), which the heartbeat loop takes for a
    failed round; asyncio cancels a task once, so the loop went round again and the stop
    waited the 10 s it allows a task that swallowed its cancellation (`keel worker` under
    load: exit 10 s after SIGTERM, tests/test_cli.py timed out)."""
    started = asyncio.Event()

    async def torn_down_when_cancelled() -> None:
        if started.is_set():
            return  # the first round only
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed mid-command") from None

    store = create_store(settings.store)
    worker = Worker(
        fast(settings, heartbeat_interval=0.05),
        store,
        sessionmaker,
        schedules=False,
        periodic=(PeriodicTask("torn-down", 0.0, torn_down_when_cancelled),),
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        stopping = time.monotonic()
        worker.request_stop()
        await ended_within(task, 30)
        assert time.monotonic() - stopping < 3
    finally:
        await store.close()


async def _given_back(store: Store, type: str) -> int:
    key = json.dumps([JOBS_PROCESSED.name, [type, GIVEN_BACK], ""])
    return int((await store.read_fields(TOTALS_KEY)).get(key, 0))


async def test_a_job_of_a_type_the_worker_does_not_know_is_given_back_until_one_that_knows_runs_it(
    settings: Settings, sessionmaker: Sessions, plugin_job_type: JobType
) -> None:
    async with sessionmaker() as session, session.begin():
        job_id = await enqueue(session, "plugin.greet", {})
    async with sessionmaker() as session:
        enqueued = await session.get(Job, job_id)
    assert enqueued is not None and enqueued.max_attempts == 1
    JOB_TYPES.remove(PLUGIN)  # this worker is an older version, or the plugin is not loaded here
    store = create_store(settings.store)
    before = await _given_back(store, "plugin.greet")
    async with running_worker(settings, sessionmaker, store) as worker:
        deadline = time.monotonic() + 10
        while await _given_back(store, "plugin.greet") - before < 3:  # more than max_attempts
            assert time.monotonic() < deadline, "the job was not given back three times"
            await worker.figures.flush(store)
            await asyncio.sleep(0.05)
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
    assert job is not None and job.status == "queued" and job.attempts == 0
    assert job.run_at >= enqueued.run_at and job.finished_at is None
    assert "No job type 'plugin.greet'" in (job.last_error or "")

    JOB_TYPES.add(PLUGIN, plugin_job_type)  # a worker that knows the type
    async with running_worker(settings, sessionmaker, store):
        job = await wait_for_status(sessionmaker, job_id, {"succeeded", "failed", "dead"})
    await store.close()
    assert job.status == "succeeded" and job.attempts == 1 and job.result == {"ran": 1}
