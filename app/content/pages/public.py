"""Public pages, rendered on the server: home, pages, blog, tags, search, feed, sitemap.

Visibility is decided in app/content/services/entries.py; here we only ask it. An editor may
preview an entry that is not public with `?preview=1`; everyone else gets the 404 page.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urljoin

from litestar import Controller, MediaType, Request, Response, get
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from app.accounts.guards import roles
from app.accounts.models import Role
from app.content.models import Entry, Kind
from app.content.pages import feeds
from app.content.services.entries import ContentNotFound
from app.content.services.markdown import first_image
from app.content.services.page_cache import PUBLIC_CACHE, PageCache
from app.content.services.public import (
    author_names,
    get_tag,
    list_public_entries,
    list_public_posts,
    search_public,
    visible_to_public,
)
from app.content.services.reads import EntryView, entry_for_reader, nav_pages
from app.content.services.views import VIEW_HEADER
from app.core.db import DbSession
from app.core.pagination import PageNumber, PageRequest
from app.core.runtime import runtime_of
from app.core.templating import absolute_url, render, site_base, static_url
from app.core.zones import hold_zone
from app.site_settings.services import public_settings, read_settings_from

log = logging.getLogger("keel.content")

HOME_POSTS = 5
BLOG_PER_PAGE = 10
SEARCH_PER_PAGE = 10
FEED_POSTS = 20
PREVIEW_HEADERS = {"Cache-Control": "private, no-store"}
"""Anonymous GETs of these routes are served from the page cache
(app/content/services/page_cache.py)."""


async def site_and_menu(request: Request) -> tuple[dict[str, Any], list[Any]]:
    """The site settings and the menu pages, kept in the process until a public change."""
    runtime = runtime_of(request.app.state)
    reads = runtime.reads

    async def load() -> tuple[dict[str, Any], list[Any]]:
        return public_settings(await read_settings_from(reads)), await nav_pages(reads)

    return await runtime.service(PageCache).remember("site_and_menu", load)


async def public_context(request: Request, **values: Any) -> dict[str, Any]:
    """What every public page needs: the site settings and the menu pages."""
    site, nav = await site_and_menu(request)
    return {"site": site, "nav": nav, **values}


async def hold_site_zone(request: Request) -> None:
    """Before a page's handler: the page shows times in the site's time zone (a setting
    kept with the public ones, so a change reaches every process with a new generation)."""
    site, _ = await site_and_menu(request)
    hold_zone(request.state, site["time_zone"])


def entry_url(request: Request, entry: Entry | EntryView) -> str:
    """The absolute address of a page or post (on PUBLIC_URL, see `site_base`)."""
    name = "public:post" if entry.kind == Kind.post.value else "public:page"
    return absolute_url(request, name, slug=entry.slug)


def _may_preview(request: Request, preview: bool) -> bool:
    user = request.scope.get("user")
    return preview and user is not None and user.has(Role.editor)


async def _entry_page(
    request: Request, kind: str, slug: str, preview: bool, template: str
) -> Response[str]:
    previewing = _may_preview(request, preview)
    reads = runtime_of(request.app.state).reads
    entry = await entry_for_reader(reads, kind, slug, may_preview=previewing)
    if entry is None:
        raise ContentNotFound("No such page.")
    if previewing:
        is_public = visible_to_public(entry)
        headers = PREVIEW_HEADERS
    else:
        is_public = True
        headers = {VIEW_HEADER.decode(): str(entry.id)}  # counted by the page cache layer
    image = first_image(entry.body_html)
    context = await public_context(
        request,
        entry=entry,
        author=entry.author_name,
        preview_banner=not is_public,
        canonical_url=entry_url(request, entry),
        og_image=urljoin(site_base(request) + "/", image[0]) if image else None,
        og_image_size=image[1] if image else None,
    )
    return render(request, template, context, headers=headers)


class PublicPagesController(Controller):
    path = "/"
    include_in_schema = False
    guards = [roles.public]

    @get("/", name="public:home", opt=PUBLIC_CACHE)
    async def home(self, request: Request, db_session: DbSession) -> Response[str]:
        """The home page: the site's title and introduction, then the latest posts."""
        posts = await list_public_posts(db_session, PageRequest(1, HOME_POSTS))
        context = await public_context(request, posts=posts.items)
        return render(request, "content/home.html", context)

    @get("/blog", name="public:blog", opt=PUBLIC_CACHE)
    async def blog(
        self, request: Request, db_session: DbSession, page: FromQuery[PageNumber] = 1
    ) -> Response[str]:
        """Every public post, newest first, ten to a page."""
        posts = await list_public_posts(db_session, PageRequest.of(page, BLOG_PER_PAGE))
        context = await public_context(request, posts=posts, params={})
        return render(request, "content/blog.html", context, block="results")

    @get("/blog/{slug:str}", name="public:post", opt=PUBLIC_CACHE)
    async def post(
        self,
        request: Request,
        slug: FromPath[str],
        preview: FromQuery[bool] = False,
    ) -> Response[str]:
        return await _entry_page(request, Kind.post.value, slug, preview, "content/post.html")

    @get("/tags/{slug:str}", name="public:tag", opt=PUBLIC_CACHE)
    async def tag(
        self,
        request: Request,
        db_session: DbSession,
        slug: FromPath[str],
        page: FromQuery[PageNumber] = 1,
    ) -> Response[str]:
        """The public posts that carry one tag."""
        found = await get_tag(db_session, slug)
        if found is None:
            raise ContentNotFound("No such tag.")
        posts = await list_public_posts(db_session, PageRequest.of(page, BLOG_PER_PAGE), slug)
        context = await public_context(request, tag=found, posts=posts, params={})
        return render(request, "content/tag.html", context, block="results")

    @get("/search", name="public:search", opt=PUBLIC_CACHE)
    async def search(
        self,
        request: Request,
        db_session: DbSession,
        q: FromQuery[str] = "",
        page: FromQuery[PageNumber] = 1,
    ) -> Response[str]:
        """Full-text search over public pages and posts."""
        q = q.strip()[:200]
        results = (
            await search_public(db_session, q, PageRequest.of(page, SEARCH_PER_PAGE)) if q else None
        )
        context = await public_context(request, q=q, results=results, params={"q": q})
        return render(request, "content/search.html", context, block="results")

    @get("/feed.xml", name="public:feed", opt=PUBLIC_CACHE)
    async def feed(self, request: Request, db_session: DbSession) -> Response[bytes]:
        """The latest posts as an Atom 1.0 feed."""
        site, _ = await site_and_menu(request)
        posts = (await list_public_posts(db_session, PageRequest(1, FEED_POSTS))).items
        body = feeds.atom_feed(
            title=site["site_title"],
            subtitle=site["site_intro"],
            home_url=absolute_url(request, "public:home"),
            feed_url=absolute_url(request, "public:feed"),
            posts=posts,
            post_url=lambda entry: entry_url(request, entry),
            authors=await author_names(db_session, list(posts)),
        )
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    @get("/sitemap.xml", name="public:sitemap", opt=PUBLIC_CACHE)
    async def sitemap(self, request: Request, db_session: DbSession) -> Response[bytes]:
        """Every public address, for search engines."""
        entries = await list_public_entries(db_session)
        newest = max((e.updated_at for e in entries), default=None)
        urls = [
            (absolute_url(request, "public:home"), newest),
            (absolute_url(request, "public:blog"), newest),
            *((entry_url(request, e), e.updated_at) for e in entries),
        ]
        return Response(feeds.sitemap(urls), media_type="application/xml; charset=utf-8")

    @get("/robots.txt", name="public:robots", opt=PUBLIC_CACHE)
    async def robots(self, request: Request) -> Response[str]:
        return Response(
            feeds.robots_txt(absolute_url(request, "public:sitemap")), media_type=MediaType.TEXT
        )

    @get("/favicon.ico", name="public:favicon")
    async def favicon(self) -> Redirect:
        """Browsers and feed readers ask for /favicon.ico whatever the page says."""
        return Redirect(static_url("img/favicon.svg"), status_code=301)

    @get("/{slug:str}", name="public:page", opt=PUBLIC_CACHE)
    async def page(
        self,
        request: Request,
        slug: FromPath[str],
        preview: FromQuery[bool] = False,
    ) -> Response[str]:
        """A page at the root of the site (`/about`); the site's own paths always win."""
        return await _entry_page(request, Kind.page.value, slug, preview, "content/page.html")
