"""The public site: app/content/pages/public.py and app/content/pages/feeds.py (both legs)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID
from xml.etree import ElementTree

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import update

from app.accounts.models import User
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.content.models import Entry
from app.content.services.entries import (
    EntryInput,
    archive_entry,
    get_entry,
    publish_entry,
    save_entry,
)
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import client_for, free_port, signed_in, stopped_clock, with_app_settings

ATOM = "{http://www.w3.org/2005/Atom}"
SITEMAP = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
BASE = "http://127.0.0.1:8000"
"""Where links point without PUBLIC_URL: HOST and PORT of the test settings."""


async def _entry(
    app: Litestar,
    author: User,
    title: str,
    body: str = "",
    *,
    kind: str = "post",
    state: str = "published",
    minutes_ago: int = 60,
    tags: tuple[str, ...] | list[str] = (),
    nav_order: int | None = None,
) -> Entry:
    """An entry saved and brought to `state` the way an editor would."""
    actor = Actor(user_id=author.id, name=author.username)
    data = EntryInput(kind=kind, title=title, body_markdown=body, tags=list(tags))
    data.nav_order = nav_order
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, data)
        now = datetime.now(UTC)
        if state in ("published", "archived"):
            await publish_entry(session, actor, entry, now - timedelta(minutes=minutes_ago))
        if state == "scheduled":
            await publish_entry(session, actor, entry, now + timedelta(days=1))
        if state == "archived":
            await archive_entry(session, actor, entry)
    return entry


async def _move_publish_time(app: Litestar, entry_id: UUID, moment: datetime) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(Entry).where(Entry.id == entry_id).values(published_at=moment))


async def _one_of_each(app: Litestar, author: User) -> dict[str, Entry]:
    """A public post and a hidden one of every kind, all tagged `news` and saying `zebra`."""
    body = "A story about a zebra."
    return {
        state: await _entry(app, author, f"{state.title()} story", body, state=state, tags=["News"])
        for state in ("published", "draft", "archived", "scheduled")
    }


def _titles_in_feed(xml: bytes) -> set[str]:
    root = ElementTree.fromstring(xml)
    return {entry.findtext(f"{ATOM}title") or "" for entry in root.iter(f"{ATOM}entry")}


def _sitemap_locations(xml: bytes) -> set[str]:
    root = ElementTree.fromstring(xml)
    return {url.findtext(f"{SITEMAP}loc") or "" for url in root.iter(f"{SITEMAP}url")}


async def test_home_shows_the_site_title_intro_and_the_latest_five_posts(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "site_title", "Harbour Notes")
        await write_setting(session, "site_intro", "Tides, boats and weather.")
    for number in range(1, 7):
        await _entry(app, accounts["editor"], f"Post number {number}", minutes_ago=100 - number)
    response = await client.get("/")
    assert response.status_code == 200
    assert "Harbour Notes" in response.text and "Tides, boats and weather." in response.text
    for number in range(2, 7):
        assert f"Post number {number}" in response.text
    assert "Post number 1" not in response.text
    assert response.text.index("Post number 6") < response.text.index("Post number 2")


async def test_drafts_archived_and_future_posts_are_invisible_everywhere(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    entries = await _one_of_each(app, accounts["editor"])
    hidden = ("Draft story", "Archived story", "Scheduled story")
    pages = {
        path: (await client.get(path)).text
        for path in ("/", "/blog", "/tags/news", "/search?q=zebra")
    }
    for path, html in pages.items():
        assert "Published story" in html, path
        assert not any(title in html for title in hidden), path
    for state, entry in entries.items():
        response = await client.get(f"/blog/{entry.slug}")
        assert response.status_code == (200 if state == "published" else 404), state
    assert _titles_in_feed((await client.get("/feed.xml")).content) == {"Published story"}
    assert _sitemap_locations((await client.get("/sitemap.xml")).content) == {
        f"{BASE}/",
        f"{BASE}/blog",
        f"{BASE}/blog/published-story",
    }


async def test_a_scheduled_post_appears_once_its_time_has_passed(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    with stopped_clock(app) as clock:
        entry = await _entry(app, accounts["editor"], "Tomorrow's news", state="scheduled")
        await _move_publish_time(app, entry.id, clock.now() + timedelta(hours=1))
        assert (await client.get(f"/blog/{entry.slug}")).status_code == 404
        assert "Tomorrow&#39;s news" not in (await client.get("/blog")).text
        assert "Tomorrow&#39;s news" not in (await client.get("/blog")).text  # from the cache

        clock.advance(timedelta(hours=1))  # nobody acts: the time simply comes

        response = await client.get(f"/blog/{entry.slug}")
        assert response.status_code == 200 and "Tomorrow&#39;s news" in response.text
        assert "Tomorrow&#39;s news" in (await client.get("/blog")).text
        assert "Tomorrow's news" in _titles_in_feed((await client.get("/feed.xml")).content)


async def test_only_editors_may_preview_what_is_not_public(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    draft = await _entry(app, accounts["editor"], "Work in progress", state="draft")
    page = await _entry(app, accounts["editor"], "Secret page", kind="page", state="archived")
    for url in (f"/blog/{draft.slug}?preview=1", f"/{page.slug}?preview=1"):
        anonymous = await client.get(url)
        assert anonymous.status_code == 404 and "could not find" in anonymous.text
        async with signed_in(app, accounts["viewer"]) as viewer:
            assert (await viewer.get(url)).status_code == 404
        async with signed_in(app, accounts["editor"]) as editor:
            preview = await editor.get(url)
            assert preview.status_code == 200
            assert "Preview — not public" in preview.text
            assert preview.headers["cache-control"] == "private, no-store"
            assert (await editor.get(url.removesuffix("?preview=1"))).status_code == 404
    async with signed_in(app, accounts["admin"]) as admin:
        assert (await admin.get(f"/blog/{draft.slug}?preview=1")).status_code == 200


async def test_public_entries_show_no_preview_banner_and_are_counted(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    entry = await _entry(app, accounts["editor"], "Counted")
    for _ in range(2):
        response = await client.get(f"/blog/{entry.slug}")
        assert response.status_code == 200 and "Preview — not public" not in response.text
    async with signed_in(app, accounts["editor"]) as editor:
        assert "Preview — not public" not in (await editor.get("/blog/counted?preview=1")).text
    await app.state.views.flush()  # views are batched in the process first
    assert int(await app.state.store.get(f"views:{entry.id}") or 0) == 2


async def test_pages_and_view_counts_survive_valkey_being_down(
    services_settings: Settings, services_accounts: dict[str, User]
) -> None:
    """Valkey unreachable: the post renders (uncached) and its views wait in the process."""
    down = replace(
        services_settings,
        store=replace(services_settings.store, url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    app = create_app(down)
    try:
        entry = await _entry(app, services_accounts["editor"], "Sturdy")
        async with client_for(app) as client:
            assert (await client.get(f"/blog/{entry.slug}")).status_code == 200
        await app.state.views.flush()
        assert app.state.views.pending[str(entry.id)] == 1  # kept for the next round
    finally:
        await app.state.engine.dispose()


@pytest.mark.parametrize(
    ("changes", "base"),
    [
        ({"public_url": "https://keel.example"}, "https://keel.example"),
        # development may leave PUBLIC_URL unset: then HOST and PORT of `keel serve` (a
        # wildcard bind address means this machine), never the request's Host
        ({"public_url": "", "host": "0.0.0.0", "port": 8123}, "http://127.0.0.1:8123"),
        ({"public_url": "", "host": "::", "port": 8000}, "http://localhost:8000"),
    ],
)
async def test_links_that_leave_the_page_are_on_the_sites_address_whatever_the_host_header(
    settings: Settings, accounts: dict[str, User], changes: dict[str, object], base: str
) -> None:
    """A forged Host header on a cache miss must not end up in a cached feed, sitemap or
    page that every later visitor gets (nor in an e-mailed link: tests/accounts)."""
    app = create_app(with_app_settings(settings, **changes))
    try:
        await _entry(app, accounts["editor"], "First post")
        forged = {"Host": "evil.example"}
        async with client_for(app) as client:
            answers = [
                await client.get(path, headers=forged)
                for path in ("/feed.xml", "/sitemap.xml", "/robots.txt", "/blog/first-post")
            ]
            cached = [await client.get("/feed.xml"), await client.get("/blog/first-post")]
    finally:
        await app.state.engine.dispose()
    assert all(answer.status_code == 200 for answer in [*answers, *cached])
    assert not any("evil.example" in answer.text for answer in [*answers, *cached])
    feed, sitemap, robots, post = answers
    assert f"{base}/blog/first-post" in _sitemap_locations(sitemap.content)
    assert f'href="{base}/blog/first-post"' in feed.text
    assert f"Sitemap: {base}/sitemap.xml" in robots.text
    assert f'<link rel="canonical" href="{base}/blog/first-post">' in post.text
    assert cached[1].text == post.text


async def test_the_menu_lists_public_menu_pages_in_order_on_every_page(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    editor = accounts["editor"]
    await _entry(app, editor, "Contact", kind="page", nav_order=2)
    await _entry(app, editor, "About us", kind="page", nav_order=1)
    await _entry(app, editor, "Colophon", kind="page")  # public, but not in the menu
    await _entry(app, editor, "Plans", kind="page", nav_order=0, state="draft")
    post = await _entry(app, editor, "Hello")
    for path in ("/", "/blog", f"/blog/{post.slug}", "/about-us", "/search"):
        html = (await client.get(path)).text
        nav = html[html.index('<nav aria-label="Main">') : html.index("</nav>")]
        links = re.findall(r'<a href="([^"]+)">', nav)
        assert links[:5] == ["/", "/blog", "/about-us", "/contact", "/login"], path
    colophon = await client.get("/colophon")
    assert colophon.status_code == 200 and "Colophon" in colophon.text


async def test_the_blog_pages_ten_posts_at_a_time_newest_first(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    for number in range(1, 13):
        await _entry(app, accounts["editor"], f"Entry {number:02d}", minutes_ago=100 - number)
    first = (await client.get("/blog")).text
    second = (await client.get("/blog?page=2")).text
    assert re.findall(r"Entry \d\d", first) == [f"Entry {n:02d}" for n in range(12, 2, -1)]
    assert re.findall(r"Entry \d\d", second) == ["Entry 02", "Entry 01"]
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    fragment = await client.get("/blog?page=2", headers={"HX-Request": "true"})
    assert "Entry 01" in fragment.text and "<html" not in fragment.text


async def test_search_finds_a_word_in_the_body_and_keeps_the_query(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    await _entry(app, accounts["editor"], "Field notes", "We saw a pangolin at dawn.")
    await _entry(app, accounts["editor"], "Other notes", "Nothing remarkable today.")
    found = await client.get("/search", params={"q": "pangolin"})
    assert found.status_code == 200
    assert "Field notes" in found.text and "Other notes" not in found.text
    assert 'value="pangolin"' in found.text
    missing = await client.get("/search", params={"q": "narwhal"})
    assert "Nothing matches" in missing.text and 'value="narwhal"' in missing.text
    empty = await client.get("/search")
    assert empty.status_code == 200 and "Field notes" not in empty.text


async def test_tags_list_their_public_posts_and_unknown_tags_are_404(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    await _entry(app, accounts["editor"], "Sailing", tags=("Boats",))
    await _entry(app, accounts["editor"], "Cooking", tags=("Food",))
    boats = await client.get("/tags/boats")
    assert boats.status_code == 200 and "Sailing" in boats.text and "Cooking" not in boats.text
    assert (await client.get("/tags/unknown")).status_code == 404


async def test_the_feed_is_atom_with_exactly_the_public_posts(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    await _one_of_each(app, accounts["editor"])
    await _entry(app, accounts["editor"], "Fish & <chips>", "Body with **bold** & more.")
    await _entry(app, accounts["editor"], "A page", kind="page")
    response = await client.get("/feed.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = ElementTree.fromstring(response.content)
    assert root.tag == f"{ATOM}feed"
    assert _titles_in_feed(response.content) == {"Published story", "Fish & <chips>"}
    item = next(e for e in root.iter(f"{ATOM}entry") if "Fish" in e.findtext(f"{ATOM}title", ""))
    for child in ("id", "title", "updated", "published", "summary", "author/" + ATOM + "name"):
        assert item.find(ATOM + child) is not None, child
    assert item.find(f"{ATOM}link").get("href") == f"{BASE}/blog/fish-chips"
    content = item.find(f"{ATOM}content")
    assert content.get("type") == "html" and "<strong>bold</strong>" in content.text


async def test_the_sitemap_lists_public_pages_and_posts_with_lastmod(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    await _entry(app, accounts["editor"], "About", kind="page")
    await _entry(app, accounts["editor"], "Draft page", kind="page", state="draft")
    await _entry(app, accounts["editor"], "First post")
    response = await client.get("/sitemap.xml")
    assert response.status_code == 200 and "xml" in response.headers["content-type"]
    assert _sitemap_locations(response.content) == {
        f"{BASE}/",
        f"{BASE}/blog",
        f"{BASE}/about",
        f"{BASE}/blog/first-post",
    }
    root = ElementTree.fromstring(response.content)
    assert all(url.find(f"{SITEMAP}lastmod") is not None for url in root.iter(f"{SITEMAP}url"))


async def test_robots_txt_keeps_crawlers_out_of_admin_and_api(client: httpx.AsyncClient) -> None:
    response = await client.get("/robots.txt")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "User-agent: *" in lines and "Allow: /" in lines
    assert "Disallow: /admin" in lines and "Disallow: /api" in lines
    assert f"Sitemap: {BASE}/sitemap.xml" in lines


async def test_the_sites_own_paths_win_over_page_slugs(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    login = await client.get("/login")
    assert login.status_code == 200 and 'name="password"' in login.text
    admin = await client.get("/admin")
    assert admin.status_code == 303 and admin.headers["location"].startswith("/login")
    assert (await client.get("/favicon.ico")).status_code == 301
    assert (await client.get("/health/live")).status_code == 200
    missing = await client.get("/no-such-page")
    assert missing.status_code == 404 and "We could not find that page" in missing.text


async def test_the_post_page_has_open_graph_tags_and_a_safe_body(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    body = (
        "Hello <script>alert(1)</script>\n\n[x](javascript:alert(1)) and [ok](https://ok.example)"
    )
    entry = await _entry(app, accounts["editor"], "Open graph", body, tags=("Web Dev",))
    async with app.state.sessionmaker() as session:
        meta_description = (await get_entry(session, entry.id)).meta_description
    response = await client.get("/blog/open-graph")
    html = response.text
    assert response.status_code == 200
    assert '<meta property="og:title" content="Open graph">' in html
    assert '<meta property="og:type" content="article">' in html
    assert f'<meta property="og:url" content="{BASE}/blog/open-graph">' in html
    assert '<meta property="og:description" content="Hello &lt;script&gt;' in html
    assert '<meta name="description" content="Hello &lt;script&gt;' in html
    assert meta_description.startswith("Hello")
    assert "by Editor" in html and 'href="/tags/web-dev"' in html
    assert 'href="https://ok.example"' in html
    assert "<script>alert" not in html
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE)


async def test_anonymous_public_pages_set_no_cookie_and_signed_in_readers_keep_a_token(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """Cached or not, an anonymous visitor's public pages (and static files) come without a
    CSRF cookie (they hold no form); the first page with a form sets it, and a signed-in
    reader's public pages carry a token that signs them out."""
    for ttl in (0, 300):
        app = create_app(with_app_settings(settings, cache_ttl=ttl))
        try:
            entry = await _entry(app, accounts["editor"], f"Cookieless {ttl}")
            async with client_for(app) as client:
                for path in ("/", "/blog", f"/blog/{entry.slug}", "/search?q=x", "/feed.xml"):
                    response = await client.get(path)
                    assert response.status_code == 200, (ttl, path)
                    assert "set-cookie" not in response.headers, (ttl, path)
                for path in ("/static/css/app.css", "/favicon.ico", "/health", "/robots.txt"):
                    assert "set-cookie" not in (await client.get(path)).headers, (ttl, path)
                assert "keel_csrf=" in (await client.get("/login")).headers["set-cookie"]
            async with signed_in(app, accounts["viewer"]) as viewer:
                page = await viewer.get(f"/blog/{entry.slug}")
                found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
                assert found, ttl
                del viewer.headers["X-CSRF-Token"]  # the form's own field, as a browser posts it
                signed_out = await viewer.post("/logout", data={"_csrf_token": found.group(1)})
                assert signed_out.status_code in (302, 303), ttl
                assert "Sign in" in (await viewer.get("/")).text
        finally:
            await app.state.engine.dispose()


HEAD_TAGS = {
    "description": re.compile(r'<meta name="description" content="([^"]+)">'),
    "canonical": re.compile(r'<link rel="canonical" href="([^"]+)">'),
    "og:title": re.compile(r'<meta property="og:title" content="([^"]+)">'),
    "og:description": re.compile(r'<meta property="og:description" content="([^"]+)">'),
    "og:url": re.compile(r'<meta property="og:url" content="([^"]+)">'),
}
HTMX_REQUEST = re.compile(r"\shx-(get|post|put|patch|delete)=")
"""An attribute that makes htmx send a request: the page needs htmx."""


def _head(html: str) -> dict[str, str]:
    head = html.split("</head>", 1)[0]
    found = {name: pattern.search(head) for name, pattern in HEAD_TAGS.items()}
    title = re.search(r"<title>([^<]+)</title>", head)
    return {
        "title": title[1] if title else "",
        **{name: match[1] if match else "" for name, match in found.items()},
    }


async def test_every_public_page_has_a_title_description_canonical_address_and_open_graph(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    editor = accounts["editor"]
    await _entry(app, editor, "A zebra story", "Zebras, in a post.", tags=["Wild"])
    await _entry(app, editor, "About", "Zebras, on a page.", kind="page")
    pages = ("/", "/blog", "/tags/wild", "/search?q=zebra", "/about", "/blog/a-zebra-story")
    for path in pages:
        response = await client.get(path + ("&" if "?" in path else "?") + "utm_source=x")
        assert response.status_code == 200, path
        head = _head(response.text)
        assert all(head.values()), (path, head)
        assert head["canonical"] == head["og:url"] == BASE + path, path
        assert head["og:description"] == head["description"], path
    home = _head((await client.get("/")).text)
    assert home["description"] == "A self-hosted site, running on Keel."  # the intro
    assert home["og:title"] == "Keel"
    assert _head((await client.get("/blog/a-zebra-story")).text)["og:title"] == "A zebra story"
    assert _head((await client.get("/blog?page=1")).text)["canonical"] == BASE + "/blog"


async def test_a_post_with_an_image_offers_it_to_link_previews(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    editor = accounts["editor"]
    body = "Text first.\n\n![A zebra](/media/zebra.png)\n\n![Another](https://img.example/b.png)"
    await _entry(app, editor, "With picture", body)
    await _entry(app, editor, "Without picture", "Only words.")
    pictured = (await client.get("/blog/with-picture")).text
    assert f'<meta property="og:image" content="{BASE}/media/zebra.png">' in pictured
    assert '<meta name="twitter:card" content="summary_large_image">' in pictured
    plain = (await client.get("/blog/without-picture")).text
    assert 'property="og:image"' not in plain
    assert '<meta name="twitter:card" content="summary">' in plain


async def test_htmx_is_loaded_only_on_pages_that_use_it(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """A reader's page without an hx- request attribute loads no htmx (51 KB it would not
    use); the blog's pager and a signed-in reader's notification count use it."""
    editor = accounts["editor"]
    for n in range(11):
        await _entry(app, editor, f"Post {n}", "Words.", minutes_ago=60 + n, tags=["Many"])
    await _entry(app, editor, "About", "A page.", kind="page")
    paged = ("/blog", "/blog?page=2", "/tags/many")
    for path in ("/", "/blog", "/blog?page=2", "/blog/post-1", "/about", "/tags/many",
                 "/search?q=about", "/login", "/no-such-page"):  # fmt: skip
        html = (await client.get(path)).text
        loads = "js/htmx.min.js" in html
        assert loads == bool(HTMX_REQUEST.search(html)), path
        assert loads == (path in paged), path
        assert ("hx-boost" in html) == loads, path
    async with signed_in(app, accounts["viewer"]) as reader:
        post = (await reader.get("/blog/post-1")).text
        assert "js/htmx.min.js" in post and HTMX_REQUEST.search(post)
    async with signed_in(app, editor) as admin:
        assert "js/htmx.min.js" in (await admin.get("/admin")).text
