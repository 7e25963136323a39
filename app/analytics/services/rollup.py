"""Moving closed minutes from the store into the database, and the rows' retention.

Every process adds its requests (and content's `ViewCounts` its views) to one store hash
per minute (`app.core.metrics.minute_key`). `roll_up` takes (reads and deletes at once)
the hashes of minutes that ended at least CLOSED_AFTER_SECONDS ago, adds them to the
per-minute rows, then recomputes the hourly and daily rows those minutes fall in from the
rows below them. Taking is atomic, so two workers never both count a minute; a slow
process that flushes a minute after it was taken creates its hash again, and the next run
adds it. Recomputing (never adding) the hour and day rows makes a second run harmless;
runs are serialised by a lock (PostgreSQL's advisory lock, and one per process).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.analytics.models import DAY, HOUR, MINUTE, RequestStat, ViewStat
from app.core.db import dialect_insert
from app.core.metrics import (
    LATENCY_BUCKETS,
    MINUTE_PREFIX,
    MINUTE_TTL_SECONDS,
    SUM,
    VIEWS_FIELD,
    minute_key,
)
from app.core.store import Store
from app.site_settings.services import SettingDefinition, define

CLOSED_AFTER_SECONDS = 15
"""A minute is closed this long after it ended: processes flush every 2 seconds, so by
then all but a stalled process have added theirs (a later one still counts, next run)."""
BUCKETS = len(LATENCY_BUCKETS) + 1
"""Latency buckets per row: one per bound of LATENCY_BUCKETS, then one beyond the last."""
_LOCK_ID = 0x6B65656C_616E6C79  # "keelanly": PostgreSQL advisory lock of the roll-up
_PROCESS_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
"""One roll-up at a time in a process (per event loop: a lock belongs to one)."""
_FIGURES = (
    RequestStat.start,
    RequestStat.route_group,
    RequestStat.status_class,
    RequestStat.count,
    RequestStat.seconds,
    RequestStat.buckets,
)
"""Read as plain rows (never ORM objects, which the upserts would leave stale)."""


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _PROCESS_LOCKS.get(loop)
    if lock is None:
        lock = _PROCESS_LOCKS[loop] = asyncio.Lock()
    return lock


MINUTE_RETENTION_HOURS = define(
    SettingDefinition(
        "analytics_minute_retention_hours",
        int,
        48,
        "Hours per-minute request figures are kept. Charts with buckets that are not whole "
        "hours read these, so they show zeros before this; hourly and daily figures stay.",
        label="Keep per-minute analytics (hours)",
        minimum=2,
        maximum=720,
    )
)
HOUR_RETENTION_DAYS = define(
    SettingDefinition(
        "analytics_hour_retention_days",
        int,
        31,
        "Days hourly request figures are kept (charts of 7 and 30 days read them).",
        label="Keep hourly analytics (days)",
        minimum=2,
        maximum=3650,
    )
)
ANALYTICS_RETENTION_DAYS = define(
    SettingDefinition(
        "analytics_retention_days",
        int,
        400,
        "Days daily request and view figures are kept.",
        label="Keep daily analytics (days)",
        minimum=2,
        maximum=3650,
    )
)


@dataclass(frozen=True)
class RollupResult:
    minutes: int
    """Minute hashes taken from the store."""
    requests: int
    views: int
    deleted: int
    """Rows past their retention removed."""


Key = tuple[str, str]
"""(route group, status class)."""


@dataclass
class Counts:
    count: int = 0
    seconds: float = 0.0
    buckets: list[int] | None = None

    def add(self, count: int, seconds: float, buckets: Iterable[int]) -> None:
        self.count += count
        self.seconds += seconds
        current = self.buckets or [0] * BUCKETS
        self.buckets = [a + b for a, b in zip(current, padded(buckets), strict=True)]


def padded(buckets: Iterable[int]) -> list[int]:
    """Bucket counts as a list of BUCKETS integers (a shorter one from another version padded)."""
    values = [int(n) for n in buckets][:BUCKETS]
    return values + [0] * (BUCKETS - len(values))


def parse_minute(fields: Mapping[str, float]) -> tuple[dict[Key, Counts], int]:
    """A minute hash's fields as counts per (group, status class), and its views."""
    counts: dict[Key, Counts] = defaultdict(Counts)
    views = 0
    for name, value in fields.items():
        if name == VIEWS_FIELD:
            views += int(value)
            continue
        parts = name.split("|")
        if len(parts) != 3:
            continue  # written by another version
        group, kind, part = parts
        if part == SUM:
            counts[(group, kind)].seconds += value
        elif part.isdigit() and int(part) < BUCKETS:
            buckets = [0] * BUCKETS
            buckets[int(part)] = int(value)
            counts[(group, kind)].add(int(value), 0.0, buckets)
    return dict(counts), views


async def roll_up(
    sessionmaker: async_sessionmaker[AsyncSession], store: Store, now: datetime
) -> RollupResult:
    """Take the closed minutes from the store into the database, then apply retention.
    Minutes taken are given back to the store when the database refuses them."""
    closed_before = now.timestamp() - CLOSED_AFTER_SECONDS
    minutes = []
    for key in await store.keys(MINUTE_PREFIX + "*"):
        suffix = key.removeprefix(MINUTE_PREFIX)
        if suffix.isdigit() and (int(suffix) + 1) * 60 <= closed_before:
            minutes.append(int(suffix))
    taken: dict[int, dict[str, float]] = {}
    for minute in sorted(minutes):
        fields = await store.take_fields(minute_key(minute))
        if fields:
            taken[minute] = fields
    requests = views = 0
    async with _process_lock():
        try:
            async with sessionmaker() as session, session.begin():
                await _serialise(session)
                keep = timedelta(hours=await MINUTE_RETENTION_HOURS.read(session))
                requests, views = await _add_minutes(session, taken, now - keep)
        except BaseException:
            await store.incr_hashes(
                {minute_key(m): fields for m, fields in taken.items()},
                {minute_key(m): MINUTE_TTL_SECONDS for m in taken},
            )
            raise
        async with sessionmaker() as session, session.begin():
            await _serialise(session)
            deleted = await apply_retention(session, now)
    return RollupResult(len(taken), requests, views, deleted)


async def _serialise(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def _add_minutes(
    session: AsyncSession, taken: Mapping[int, Mapping[str, float]], oldest: datetime
) -> tuple[int, int]:
    """Add the minutes to their rows and recompute the hours and days they fall in; a
    minute older than the per-minute retention is dropped (its hour could no longer be
    recomputed whole)."""
    request_rows: dict[tuple[datetime, str, str], Counts] = {}
    view_rows: dict[datetime, int] = {}
    for minute, fields in taken.items():
        start = _at(minute * 60)
        if start < oldest:
            continue
        counts, views = parse_minute(fields)
        for (group, kind), figures in counts.items():
            request_rows[(start, group, kind)] = figures
        if views:
            view_rows[start] = views
    if not request_rows and not view_rows:
        return 0, 0
    starts = {key[0] for key in request_rows} | set(view_rows)
    existing = await session.execute(
        select(*_FIGURES).where(RequestStat.period_seconds == MINUTE, RequestStat.start.in_(starts))
    )
    for start, group, kind, count, seconds, buckets in existing:
        if (start, group, kind) in request_rows:
            request_rows[(start, group, kind)].add(count, seconds, buckets)
    old_views = await session.execute(
        select(ViewStat.start, ViewStat.views).where(
            ViewStat.period_seconds == MINUTE, ViewStat.start.in_(list(view_rows))
        )
    )
    added_views = sum(view_rows.values())
    for start, count in old_views:
        view_rows[start] += count
    added_requests = sum(c.count for c in request_rows.values())
    await _write_requests(session, MINUTE, request_rows)
    await _write_views(session, MINUTE, view_rows)
    hours = {_floor(start, HOUR) for start in starts}
    for hour in sorted(hours):
        await _recompute(session, MINUTE, HOUR, hour)
    for day in sorted({_floor(hour, DAY) for hour in hours}):
        await _recompute(session, HOUR, DAY, day)
    return added_requests, added_views


def _floor(at: datetime, period: int) -> datetime:
    return _at(int(at.timestamp()) // period * period)


async def _recompute(session: AsyncSession, below: int, period: int, start: datetime) -> None:
    """The row of `period` at `start` as the sum of the rows of period `below` in it."""
    end = start + timedelta(seconds=period)
    totals: dict[Key, Counts] = defaultdict(Counts)
    rows = await session.execute(
        select(*_FIGURES).where(
            RequestStat.period_seconds == below,
            RequestStat.start >= start,
            RequestStat.start < end,
        )
    )
    for _, group, kind, count, seconds, buckets in rows:
        totals[(group, kind)].add(count, seconds, buckets)
    await _write_requests(session, period, {(start, g, k): c for (g, k), c in totals.items()})
    views = await session.scalar(
        select(_sum(ViewStat.views)).where(
            ViewStat.period_seconds == below, ViewStat.start >= start, ViewStat.start < end
        )
    )
    if views:
        await _write_views(session, period, {start: int(views)})


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


async def _write_requests(
    session: AsyncSession, period: int, rows: Mapping[tuple[datetime, str, str], Counts]
) -> None:
    """Insert the rows, or overwrite those that exist with these values."""
    if not rows:
        return
    values = [
        {
            "period_seconds": period,
            "start": start,
            "route_group": group,
            "status_class": kind,
            "count": counts.count,
            "seconds": counts.seconds,
            "buckets": counts.buckets or [0] * BUCKETS,
        }
        for (start, group, kind), counts in rows.items()
    ]
    insert = dialect_insert(session, RequestStat)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["period_seconds", "start", "route_group", "status_class"],
            set_={
                "count": insert.excluded.count,
                "seconds": insert.excluded.seconds,
                "buckets": insert.excluded.buckets,
            },
        ),
        values,
    )


async def _write_views(session: AsyncSession, period: int, rows: Mapping[datetime, int]) -> None:
    if not rows:
        return
    insert = dialect_insert(session, ViewStat)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["period_seconds", "start"], set_={"views": insert.excluded.views}
        ),
        [{"period_seconds": period, "start": start, "views": n} for start, n in rows.items()],
    )


async def apply_retention(session: AsyncSession, now: datetime) -> int:
    """Delete rows older than their period's retention setting; returns how many."""
    keep = {
        MINUTE: timedelta(hours=await MINUTE_RETENTION_HOURS.read(session)),
        HOUR: timedelta(days=await HOUR_RETENTION_DAYS.read(session)),
        DAY: timedelta(days=await ANALYTICS_RETENTION_DAYS.read(session)),
    }
    deleted = 0
    for period, kept in keep.items():
        for model in (RequestStat, ViewStat):
            result: Any = await session.execute(
                delete(model).where(model.period_seconds == period, model.start < now - kept)
            )
            deleted += result.rowcount
    return deleted
