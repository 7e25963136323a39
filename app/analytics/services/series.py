"""Time series for charts and the API: requests, latency, content views and publications,
job throughput, over a range cut into equal buckets, every bucket present.

Latency percentiles are estimated from the latency buckets (`app.core.metrics.
LATENCY_BUCKETS`): the bucket holding the wanted rank is found and the value interpolated
linearly inside it (a rank beyond the last bound reads as that bound), as Prometheus'
`histogram_quantile` does; job wait and run times are exact, read from the jobs table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.models import DAY, HOUR, MINUTE, RequestStat, ViewStat
from app.analytics.services.rollup import BUCKETS, padded
from app.content.models import Entry, Status
from app.core.clock import current_clock
from app.core.errors import InvalidField
from app.core.metrics import LATENCY_BUCKETS, ROUTE_GROUPS
from app.jobs.models import Job, JobStatus

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
"""The ranges a chart can show, by the name the `range` parameter takes."""
DEFAULT_BUCKETS = {"1h": 60, "24h": 900, "7d": 3600, "30d": 21600}
"""Bucket seconds when none is asked for: 60, 96, 168 and 120 points."""
MAX_POINTS = 1500
P95_ALERT_MS = 2000.0
"""The dashboard warns when p95 latency is above this (seed 001's threshold)."""
ERROR_RATE_ALERT = 0.05
"""The dashboard warns when more than this share of requests failed with a 5xx."""


@dataclass(frozen=True)
class Window:
    """A range cut into `points` buckets of `bucket_seconds`, aligned to the epoch; the
    last bucket holds now."""

    start: datetime
    bucket_seconds: int
    points: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.bucket_seconds * self.points)

    def starts(self) -> list[datetime]:
        step = timedelta(seconds=self.bucket_seconds)
        return [self.start + step * i for i in range(self.points)]

    def index(self, at: datetime) -> int | None:
        offset = int((at - self.start).total_seconds()) // self.bucket_seconds
        return offset if 0 <= offset < self.points else None


def window(range_name: str, bucket: int | None, now: datetime | None = None) -> Window:
    """The window of `range_name` (1h, 24h, 7d, 30d) in buckets of `bucket` seconds (its
    default when None); InvalidField naming `range` or `bucket` when they do not fit."""
    if range_name not in RANGES:
        raise InvalidField("range must be one of 1h, 24h, 7d or 30d.", "range")
    seconds = RANGES[range_name]
    bucket = DEFAULT_BUCKETS[range_name] if bucket is None else bucket
    if bucket < 60 or bucket % 60:
        raise InvalidField(
            "bucket must be a whole number of minutes in seconds (60, 120, …).", "bucket"
        )
    if bucket > seconds:
        raise InvalidField(f"bucket must be at most the range ({seconds} seconds).", "bucket")
    points = math.ceil(seconds / bucket)
    if points > MAX_POINTS:
        least = math.ceil(seconds / MAX_POINTS / 60) * 60
        raise InvalidField(
            f"bucket gives {points} points for {range_name}; at most {MAX_POINTS} "
            f"(a bucket of at least {least} seconds).",
            "bucket",
        )
    now_ts = (now or current_clock().now()).timestamp()
    end = (int(now_ts) // bucket + 1) * bucket
    return Window(datetime.fromtimestamp(end - points * bucket, UTC), bucket, points)


def _checked_group(group: str | None) -> str | None:
    if group is not None and group not in ROUTE_GROUPS:
        raise InvalidField(f"group must be one of {', '.join(ROUTE_GROUPS)}.", "group")
    return group


def _period_for(bucket_seconds: int) -> int:
    """The coarsest stored period that divides the bucket (so each row falls in one)."""
    return next(p for p in (DAY, HOUR, MINUTE) if bucket_seconds % p == 0)


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) in milliseconds, interpolated inside its latency bucket; None
    when nothing was counted."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for index, n in enumerate(buckets):
        if index >= len(LATENCY_BUCKETS):
            return round(lower * 1000, 3)  # beyond the last bound: the bound is all we know
        upper = LATENCY_BUCKETS[index]
        if n and seen + n >= rank:
            return round((lower + (upper - lower) * (rank - seen) / n) * 1000, 3)
        seen += n
        lower = upper
    return round(lower * 1000, 3)


@dataclass
class RequestPoint:
    """One bucket of requests: how many, how many failed with a 5xx, latency percentiles."""

    start: datetime
    count: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, status_class: str, count: int, buckets: Iterable[int]) -> None:
        self.count += count
        if status_class == "5xx":
            self.errors += count
        self.buckets = [a + b for a, b in zip(self.buckets, padded(buckets), strict=True)]

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "count": self.count,
            "errors": self.errors,
            "p50_ms": percentile(self.buckets, 0.50),
            "p95_ms": percentile(self.buckets, 0.95),
            "p99_ms": percentile(self.buckets, 0.99),
        }


@dataclass(frozen=True)
class Series:
    """What a chart draws: the bucket size and one point per bucket (JSON-ready dicts)."""

    bucket_seconds: int
    points: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"bucket_seconds": self.bucket_seconds, "points": self.points}


async def _request_points(
    session: AsyncSession, span: Window, group: str | None
) -> list[RequestPoint]:
    points = [RequestPoint(start) for start in span.starts()]
    query = select(
        RequestStat.start, RequestStat.status_class, RequestStat.count, RequestStat.buckets
    ).where(
        RequestStat.period_seconds == _period_for(span.bucket_seconds),
        RequestStat.start >= span.start,
        RequestStat.start < span.end,
    )
    if group is not None:
        query = query.where(RequestStat.route_group == group)
    for start, kind, count, buckets in await session.execute(query):
        index = span.index(start)
        if index is not None:
            points[index].add(kind, count, buckets)
    return points


async def request_series(
    session: AsyncSession,
    range_name: str = "24h",
    bucket: int | None = None,
    group: str | None = None,
    now: datetime | None = None,
) -> Series:
    """Requests per bucket: count, errors (5xx) and latency p50/p95/p99 in milliseconds
    (None where nothing was counted); `group` keeps one route group (public, admin, api,
    plugin, other). InvalidField naming `range`, `bucket` or `group` when one does not fit."""
    group = _checked_group(group)
    span = window(range_name, bucket, now)
    points = await _request_points(session, span, group)
    return Series(span.bucket_seconds, [point.as_json() for point in points])


async def content_series(
    session: AsyncSession,
    range_name: str = "24h",
    bucket: int | None = None,
    now: datetime | None = None,
) -> Series:
    """Per bucket: entry views counted, and entries whose publication time fell in it."""
    span = window(range_name, bucket, now)
    now = now or current_clock().now()
    views = [0] * span.points
    rows = await session.execute(
        select(ViewStat.start, ViewStat.views).where(
            ViewStat.period_seconds == _period_for(span.bucket_seconds),
            ViewStat.start >= span.start,
            ViewStat.start < span.end,
        )
    )
    for start, count in rows:
        if (index := span.index(start)) is not None:
            views[index] += count
    published = [0] * span.points
    times = await session.scalars(
        select(Entry.published_at).where(
            Entry.status.in_([Status.published.value, Status.scheduled.value]),
            Entry.published_at >= span.start,
            Entry.published_at <= now,
        )
    )
    for at in times:
        if at is not None and (index := span.index(at)) is not None:
            published[index] += 1
    return Series(
        span.bucket_seconds,
        [
            {"start": _iso(start), "views": views[i], "published": published[i]}
            for i, start in enumerate(span.starts())
        ],
    )


def exact_percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of `values` (linear between the closest ranks); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


async def job_series(
    session: AsyncSession,
    range_name: str = "24h",
    bucket: int | None = None,
    now: datetime | None = None,
) -> Series:
    """Jobs finished per bucket: completed (succeeded), failed (failed or dead), cancelled,
    retried (finished after more than one attempt), and p50/p95 of the wait (due to
    started) and run (started to finished) times in milliseconds of those that ran."""
    span = window(range_name, bucket, now)
    tallies: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    waits: dict[int, list[float]] = defaultdict(list)
    runs: dict[int, list[float]] = defaultdict(list)
    rows = await session.execute(
        select(Job.finished_at, Job.status, Job.attempts, Job.run_at, Job.started_at).where(
            Job.finished_at >= span.start, Job.finished_at < span.end
        )
    )
    for finished, status, attempts, run_at, started in rows:
        index = span.index(finished)
        if index is None:
            continue
        tally = tallies[index]
        if status == JobStatus.succeeded.value:
            tally["completed"] += 1
        elif status in (JobStatus.failed.value, JobStatus.dead.value):
            tally["failed"] += 1
        elif status == JobStatus.cancelled.value:
            tally["cancelled"] += 1
        if attempts > 1:
            tally["retried"] += 1
        if started is not None:
            waits[index].append(max(0.0, (started - run_at).total_seconds() * 1000))
            runs[index].append(max(0.0, (finished - started).total_seconds() * 1000))
    points = []
    for i, start in enumerate(span.starts()):
        tally = tallies.get(i, {})
        points.append(
            {
                "start": _iso(start),
                "completed": tally.get("completed", 0),
                "failed": tally.get("failed", 0),
                "cancelled": tally.get("cancelled", 0),
                "retried": tally.get("retried", 0),
                "wait_p50_ms": exact_percentile(waits.get(i, []), 0.50),
                "wait_p95_ms": exact_percentile(waits.get(i, []), 0.95),
                "run_p50_ms": exact_percentile(runs.get(i, []), 0.50),
                "run_p95_ms": exact_percentile(runs.get(i, []), 0.95),
            }
        )
    return Series(span.bucket_seconds, points)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Summary:
    """Requests over the last `window`: rate, error rate and latency percentiles, and
    whether they cross the dashboard's alert thresholds."""

    window_seconds: int
    requests: int
    errors: int
    requests_per_minute: float
    error_rate: float | None
    """Errors (5xx) over requests; None without requests."""
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def slow(self) -> bool:
        return self.p95_ms is not None and self.p95_ms > P95_ALERT_MS

    @property
    def failing(self) -> bool:
        return self.error_rate is not None and self.error_rate > ERROR_RATE_ALERT


async def recent_summary(
    session: AsyncSession, window_length: timedelta, now: datetime | None = None
) -> Summary:
    """The requests of the closed minutes within `window_length` before now (per-minute
    rows up to 48 hours, hourly rows beyond); what the dashboard shows for the last hour
    and the last day."""
    now = now or current_clock().now()
    seconds = int(window_length.total_seconds())
    period = MINUTE if seconds <= 2 * DAY else HOUR
    point = RequestPoint(now)
    rows = await session.execute(
        select(RequestStat.status_class, RequestStat.count, RequestStat.buckets).where(
            RequestStat.period_seconds == period,
            RequestStat.start >= now - window_length,
            RequestStat.start < now,
        )
    )
    for kind, count, buckets in rows:
        point.add(kind, count, buckets)
    figures = point.as_json()
    return Summary(
        seconds,
        point.count,
        point.errors,
        round(point.count / max(seconds / 60, 1), 3),
        round(point.errors / point.count, 4) if point.count else None,
        figures["p50_ms"],
        figures["p95_ms"],
        figures["p99_ms"],
    )
