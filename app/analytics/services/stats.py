"""The site's counts (`GET /api/v1/stats`, the dashboard): users, content and jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role, User
from app.content.models import Entry, Kind, Status
from app.core.clock import current_clock
from app.jobs.models import Job, JobStatus
from app.jobs.services.jobs import queue_figures


async def _counted(session: AsyncSession, column: Any, names: list[str]) -> dict[str, int]:
    """Rows per value of `column`, every name in `names` present (0 when none)."""
    counts = dict.fromkeys(names, 0)
    for value, count in await session.execute(select(column, func.count()).group_by(column)):
        counts[str(value)] = count
    return counts


async def site_stats(session: AsyncSession, now: datetime | None = None) -> dict[str, Any]:
    """Users (total, by role, new in the last 7 and 30 days), content (total, by status and
    kind) and jobs (by status; per queue: waiting, scheduled, running, oldest wait)."""
    now = now or current_clock().now()
    by_role = await _counted(
        session, User.role, [role.name for role in Role if role.name != "guest"]
    )
    new = {}
    for days in (7, 30):
        new[f"last_{days}_days"] = (
            await session.scalar(
                select(func.count())
                .select_from(User)
                .where(User.created_at >= now - timedelta(days=days))
            )
            or 0
        )
    by_status = await _counted(session, Entry.status, [s.value for s in Status])
    by_kind = await _counted(session, Entry.kind, [k.value for k in Kind])
    jobs = await _counted(session, Job.status, [s.value for s in JobStatus])
    queues = await queue_figures(session)
    return {
        "users": {"total": sum(by_role.values()), "by_role": by_role, "new": new},
        "content": {"total": sum(by_status.values()), "by_status": by_status, "by_kind": by_kind},
        "jobs": {
            "total": sum(jobs.values()),
            "by_status": jobs,
            "queue_depth": sum(q.waiting for q in queues),
            "queues": [
                {
                    "name": q.queue,
                    "waiting": q.waiting,
                    "scheduled": q.scheduled,
                    "running": q.running,
                    "oldest_wait_seconds": q.oldest_wait_seconds,
                }
                for q in queues
            ],
        },
    }
