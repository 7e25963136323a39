"""The `analytics_rollup` job, every ROLLUP_EVERY: closed minutes from the store into the
database (per minute, hour and day), and rows past their retention removed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.analytics.services.rollup import roll_up
from app.core.clock import current_clock
from app.jobs.services.registry import JobContext, job_handler
from app.jobs.services.schedules import schedule

ROLLUP_EVERY = timedelta(minutes=5)
"""How often the roll-up runs: the charts and the dashboard's figures lag by at most this
(plus the minute being closed); each run takes every closed minute, so none is missed."""


@job_handler("analytics_rollup", timeout=300, max_attempts=1)
async def run_rollup(ctx: JobContext[dict[str, Any]]) -> dict[str, int]:
    """Roll the closed minutes up; a failed run gives them back to the store for the next."""
    result = await roll_up(ctx.sessionmaker, ctx.store, current_clock().now())
    return {
        "minutes": result.minutes,
        "requests": result.requests,
        "views": result.views,
        "rows_deleted": result.deleted,
    }


schedule("analytics-rollup", "analytics_rollup", every=ROLLUP_EVERY)
