"""A `keel worker` told to stop while a `notify` job waits on a stalled SMTP server (both
legs): the worker keeps its grace period, and the mail a second run sends is recognisably
the same message (issue 12, item 21)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.db import create_engine, create_sessionmaker
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.settings import Settings
from tests.jobs.test_worker_processes import Workers, worker_env, workers  # noqa: F401
from tests.notifications.smtp_server import SmtpServer

pytestmark = pytest.mark.usefixtures("settings")  # its tables are emptied after each test

GRACE = 5.0
"""WORKER_SHUTDOWN_GRACE of `worker_env`."""
MARGIN = 2.5
"""What stopping may take beyond the grace: releasing the job, closing connections."""


def _settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, env_file=Path("/nonexistent"))


async def _enqueue_notify(env: dict[str, str]) -> int:
    engine = create_engine(_settings(env).db)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            payload = {"to": "someone@example.com", "subject": "Your export", "body": "Ready."}
            return await enqueue(session, "notify", payload)
    finally:
        await engine.dispose()


async def _job(env: dict[str, str], job_id: int) -> Job:
    engine = create_engine(_settings(env).db)
    try:
        async with create_sessionmaker(engine)() as session:
            job = await session.scalar(select(Job).where(Job.id == job_id))
            assert job is not None
            return job
    finally:
        await engine.dispose()


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigterm_during_a_stalled_smtp_send_keeps_the_grace_and_the_message_id(
    workers: Workers,  # noqa: F811
    worker_env: dict[str, str],  # noqa: F811
) -> None:
    assert float(worker_env["WORKER_SHUTDOWN_GRACE"]) == GRACE
    async with SmtpServer(stall_seconds=30) as server:
        mail = {"SMTP_URL": server.url, "MAIL_FROM": "keel@example.org"}
        job_id = await _enqueue_notify(worker_env)
        first = workers.start(**mail)
        await asyncio.wait_for(server.stalled.wait(), 20)  # the whole message is there

        first.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()

        async def first_exited() -> bool:
            return first.poll() is not None

        await _until(first_exited, GRACE + MARGIN, "the worker to exit within its grace")
        assert first.returncode == 0
        assert time.monotonic() - stopped_at >= GRACE - 0.5  # the send had its grace
        released = await _job(worker_env, job_id)
        assert released.status == "queued" and released.attempts == 0

        server.stall_seconds = 0
        workers.start(**mail)

        async def succeeded() -> bool:
            return (await _job(worker_env, job_id)).status == "succeeded"

        await _until(succeeded, 20, "the second run to send the mail")
    assert len(server.messages) == 2  # at least once: the first copy reached the server
    first_copy, second_copy = (message["Message-ID"] for message in server.messages)
    assert first_copy == second_copy
    assert first_copy.startswith(f"<keel.notify.{job_id}.") and first_copy.endswith("@example.org>")
