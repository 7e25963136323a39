"""What `/metrics` answers: the deployment's figures, whichever process serves the scrape.

Counters and histograms come from the store's totals (every process flushes its tally
there); queue depths from the database at scrape time; live workers from their
heartbeats; the build from this process.
"""

from __future__ import annotations

import platform

from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.content.services.page_cache import PageCache
from app.core.metrics import TOTALS_KEY, Metric, Samples, Scrape, Tally, exposition, gauge
from app.core.runtime import Runtime
from app.core.store import Store
from app.jobs.services.jobs import QueueFigures, queue_figures
from app.jobs.services.metrics import JOBS_OLDEST_WAIT, JOBS_QUEUE_DEPTH, WORKERS_LIVE
from app.jobs.services.registry import job_types
from app.jobs.services.worker import list_workers
from app.system.services.system import Pool, pools


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


async def _pools(scrape: Scrape) -> list[Pool]:
    return pools(scrape.process)


async def _pool_in_use(scrape: Scrape) -> Samples:
    return [((pool.name,), pool.in_use) for pool in await scrape.shared(_pools)]


async def _pool_size(scrape: Scrape) -> Samples:
    return [((pool.name,), pool.size) for pool in await scrape.shared(_pools)]


async def _cache_generation(scrape: Scrape) -> Samples:
    return [((), scrape.process.service(PageCache).generation)]


async def _cache_degraded(scrape: Scrape) -> Samples:
    return [((), int(scrape.process.service(PageCache).degraded))]


gauge(
    Metric(
        "keel_db_pool_in_use",
        "gauge",
        "Database connections in use now in the serving process, by pool (requests: sessions "
        "of requests and jobs; reads: the public pages' read path).",
        ("pool",),
    ),
    _pool_in_use,
)
gauge(
    Metric(
        "keel_db_pool_size",
        "gauge",
        "The most database connections the serving process may hold, by pool.",
        ("pool",),
    ),
    _pool_size,
)
gauge(
    Metric(
        "keel_cache_generation",
        "gauge",
        "The public page cache's generation in the serving process (each public change starts "
        "a new one).",
        (),
    ),
    _cache_generation,
)
gauge(
    Metric(
        "keel_cache_degraded",
        "gauge",
        "1 while the serving process renders public pages uncached because the store failed.",
        (),
    ),
    _cache_degraded,
)


async def scrape(session: AsyncSession, store: Store, own: Tally, process: Runtime) -> str:
    """The exposition text. This process's own tally goes to the store first, so what it
    served up to now is included; other processes' figures are at most one flush old."""
    await own.flush(store)
    return await exposition(Scrape(session, store, process), await store.read_fields(TOTALS_KEY))
