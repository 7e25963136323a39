"""Periodic schedules added and removed while Keel runs (both legs)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.models import Job
from app.jobs.registry import JobType
from app.jobs.schedules import SCHEDULES, enqueue_due_schedules, schedule, schedules
from tests.jobs.conftest import PLUGIN

EVERY = timedelta(milliseconds=200)


async def _jobs_of(sessionmaker: async_sessionmaker[AsyncSession], type: str) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).where(Job.type == type)) or 0)


async def test_a_schedule_added_while_keel_runs_enqueues_its_ticks_until_removed(
    sessionmaker: async_sessionmaker[AsyncSession], plugin_job_type: JobType
) -> None:
    schedule("plugin-greet", "plugin.greet", every=EVERY, owner=PLUGIN)
    try:
        assert "plugin-greet" in [declared.name for declared in schedules()]
        await enqueue_due_schedules(sessionmaker)  # first sight: starts at the next tick
        await asyncio.sleep(EVERY.total_seconds() * 1.5)
        await enqueue_due_schedules(sessionmaker)
        assert await _jobs_of(sessionmaker, "plugin.greet") == 1
    finally:
        SCHEDULES.remove(PLUGIN)
    assert "plugin-greet" not in [declared.name for declared in schedules()]
    await asyncio.sleep(EVERY.total_seconds() * 1.5)
    await enqueue_due_schedules(sessionmaker)
    assert await _jobs_of(sessionmaker, "plugin.greet") == 1
