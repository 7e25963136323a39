"""Counts of jobs for the admin dashboard: what is waiting or running now, and how the
jobs that finished lately ended. Queue depths and waits are `jobs.queue_figures`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import FINISHED, Job, JobStatus

UNFINISHED = (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class JobCounts:
    unfinished: dict[str, int]
    """Queued (due or later) and running jobs now, both present."""
    finished: dict[str, int]
    """Jobs that finished since the moment asked about, by outcome, every outcome present."""

    @property
    def failed(self) -> int:
        """Finished without success: failed for good or out of attempts."""
        return self.finished[JobStatus.failed.value] + self.finished[JobStatus.dead.value]


async def job_counts(session: AsyncSession, finished_since: datetime) -> JobCounts:
    """Unfinished jobs by status, and the outcomes of those finished since `finished_since`
    (read by `finished_at`, so the history older than that is not scanned)."""
    unfinished = {status.value: 0 for status in UNFINISHED}
    rows = await session.execute(
        select(Job.status, func.count())
        .where(Job.status.in_([s.value for s in UNFINISHED]))
        .group_by(Job.status)
    )
    unfinished.update({status: count for status, count in rows})
    finished = {status.value: 0 for status in FINISHED}
    rows = await session.execute(
        select(Job.status, func.count())
        .where(Job.finished_at >= finished_since, Job.status.in_([s.value for s in FINISHED]))
        .group_by(Job.status)
    )
    finished.update({status: count for status, count in rows})
    return JobCounts(unfinished, finished)
