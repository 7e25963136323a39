"""`/admin/plugins`: every plugin with its status and errors, the upload form, each
lifecycle step behind a confirmation, and each plugin's settings form. Keel's own pages sit
under `/admin/plugins/-/…` (no plugin name can be `-`); a plugin's admin pages are under
`/admin/plugins/<name>/…`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from app.accounts.guards import roles
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.errors import DomainError, NotFound, field_errors
from app.core.runtime import AppRuntime
from app.core.templating import Form, MultipartForm, redirect, render
from app.extensions.models import PluginStatus
from app.extensions.services import lifecycle
from app.extensions.services.host import PluginHost
from app.extensions.services.lifecycle import hooks_of
from app.extensions.services.manifest import settings_fields

STEPS = {
    "install": "Install",
    "activate": "Activate",
    "deactivate": "Deactivate",
    "accept": "Accept the changed files",
    "uninstall": "Uninstall",
}
"""Lifecycle steps an admin confirms on a page of their own, with what each does."""

EXPLAIN = {
    "install": "creates the plugin's own storage, runs its migrations and its install hook.",
    "activate": "switches it on in every process within two seconds: its pages, API and "
    "tasks start.",
    "deactivate": "switches it off everywhere: its pages and API answer 404, its tasks stop. "
    "Its data stays.",
    "accept": "records the plugin's files as they are now on disk. Do this only after you "
    "checked what changed.",
    "uninstall": "removes the plugin and all of its data. This cannot be undone.",
}


def _notice(request: Request) -> str | None:
    return request.query_params.get("notice")


async def _list_page(
    request: Request,
    runtime: AppRuntime,
    db_session: DbSession,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response[str]:
    views = await lifecycle.list_plugins(db_session, runtime.settings)
    host = runtime.service(PluginHost)
    context = {
        "plugins": views,
        "figures": host.figures,
        "loaded_here": set(host.loaded),
        "errors": errors or {},
        "notice": _notice(request),
        "max_mb": runtime.settings.plugins.upload_max_bytes // (1024 * 1024),
    }
    return render(request, "extensions/plugins.html", context, status_code=status_code)


class PluginsAdminPages(Controller):
    path = "/plugins"
    guards = [roles.admin]
    include_in_schema = False

    @get("/", name="admin:plugins")
    async def list_plugins(
        self, request: Request, runtime: AppRuntime, db_session: DbSession
    ) -> Response[str]:
        return await _list_page(request, runtime, db_session)

    @post("/-/upload", name="admin:plugins:upload")
    async def upload(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: MultipartForm,
    ) -> Response[Any]:
        upload = data.get("file")
        if upload is None or not hasattr(upload, "read"):
            errors = {"file": "Choose a plugin's .zip file."}
            return await _list_page(request, runtime, db_session, errors, 400)
        body = await upload.read(runtime.settings.plugins.upload_max_bytes + 1)
        try:
            row = await lifecycle.upload(db_session, runtime, actor, body)
        except DomainError as exc:
            errors = {"file": exc.message}
            return await _list_page(request, runtime, db_session, errors, exc.status)
        return redirect(f"{request.app.route_reverse('admin:plugins')}?notice=uploaded-{row.name}")

    @get("/-/{plugin:str}/{step:str}", name="admin:plugins:confirm")
    async def confirm(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        plugin: FromPath[str],
        step: FromPath[str],
    ) -> Response[str]:
        if step not in STEPS:
            raise NotFound("No such step.")
        view = await lifecycle.get_view(db_session, runtime.settings, plugin)
        context = {"plugin": view, "step": step, "label": STEPS[step], "explain": EXPLAIN[step]}
        return render(request, "extensions/confirm.html", context)

    @post("/-/{plugin:str}/{step:str}", name="admin:plugins:step")
    async def run_step(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        plugin: FromPath[str],
        step: FromPath[str],
        data: Form,
    ) -> Response[Any]:
        if step not in STEPS:
            raise NotFound("No such step.")
        hooks = hooks_of(runtime)
        try:
            if step == "install":
                row = await lifecycle.install(runtime, actor, plugin, hooks)
            elif step == "accept":
                row = await lifecycle.accept(db_session, runtime, actor, plugin)
            elif step == "uninstall":
                confirmed = data.get("confirm") == plugin
                await lifecycle.uninstall(
                    db_session, runtime, actor, plugin, hooks, confirm=confirmed
                )
                row = None
            else:
                row = await getattr(lifecycle, step)(db_session, runtime, actor, plugin, hooks)
        except DomainError as exc:
            view = await lifecycle.get_view(db_session, runtime.settings, plugin)
            context = {
                "plugin": view,
                "step": step,
                "label": STEPS[step],
                "explain": EXPLAIN[step],
                "errors": field_errors(exc),
            }
            return render(request, "extensions/confirm.html", context, status_code=exc.status)
        outcome = "failed" if row is not None and row.status == PluginStatus.error else "done"
        notice = f"{step}-{outcome}-{plugin}"
        return redirect(f"{request.app.route_reverse('admin:plugins')}?notice={notice}")

    @get("/-/{plugin:str}/settings", name="admin:plugins:settings")
    async def settings_form(
        self, request: Request, runtime: AppRuntime, db_session: DbSession, plugin: FromPath[str]
    ) -> Response[str]:
        row = await lifecycle.get_plugin(db_session, plugin)
        return _settings_page(request, row, dict(row.settings or {}), {})

    @post("/-/{plugin:str}/settings", name="admin:plugins:settings_save")
    async def save_settings(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        plugin: FromPath[str],
        data: Form,
    ) -> Response[Any]:
        row = await lifecycle.get_plugin(db_session, plugin)
        schema = row.manifest.get("settings")
        values: dict[str, Any] = {
            field.name: data.get(field.name, "") for field in settings_fields(schema)
        }
        for field in settings_fields(schema):
            if field.type == "boolean":
                values[field.name] = data.get(field.name) == "on"
        try:
            await lifecycle.save_settings(db_session, actor, plugin, values)
        except DomainError as exc:
            errors = field_errors(exc)
            return _settings_page(request, row, data, errors, exc.status)
        target = request.app.route_reverse("admin:plugins:settings", plugin=plugin)
        return redirect(f"{target}?notice=saved")


def _settings_page(
    request: Request,
    row: Any,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response[str]:
    context = {
        "plugin": row,
        "fields": settings_fields(row.manifest.get("settings")),
        "values": values,
        "errors": errors,
        "notice": _notice(request),
    }
    return render(request, "extensions/settings.html", context, status_code=status_code)
