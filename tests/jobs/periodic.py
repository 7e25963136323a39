"""A schedule for the two-worker periodic test: `test.tick` every second, appending a line
to the file named by TICK_FILE (read from the worker's environment)."""

from __future__ import annotations

import os
from datetime import timedelta

from app.jobs.services.registry import JobContext, job_handler
from app.jobs.services.schedules import schedule
from tests.jobs.handlers import append


@job_handler("test.tick")
async def tick(ctx: JobContext[dict[str, object]]) -> None:
    """Record one tick."""
    append(os.environ["TICK_FILE"], "tick")


schedule("test-tick", "test.tick", every=timedelta(seconds=1))
