"""The analytics roll-up, a periodic task of every worker (`keel worker` and the worker
inside embedded `keel serve`): every ROLLUP_EVERY_SECONDS, closed minutes go from the store
into the database (per minute, hour and day) and rows past their retention are removed.

It is housekeeping, not a queued job: it would add 1,440 rows a day to the jobs list and
its own runs to the jobs chart. Workers that run it at once are serialised by `roll_up`'s
lock, and a round that fails gives the minutes back to the store for the next."""

from __future__ import annotations

from typing import Any

from app.analytics.services.rollup import roll_up
from app.core.clock import current_clock
from app.core.store import Store
from app.jobs.services.worker import PeriodicTask

ROLLUP_EVERY_SECONDS = 60.0
"""How often a worker rolls up: the charts and the dashboard's figures lag by at most this
plus the minute being closed; each round takes every closed minute, so none is missed."""


def rollup_task(sessionmaker: Any, store: Store) -> PeriodicTask:
    """The roll-up as a worker's periodic task."""

    async def run() -> None:
        await roll_up(sessionmaker, store, current_clock().now())

    return PeriodicTask("analytics-rollup", ROLLUP_EVERY_SECONDS, run)
