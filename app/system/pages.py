"""Admin pages of the system domain: the dashboard (alerts, health and the site's figures,
refreshed live, and the widgets of active plugins, each fetched on its own), the system
page and the runtime settings."""

from __future__ import annotations

import platform
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from app import __version__
from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.models import Role
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession, describe_url
from app.core.errors import DomainError, field_errors
from app.core.runtime import AppRuntime
from app.core.templating import Form, redirect, render, wants_fragment
from app.core.widgets import DASHBOARD_WIDGETS, WidgetFailed
from app.core.zones import zone_of
from app.system.services import settings as settings_service
from app.system.services.dashboard import ago, read_dashboard, until
from app.system.services.settings import SettingView
from app.system.services.system import system_report


class AdminDashboardController(Controller):
    path = "/"
    guards = [roles.viewer]
    include_in_schema = False

    @get("/", name="admin:dashboard")
    async def dashboard(
        self, request: Request, runtime: AppRuntime, db_session: DbSession, caller: Caller
    ) -> Response[str]:
        """Alerts, health and the site's figures at a glance; htmx refreshes the figures
        (the `figures` block) every 15 seconds."""
        settings = runtime.settings
        is_admin = caller.has(Role.admin)  # the audit log and the system page are theirs
        figures = await read_dashboard(
            runtime,
            db_session,
            audit=is_admin,
            charts=not wants_fragment(request),
            zone=zone_of(request.state),
        )
        context = {
            "figures": figures,
            "ago": lambda moment: ago(moment, figures.checked_at),
            "until": lambda moment: until(moment, figures.checked_at),
            "may_write": caller.has(Role.editor),
            "is_admin": is_admin,
            "widgets": list(DASHBOARD_WIDGETS),
            "facts": {
                "Version": __version__,
                "Mode": "embedded" if settings.embedded else "services",
                "Environment": settings.app.env,
                "Database": describe_url(settings.db.url),
                "Store": runtime.store.kind,
                "Python": platform.python_version(),
            },
        }
        return render(request, "system/dashboard.html", context, block="figures")

    @get("/widgets/{source:str}/{number:int}", name="admin:widget")
    async def widget(
        self, request: Request, source: FromPath[str], number: FromPath[int]
    ) -> Response[str]:
        """One dashboard widget: the fragment the dashboard loads (htmx), or a page of its
        own (its link without JavaScript). A widget that fails shows a small box saying so;
        one that is gone (its plugin deactivated since) answers 404."""
        found = DASHBOARD_WIDGETS.get(f"{source}/{number}")
        context: dict[str, Any] = {"widget": found, "failed": False, "body": None}
        if found is None:
            return render(request, "system/widget.html", context, block="widget", status_code=404)
        try:
            context["body"] = await found.render(request)
        except WidgetFailed:
            context["failed"] = True
        return render(request, "system/widget.html", context, block="widget")


class SystemAdminController(Controller):
    """`/admin/system`: the parts Keel runs on, read when the page is asked for (admins:
    it shows the configuration)."""

    path = "/system"
    guards = [roles.admin]
    include_in_schema = False

    @get("/", name="admin:system")
    async def system(
        self, request: Request, runtime: AppRuntime, db_session: DbSession
    ) -> Response[str]:
        report = await system_report(runtime, db_session)
        return render(request, "system/system.html", {"report": report}, block="report")


class SettingsAdminController(Controller):
    """`/admin/settings`: every runtime setting in one form; every problem is shown beside
    its field at once, and nothing is saved until all fit."""

    path = "/settings"
    guards = [roles.admin]
    include_in_schema = False

    @get("/", name="admin:settings")
    async def form(self, request: Request, db_session: DbSession) -> Response[str]:
        settings = await settings_service.list_settings(db_session)
        values = {view.name: view.value for view in settings}
        return _settings_page(request, settings, values, {}, request.query_params.get("notice"))

    @post("/", name="admin:settings_save")
    async def save(
        self, request: Request, db_session: DbSession, actor: CurrentActor, data: Form
    ) -> Response[Any]:
        settings = await settings_service.list_settings(db_session)
        values: dict[str, Any] = {}
        for view in settings:
            if view.type == "boolean":
                values[view.name] = data.get(view.name) == "on"
            elif view.name in data:
                values[view.name] = data[view.name]
        try:
            changed = await settings_service.change_settings(db_session, actor, values)
        except DomainError as exc:
            return _settings_page(request, settings, values, field_errors(exc), None, exc.status)
        notice = "saved" if changed else "unchanged"
        return redirect(f"{request.app.route_reverse('admin:settings')}?notice={notice}")


def _settings_page(
    request: Request,
    settings: list[SettingView],
    values: dict[str, Any],
    errors: dict[str, str],
    notice: str | None,
    status_code: int = 200,
) -> Response[str]:
    context = {"settings": settings, "values": values, "errors": errors, "notice": notice}
    return render(request, "system/settings.html", context, status_code=status_code)
