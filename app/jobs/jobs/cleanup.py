"""The `cleanup` job, run daily at 03:00 UTC: what has outlived its retention goes.

- finished jobs older than the `job_retention_days` setting, with their result files
  (and any result folder whose job no longer exists);
- export and report files older than EXPORT_RETENTION_HOURS (their jobs stay);
- audit log entries older than the `audit_retention_days` setting;
- expired API sign-ins: token families, refresh tokens and signed-out access tokens past
  their expiry (a token whose row is gone is refused anyway);
- expired sessions: Valkey drops them by their TTL; the in-memory store drops expired
  keys when they are listed, which this job does, and session index entries whose
  session has gone are removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, inspect, select

from app.accounts.models import AuditEntry, RefreshToken, RevokedAccessToken, TokenFamily
from app.accounts.services.audit import AUDIT_RETENTION_DAYS
from app.accounts.services.sessions import SESSION_PREFIX, USER_INDEX_PREFIX
from app.jobs.models import FINISHED, Job
from app.jobs.services.registry import JobContext, job_handler, job_types
from app.jobs.services.schedules import schedule
from app.site_settings.services import SettingDefinition, define

JOB_RETENTION_DAYS = define(
    SettingDefinition(
        "job_retention_days",
        int,
        30,
        "Days finished jobs and their export files are kept.",
        label="Keep finished jobs (days)",
        minimum=1,
        maximum=3650,
    )
)

BATCH = 1000


@job_handler("cleanup", timeout=3600, max_attempts=3)
async def run_cleanup(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    """Remove finished jobs, result files and audit entries past their retention."""
    async with ctx.sessionmaker() as session:
        job_days = await JOB_RETENTION_DAYS.read(session)
        audit_days = await AUDIT_RETENTION_DAYS.read(session)
    now = datetime.now(UTC)
    jobs = await _delete_finished_jobs(ctx, now - timedelta(days=job_days))
    await ctx.progress(40, f"{jobs} finished jobs removed")
    files = await _delete_orphan_files(ctx)
    files += await _delete_expired_files(ctx, now - ctx.file_retention)
    await ctx.progress(60, f"{files} result folders removed")
    audit = await _delete_in_batches(
        ctx, AuditEntry, AuditEntry.created_at < now - timedelta(days=audit_days)
    )
    await ctx.progress(80, f"{audit} audit entries removed")
    tokens = 0
    for model in (RevokedAccessToken, RefreshToken, TokenFamily):
        tokens += await _delete_in_batches(ctx, model, model.expires_at < now)
    await ctx.progress(90, f"{tokens} expired token rows removed")
    sessions = await _sweep_session_index(ctx)
    return {
        "jobs_deleted": jobs,
        "result_folders_deleted": files,
        "audit_entries_deleted": audit,
        "expired_token_rows_deleted": tokens,
        "session_index_entries_deleted": sessions,
    }


async def _delete_finished_jobs(ctx: JobContext[Any], before: datetime) -> int:
    finished = Job.status.in_([s.value for s in FINISHED]) & (Job.finished_at < before)

    def remove_files(ids: list[Any]) -> None:
        for job_id in ids:
            shutil.rmtree(ctx.files_dir / str(job_id), ignore_errors=True)

    return await _delete_in_batches(ctx, Job, finished, remove_files)


def _result_folders(ctx: JobContext[Any]) -> dict[str, Path]:
    """The result folders on disk, by job id."""
    if not ctx.files_dir.is_dir():
        return {}
    return {p.name: p for p in ctx.files_dir.iterdir() if p.is_dir() and p.name.isdigit()}


async def _delete_orphan_files(ctx: JobContext[Any]) -> int:
    folders = _result_folders(ctx)
    if not folders:
        return 0
    async with ctx.sessionmaker() as session:
        alive = {
            str(job_id)
            for job_id in await session.scalars(
                select(Job.id).where(Job.id.in_([int(name) for name in folders]))
            )
        }
    removed = 0
    for name, path in folders.items():
        if name not in alive:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


async def _delete_expired_files(ctx: JobContext[Any], before: datetime) -> int:
    """Result folders of `expiring_files` types (exports, reports) finished before `before`."""
    folders = _result_folders(ctx)
    expiring = [kind.name for kind in job_types() if kind.expiring_files]
    if not folders or not expiring:
        return 0
    async with ctx.sessionmaker() as session:
        expired = await session.scalars(
            select(Job.id).where(
                Job.id.in_([int(name) for name in folders]),
                Job.type.in_(expiring),
                Job.finished_at < before,
            )
        )
        names = [str(job_id) for job_id in expired]
    for name in names:
        shutil.rmtree(folders[name], ignore_errors=True)
    return len(names)


async def _delete_in_batches(
    ctx: JobContext[Any],
    model: Any,
    condition: Any,
    after_batch: Callable[[list[Any]], None] | None = None,
) -> int:
    """Delete matching rows a thousand per transaction, so no lock is held for long."""
    key = inspect(model).primary_key[0]
    deleted = 0
    while True:
        async with ctx.sessionmaker() as session, session.begin():
            ids = list(await session.scalars(select(key).where(condition).limit(BATCH)))
            if ids:
                await session.execute(delete(model).where(key.in_(ids)))
        if after_batch is not None:
            after_batch(ids)
        deleted += len(ids)
        if len(ids) < BATCH:
            return deleted


async def _sweep_session_index(ctx: JobContext[Any]) -> int:
    removed = 0
    for key in await ctx.store.keys(USER_INDEX_PREFIX + "*"):
        digest = key.rsplit(":", 1)[1]
        if await ctx.store.get(SESSION_PREFIX + digest) is None:
            removed += await ctx.store.delete(key)
    await ctx.store.keys("*")  # the in-memory store forgets expired keys as it lists them
    return removed


schedule("cleanup", "cleanup", daily_at=time(3, 0))
