"""The analytics series as charts (app/core/charts.py geometry) for the admin pages:
`/admin/analytics` draws them over a range, the dashboard the last day's."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.services.series import Series, content_series, job_series, request_series
from app.core.charts import Chart, line_chart


def _series_chart(
    series: Series,
    fields: dict[str, str],
    unit: str,
    classes: dict[str, str] | None = None,
    zone: tzinfo = UTC,
) -> Chart:
    """A chart of `fields` (point field -> line name) of the series' points."""
    starts = [datetime.fromisoformat(p["start"].replace("Z", "+00:00")) for p in series.points]
    values = {name: [p[key] for p in series.points] for key, name in fields.items()}
    return line_chart(starts, series.bucket_seconds, values, unit, classes, zone=zone)


CHARTS = ("requests", "latency", "content", "jobs")
"""Every chart of `/admin/analytics`, in the page's order."""


async def analytics_charts(
    session: AsyncSession,
    range_name: str,
    group: str | None,
    zone: tzinfo = UTC,
    wanted: tuple[str, ...] = CHARTS,
) -> dict[str, Chart]:
    """The `wanted` charts for a range (and a route group for the request charts); only
    the series they draw are read."""
    charts: dict[str, Chart] = {}
    if "requests" in wanted or "latency" in wanted:
        requests = await request_series(session, range_name, None, group)
        charts["requests"] = _series_chart(
            requests,
            {"count": "requests", "errors": "errors"},
            "requests",
            {"requests": "chart-line-1", "errors": "chart-line-error"},
            zone,
        )
        charts["latency"] = _series_chart(
            requests,
            {"p50_ms": "ms at p50", "p95_ms": "ms at p95", "p99_ms": "ms at p99"},
            "ms",
            zone=zone,
        )
    if "content" in wanted:
        content = await content_series(session, range_name)
        charts["content"] = _series_chart(
            content, {"views": "views", "published": "published"}, "entries", zone=zone
        )
    if "jobs" in wanted:
        jobs = await job_series(session, range_name)
        charts["jobs"] = _series_chart(
            jobs,
            {"completed": "completed", "failed": "failed"},
            "jobs",
            {"completed": "chart-line-1", "failed": "chart-line-error"},
            zone,
        )
    return {name: charts[name] for name in wanted}


async def dashboard_charts(session: AsyncSession, zone: tzinfo = UTC) -> dict[str, Chart]:
    """The dashboard's charts: the last day's requests, latency and finished jobs (the
    content series is not read)."""
    return await analytics_charts(session, "24h", None, zone, ("requests", "latency", "jobs"))
