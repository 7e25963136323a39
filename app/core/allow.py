"""`OPTIONS` answers with every method of its path.

Litestar 2 builds a path's `OPTIONS` answer with the route object that existed when the
first handler for that path was registered, so `/api/v1/users/{id}` answered
`Allow: DELETE, OPTIONS` although GET and PATCH work there too (fixed in Litestar 3). A
405 already lists every method; this makes `OPTIONS` list the same ones.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class AllowEveryMethod(ASGIMiddleware):
    """Rewrites the `Allow` header of an `OPTIONS` answer from the app's routes."""

    scopes = (ScopeType.HTTP,)

    def __init__(self) -> None:
        self._allow: dict[str, bytes] = {}

    def allowed(self, app: Litestar, path_template: str) -> bytes:
        """The methods of the route at `path_template` (as routing names it: `{id}`, no
        type); empty for a path that is no HTTP route (a mount such as /static)."""
        if path_template not in self._allow:  # first use, or a route registered since
            self._allow = {
                route.path_format: ", ".join(sorted(route.methods)).encode()
                for route in app.routes
                if isinstance(route, HTTPRoute)
            }
            self._allow.setdefault(path_template, b"")
        return self._allow[path_template]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await next_app(scope, receive, send)
            return
        allow = self.allowed(scope["litestar_app"], scope.get("path_template", ""))

        async def send_every_method(message: Message) -> None:
            if message["type"] == "http.response.start" and allow:
                headers = list(message.get("headers", []))
                if any(name.lower() == b"allow" for name, _ in headers):
                    rest = [(name, value) for name, value in headers if name.lower() != b"allow"]
                    message["headers"] = [*rest, (b"allow", allow)]
            await send(message)

        await next_app(scope, receive, send_every_method)
