"""Security headers on every response: CSP without inline script, nosniff, no framing, HSTS.

A handler that sets one of these headers itself keeps its own value. Responses to a
signed-in caller and every admin or account address also get `Cache-Control: no-store`,
so a browser keeps none of them (Back after sign-out asks the server), unless the handler
marked its response `public` (the same bytes for everyone, like a media file).
"""

from __future__ import annotations

from collections.abc import Iterable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.core.paths import PathPrefixes

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def security_headers(production: bool) -> list[tuple[bytes, bytes]]:
    headers = {
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "strict-origin-when-cross-origin",
        "x-frame-options": "DENY",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
        "cross-origin-opener-policy": "same-origin",
    }
    if production:
        headers["strict-transport-security"] = "max-age=63072000; includeSubDomains"
    return [(key.encode(), value.encode()) for key, value in headers.items()]


PRIVATE = PathPrefixes("/admin", "/account")
"""Addresses whose pages are always someone's own (signed out, they redirect)."""
NO_STORE = (b"cache-control", b"no-store")


def is_private(scope: Scope) -> bool:
    """A response meant for one person: to a signed-in caller (IdentityMiddleware set
    `scope["user"]`), or on an admin or account address."""
    return scope.get("user") is not None or PRIVATE.matches(scope["path"])


def _never_stored(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with `Cache-Control: no-store`, unless the handler said no-store itself or
    marked the response public."""
    if any(
        k.lower() == b"cache-control" and (b"public" in v.lower() or b"no-store" in v.lower())
        for k, v in headers
    ):
        return headers
    return [*((k, v) for k, v in headers if k.lower() != b"cache-control"), NO_STORE]


class SecurityHeaders:
    """The security headers of this deployment, added to a response's own."""

    def __init__(self, production: bool) -> None:
        self.headers = security_headers(production)

    def added(
        self, headers: Iterable[tuple[bytes, bytes]], private: bool
    ) -> list[tuple[bytes, bytes]]:
        """`headers` with each security header the response did not set itself, and
        `Cache-Control: no-store` when the response is `private` (see `is_private`)."""
        existing = _never_stored(list(headers)) if private else list(headers)
        present = {name.lower() for name, _ in existing}
        return [*existing, *((k, v) for k, v in self.headers if k not in present)]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, security: SecurityHeaders) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.security.added(
                    message.get("headers", []), is_private(scope)
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)
