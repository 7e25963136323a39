"""What `/metrics` answers: the deployment's figures, whichever process serves the scrape.

Counters and histograms come from the store's totals (every process flushes its tally
there); queue depths from the database at scrape time; live workers from their
heartbeats; the build from this process.
"""

from __future__ import annotations

import platform

from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.core.metrics import TOTALS_KEY, Metric, Samples, Scrape, Tally, exposition, gauge
from app.core.store import Store
from app.jobs.services.jobs import QueueFigures, queue_figures
from app.jobs.services.metrics import JOBS_OLDEST_WAIT, JOBS_QUEUE_DEPTH, WORKERS_LIVE
from app.jobs.services.registry import job_types
from app.jobs.services.worker import list_workers


async def _build(scrape: Scrape) -> Samples:
    return [((__version__, platform.python_version()), 1)]


BUILD_INFO = gauge(
    Metric(
        "keel_build_info",
        "gauge",
        "Always 1; the labels name the Keel version and Python of the serving process.",
        ("version", "python"),
    ),
    _build,
)


async def _queues(scrape: Scrape) -> tuple[dict[str, QueueFigures], list[str]]:
    """Each queue's figures (one query per scrape), and every queue a job type names."""
    figures = {f.queue: f for f in await queue_figures(scrape.session)}
    return figures, sorted(set(figures) | {kind.queue for kind in job_types()})


async def _queue_depth(scrape: Scrape) -> Samples:
    figures, queues = await scrape.shared(_queues)
    depth = []
    for name in queues:
        found = figures.get(name)
        depth.append(((name, "queued"), found.waiting if found else 0))
        depth.append(((name, "scheduled"), found.scheduled if found else 0))
        depth.append(((name, "running"), found.running if found else 0))
    return depth


async def _oldest_wait(scrape: Scrape) -> Samples:
    figures, queues = await scrape.shared(_queues)
    oldest = []
    for name in queues:
        found = figures.get(name)
        oldest.append(((name,), (found.oldest_wait_seconds or 0.0) if found else 0.0))
    return oldest


async def _workers_live(scrape: Scrape) -> Samples:
    return [((), len(await list_workers(scrape.store)))]


gauge(JOBS_QUEUE_DEPTH, _queue_depth)
gauge(JOBS_OLDEST_WAIT, _oldest_wait)
gauge(WORKERS_LIVE, _workers_live)


async def scrape(session: AsyncSession, store: Store, own: Tally) -> str:
    """The exposition text. This process's own tally goes to the store first, so what it
    served up to now is included; other processes' figures are at most one flush old."""
    await own.flush(store)
    return await exposition(Scrape(session, store), await store.read_fields(TOTALS_KEY))
