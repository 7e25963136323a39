"""Periodic schedules added and removed while Keel runs (both legs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.models import Job
from app.jobs.services.registry import JobType
from app.jobs.services.schedules import SCHEDULES, enqueue_due_schedules, schedule, schedules
from tests.conftest import SteppedClock
from tests.jobs.conftest import PLUGIN

EVERY = timedelta(milliseconds=200)


async def _jobs_of(sessionmaker: async_sessionmaker[AsyncSession], type: str) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).where(Job.type == type)) or 0)


async def test_a_schedule_added_while_keel_runs_enqueues_its_ticks_until_removed(
    sessionmaker: async_sessionmaker[AsyncSession], plugin_job_type: JobType
) -> None:
    clock = SteppedClock(datetime(2026, 5, 1, 10, 0, 0, 20_000, tzinfo=UTC))
    schedule("plugin-greet", "plugin.greet", every=EVERY, owner=PLUGIN)
    try:
        assert "plugin-greet" in [declared.name for declared in schedules()]
        await enqueue_due_schedules(sessionmaker, clock=clock)  # first sight: the next tick
        assert await _jobs_of(sessionmaker, "plugin.greet") == 0
        clock.advance(EVERY * 0.5)  # not yet the next tick
        await enqueue_due_schedules(sessionmaker, clock=clock)
        assert await _jobs_of(sessionmaker, "plugin.greet") == 0
        clock.advance(EVERY)
        await enqueue_due_schedules(sessionmaker, clock=clock)
        await enqueue_due_schedules(sessionmaker, clock=clock)  # once per tick
        assert await _jobs_of(sessionmaker, "plugin.greet") == 1
    finally:
        SCHEDULES.remove(PLUGIN)
    assert "plugin-greet" not in [declared.name for declared in schedules()]
    clock.advance(EVERY * 3)
    await enqueue_due_schedules(sessionmaker, clock=clock)
    assert await _jobs_of(sessionmaker, "plugin.greet") == 1
