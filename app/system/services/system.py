"""What `/admin/system` shows: the database and its pools, migrations, the store, workers,
queues, disk space of the data folders, the page cache, and the effective configuration
with its secrets hidden. Every figure is read when the page is asked for; one that cannot
be read (the store down, say) is shown as unknown, never as an error page."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.content.services.list_cache import LIST_CACHE_REQUESTS
from app.content.services.page_cache import CACHE_REQUESTS, PageCache
from app.core.db import describe_url
from app.core.metrics import counter_totals
from app.core.migrations import current_revision, head_revision
from app.core.runtime import Runtime
from app.jobs.services.jobs import QueueFigures, queue_figures
from app.jobs.services.worker import list_workers
from app.settings import Settings
from app.system.services.health import ComponentHealth, Readiness, check_readiness

DISK_WARNING = 0.80
"""A data folder's disk fuller than this is a warning (the seed's alert threshold)."""
SECRET_FIELDS = {"secret_key", "token"}
"""Configuration fields shown only as set or not."""
URL_FIELDS = {"url", "smtp_url"}
"""Configuration fields that are addresses: shown without a password."""


@dataclass(frozen=True)
class Pool:
    name: str
    in_use: int
    size: int
    help: str

    @property
    def exhausted(self) -> bool:
        return self.size > 0 and self.in_use >= self.size


@dataclass(frozen=True)
class Disk:
    folder: str
    path: str
    used_bytes: int
    total_bytes: int

    @property
    def share(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def warning(self) -> bool:
        return self.share > DISK_WARNING


@dataclass(frozen=True)
class SystemReport:
    readiness: Readiness
    pools: list[Pool]
    migration_current: str | None
    migration_head: str | None
    store_kind: str
    store_degraded: bool
    store_memory_bytes: int | None
    workers: list[dict[str, Any]]
    queues: list[QueueFigures] | None
    """None when the database did not answer."""
    disks: list[Disk]
    cache_generation: int
    cache_degraded: bool
    cache_requests: dict[str, int] | None
    """Requests of cached routes by result (hit, miss, bypass), of every process since the
    store started; None when the store did not answer."""
    list_requests: dict[str, int] | None
    """Editors' API lists answered from what a process kept (hit) or read (miss), as
    `cache_requests` counts them."""
    version: str
    uptime_seconds: int
    configuration: dict[str, dict[str, str]]

    @property
    def database(self) -> ComponentHealth:
        return next(c for c in self.readiness.components if c.name == "database")

    @property
    def store(self) -> ComponentHealth:
        return next(c for c in self.readiness.components if c.name == "store")

    @property
    def migrated(self) -> bool:
        return self.migration_current == self.migration_head

    @property
    def warnings(self) -> list[str]:
        found = [
            f"The {pool.name} pool is exhausted ({pool.in_use} of {pool.size} in use)."
            for pool in self.pools
            if pool.exhausted
        ]
        found += [f"The disk of {d.folder} is {d.share:.0%} full." for d in self.disks if d.warning]
        if not self.migrated:
            found.append("The database is not at the newest migration: run `keel db upgrade`.")
        if self.store_degraded:
            found.append("The store is not answering: Keel runs on without it (degraded).")
        return found


def pools(runtime: Runtime) -> list[Pool]:
    """The requests' pool and the read path's connections, in use now against their size."""
    pool = runtime.engine.pool
    size = getattr(pool, "size", None)
    checked_out = getattr(pool, "checkedout", None)
    overflow = runtime.settings.db.max_overflow if callable(size) else 0
    requests = Pool(
        "requests",
        checked_out() if callable(checked_out) else 0,
        (size() + overflow) if callable(size) else 0,
        "sessions of requests and jobs (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
    )
    in_use, read_size = runtime.reads.figures()
    reads = Pool("reads", in_use, read_size, "public pages' reads (DB_READ_POOL_SIZE)")
    return [requests, reads]


def disks(settings: Settings) -> list[Disk]:
    """Disk space where Keel keeps data (one line per folder that exists)."""
    found = []
    folders = {"Data (VAR_DIR)": settings.app.var_dir, "Media": settings.app.media_dir}
    for label, folder in folders.items():
        path = Path(folder)
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)
        found.append(Disk(label, str(folder), usage.used, usage.total))
    return found


def configuration(settings: Settings) -> dict[str, dict[str, str]]:
    """The effective start-up configuration, by section: secrets shown only as set or not,
    addresses without their passwords."""
    shown: dict[str, dict[str, str]] = {}
    for section in dataclasses.fields(settings):
        values = getattr(settings, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        entries: dict[str, str] = {}
        for item in dataclasses.fields(values):
            value = getattr(values, item.name)
            if item.name in SECRET_FIELDS:
                entries[item.name] = "(set)" if value else "(not set)"
            elif item.name in URL_FIELDS and value:
                entries[item.name] = describe_url(str(value))
            elif isinstance(value, tuple):
                entries[item.name] = ", ".join(str(v) for v in value) or "—"
            else:
                entries[item.name] = str(value) if value not in ("", None) else "—"
        shown[section.name] = entries
    return shown


async def system_report(runtime: Runtime, session: AsyncSession) -> SystemReport:
    settings = runtime.settings
    readiness = await check_readiness(runtime.engine, runtime.store, settings.health.check_timeout)
    try:
        current = await current_revision(runtime.engine)
    except Exception:  # shown as unknown; readiness says why
        current = None
    try:
        memory = await runtime.store.memory_used()
    except Exception:
        memory = None
    try:
        workers = await list_workers(runtime.store)
    except Exception:
        workers = []
    try:
        queues: list[QueueFigures] | None = await queue_figures(session)
    except Exception:  # shown as unknown; readiness says why (a full pool warns too)
        queues = None
    page_cache = runtime.service(PageCache)
    try:
        pages, lists = await counter_totals(
            runtime.store, runtime.figures, CACHE_REQUESTS, LIST_CACHE_REQUESTS
        )
        cache_requests: dict[str, int] | None = _by_result(pages, ("hit", "miss", "bypass"))
        list_requests: dict[str, int] | None = _by_result(lists, ("hit", "miss"))
    except Exception:  # the store is down: shown as unknown, the store's section says why
        cache_requests = list_requests = None
    store_breaker = getattr(runtime.store, "breaker", None)
    return SystemReport(
        readiness=readiness,
        pools=pools(runtime),
        migration_current=current,
        migration_head=head_revision(),
        store_kind=runtime.store.kind,
        store_degraded=bool(getattr(store_breaker, "is_open", False)),
        store_memory_bytes=memory,
        workers=workers,
        queues=queues,
        disks=disks(settings),
        cache_generation=page_cache.generation,
        cache_degraded=page_cache.degraded,
        cache_requests=cache_requests,
        list_requests=list_requests,
        version=__version__,
        uptime_seconds=int(time.monotonic() - runtime.started_monotonic),
        configuration=configuration(settings),
    )


def _by_result(counts: dict[tuple[str, ...], float], results: tuple[str, ...]) -> dict[str, int]:
    """A counter's totals by its one label (`result`), 0 for a result never counted."""
    return {result: int(counts.get((result,), 0)) for result in results}
