"""Which content changes start a new page cache generation (both legs).

A new generation empties every cached public page on every replica, so only what visitors
can see may start one: publishing, unpublishing, edits and deletions of public entries,
and a schedule that moves the next publication earlier (issue 12, item 25). Everything
goes through the API, so the request's session provider runs the after-commit hook.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.asgi import create_app
from app.content.services.page_cache import GENERATION_KEY
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import SteppedClock, bearer, client_for, stopped_clock


@asynccontextmanager
async def running_site(
    settings: Settings, accounts: dict[str, User]
) -> AsyncIterator[tuple[Litestar, httpx.AsyncClient, httpx.AsyncClient]]:
    """The app with its page cache running, an editor's API client and a visitor."""
    app = create_app(settings)
    user = accounts["editor"]
    async with app.lifespan(), client_for(app) as editor, client_for(app) as visitor:
        editor.headers.update(await bearer(app, user))
        yield app, editor, visitor


async def generation(app: Litestar) -> int:
    return int(await app.state.store.get(GENERATION_KEY) or 0)


async def create(editor: httpx.AsyncClient, title: str, **fields: object) -> str:
    created = await editor.post("/api/v1/content", json={"title": title, **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def publish(editor: httpx.AsyncClient, entry_id: str, at: datetime | None = None) -> None:
    body = {"published_at": at.isoformat()} if at is not None else None
    published = await editor.post(f"/api/v1/content/{entry_id}/publish", json=body)
    assert published.status_code == 200, published.text


async def cached_blog(visitor: httpx.AsyncClient) -> httpx.Response:
    """/blog, asked until the cache holds it (the first answer may be the miss)."""
    await visitor.get("/blog")
    page = await visitor.get("/blog")
    assert page.headers["x-cache"] == "hit"
    return page


async def test_work_on_drafts_keeps_every_cached_page(
    settings: Settings, accounts: dict[str, User]
) -> None:
    async with running_site(settings, accounts) as (site, editor, visitor):
        await _work_on_drafts(site, editor, visitor)


async def _work_on_drafts(
    site: Litestar, editor: httpx.AsyncClient, visitor: httpx.AsyncClient
) -> None:
    await publish(editor, await create(editor, "Out there"))
    await cached_blog(visitor)
    before = await generation(site)

    draft = await create(editor, "Half done", body_markdown="first words", tags=["Ideas"])
    edited = await editor.patch(f"/api/v1/content/{draft}", json={"body_markdown": "more"})
    assert edited.status_code == 200
    page = await create(editor, "Future page", kind="page", nav_order=3)
    assert (await editor.post(f"/api/v1/content/{page}/unpublish")).status_code == 200
    assert (await editor.delete(f"/api/v1/content/{page}")).status_code == 204

    assert await generation(site) == before
    still = await visitor.get("/blog")
    assert still.headers["x-cache"] == "hit" and "Out there" in still.text


@pytest.mark.parametrize("change", ["edit", "unpublish", "delete", "publish another"])
async def test_a_change_visitors_can_see_reaches_them_at_once(
    settings: Settings, accounts: dict[str, User], change: str
) -> None:
    async with running_site(settings, accounts) as (site, editor, visitor):
        await _visible_change(site, editor, visitor, change)


async def _visible_change(
    site: Litestar, editor: httpx.AsyncClient, visitor: httpx.AsyncClient, change: str
) -> None:
    entry = await create(editor, "Out there")
    await publish(editor, entry)
    await cached_blog(visitor)
    before = await generation(site)

    if change == "edit":
        await editor.patch(f"/api/v1/content/{entry}", json={"title": "Renamed"})
        expected = "Renamed"
    elif change == "unpublish":
        await editor.post(f"/api/v1/content/{entry}/unpublish")
        expected = None
    elif change == "delete":
        await editor.delete(f"/api/v1/content/{entry}")
        expected = None
    else:
        await publish(editor, await create(editor, "Second story"))
        expected = "Second story"

    assert await generation(site) == before + 1
    page = await visitor.get("/blog")
    assert page.headers["x-cache"] == "miss"
    assert ("Out there" in page.text) == (change in ("publish another",))
    if expected:
        assert expected in page.text


async def test_a_scheduled_post_appears_on_time_and_a_later_schedule_keeps_the_cache(
    settings: Settings, accounts: dict[str, User]
) -> None:
    async with running_site(settings, accounts) as (site, editor, visitor):
        with stopped_clock(site) as clock:
            await _schedules(site, editor, visitor, clock)


async def _schedules(
    site: Litestar, editor: httpx.AsyncClient, visitor: httpx.AsyncClient, clock: SteppedClock
) -> None:
    now = clock.now()
    await publish(editor, await create(editor, "Out there"))
    await publish(editor, await create(editor, "Tomorrow"), now + timedelta(days=1))
    await cached_blog(visitor)
    before = await generation(site)

    await publish(editor, await create(editor, "Next week"), now + timedelta(days=7))
    assert await generation(site) == before  # the next publication is still tomorrow's
    assert (await visitor.get("/blog")).headers["x-cache"] == "hit"

    soon = now + timedelta(hours=1)
    await publish(editor, await create(editor, "Very soon"), soon)
    assert await generation(site) == before + 1  # earlier than any cached page's bound
    assert "Very soon" not in (await cached_blog(visitor)).text
    clock.advance(timedelta(hours=1))  # nobody acts: the time comes
    assert "Very soon" in (await visitor.get("/blog")).text


async def as_admin(site: Litestar, accounts: dict[str, User]) -> dict[str, str]:
    return await bearer(site, accounts["admin"])


async def cached_post(visitor: httpx.AsyncClient, slug: str) -> httpx.Response:
    await visitor.get(f"/blog/{slug}")
    page = await visitor.get(f"/blog/{slug}")
    assert page.headers["x-cache"] == "hit"
    return page


@pytest.mark.parametrize("change", ["rename", "delete"])
async def test_renaming_or_deleting_the_author_of_a_public_post_reaches_visitors(
    settings: Settings, accounts: dict[str, User], change: str
) -> None:
    """A post page names its author ("by Editor"), and the API's list can be filtered by
    author: both change when the author is renamed or deleted."""
    async with running_site(settings, accounts) as (site, editor, visitor):
        entry = await create(editor, "Signed story")
        await publish(editor, entry)
        slug = (await editor.get(f"/api/v1/content/{entry}")).json()["slug"]
        assert "by Editor" in (await cached_post(visitor, slug)).text
        before = await generation(site)

        user = f"/api/v1/users/{accounts['editor'].id}"
        admin = await as_admin(site, accounts)
        if change == "rename":
            renamed = await visitor.patch(user, json={"display_name": "Ed Itor"}, headers=admin)
            assert renamed.status_code == 200, renamed.text
        else:
            assert (await visitor.delete(user, headers=admin)).status_code == 204

        assert await generation(site) == before + 1
        page = await visitor.get(f"/blog/{slug}")
        assert page.headers["x-cache"] == "miss" and "by Editor" not in page.text
        assert ("by Ed Itor" in page.text) == (change == "rename")


async def test_accounts_and_settings_visitors_never_see_keep_every_cached_page(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """Renaming or deleting someone who authors no public entry (a draft does not count),
    changing a setting that no public page shows, or saving a public one unchanged."""
    async with running_site(settings, accounts) as (site, editor, visitor):
        await publish(editor, await create(editor, "Out there"))
        await cached_blog(visitor)
        before = await generation(site)

        admin = await as_admin(site, accounts)
        viewer = f"/api/v1/users/{accounts['viewer'].id}"
        renamed = await visitor.patch(viewer, json={"display_name": "Vee"}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        assert (await visitor.delete(viewer, headers=admin)).status_code == 204
        created = await visitor.post(
            "/api/v1/users",
            json={
                "email": "drafter@example.org",
                "username": "drafter",
                "password": "a long enough passphrase 7",
                "role": "editor",
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        drafter = f"/api/v1/users/{created.json()['id']}"
        async with site.state.sessionmaker() as session:
            drafter_user = await session.get(User, created.json()["id"])
        assert drafter_user is not None
        as_drafter = await bearer(site, drafter_user)
        unfinished = {"title": "Unfinished"}
        drafted = await visitor.post("/api/v1/content", json=unfinished, headers=as_drafter)
        assert drafted.status_code == 201, drafted.text
        renamed = await visitor.patch(drafter, json={"display_name": "Drafty"}, headers=admin)
        assert renamed.status_code == 200, renamed.text

        async with site.state.sessionmaker() as session, session.begin():
            await write_setting(session, "registration_open", True)
            await write_setting(session, "api_rate_limit_per_minute", 1000)
            await write_setting(session, "site_title", "Keel")  # its value already
        await site.state.events.deliver(session)

        assert await generation(site) == before
        assert (await visitor.get("/blog")).headers["x-cache"] == "hit"

        async with site.state.sessionmaker() as session, session.begin():
            await write_setting(session, "site_title", "Harbour Notes")
        await site.state.events.deliver(session)
        assert await generation(site) == before + 1
        assert "Harbour Notes" in (await visitor.get("/blog")).text
