"""`/admin/system`: the parts Keel runs on, for admins (both legs)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import httpx
from litestar import Litestar

from app.core.migrations import head_revision
from tests.accounts.test_users_api import api_as
from tests.conftest import bearer, client_for, signed_in

Act = Callable[[httpx.AsyncClient], Awaitable[None]]


async def test_admins_see_database_pools_migration_store_queues_disk_and_configuration(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["admin"]) as api:
        queued = await api.post("/api/v1/jobs", json={"type": "cleanup", "payload": {}})
        assert queued.status_code in (201, 202), queued.text
    async with signed_in(app, accounts["admin"]) as browser:
        page = await browser.get("/admin/system")
    assert page.status_code == 200, page.text
    text = page.text
    assert f"(newest: {head_revision()}) · up to date" in text
    assert re.search(r'data-pool="requests"><td>Requests</td><td>\d+</td><td>\d+</td>', text)
    assert re.search(r'data-pool="reads"><td>Reads</td><td>\d+</td><td>\d+</td>', text)
    assert 'data-queue="default"><td>default</td><td>1</td>' in text
    assert "Data (VAR_DIR)" in text and "GiB" in text
    store_kind = app.state.runtime.store.kind
    assert f"<dt>Kind</dt><dd>{store_kind}</dd>" in text
    assert "<dt>secret_key</dt><dd>(set)</dd>" in text
    assert app.state.runtime.settings.app.secret_key not in text
    assert 'href="/admin/system"' in text  # in the admin menu


async def test_a_database_url_with_a_password_is_shown_without_it() -> None:
    from app.settings import DatabaseSettings, Settings
    from app.system.services.system import configuration

    settings = Settings(db=DatabaseSettings(url="postgresql+asyncpg://keel:hunter2@db/keel"))
    shown = configuration(settings)
    assert shown["db"]["url"] == "postgresql+asyncpg://keel:***@db/keel"
    assert "hunter2" not in str(shown)


async def test_the_system_page_is_for_admins_only(app: Litestar, accounts: dict) -> None:
    for role in ("viewer", "editor"):
        async with signed_in(app, accounts[role]) as browser:
            page = await browser.get("/admin/system")
            assert page.status_code == 403, role
            dashboard = await browser.get("/admin")
            assert 'href="/admin/system"' not in dashboard.text


def _counts(text: str, figures: str, pattern: str) -> tuple[int, ...]:
    """The numbers the system page shows in its `data-{figures}` field."""
    found = re.search(rf"data-{figures}>{pattern}", text)
    assert found, f"no {figures} figures on the page"
    return tuple(int(n.replace(",", "")) for n in found.groups())


def _cache_requests(text: str) -> tuple[int, ...]:
    return _counts(text, "cache-requests", r"([\d,]+) hits · ([\d,]+) misses · ([\d,]+) bypassed")


def _metric(text: str, name: str, result: str) -> int:
    found = re.search(rf'^{name}\{{result="{result}"\}} (\d+)$', text, re.M)
    return int(found.group(1)) if found else 0


async def _shown_around(
    app: Litestar, accounts: dict, figures: Callable[[str], tuple[int, ...]], act: Act
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """What `act` added to the `figures` the system page shows, what it shows after it, and
    /metrics then."""
    async with signed_in(app, accounts["admin"]) as browser:
        before = figures((await browser.get("/admin/system")).text)
        await act(browser)
        after = figures((await browser.get("/admin/system")).text)
        scraped = (await browser.get("/metrics")).text
    return tuple(a - b for a, b in zip(after, before, strict=True)), after, scraped


async def test_a_cache_miss_then_a_hit_are_counted_in_metrics_and_shown(
    app: Litestar, accounts: dict
) -> None:
    async def visit(browser: httpx.AsyncClient) -> None:
        async with client_for(app) as visitor:
            first = await visitor.get("/blog")
            second = await visitor.get("/blog")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        await browser.get("/blog")  # signed in: rendered for the caller, not from the cache

    added, shown, scraped = await _shown_around(app, accounts, _cache_requests, visit)
    assert added == (1, 1, 1)
    name = "keel_page_cache_requests_total"
    assert (_metric(scraped, name, "hit"), _metric(scraped, name, "miss")) == shown[:2]


def _list_requests(text: str) -> tuple[int, ...]:
    return _counts(text, "list-requests", r"([\d,]+) hits · ([\d,]+) misses")


async def test_editors_lists_kept_and_read_are_counted_and_shown(
    app: Litestar, accounts: dict
) -> None:
    editor = await bearer(app, accounts["editor"])

    async def list_three_times(_: httpx.AsyncClient) -> None:
        async with client_for(app) as client:
            for _ in range(3):
                assert (await client.get("/api/v1/content", headers=editor)).status_code == 200

    added, shown, scraped = await _shown_around(app, accounts, _list_requests, list_three_times)
    assert added == (2, 1)
    assert _metric(scraped, "keel_list_cache_requests_total", "hit") == shown[0]
