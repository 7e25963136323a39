"""`/admin/analytics`: requests, errors, latency, content views and job throughput over a
range, as SVG charts drawn on the server (viewers and up)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, get
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.guards import roles
from app.analytics.services.series import (
    RANGES,
    Series,
    content_series,
    job_series,
    request_series,
    window,
)
from app.core.charts import Chart, line_chart
from app.core.db import DbSession
from app.core.errors import InvalidField
from app.core.metrics import ROUTE_GROUPS
from app.core.templating import render

GROUP_NAMES = {
    "public": "Public site",
    "admin": "Admin",
    "api": "JSON API",
    "plugin": "Plugins",
    "other": "Other (health, metrics, static files, unmatched)",
}


def _series_chart(
    series: Series, fields: dict[str, str], unit: str, classes: dict[str, str] | None = None
) -> Chart:
    """A chart of `fields` (point field -> line name) of the series' points."""
    starts = [datetime.fromisoformat(p["start"].replace("Z", "+00:00")) for p in series.points]
    values = {name: [p[key] for p in series.points] for key, name in fields.items()}
    return line_chart(starts, series.bucket_seconds, values, unit, classes)


async def analytics_charts(
    session: AsyncSession, range_name: str, group: str | None
) -> dict[str, Chart]:
    """The page's charts for a range (and a route group for the request charts)."""
    requests = await request_series(session, range_name, None, group)
    content = await content_series(session, range_name)
    jobs = await job_series(session, range_name)
    return {
        "requests": _series_chart(
            requests,
            {"count": "requests", "errors": "errors"},
            "requests",
            {"requests": "chart-line-1", "errors": "chart-line-error"},
        ),
        "latency": _series_chart(
            requests,
            {"p50_ms": "ms at p50", "p95_ms": "ms at p95", "p99_ms": "ms at p99"},
            "ms",
        ),
        "content": _series_chart(content, {"views": "views", "published": "published"}, "entries"),
        "jobs": _series_chart(
            jobs,
            {"completed": "completed", "failed": "failed"},
            "jobs",
            {"completed": "chart-line-1", "failed": "chart-line-error"},
        ),
    }


class AnalyticsAdminController(Controller):
    path = "/analytics"
    guards = [roles.viewer]
    include_in_schema = False

    @get("/", name="admin:analytics")
    async def analytics(self, request: Request, db_session: DbSession) -> Response[str]:
        """The charts of `?range=` (1h, 24h, 7d, 30d) and `?group=`; a range picker of plain
        links that htmx turns into a swap of the charts alone."""
        range_name = request.query_params.get("range") or "24h"
        group = request.query_params.get("group") or None
        context: dict[str, Any] = {
            "ranges": list(RANGES),
            "groups": [(key, GROUP_NAMES[key]) for key in ROUTE_GROUPS],
            "range": range_name,
            "group": group,
            "error": None,
            "charts": None,
        }
        try:
            context["charts"] = await analytics_charts(db_session, range_name, group)
            context["window"] = window(range_name, None)
        except InvalidField as exc:
            context["error"] = exc.message
            return render(
                request, "analytics/analytics.html", context, block="charts", status_code=400
            )
        return render(request, "analytics/analytics.html", context, block="charts")
