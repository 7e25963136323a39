"""The plugin route group: `/api/plugins` (the plugins this installation has) and the fixed
mounts every active plugin is served under: `/api/plugins/{name}/…`, `/p/{name}/…` and
`/admin/plugins/{name}/…`.

Litestar cannot take routes out of a running app (litestar-org/litestar#1276), so the
routes stay and each request is handed to the plugin's own small app that this process's
`PluginHost` holds (404 when the plugin is not active here). Keel's middleware (identity,
CSRF, rate limit, figures) has run by then. Keel's plain routes under these prefixes (the
admin's `/admin/plugins` list, `/api/plugins` itself) win over a mount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

from litestar import Controller, Litestar, Response, get, post, put
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.handlers import ASGIRouteHandler
from litestar.params import Body, FromPath, JSONBody
from litestar.types import Empty, Receive, Scope, Send

from app.accounts.guards import roles
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.errors import PROBLEM_JSON, new_error_id, problem_body
from app.core.runtime import AppRuntime, runtime_of
from app.extensions.models import PluginRecord, PluginStatus
from app.extensions.schemas import ConfirmIn, PluginOut, PluginSettingsIn
from app.extensions.services import lifecycle
from app.extensions.services.host import ADMIN, API, MOUNT_PREFIXES, PAGES, PluginHost
from app.extensions.services.lifecycle import hooks_of


class PluginIndexController(Controller):
    path = "/api/plugins"
    tags = ["plugins"]
    guards = [roles.public]

    @get("/", name="plugins:index")
    async def list_plugins(self, runtime: AppRuntime) -> dict[str, Any]:
        """The active plugins, whose own routes answer under /api/plugins/<name>/ (plugin
        folders not installed or not active are nobody's business but the admins')."""
        host = runtime.service(PluginHost)
        items = [
            {
                "name": plugin.name,
                "version": plugin.version,
                "description": plugin.description,
            }
            for plugin in sorted(host.loaded.values(), key=lambda plugin: plugin.name)
        ]
        return {"items": items, "total": len(items)}


class PluginMount(ASGIRouteHandler):
    """An ASGI route whose request body Keel's middleware may read before the plugin does
    (the CSRF check reads a form's token), within the app's body size limit."""

    def resolve_request_max_body_size(self) -> int | None:
        for layer in reversed(self.ownership_layers):
            limit = getattr(layer, "request_max_body_size", Empty)
            if limit is not Empty:
                return cast("int | None", limit)
        return None


def _mount(part: str, guards: list[Any]) -> ASGIRouteHandler:
    prefix = MOUNT_PREFIXES[part]

    async def serve_plugin(scope: Scope, receive: Receive, send: Send) -> None:
        host = runtime_of(scope["litestar_app"].state).service(PluginHost)
        await host.dispatch(part, scope["path_params"]["plugin"], scope, receive, send)

    return PluginMount(
        [f"{prefix}/{{plugin:str}}", f"{prefix}/{{plugin:str}}/{{plugin_path:path}}"],
        name=f"plugins:mount:{part}",
        guards=guards,
        include_in_schema=False,
        copy_scope=False,  # the host hands the plugin's app a scope of its own
    )(serve_plugin)


def plugin_mounts() -> list[ASGIRouteHandler]:
    """The three mounts: the API and public pages are public at Keel's level (a plugin's
    handlers declare their roles), its admin pages need a signed-in viewer."""
    return [
        _mount(API, [roles.public]),
        _mount(PAGES, [roles.public]),
        _mount(ADMIN, [roles.viewer]),
    ]


class _AnyMethod(dict[Any, Any]):
    """An ASGI route's path parameters, found under whatever the request's method is."""

    def __missing__(self, key: Any) -> Any:
        if key == "asgi" or "asgi" not in self:
            raise KeyError(key)
        return self["asgi"]


def serve_path_parameters_to_asgi_routes(app: Litestar) -> None:
    """Let ASGI routes with path parameters (the mounts) be routed: Litestar 2.25 files
    an ASGI route's parameters under "asgi" but looks them up under the request's method
    (a KeyError, 500, on `/p/{plugin}/…`). Run after every build of the routing tables.
    A mount (`is_mount=True`) is no way round: its prefix matches any path that starts
    with it (`/p` would take `/products`)."""
    seen: set[int] = set()
    nodes = [app.asgi_router.root_route_map_node]
    while nodes:
        node = nodes.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if (
            node.is_asgi
            and node.path_parameters
            and not isinstance(node.path_parameters, _AnyMethod)
        ):
            node.path_parameters = _AnyMethod(node.path_parameters)
        nodes.extend(node.children.values())


@dataclass
class PluginUpload:
    file: UploadFile
    """The plugin's .zip."""


MAX_UPLOAD_BODY = 600 * 1024 * 1024
"""Litestar's own cap on the request body; PLUGIN_UPLOAD_MAX_BYTES is the real limit."""


class PluginsAdminController(Controller):
    """`/api/v1/plugins`: the installed plugins and their lifecycle (admins only)."""

    path = "/plugins"
    tags = ["plugins"]
    guards = [roles.admin]

    @get("/", name="api:plugins:list")
    async def list_plugins(self, runtime: AppRuntime, db_session: DbSession) -> dict[str, Any]:
        """Installed plugins and the plugin folders under PLUGINS_DIR not installed yet."""
        views = await lifecycle.list_plugins(db_session, runtime.settings)
        items = [PluginOut.of(view) for view in views]
        return {"items": items, "total": len(items)}

    @get("/{plugin:str}", name="api:plugins:get")
    async def get_plugin(
        self, runtime: AppRuntime, db_session: DbSession, plugin: FromPath[str]
    ) -> PluginOut:
        return PluginOut.of(await lifecycle.get_view(db_session, runtime.settings, plugin))

    @post(
        "/",
        name="api:plugins:upload",
        status_code=201,
        request_max_body_size=MAX_UPLOAD_BODY,
        summary="Upload a plugin (.zip)",
    )
    async def upload(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: Annotated[PluginUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> PluginOut:
        """Multipart `file`: a plugin's zip (PLUGIN_UPLOAD_MAX_BYTES, PLUGIN_UPLOAD_MAX_FILES;
        no absolute paths, `..`, links or devices; a valid plugin.toml). Checked whole before
        anything is written; kept so every replica gets it. Install it next."""
        body = await data.file.read(runtime.settings.plugins.upload_max_bytes + 1)
        row = await lifecycle.upload(db_session, runtime, actor, body)
        return await _answer(db_session, runtime, row.name)

    @post("/{plugin:str}/install", name="api:plugins:install", status_code=200)
    async def install(
        self, runtime: AppRuntime, actor: CurrentActor, plugin: FromPath[str]
    ) -> Response[Any]:
        """Storage, migrations and `on_install` (in transactions of their own). A failing
        step leaves the plugin in `error` and answers 409 with the message."""
        row = await lifecycle.install(runtime, actor, plugin, hooks_of(runtime))
        return _outcome(row, PluginOut.of(lifecycle.PluginView(row.name, row, None)))

    @post("/{plugin:str}/activate", name="api:plugins:activate", status_code=200)
    async def activate(
        self, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor, plugin: FromPath[str]
    ) -> Response[Any]:
        row = await lifecycle.activate(db_session, runtime, actor, plugin, hooks_of(runtime))
        return await _step_answer(db_session, runtime, row)

    @post("/{plugin:str}/deactivate", name="api:plugins:deactivate", status_code=200)
    async def deactivate(
        self, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor, plugin: FromPath[str]
    ) -> Response[Any]:
        row = await lifecycle.deactivate(db_session, runtime, actor, plugin, hooks_of(runtime))
        return await _step_answer(db_session, runtime, row)

    @post("/{plugin:str}/accept", name="api:plugins:accept", status_code=200)
    async def accept(
        self, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor, plugin: FromPath[str]
    ) -> PluginOut:
        """Take the plugin's files as they are now on disk (after they changed)."""
        row = await lifecycle.accept(db_session, runtime, actor, plugin)
        return await _answer(db_session, runtime, row.name)

    @post("/{plugin:str}/uninstall", name="api:plugins:uninstall", status_code=204)
    async def uninstall(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        plugin: FromPath[str],
        data: JSONBody[ConfirmIn],
    ) -> None:
        """Remove the plugin and its data; the body must say `{"confirm": true}`."""
        await lifecycle.uninstall(
            db_session, runtime, actor, plugin, hooks_of(runtime), confirm=data.confirm
        )

    @put("/{plugin:str}/settings", name="api:plugins:settings")
    async def save_settings(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        plugin: FromPath[str],
        data: JSONBody[PluginSettingsIn],
    ) -> PluginOut:
        """The plugin's settings, checked against its manifest's schema (422 naming the field)."""
        await lifecycle.save_settings(db_session, actor, plugin, data.values)
        return await _answer(db_session, runtime, plugin)


async def _answer(db_session: DbSession, runtime: AppRuntime, name: str) -> PluginOut:
    await db_session.flush()
    return PluginOut.of(await lifecycle.get_view(db_session, runtime.settings, name))


async def _step_answer(
    db_session: DbSession, runtime: AppRuntime, row: PluginRecord
) -> Response[Any]:
    return _outcome(row, await _answer(db_session, runtime, row.name))


def _outcome(row: PluginRecord, out: PluginOut) -> Response[Any]:
    """The plugin after the step; a failed hook (the row says `error`, and that commits)
    answers 409 with the message, as problem details."""
    if row.status == PluginStatus.error:
        body = problem_body(
            409, row.error or "The plugin failed.", f"/api/v1/plugins/{row.name}", new_error_id()
        )
        return Response(body, status_code=409, media_type=PROBLEM_JSON)
    return Response(out, status_code=200)
