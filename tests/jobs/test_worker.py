"""The worker loop in-process, on both legs: stopping with every slot busy, heartbeats."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.queue import enqueue
from app.jobs.worker import list_workers
from app.settings import Settings
from tests.jobs.conftest import running_worker, wait_for_status

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
