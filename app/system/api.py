"""Operator endpoints: health for load balancers and orchestrators (/health, /health/live,
/health/ready) and the Prometheus figures (/metrics)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, put
from litestar.params import FromPath, JSONBody

from app import __version__
from app.accounts.guards import roles
from app.accounts.services.audit import CurrentActor
from app.content.services.page_cache import PageCache
from app.core import metrics
from app.core.db import DbSession
from app.core.runtime import AppRuntime
from app.site_settings.services import read_settings
from app.system.services import settings as settings_service
from app.system.services.health import check_readiness
from app.system.services.metrics import scrape
from app.system.services.settings import SettingView


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
        body = await scrape(db_session, runtime.store, runtime.figures, runtime)
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


class SettingValueIn(msgspec.Struct):
    value: Any
    """The new value: text, a whole number or true/false, as the setting's `type` says."""


class SettingsController(Controller):
    """`/api/v1/settings`: the runtime settings an admin changes (admins only)."""

    path = "/settings"
    tags = ["settings"]
    guards = [roles.admin]

    @get("/", name="api:settings:list")
    async def list_settings(self, db_session: DbSession) -> dict[str, Any]:
        """Every setting with its value, default, help text and limits."""
        items = await settings_service.list_settings(db_session)
        return {"items": items, "total": len(items)}

    @get("/{key:str}", name="api:settings:get")
    async def get_setting(self, db_session: DbSession, key: FromPath[str]) -> SettingView:
        return await settings_service.get_setting(db_session, key)

    @put("/{key:str}", name="api:settings:put")
    async def put_setting(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        key: FromPath[str],
        data: JSONBody[SettingValueIn],
    ) -> SettingView:
        """Change one setting: `{"value": …}`; 422 naming the setting when it does not fit.
        Audited with the old and the new value; every process sees it at once."""
        await settings_service.change_settings(db_session, actor, {key: data.value})
        return await settings_service.get_setting(db_session, key)


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
                "settings": "/api/v1/settings",
                "openapi": "/schema/openapi.json",
                "health": "/health",
            },
        }
