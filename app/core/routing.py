"""Route groups an app serves, added and removed while it runs.

Keel's groups (the public site, admin, the API, ...) and a plugin's are `RouteGroup`s in
the app's `Registry`; `Routing` keeps the app's router in step with it. Litestar can add
routes to a running app (`Litestar.register`) but has no way to take them out again
(litestar-org/litestar#1276), so every change rebuilds the router's look-up tables from
the routes still registered: the router object itself stays (the middleware stack holds
it), its tables are made anew, and the OpenAPI document is built again on its next read.
All of it is synchronous, so on the event loop no request sees half a change.

Limits: two groups may not serve the same path (Litestar would merge them into one route,
which could then not be taken apart again); the change is made in this process only (each
granian worker process has its own app and must make it too); and a removed group's
handlers finish the requests they are already serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from litestar import Litestar, Router
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.routes import BaseRoute
from litestar.types import ControllerRouterHandler

from app.core.registry import Registry, RegistryClash


@dataclass(frozen=True)
class RouteGroup:
    """Routes one owner serves. `build` returns new handlers (a Router, a controller) on
    every call: a Router belongs to the one app it is registered with."""

    name: str
    build: Callable[[], ControllerRouterHandler]


def route_group_registry() -> Registry[str, RouteGroup]:
    return Registry("route group", key=lambda group: group.name)


class Routing:
    """An app's route groups and its router, kept in step. `generation` changes whenever
    the routes do: what was derived from them (the templates' `url_for` memo) is dropped."""

    def __init__(
        self,
        app: Litestar,
        groups: Registry[str, RouteGroup],
        prepare: Callable[[Litestar], None] = lambda app: None,
    ) -> None:
        self.app = app
        self.groups = groups
        self.prepare = prepare
        """Runs after every change, before any request sees it (documents new routes)."""
        self.generation = 0
        self._mounted: dict[str, tuple[RouteGroup, list[BaseRoute]]] = {}
        groups.on_change(self.sync)
        self.sync()

    def sync(self) -> None:
        """Make the router serve exactly the registered groups."""
        wanted = {group.name: group for group in self.groups}
        stale = [name for name, (group, _) in self._mounted.items() if wanted.get(name) != group]
        self._unmount(stale)
        try:
            for name, group in wanted.items():
                if name not in self._mounted:
                    self._mount(group)
        finally:
            self._rebuild()

    def _mount(self, group: RouteGroup) -> None:
        built = group.build()
        router = built if isinstance(built, Router) else Router("/", route_handlers=[built])
        served = {route.path for route in self.app.routes}
        if clashing := sorted(served & {route.path for route in router.routes}):
            raise RegistryClash(
                f"route group {group.name!r} serves {', '.join(clashing)}, which another "
                "group serves already"
            )
        known = {id(route) for route in self.app.routes}
        self.app.register(router)
        added: list[BaseRoute] = [route for route in self.app.routes if id(route) not in known]
        self._mounted[group.name] = (group, added)

    def _unmount(self, names: list[str]) -> None:
        gone = {id(route) for name in names for route in self._mounted.pop(name)[1]}
        if not gone:
            return
        self.app.routes[:] = [route for route in self.app.routes if id(route) not in gone]
        openapi = self.app.plugins.get(OpenAPIPlugin)
        openapi.included_routes = {
            path: route for path, route in openapi.included_routes.items() if id(route) not in gone
        }

    def _rebuild(self) -> None:
        router = self.app.asgi_router
        router.__init__(self.app)  # type: ignore[misc]  # new tables (and routing cache), same object
        router.construct_routing_trie()
        openapi = self.app.plugins.get(OpenAPIPlugin)
        openapi._openapi = None  # Litestar resets this one on `register`, not the schema dict
        openapi._openapi_schema = None
        self.prepare(self.app)
        self.generation += 1
