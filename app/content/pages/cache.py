"""The page cache's two layers in front of the public pages (and the API's public reads):
`PageCacheFront`, before Litestar's router, answers the pages this process holds;
`PublicPageCacheMiddleware`, on routes marked `PUBLIC_CACHE`, reads the store, renders on
a miss and keeps the page (app/content/services/page_cache.py). Both count entry views
(app/content/services/views.py)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.content.services.page_cache import BYPASS, HIT, MISS, CachedPage, PageCache
from app.content.services.views import ViewCounts, counting_views, pop_view
from app.core.clock import current_clock
from app.core.compression import add_vary, negotiate, precompress
from app.core.csrf import PUBLIC_PAGE_OPT
from app.core.metrics import UNMATCHED
from app.core.requests import Networks, log_request, request_id_for, resolve_client_ip
from app.core.requests import log as request_log
from app.core.runtime import Runtime, runtime_of
from app.core.security_headers import PRIVATE, SecurityHeaders

CACHEABLE_HEADERS = {b"content-type", b"vary", b"content-language", b"link"}


class PublicPageCacheMiddleware:
    """On routes marked `public_cache`: serve anonymous GETs from the PageCache (ETag, 304)
    and count entry views for every visitor."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if (
            handler is None
            or not handler.opt.get(PUBLIC_PAGE_OPT)
            or scope["type"] != ScopeType.HTTP
        ):
            await self.app(scope, receive, send)
            return
        runtime = runtime_of(scope["litestar_app"].state)
        cache, views = runtime.service(PageCache), runtime.service(ViewCounts)
        asked = list(scope["headers"])
        named = dict(asked)
        cacheable = (
            cache.ttl > 0 and scope["method"] in _CACHED_METHODS and not _signed_in(asked, named)
        )
        if not cacheable:
            cache.count(BYPASS)
            await self.app(scope, receive, counting_views(send, views))
            return
        key = _page_key(scope, named)
        generation = await cache.current_generation()  # None: rendered, not kept
        page = await cache.get(key, generation) if generation is not None else None
        if page is not None:
            cache.count(HIT)
            await _send_hit(scope, send, views, page)
            return
        cache.count(MISS if generation is not None else BYPASS)
        keep = scope["method"] == "GET" and generation is not None
        moment = await cache.publication_bound() if keep else None  # before rendering
        start: HTTPResponseStartEvent | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if start is None:
            return
        view = pop_view(start)
        if view:
            views.count(view)
        # A shared page never carries a cookie (anonymous public pages get no CSRF cookie,
        # app/core/csrf.py); a response that sets one is passed on, not cached.
        headers = start.get("headers", [])
        body = b"".join(chunks)
        private = any(
            k == b"cache-control" and (b"private" in v or b"no-store" in v) for k, v in headers
        )
        if start["status"] != 200 or private or any(k == b"set-cookie" for k, _ in headers):
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        kept = [(k, v) for k, v in headers if k.lower() in CACHEABLE_HEADERS]
        content_type = next((v for k, v in kept if k.lower() == b"content-type"), b"")
        encoded = precompress(content_type, body)
        if encoded:
            kept = add_vary(kept)
        etag = b'W/"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
        route = scope.get("path_template")
        expires = current_clock().time() + cache.ttl
        page = CachedPage(200, kept, body, etag, expires, view, route, encoded)
        if keep and generation is not None:
            await cache.put(key, page, generation, moment)
        await _send_page(scope, send, page, b"miss")


class PageCacheFront:
    """The outermost layer: an anonymous GET or HEAD of a page this process holds is
    answered here in one step, with what the layers behind it would add (request id,
    security headers, the request figures and log line), without them, Litestar's router,
    exception layer or the route's middleware (docs/performance.md). Anything else, and
    every miss, goes on to `app`, where PublicPageCacheMiddleware reads the store, renders
    and fills the cache. Requests with an `Origin` header go on too, so CORS answers them."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        security: SecurityHeaders,
        trusted_proxies: Networks,
    ) -> None:
        self.app = app
        self.security = security
        self.trusted_proxies = trusted_proxies
        self.attach(runtime)

    def attach(self, runtime: Runtime) -> None:
        """Answer from `runtime`'s page cache and count in its figures from now on."""
        self.runtime = runtime
        self.cache = runtime.service(PageCache)
        self.views = runtime.service(ViewCounts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.answered(scope, send):
            await self.app(scope, receive, send)

    async def answered(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it asks for a page this process holds; False (nothing
        sent) sends it on."""
        started = time.perf_counter()
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] not in _CACHED_METHODS
            or self.cache.ttl <= 0
            or not scope["query_string"].isascii()
        ):
            return False
        asked = _asked(scope["headers"])
        if asked is None:
            return False
        runtime = self.runtime
        now = runtime.clock.time()
        page = self.cache.held(_page_key(scope, asked), now)
        if page is None:
            return False
        client = scope.get("client")
        peer = client[0] if client else None
        request_id = request_id_for(peer, _text(asked.get(b"x-request-id")), self.trusted_proxies)
        self.cache.count_hit()
        if page.view:
            self.views.count(page.view, now)
        status, variant, body = _variant(page, asked)
        headers = page.sent.get(variant)
        if headers is None:  # as the layers behind would send them, made once
            private = PRIVATE.matches(scope["path"])
            headers = self.security.added(_page_headers(page, variant, b"hit"), private)
            page.sent[variant] = headers
        method = scope["method"]
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"x-request-id", request_id.encode())],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b"" if method == "HEAD" else body,
                    "more_body": False,
                }
            )
        finally:
            seconds = time.perf_counter() - started
            runtime.figures.record_request(method, page.route or UNMATCHED, status, seconds, now)
            if request_log.isEnabledFor(logging.INFO):
                forwarded_for = _text(asked.get(b"x-forwarded-for"))
                client_ip = resolve_client_ip(peer, forwarded_for, self.trusted_proxies)
                log_request(scope, method, request_id, status, seconds, client_ip)
        return True


_CACHED_METHODS = frozenset(("GET", "HEAD"))
NOT_MODIFIED = "304"
"""The variant of a 304 (no encoding, no length), as a key of `CachedPage.sent`."""


def _asked(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes] | None:
    """The request's headers by name (the last of a repeated one), or None when the request
    is not the front's to answer: a caller's credentials or session (in any of several
    Cookie headers, as HTTP/2 sends them), or an `Origin` for CORS to answer."""
    if not isinstance(headers, list):  # read twice (ASGI servers send a list)
        headers = list(headers)
    asked = dict(headers)
    return None if b"origin" in asked or _signed_in(headers, asked) else asked


def _signed_in(headers: list[tuple[bytes, bytes]], named: dict[bytes, bytes]) -> bool:
    """The request carries a caller's credentials or session (in any of several Cookie
    headers, as HTTP/2 sends them); `named`: the headers by name."""
    if b"authorization" in named or b"x-api-key" in named:
        return True
    return b"cookie" in named and any(
        key == b"cookie" and b"keel_session=" in value for key, value in headers
    )


def _is_fragment(asked: dict[bytes, bytes]) -> bool:
    """An htmx request for a block of the page (pages answer it with a fragment, Vary:
    HX-Request); a boosted one wants the whole page."""
    return b"hx-request" in asked and b"hx-boosted" not in asked


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _page_key(scope: Scope, named: dict[bytes, bytes]) -> str:
    """The page's key: its address, and `#fragment` for an htmx request of a block of it;
    `named`: the request's headers by name."""
    query = scope["query_string"]
    key = scope["path"] + "?" + query.decode("latin-1") if query else scope["path"]
    return key + "#fragment" if _is_fragment(named) else key


def _variant(page: CachedPage, named: dict[bytes, bytes]) -> tuple[int, str | None, bytes]:
    """(status, variant, body) of `page` for a request: a 304 when the client holds it (its
    weak ETag stands for every encoding, RFC 9110 8.8.1), else the encoding the client
    prefers of those compressed at fill (None: as rendered)."""
    if_none_match = named.get(b"if-none-match")
    if if_none_match is not None and page.etag in [t.strip() for t in if_none_match.split(b",")]:
        return 304, NOT_MODIFIED, b""
    accept_encoding = named.get(b"accept-encoding")
    coding = negotiate(accept_encoding) if accept_encoding else None
    if coding is not None and coding in page.encoded:
        return page.status, coding, page.encoded[coding]
    return page.status, None, page.body


def _page_headers(
    page: CachedPage, variant: str | None, outcome: bytes
) -> list[tuple[bytes, bytes]]:
    """The headers the page cache sends with `variant` of `page` (`x-cache: outcome`)."""
    headers = [*page.headers, (b"etag", page.etag), (b"x-cache", outcome)]
    if variant != NOT_MODIFIED:
        if variant is not None:
            headers.append((b"content-encoding", variant.encode()))
        body = page.encoded[variant] if variant is not None else page.body
        headers.append((b"content-length", str(len(body)).encode()))
    return headers


async def _send_hit(scope: HTTPScope, send: Send, views: ViewCounts, page: CachedPage) -> None:
    """A cached page answered: its view counted (in the process) and the page sent."""
    if page.view:
        views.count(page.view)
    await _send_page(scope, send, page, b"hit")


async def _send_page(scope: HTTPScope, send: Send, page: CachedPage, outcome: bytes) -> None:
    """The page in the variant the request asks for (`_variant`)."""
    status, variant, body = _variant(page, dict(scope["headers"]))
    headers = _page_headers(page, variant, outcome)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    body = b"" if scope["method"] == "HEAD" else body
    await send({"type": "http.response.body", "body": body, "more_body": False})
