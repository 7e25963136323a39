"""Admin pages of the system domain: the dashboard with live system health."""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime

from litestar import Controller, Request, Response, get

from app import __version__
from app.accounts.guards import roles
from app.core.db import describe_url
from app.core.runtime import AppRuntime
from app.core.templating import render
from app.jobs.services.worker import list_workers
from app.system.services.health import check_readiness


class AdminDashboardController(Controller):
    path = "/"
    guards = [roles.viewer]
    include_in_schema = False

    @get("/", name="admin:dashboard")
    async def dashboard(self, request: Request, runtime: AppRuntime) -> Response[str]:
        """System health at a glance; the health panel refreshes itself through htmx."""
        settings = runtime.settings
        readiness = await check_readiness(
            runtime.engine, runtime.store, settings.health.check_timeout
        )
        try:
            workers = await list_workers(runtime.store)
        except Exception:  # the store being down is shown by the readiness panel
            workers = []
        context = {
            "readiness": readiness,
            "workers": workers,
            "checked_at": datetime.now(UTC),
            "uptime_seconds": int(time.monotonic() - runtime.started_monotonic),
            "facts": {
                "Version": __version__,
                "Mode": "embedded" if settings.embedded else "services",
                "Environment": settings.app.env,
                "Database": describe_url(settings.db.url),
                "Store": runtime.store.kind,
                "Python": platform.python_version(),
            },
        }
        return render(request, "system/dashboard.html", context, block="health")
