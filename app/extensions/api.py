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

from typing import Any, cast

from litestar import Controller, Litestar, get
from litestar.handlers import ASGIRouteHandler
from litestar.types import Empty, Receive, Scope, Send

from app.accounts.guards import roles
from app.core.runtime import AppRuntime, runtime_of
from app.extensions.services.host import ADMIN, API, MOUNT_PREFIXES, PAGES, PluginHost
from app.extensions.services.manifest import discover_plugins


class PluginIndexController(Controller):
    path = "/api/plugins"
    tags = ["plugins"]
    guards = [roles.public]

    @get("/", name="plugins:index")
    async def list_plugins(self, runtime: AppRuntime) -> dict[str, Any]:
        """Plugins found under plugins/; their own routes mount under /api/plugins/<name>/."""
        manifests, _ = discover_plugins(runtime.settings.app.plugins_dir)
        items = [
            {"name": m.name, "version": m.version, "description": m.description} for m in manifests
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
