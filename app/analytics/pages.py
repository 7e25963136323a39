"""`/admin/analytics`: requests, errors, latency, content views and job throughput over a
range, as SVG charts drawn on the server (viewers and up)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from app.accounts.guards import roles
from app.analytics.services.charts import analytics_charts
from app.analytics.services.series import RANGES, window
from app.core.db import DbSession
from app.core.errors import InvalidField
from app.core.metrics import ROUTE_GROUPS
from app.core.templating import render
from app.core.zones import zone_of

GROUP_NAMES = {
    "public": "Public site",
    "admin": "Admin",
    "api": "JSON API",
    "plugin": "Plugins",
    "other": "Other (health, metrics, static files, unmatched)",
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
            zone = zone_of(request.state)
            context["zone"] = zone.key
            context["charts"] = await analytics_charts(db_session, range_name, group, zone)
            context["window"] = window(range_name, None)
        except InvalidField as exc:
            context["error"] = exc.message
            return render(
                request, "analytics/analytics.html", context, block="charts", status_code=400
            )
        return render(request, "analytics/analytics.html", context, block="charts")
