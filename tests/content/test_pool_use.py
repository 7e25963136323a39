"""No request holds one pooled database connection while it waits for another (both legs).

A public page that runs a query on the request's session and then, for the memo of the
site settings and menu or for the next scheduled publication, took a second connection from
the same pool deadlocked the pool once as many such requests were in flight as it has
connections: each held one and waited for another until the pool timeout (issue 12, 24).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.accounts.models import User
from app.asgi import create_app
from app.settings import Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import client_for, signed_in

CONCURRENT = 64


async def _publish(api: httpx.AsyncClient, title: str, at: datetime | None = None) -> dict:
    created = await api.post(
        "/api/v1/content", json={"title": title, "body_markdown": f"{title} text", "tags": ["t"]}
    )
    assert created.status_code == 201, created.text
    body = {"published_at": at.isoformat()} if at else None
    published = await api.post(f"/api/v1/content/{created.json()['id']}/publish", json=body)
    assert published.status_code == 200, published.text
    return published.json()


async def _a_site_with_posts(app: Litestar, admin: User) -> None:
    async with api_as(app, admin) as api:
        for n in range(1, 31):
            await _publish(api, f"Post number {n}")
        await _publish(api, "Tomorrow", datetime.now(UTC) + timedelta(days=1))
        page = await api.post(
            "/api/v1/content", json={"kind": "page", "title": "About", "nav_order": 1}
        )
        await api.post(f"/api/v1/content/{page.json()['id']}/publish")


@pytest.mark.parametrize("cache_ttl", [300, 0], ids=["cache-on", "cache-off"])
async def test_public_pages_right_after_a_save_answer_64_concurrent_visitors(
    settings: Settings, accounts: dict[str, User], cache_ttl: int
) -> None:
    """The default pool (10 + 10 overflow, 5 s timeout): a save starts a new cache
    generation, then 64 anonymous visitors ask for blog pages, search and the home page
    at once. None may get a 5xx."""
    assert (settings.db.pool_size, settings.db.max_overflow) == (10, 10)
    app = create_app(replace(settings, app=replace(settings.app, cache_ttl=cache_ttl)))
    async with app.lifespan():
        await _a_site_with_posts(app, accounts["admin"])
        async with api_as(app, accounts["admin"]) as api:
            saved = await api.post("/api/v1/content", json={"title": "probe", "body_markdown": "x"})
            assert saved.status_code == 201
        paths = [f"/blog?page={n % 6 + 1}" for n in range(CONCURRENT - 8)]
        paths += ["/search?q=number", "/search?q=post&page=2", "/", "/tags/t", "/feed.xml"]
        paths += ["/blog/post-number-3", "/about", "/sitemap.xml"]
        async with client_for(app) as visitor:
            answers = await asyncio.gather(*(visitor.get(path) for path in paths))
    failed = [(path, a.status_code) for path, a in zip(paths, answers, strict=True)]
    failed = [(path, status) for path, status in failed if status >= 500]
    assert failed == []
    assert all(a.status_code == 200 for a in answers[: CONCURRENT - 8])


def _get_routes(app: Litestar) -> list[str]:
    """Every GET route without path parameters (those answer 404 on made-up values)."""
    paths = []
    for route in app.routes:
        if "{" in route.path or route.path.startswith(("/static", "/schema")):
            continue
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler) and "GET" in handler.http_methods:
                paths.append(route.path)
    return sorted(set(paths))


async def test_every_page_and_api_read_answers_with_a_pool_of_one_connection(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """With one pooled connection and no overflow, a request that takes a second one while
    it holds the first waits for itself: the pool timeout (503) shows it at once. Every GET
    route is asked, anonymously and as an admin, right after a public change."""
    db = replace(settings.db, pool_size=1, max_overflow=0, pool_timeout=2.0)
    app = create_app(replace(settings, db=db))
    await _a_site_with_posts(app, accounts["admin"])
    paths = [*_get_routes(app), "/blog/post-number-3", "/about", "/tags/t", "/search?q=post"]
    stuck = []
    async with (
        client_for(app) as visitor,
        signed_in(app, accounts["admin"]) as admin,
        api_as(app, accounts["admin"]) as api,
    ):
        for path in paths:
            for client in (visitor, api if path.startswith("/api/") else admin):
                await app.state.page_cache.invalidate()
                answer = await client.get(path)
                if answer.status_code >= 500:
                    stuck.append((path, answer.status_code))
    await app.state.engine.dispose()
    await app.state.reads.close()
    assert stuck == []


async def test_a_new_generation_looks_up_the_next_publication_once_per_process(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """Every request in flight after a public change needs the memo and the publication
    bound: one lookup serves them all, and a visitor who leaves does not fail the others."""
    app = create_app(settings)
    cache = app.state.page_cache
    asked = 0
    lookup = cache.next_publication

    async def counted() -> float | None:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05)
        return await lookup()

    cache.next_publication = counted
    async with app.lifespan():
        await _a_site_with_posts(app, accounts["admin"])
        await cache.invalidate()
        asked = 0
        leaving = asyncio.ensure_future(cache.publication_bound())
        await asyncio.sleep(0.01)
        leaving.cancel()
        bounds = await asyncio.gather(*(cache.publication_bound() for _ in range(CONCURRENT)))
        async with client_for(app) as visitor:
            pages = await asyncio.gather(*(visitor.get("/blog") for _ in range(8)))
    assert asked == 1
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert len(set(bounds)) == 1
    assert bounds[0] == pytest.approx(tomorrow.timestamp(), abs=120)
    assert [page.status_code for page in pages] == [200] * 8
