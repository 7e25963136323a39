"""What `/metrics` answers: the deployment's figures, whichever process serves the scrape.

Counters and histograms come from the store's totals (every process flushes its tally
there); queue depths from the database at scrape time; live workers from their
heartbeats; the build from this process.
"""

from __future__ import annotations

import platform

from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.core.metrics import (
    HTTP_DURATION,
    HTTP_REQUESTS,
    TOTALS_KEY,
    Exposition,
    Metric,
    Tally,
)
from app.core.store import Store
from app.jobs.metrics import (
    JOBS_OLDEST_WAIT,
    JOBS_PROCESSED,
    JOBS_QUEUE_DEPTH,
    JOBS_WAIT,
    WORKERS_LIVE,
)
from app.jobs.registry import job_types
from app.jobs.services import queue_figures
from app.jobs.worker import list_workers

BUILD_INFO = Metric(
    "keel_build_info",
    "gauge",
    "Always 1; the labels name the Keel version and Python of the serving process.",
    ("version", "python"),
)
STORED = (HTTP_REQUESTS, HTTP_DURATION, JOBS_PROCESSED, JOBS_WAIT)


async def scrape(session: AsyncSession, store: Store, own: Tally) -> str:
    """The exposition text. This process's own tally goes to the store first, so what it
    served up to now is included; other processes' figures are at most one flush old."""
    await own.flush(store)
    totals = await store.read_fields(TOTALS_KEY)
    figures = {f.queue: f for f in await queue_figures(session)}
    queues = sorted(set(figures) | {kind.queue for kind in job_types()})
    workers = await list_workers(store)

    out = Exposition()
    out.gauge(BUILD_INFO, [((__version__, platform.python_version()), 1)])
    out.totals(STORED, totals)
    depth = []
    oldest = []
    for name in queues:
        found = figures.get(name)
        depth.append(((name, "queued"), found.waiting if found else 0))
        depth.append(((name, "scheduled"), found.scheduled if found else 0))
        depth.append(((name, "running"), found.running if found else 0))
        oldest.append(((name,), (found.oldest_wait_seconds or 0.0) if found else 0.0))
    out.gauge(JOBS_QUEUE_DEPTH, depth)
    out.gauge(JOBS_OLDEST_WAIT, oldest)
    out.gauge(WORKERS_LIVE, [((), len(workers))])
    return out.text()
