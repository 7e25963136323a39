"""Operator endpoints: health for load balancers and orchestrators (/health, /health/live,
/health/ready) and the Prometheus figures (/metrics)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get

from app import __version__
from app.accounts.guards import roles
from app.content.services.page_cache import PageCache
from app.core import metrics
from app.core.db import DbSession
from app.core.runtime import AppRuntime
from app.site_settings.services import read_settings
from app.system.services.health import check_readiness
from app.system.services.metrics import scrape


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    guards = [roles.public]

    @get("/", name="health:summary")
    async def summary(self, runtime: AppRuntime) -> dict[str, Any]:
        """Service identity and uptime; answers as long as the process runs."""
        return {
            "status": "ok",
            "service": "keel",
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - runtime.started_monotonic, 3),
            "timestamp": datetime.now(UTC).isoformat(),
        }

    @get("/live", name="health:live")
    async def live(self) -> dict[str, str]:
        """The process is up and serving; never touches a dependency."""
        return {"status": "ok"}

    @get("/ready", name="health:ready")
    async def ready(self, request: Request, runtime: AppRuntime) -> Response[dict[str, Any]]:
        """200 when the database and the store answer in time; 503 naming what fails."""
        readiness = await check_readiness(
            runtime.engine, runtime.store, runtime.settings.health.check_timeout
        )
        body = {
            "status": "ready" if readiness.ready else "unavailable",
            "failing": readiness.failing,
            "checks": {
                c.name: {
                    "status": "ok" if c.ok else "fail",
                    "latency_ms": c.latency_ms,
                    "detail": c.detail,
                }
                for c in readiness.components
            },
            # The page cache never makes Keel unready: without it pages are served uncached.
            "cache": {"status": "degraded" if runtime.service(PageCache).degraded else "ok"},
        }
        if readiness.ready:
            return Response(body, headers={"Cache-Control": "no-store"})
        return Response(
            body, status_code=503, headers={"Retry-After": "5", "Cache-Control": "no-store"}
        )


class MetricsController(Controller):
    """`/metrics` for Prometheus: METRICS_TOKEN as a bearer token, or an admin."""

    path = "/metrics"
    tags = ["health"]
    guards = [roles.metrics_reader]
    include_in_schema = False

    @get("/", name="metrics")
    async def metrics(self, runtime: AppRuntime, db_session: DbSession) -> Response[str]:
        """The deployment's figures in the Prometheus text format 0.0.4."""
        body = await scrape(db_session, runtime.store, runtime.figures)
        return Response(body, media_type=metrics.MEDIA_TYPE, headers={"Cache-Control": "no-store"})


class SiteController(Controller):
    """`/api/v1/site`: what a client needs to know about this site before anything else."""

    path = "/site"
    tags = ["site"]
    guards = [roles.public]

    @get("/", name="api:site")
    async def site(self, db_session: DbSession) -> dict[str, Any]:
        """Public site facts from the runtime settings."""
        values = await read_settings(db_session)
        return {
            "title": values["site_title"],
            "intro": values["site_intro"],
            "registration_open": values["registration_open"],
            "version": __version__,
        }


class ApiIndexController(Controller):
    path = "/"
    tags = ["api"]
    guards = [roles.public]

    @get("/", name="api:index")
    async def index(self) -> dict[str, Any]:
        """The API's version and where to start."""
        return {
            "name": "Keel API",
            "version": "v1",
            "links": {
                "site": "/api/v1/site",
                "openapi": "/schema/openapi.json",
                "health": "/health",
            },
        }
