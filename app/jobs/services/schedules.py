"""Periodic jobs declared in code: each tick is enqueued exactly once across all workers.

A worker claims a tick by moving `job_schedules.last_tick` forward with an UPDATE guarded
by the old value; only one worker's UPDATE can match, and it enqueues the job in the same
transaction (with a unique key naming the tick). A schedule seen for the first time
starts at its next tick; ticks missed while no worker ran are not made up, only the
latest one runs.

Schedules live in `SCHEDULES` (an `app.core.registry.Registry`): `schedule()` adds one for
Keel, a plugin adds and removes its own while Keel runs; workers read it at every check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.db import dialect_insert, rows_changed
from app.core.registry import KEEL, Registry
from app.jobs.models import JobSchedule
from app.jobs.services.queue import enqueue, is_postgres
from app.jobs.services.registry import load_job_modules

SCHEDULE_CHECK_SECONDS = 1.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Schedule:
    """Run `job_type` every `every` (aligned to the epoch), or daily at `daily_at` (UTC)."""

    name: str
    job_type: str
    every: timedelta | None = None
    daily_at: time | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.every is None) == (self.daily_at is None):
            raise ValueError(f"schedule {self.name!r}: give exactly one of every= or daily_at=")

    def tick(self, now: datetime) -> datetime:
        """The latest tick at or before `now`."""
        if self.every is not None:
            periods = (now - EPOCH) // self.every
            return EPOCH + periods * self.every
        assert self.daily_at is not None
        today = datetime.combine(now.date(), self.daily_at, UTC)
        return today if today <= now else today - timedelta(days=1)


SCHEDULES: Registry[str, Schedule] = Registry("schedule", key=lambda declared: declared.name)


def schedule(
    name: str,
    job_type: str,
    *,
    every: timedelta | None = None,
    daily_at: time | None = None,
    payload: dict[str, Any] | None = None,
    owner: str = KEEL,
) -> Schedule:
    """Declare a periodic job (Keel's: at import time of a job module)."""
    return SCHEDULES.add(owner, Schedule(name, job_type, every, daily_at, payload or {}))


def schedules() -> list[Schedule]:
    load_job_modules()
    return list(SCHEDULES)


async def _database_now(session: AsyncSession) -> datetime:
    if is_postgres(session):
        now: datetime = (await session.execute(select(func.now()))).scalar_one()
        return now.astimezone(UTC)
    return datetime.now(UTC)


async def claim_tick(session: AsyncSession, declared: Schedule, now: datetime) -> datetime | None:
    """Move the schedule to its current tick; the tick when this caller won it, else None."""
    tick = declared.tick(now)
    first_sight = await rows_changed(
        session,
        dialect_insert(session, JobSchedule)
        .values(name=declared.name, last_tick=tick)
        .on_conflict_do_nothing(index_elements=["name"]),
    )
    if first_sight:
        return None
    moved = await rows_changed(
        session,
        update(JobSchedule)
        .where(JobSchedule.name == declared.name, JobSchedule.last_tick < tick)
        .values(last_tick=tick),
    )
    return tick if moved else None


async def enqueue_due_schedules(
    sessionmaker: async_sessionmaker[AsyncSession],
    seen: dict[str, datetime] | None = None,
    clock: Clock | None = None,
) -> int:
    """Enqueue every schedule whose tick is due and not yet taken; returns how many.

    `seen` (kept by the caller between calls) remembers the tick last settled per schedule,
    so the database is only asked when the local clock says a new tick may have begun.
    Ticks are decided on the database's clock (PostgreSQL's, which every worker shares),
    or on `clock` when one is given (a test's).
    """
    enqueued = 0
    seen = {} if seen is None else seen
    local = clock or SYSTEM_CLOCK
    for declared in schedules():
        if seen.get(declared.name) == declared.tick(local.now()):
            continue
        async with sessionmaker() as session, session.begin():
            now = clock.now() if clock is not None else await _database_now(session)
            tick = await claim_tick(session, declared, now)
            if tick is not None:
                await enqueue(
                    session,
                    declared.job_type,
                    declared.payload,
                    unique_key=f"schedule:{declared.name}:{tick.isoformat()}",
                )
                enqueued += 1
        seen[declared.name] = declared.tick(now)
    return enqueued
