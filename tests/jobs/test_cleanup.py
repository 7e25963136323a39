"""The `cleanup` job and the schedule arithmetic behind its daily run."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import AuditEntry, RefreshToken, RevokedAccessToken, TokenFamily, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.tokens import RefreshTokens
from app.jobs.models import Job, JobStatus
from app.jobs.services.queue import enqueue
from app.jobs.services.schedules import Schedule, schedules
from app.settings import Settings
from tests.jobs.conftest import running_worker, wait_for_status

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime.now(UTC)


async def _finished_job(session: AsyncSession, status: JobStatus, finished_at: datetime) -> int:
    job_id = await enqueue(session, "test.file")
    await session.execute(
        update(Job).where(Job.id == job_id).values(status=status.value, finished_at=finished_at)
    )
    return job_id


async def test_cleanup_removes_what_outlived_retention_and_keeps_the_rest(
    settings: Settings, sessionmaker: Sessions
) -> None:
    files = settings.app.var_dir / "job-files"
    shutil.rmtree(files, ignore_errors=True)  # other tests' results share the var dir
    async with sessionmaker() as session, session.begin():
        old = await _finished_job(session, JobStatus.succeeded, NOW - timedelta(days=31))
        old_dead = await _finished_job(session, JobStatus.dead, NOW - timedelta(days=40))
        recent = await _finished_job(session, JobStatus.succeeded, NOW - timedelta(days=29))
        waiting = await enqueue(session, "test.file", delay=3600)
        record(session, Actor.system(), "old.thing").created_at = NOW - timedelta(days=366)
        record(session, Actor.system(), "recent.thing").created_at = NOW - timedelta(days=364)
    for job_id in (old, recent, 999_999):
        (files / str(job_id)).mkdir(parents=True)
        (files / str(job_id) / "export.csv").write_text("a,b\n")
    async with sessionmaker() as session, session.begin():
        cleanup = await enqueue(session, "cleanup")
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, cleanup, {"succeeded", "dead", "failed"})
    assert job.status == "succeeded", job.last_error
    assert job.result["jobs_deleted"] == 2 and job.result["audit_entries_deleted"] == 1
    async with sessionmaker() as session:
        left = set(await session.scalars(select(Job.id)))
        actions = set(await session.scalars(select(AuditEntry.action)))
    assert left == {recent, waiting, cleanup} and old_dead not in left
    assert actions == {"recent.thing"}
    assert sorted(p.name for p in files.iterdir()) == [str(recent)]


def test_cleanup_is_scheduled_daily_at_three_utc() -> None:
    (cleanup,) = [s for s in schedules() if s.name == "cleanup"]
    assert cleanup.job_type == "cleanup" and cleanup.daily_at == time(3, 0)
    at = datetime(2026, 5, 1, 2, 59, tzinfo=UTC)
    assert cleanup.tick(at) == datetime(2026, 4, 30, 3, 0, tzinfo=UTC)
    assert cleanup.tick(at + timedelta(minutes=1)) == datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def test_interval_ticks_are_aligned_to_the_epoch() -> None:
    every = Schedule("five", "cleanup", every=timedelta(minutes=5))
    assert every.tick(datetime(2026, 5, 1, 10, 7, 30, tzinfo=UTC)) == datetime(
        2026, 5, 1, 10, 5, tzinfo=UTC
    )


async def test_cleanup_removes_expired_api_sign_ins_and_keeps_live_ones(
    settings: Settings, sessionmaker: Sessions, accounts: dict[str, User]
) -> None:
    tokens = RefreshTokens(3600, 1800)
    user = accounts["editor"]
    async with sessionmaker() as session, session.begin():
        live, _ = await tokens.start(session, user.id, 1)
        old, _ = await tokens.start(session, user.id, 1)
        session.add(RevokedAccessToken(jti="gone", expires_at=NOW - timedelta(minutes=1)))
        session.add(RevokedAccessToken(jti="kept", expires_at=NOW + timedelta(minutes=29)))
    async with sessionmaker() as session, session.begin():
        past = {"expires_at": NOW - timedelta(seconds=1)}
        await session.execute(update(TokenFamily).where(TokenFamily.id == old).values(past))
        await session.execute(
            update(RefreshToken).where(RefreshToken.family_id == old).values(past)
        )
        cleanup = await enqueue(session, "cleanup")
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, cleanup, {"succeeded", "dead", "failed"})
    assert job.status == "succeeded", job.last_error
    assert job.result["expired_token_rows_deleted"] == 3
    async with sessionmaker() as session:
        assert set(await session.scalars(select(TokenFamily.id))) == {live}
        assert set(await session.scalars(select(RefreshToken.family_id))) == {live}
        assert set(await session.scalars(select(RevokedAccessToken.jti))) == {"kept"}
