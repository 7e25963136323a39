"""Fixtures for the jobs tests: short leases and polls, the test job types loaded."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import tests.jobs.handlers  # noqa: F401  (declares the test.* job types)
from app.accounts.models import Role, User
from app.core.db import create_engine, create_sessionmaker
from app.core.store import Store, create_store
from app.jobs.models import Job
from app.jobs.services.registry import JOB_TYPES, JobContext, JobType
from app.jobs.services.worker import Worker
from app.settings import Settings
from tests.conftest import bearer, client_for

FAST = {
    "WORKER_LEASE_SECONDS": "1.5",
    "WORKER_POLL_INTERVAL": "0.2",
    "WORKER_RETRY_BACKOFF": "0.05",
    "WORKER_HEARTBEAT_INTERVAL": "0.5",
    "JOB_MODULES": "tests.jobs.handlers",
}


def fast(settings: Settings, **changes: Any) -> Settings:
    worker = replace(
        settings.worker,
        lease_seconds=1.5,
        poll_interval=0.2,
        retry_backoff=0.05,
        heartbeat_interval=0.5,
        shutdown_grace=2.0,
        job_modules=("tests.jobs.handlers",),
    )
    return replace(settings, worker=replace(worker, **changes))


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.db)
    yield create_sessionmaker(engine)
    await engine.dispose()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    store: Store | None = None,
    **changes: Any,
) -> AsyncIterator[Worker]:
    """An in-process worker with short leases, stopped (gracefully) when the block ends.
    With `store` (the app's) it shares what the app keeps there, as an embedded worker does
    (one-time links, the page cache generation); else it opens its own."""
    own = store is None
    store = create_store(settings.store) if store is None else store
    worker = Worker(fast(settings, **changes), store, sessionmaker, schedules=False)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await ended_within(task, 60)
        if own:
            await store.close()


async def ended_within(task: asyncio.Task[Any], seconds: float) -> None:
    """Await `task`; one still running after `seconds` fails the test with the stack of
    every task of the loop (a stop that hangs says where)."""
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(file=stacks)
        raise AssertionError(f"still running after {seconds} s:\n{stacks.getvalue()}")
    await task


async def wait_for_status(
    sessionmaker: async_sessionmaker[AsyncSession],
    job_id: int,
    statuses: set[str],
    timeout: float = 10.0,
) -> Job:
    """Poll until the job reaches one of `statuses`; fail with its last state otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with sessionmaker() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        if job.status in statuses:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} stayed {job.status} ({job.last_error})")
        await asyncio.sleep(0.05)


PLUGIN = "test-plugin"


async def greet(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    """Say which attempt ran."""
    return {"ran": ctx.attempt}


@pytest.fixture
def plugin_job_type() -> Iterator[JobType]:
    """`plugin.greet`, added by a plugin while Keel runs (editors may enqueue it; one
    attempt only), and removed with the plugin after the test."""
    kind = JobType("plugin.greet", greet, max_attempts=1, role=Role.editor, description="Greet.")
    JOB_TYPES.add(PLUGIN, kind)
    yield kind
    JOB_TYPES.remove(PLUGIN)


@pytest.fixture
async def api(app: Litestar) -> httpx.AsyncClient:
    async with client_for(app) as client:
        yield client


async def run_job(
    app: Litestar,
    settings: Settings,
    api: httpx.AsyncClient,
    user: User,
    type: str,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """Enqueue through the API as `user`, run a worker until the job is done, return it."""
    headers = await bearer(app, user)
    created = await api.post(
        "/api/v1/jobs", json={"type": type, "payload": payload}, headers=headers
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    async with running_worker(settings, app.state.sessionmaker):
        job = await wait_for_status(app.state.sessionmaker, job_id, {"succeeded", "failed", "dead"})
    assert job.status == "succeeded", job.last_error
    return (await api.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
