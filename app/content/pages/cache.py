"""The page cache's two layers in front of the public pages (and the API's public reads):
`PageCacheFront`, before Litestar's router, answers the pages this process holds;
`PublicPageCacheMiddleware`, on routes marked `PUBLIC_CACHE`, reads the store, renders on
a miss and keeps the page (app/content/services/page_cache.py). Both count entry views
(app/content/services/views.py)."""

from __future__ import annotations

import hashlib

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Message, Receive, Scope, Send

from app.content.services.page_cache import BYPASS, HIT, MISS, CachedPage, PageCache
from app.content.services.views import ViewCounts, counting_views, pop_view
from app.core.clock import current_clock
from app.core.compression import add_vary, negotiate, precompress
from app.core.csrf import PUBLIC_PAGE_OPT
from app.core.runtime import runtime_of

CACHEABLE_HEADERS = {b"content-type", b"vary", b"content-language", b"link"}


def _is_anonymous(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key in (b"authorization", b"x-api-key"):
            return False
        if key == b"cookie" and b"keel_session=" in value:
            return False
    return True


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
        cacheable = cache.ttl > 0 and scope["method"] in ("GET", "HEAD") and _is_anonymous(scope)
        if not cacheable:
            cache.count(BYPASS)
            await self.app(scope, receive, counting_views(send, views))
            return
        key = _page_key(scope)
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
    """In front of Litestar's router: an anonymous GET of a page this process holds is
    answered here, without routing, the exception layer or the route's middleware (about
    half the CPU; docs/performance.md). Anything else, and every miss, goes on to
    Litestar, where PublicPageCacheMiddleware reads the store, renders and fills the cache.
    Requests with an `Origin` header go on too, so CORS answers them as before."""

    def __init__(self, app: ASGIApp, cache: PageCache, views: ViewCounts) -> None:
        self.app = app
        self.cache = cache
        self.views = views

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == ScopeType.HTTP
            and scope["method"] == "GET"  # HEAD arrives as GET (RequestContextMiddleware)
            and self.cache.ttl > 0
            and _is_anonymous(scope)
            and all(key != b"origin" for key, _ in scope["headers"])
        ):
            page = self.cache.held(_page_key(scope))
            if page is not None:
                self.cache.count(HIT)
                if page.route is not None:
                    scope["path_template"] = page.route
                await _send_hit(scope, send, self.views, page)
                return
        await self.app(scope, receive, send)


def _page_key(scope: Scope) -> str:
    query = scope["query_string"].decode("latin-1")
    return scope["path"] + ("?" + query if query else "") + _variant(scope)


def _variant(scope: Scope) -> str:
    """Pages answer htmx fragment requests with a block of themselves (Vary: HX-Request)."""
    headers = dict(scope["headers"])
    if b"hx-request" in headers and b"hx-boosted" not in headers:
        return "#fragment"
    return ""


async def _send_hit(scope: HTTPScope, send: Send, views: ViewCounts, page: CachedPage) -> None:
    """A cached page answered: its view counted (in the process) and the page sent."""
    if page.view:
        views.count(page.view)
    await _send_page(scope, send, page, b"hit")


async def _send_page(scope: HTTPScope, send: Send, page: CachedPage, outcome: bytes) -> None:
    """The page in the encoding the client prefers, compressed at fill; its weak ETag
    stands for every encoding (the same page, RFC 9110 8.8.1), so a 304 needs none."""
    if_none_match = accept_encoding = None
    for key, value in scope["headers"]:
        if key == b"if-none-match":
            if_none_match = value
        elif key == b"accept-encoding":
            accept_encoding = value
    headers = [*page.headers, (b"etag", page.etag), (b"x-cache", outcome)]
    if if_none_match is not None and page.etag in [t.strip() for t in if_none_match.split(b",")]:
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = page.body
    coding = negotiate(accept_encoding) if accept_encoding and page.encoded else None
    if coding is not None:
        body = page.encoded[coding]
        headers.append((b"content-encoding", coding.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": page.status, "headers": headers})
    body = b"" if scope["method"] == "HEAD" else body
    await send({"type": "http.response.body", "body": body, "more_body": False})
