"""CSRF protection: Litestar's CSRFMiddleware, minus the token cookie on shared public pages.

Every unsafe page request needs the token (the `_csrf_token` form field or the htmx
header). Exempt: the JSON API (it never authenticates with cookies), the other machine
paths and the static files (read-only; a cookie on an immutable asset would also keep
shared caches from storing it). An anonymous visitor's GET of a public page (a route
marked `public_cache`) is answered without making a token: those pages hold no form for
anonymous visitors (the sign-out form and the htmx header appear only when signed in), a
cached page is shared between visitors and must not carry anyone's cookie, and the token,
its signature and the Set-Cookie header were a few per cent of an uncached page's cost.
The visitor's first page with a form sets the cookie.
"""

from __future__ import annotations

import re

from litestar.config.csrf import CSRFConfig
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import Receive, Scope, Send

from app.settings import Settings

PUBLIC_PAGE_OPT = "public_cache"
"""The route option that marks a public page (app/content/pages.py sets it)."""


class CsrfMiddleware(CSRFMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope.get("user") is None  # set by IdentityMiddleware, which runs first
            and (handler := scope.get("route_handler")) is not None
            and handler.opt.get(PUBLIC_PAGE_OPT)
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def csrf_middleware(settings: Settings) -> DefineMiddleware:
    """The CSRF layer; it goes last in the app's middleware list, after identity."""
    from app.core.errors import MACHINE_PREFIXES

    production = settings.app.is_production
    exempt = (*MACHINE_PREFIXES, "/static/", "/favicon.ico")
    config = CSRFConfig(
        secret=settings.app.secret_key,
        cookie_name="__Host-keel_csrf" if production else "keel_csrf",
        cookie_secure=production,
        cookie_samesite="lax",
        header_name="x-csrf-token",
        exclude=[f"^{re.escape(prefix)}" for prefix in exempt],
    )
    return DefineMiddleware(CsrfMiddleware, config=config)
