"""`/api/v1/stats` and `/api/v1/analytics/…`: the site's counts and its time series, for
staff who may see the dashboard (viewers and up)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from app.accounts.guards import roles
from app.analytics.schemas import ContentSeriesOut, JobSeriesOut, RequestSeriesOut
from app.analytics.services.series import (
    DEFAULT_BUCKETS,
    MAX_POINTS,
    RANGES,
    Series,
    content_series,
    job_series,
    request_series,
)
from app.analytics.services.stats import site_stats
from app.core.db import DbSession
from app.core.metrics import ROUTE_GROUPS

RangeName = Annotated[
    str,
    QueryParameter(
        name="range",
        description="How far back: 1h, 24h, 7d or 30d (the last bucket holds now).",
        schema_extra={"enum": list(RANGES)},
    ),
]
Bucket = Annotated[
    int | None,
    QueryParameter(
        description=(
            "Seconds per point, a multiple of 60 giving at most "
            f"{MAX_POINTS} points; by default "
            + ", ".join(f"{seconds} for {name}" for name, seconds in DEFAULT_BUCKETS.items())
            + ". Buckets that are not whole hours read per-minute figures, kept for the "
            "`analytics_minute_retention_hours` setting."
        )
    ),
]
Group = Annotated[
    str | None,
    QueryParameter(
        description="Only one route group: " + ", ".join(ROUTE_GROUPS) + " (default: all).",
        schema_extra={"enum": list(ROUTE_GROUPS)},
    ),
]
S = TypeVar("S")


def _shaped(series: Series, shape: type[S]) -> S:
    return msgspec.convert(series.as_json(), shape)


class StatsController(Controller):
    path = "/stats"
    tags = ["analytics"]
    guards = [roles.viewer]

    @get("/", name="api:stats", summary="Counts of users, content and jobs")
    async def stats(self, db_session: DbSession) -> dict[str, Any]:
        """Users (total, by role, new in the last 7 and 30 days), content (total, by status
        and kind) and jobs (total, by status, queue depth and each queue's figures)."""
        return await site_stats(db_session)


class AnalyticsController(Controller):
    path = "/analytics"
    tags = ["analytics"]
    guards = [roles.viewer]

    @get("/requests", name="api:analytics:requests", summary="Requests per bucket")
    async def requests(
        self,
        db_session: DbSession,
        range_name: RangeName = "24h",
        bucket: Bucket = None,
        group: Group = None,
    ) -> RequestSeriesOut:
        """Requests answered per bucket, errors (5xx) among them and latency p50/p95/p99 in
        milliseconds, estimated from latency buckets (interpolated inside the bucket holding
        the percentile). Figures are rolled up every few minutes. 400 naming `range`,
        `bucket` or `group` when one does not fit."""
        series = await request_series(db_session, range_name, bucket, group)
        return _shaped(series, RequestSeriesOut)

    @get("/latency", name="api:analytics:latency", summary="Latency percentiles per bucket")
    async def latency(
        self,
        db_session: DbSession,
        range_name: RangeName = "24h",
        bucket: Bucket = None,
        group: Group = None,
    ) -> RequestSeriesOut:
        """The same points as `/analytics/requests`, for latency charts: p50/p95/p99 in
        milliseconds (null in a bucket without requests), with the counts they rest on."""
        series = await request_series(db_session, range_name, bucket, group)
        return _shaped(series, RequestSeriesOut)

    @get(
        "/content", name="api:analytics:content", summary="Entry views and publications per bucket"
    )
    async def content(
        self, db_session: DbSession, range_name: RangeName = "24h", bucket: Bucket = None
    ) -> ContentSeriesOut:
        """Entry views counted and entries published per bucket."""
        return _shaped(await content_series(db_session, range_name, bucket), ContentSeriesOut)

    @get("/jobs", name="api:analytics:jobs", summary="Job throughput per bucket")
    async def jobs(
        self, db_session: DbSession, range_name: RangeName = "24h", bucket: Bucket = None
    ) -> JobSeriesOut:
        """Jobs finished per bucket (completed, failed, cancelled, retried) and p50/p95 of
        their wait (due to started) and run (started to finished) times in milliseconds."""
        return _shaped(await job_series(db_session, range_name, bucket), JobSeriesOut)
