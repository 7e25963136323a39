"""CSRF protection for pages: same-origin unsafe requests, and a token bound to the session.

An unsafe page request (POST and the like) passes when
- it comes from the site itself: an `Origin` header, else a `Referer`, when the browser
  sends one, must name the site's origin (`site_origin` in app/core/redirects.py:
  PUBLIC_URL's scheme, host and port when set, else the request's own), as Django checks
  them; and
- it carries the CSRF token: the `_csrf_token` form field or the `X-CSRF-Token` header that
  htmx sends from `hx-headers` on `<body>` (either may pass: a boosted swap keeps the
  body's attributes, so after signing in again the header can be the old session's).
  With a browser session the token is an HMAC (keyed by SECRET_KEY) of that session's
  CSRF secret, so no token from another browser or account passes and none needs a
  cookie; without one (sign-in, registration, forgot password) it is Litestar's signed
  double-submit cookie. Pages render the token of the request's caller (`csrf_token()`).
Anything malformed (non-ASCII, wrong length, a cookie that is not a token) is a 403, and
a malformed cookie is replaced on the next page with a form. A visitor's token is made
only when a page's form asks for it (`token_of`), so pages without a form set no cookie.
A form posted after its session ended leads to the sign-in page (a 401) instead of a bare
403.

Exempt: the JSON API (it never authenticates with cookies), the other machine paths and
the static files (read-only; a cookie on an immutable asset would also keep shared caches
from storing it). An anonymous visitor's GET of a public page (a route marked
`public_cache`) is answered without making a token: those pages hold no form for
anonymous visitors (the sign-out form and the htmx header appear only when signed in), a
cached page is shared between visitors and must not carry anyone's cookie, and the token,
its signature and the Set-Cookie header were a few per cent of an uncached page's cost.
The visitor's first page with a form sets the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.csrf import CSRFMiddleware, generate_csrf_token
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.core.paths import MACHINE, PathPrefixes
from app.core.redirects import origin_of, site_origin
from app.settings import Settings

PUBLIC_PAGE_OPT = "public_cache"
"""The route option that marks a public page (app/content/pages/public.py sets it)."""
FORM_FIELD = "_csrf_token"
FORM_TYPES = {RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART}


def _same(given: str, expected: str) -> bool:
    """Constant-time equality for any text a client sends (hmac.compare_digest refuses
    non-ASCII str with a TypeError)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def session_csrf_token(secret_key: str, session_secret: str) -> str:
    """The CSRF token of the browser session whose CSRF secret is `session_secret`."""
    key = hmac.new(secret_key.encode(), b"keel-csrf-session", hashlib.sha256).digest()
    return hmac.new(key, session_secret.encode(), hashlib.sha256).hexdigest()


MADE_ON_ASKING = "keel.csrf_made_on_asking"
"""Scope key: set for a visitor without a token cookie, whose token is made only when a
page asks for it (`token_of`), and then sent as a cookie with the response."""


def token_of(scope: Scope) -> str:
    """The request's CSRF token ("" where no CSRF layer ran). A visitor's is made here, the
    first time a page's form asks for it: a page without a form sets no cookie."""
    state = ScopeState.from_scope(scope)
    token = state.csrf_token
    if isinstance(token, str):
        return token
    secret = scope.get(MADE_ON_ASKING)
    if not isinstance(secret, str):
        return ""
    made: str = generate_csrf_token(secret=secret)
    state.csrf_token = made
    return made


EXEMPT = PathPrefixes(*MACHINE.prefixes, "/static", "/favicon.ico")
"""The machine paths and the static files."""


class CsrfMiddleware(CSRFMiddleware):
    def __init__(self, app: ASGIApp, config: CSRFConfig, session_cookie: str) -> None:
        super().__init__(app, config)
        self.session_cookie = session_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or EXEMPT.matches(scope["path"])
            or should_bypass_middleware(
                scope=scope,
                scopes=self.scopes,
                exclude_opt_key=self.config.exclude_from_csrf_key,
            )
        ):
            await self.app(scope, receive, send)
            return
        user = scope.get("user")  # set by IdentityMiddleware, which runs first
        safe = scope["method"] in self.config.safe_methods
        handler = scope.get("route_handler")
        if safe and user is None and handler is not None and handler.opt.get(PUBLIC_PAGE_OPT):
            await self.app(scope, receive, send)
            return
        secret = getattr(user, "session_csrf", None)
        expected = session_csrf_token(self.config.secret, secret) if secret else None
        request: Any = scope["litestar_app"].request_class(scope=scope, receive=receive)
        cookie = request.cookies.get(self.config.cookie_name)
        cookie = cookie if cookie and self._decode_csrf_token(cookie) else None
        state = ScopeState.from_scope(scope)
        if safe:
            if expected is not None:
                state.csrf_token = expected
                await self.app(scope, receive, send)
                return
            if cookie is not None:
                state.csrf_token = cookie
                await self.app(scope, receive, send)
                return
            scope[MADE_ON_ASKING] = self.config.secret  # type: ignore[literal-required]
            await self.app(scope, receive, self._cookie_once_made(send, state))
            return
        self._check_origin(request)
        token = await self._submitted_token(request, expected, cookie)
        if token is None:
            if user is None and request.cookies.get(self.session_cookie):
                raise NotAuthorizedException("Your session has ended: sign in again.")
            raise PermissionDeniedException("CSRF token verification failed")
        state.csrf_token = token
        await self.app(scope, receive, send)

    def _cookie_once_made(self, send: Send, state: ScopeState) -> Send:
        """`send`, setting the visitor's CSRF cookie if the page made a token (`token_of`)."""

        async def send_cookie(message: Message) -> None:
            token = state.csrf_token
            if message["type"] == "http.response.start" and isinstance(token, str):
                message.setdefault("headers", [])
                self._set_cookie_if_needed(message=message, token=token)
            await send(message)

        return send_cookie

    @staticmethod
    def _check_origin(request: Any) -> None:
        """Refuse a request whose Origin (else Referer) names another site."""
        for header in ("origin", "referer"):
            value = request.headers.get(header)
            if value is not None:
                claimed = origin_of(value)
                if claimed is None or claimed != site_origin(request):
                    raise PermissionDeniedException(
                        "Cross-site request refused: it did not come from this site."
                    )
                return

    async def _submitted_token(
        self, request: Any, expected: str | None, cookie: str | None
    ) -> str | None:
        """The header's token or the form field's, whichever passes; None when neither."""
        candidates = [request.headers.get(self.config.header_name)]
        content_type, _ = request.content_type
        if content_type in FORM_TYPES:
            candidates.append((await request.form()).get(FORM_FIELD))
        for token in candidates:
            if not isinstance(token, str) or not token:
                continue
            if expected is not None and _same(token, expected):
                return token
            if expected is None and cookie is not None and self._csrf_tokens_match(token, cookie):
                return token
        return None

    def _decode_csrf_token(self, token: str) -> str | None:
        """The secret part of a signed token; None for anything malformed (non-ASCII too)."""
        if not token.isascii():
            return None
        return super()._decode_csrf_token(token)


def csrf_middleware(settings: Settings, session_cookie: str) -> DefineMiddleware:
    """The CSRF layer; it goes last in the app's middleware list, after identity.
    `session_cookie` is the browser session cookie's name."""
    production = settings.app.is_production
    config = CSRFConfig(
        secret=settings.app.secret_key,
        cookie_name="__Host-keel_csrf" if production else "keel_csrf",
        cookie_secure=production,
        cookie_samesite="lax",
        header_name="x-csrf-token",
    )
    return DefineMiddleware(
        CsrfMiddleware,
        config=config,
        session_cookie=session_cookie,
    )
