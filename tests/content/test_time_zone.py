"""The site's time zone (the `time_zone` setting): pages show times in it, forms read
typed times in it, the API stays in UTC (both legs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

import httpx
from litestar import Litestar

from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import client_for, signed_in
from tests.content.test_admin import create, load


async def _set_zone(app: Litestar, admin: object, zone: str) -> None:
    async with api_as(app, admin) as client:
        put = await client.put("/api/v1/settings/time_zone", json={"value": zone})
    assert put.status_code == 200, put.text


async def _publish_in_berlin(
    app: Litestar, accounts: dict, typed: str
) -> tuple[UUID, httpx.Response, httpx.Response]:
    """An editor publishes a new post at `typed` on a site in Europe/Berlin: the entry's
    id, the answer to the publish form and the content list after it."""
    await _set_zone(app, accounts["admin"], "Europe/Berlin")
    async with signed_in(app, accounts["editor"]) as client:
        entry_id = await create(client)
        published = await client.post(
            f"/admin/content/{entry_id}/publish", data={"published_at": typed}
        )
        listing = await client.get("/admin/content")
    return entry_id, published, listing


async def test_a_time_typed_in_berlin_is_stored_in_utc_and_listed_in_berlin_time(
    app: Litestar, accounts: dict
) -> None:
    entry_id, published, listing = await _publish_in_berlin(app, accounts, "2027-03-01T09:00")
    assert published.status_code == 303, published.text
    async with signed_in(app, accounts["editor"]) as client:
        page = await client.get(f"/admin/content/{entry_id}")
    assert "Publish time (Europe/Berlin)" in page.text
    async with api_as(app, accounts["editor"]) as client:
        api = await client.get(f"/api/v1/content/{entry_id}")
    entry = await load(app, entry_id)
    assert entry is not None and entry.published_at == datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    assert "2027-03-01 09:00 CET" in listing.text
    assert "2027-03-01 08:00" not in listing.text
    assert api.json()["published_at"].startswith("2027-03-01T08:00:00")  # the API keeps UTC


async def test_a_time_the_clocks_skip_is_an_error_beside_the_field_and_nothing_changes(
    app: Litestar, accounts: dict
) -> None:
    entry_id, refused, _ = await _publish_in_berlin(app, accounts, "2027-03-28T02:30")
    assert refused.status_code == 400
    assert re.search(r'id="e-published_at">[^<]*does not exist in Europe/Berlin', refused.text)
    assert 'value="2027-03-28T02:30"' in refused.text  # the typed time is kept
    entry = await load(app, entry_id)
    assert entry is not None and entry.status == "draft"


async def test_a_time_the_clocks_repeat_is_the_first_of_the_two(
    app: Litestar, accounts: dict
) -> None:
    entry_id, _, listing = await _publish_in_berlin(app, accounts, "2027-10-31T02:30")
    entry = await load(app, entry_id)
    assert entry is not None and entry.published_at == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    assert "2027-10-31 02:30 CEST" in listing.text


async def test_an_unknown_zone_is_a_422_and_an_error_beside_the_field(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["admin"]) as client:
        refused = await client.put("/api/v1/settings/time_zone", json={"value": "Mars/Olympus"})
        current = await client.get("/api/v1/settings/time_zone")
    assert_problem(refused, 422)
    assert "IANA name" in refused.text
    assert current.json()["value"] == "UTC"
    async with signed_in(app, accounts["admin"]) as admin:
        saved = await admin.post(
            "/admin/settings", data={"site_title": "Keel", "time_zone": "Europe/Nowhere"}
        )
    assert saved.status_code == 422
    assert re.search(r'id="e-time_zone">[^<]*IANA name', saved.text)
    assert 'value="Europe/Nowhere"' in saved.text


async def test_public_post_dates_follow_a_zone_change_past_the_page_cache(
    app: Litestar, accounts: dict
) -> None:
    """A post published at 23:30 UTC is dated the next day in Tokyo: the cached blog
    page gets the new date as soon as the setting changes."""
    async with signed_in(app, accounts["editor"]) as client:
        entry_id = await create(client, title="Late news")
        await client.post(
            f"/admin/content/{entry_id}/publish", data={"published_at": "2026-01-05T23:30"}
        )
    async with client_for(app) as visitor:
        before = (await visitor.get("/blog")).text
        cached = await visitor.get("/blog")
        assert cached.headers.get("x-cache") == "hit"
        await _set_zone(app, accounts["admin"], "Asia/Tokyo")
        after = (await visitor.get("/blog")).text
    assert "5 January 2026" in before and "6 January 2026" not in before
    assert "6 January 2026" in after and "5 January 2026" not in after


async def test_pages_show_the_zone_beside_each_time(app: Litestar, accounts: dict) -> None:
    await _set_zone(app, accounts["admin"], "America/New_York")
    async with signed_in(app, accounts["admin"]) as admin:
        audit = await admin.get("/admin/audit")
        account = await admin.get("/account")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T", audit.text)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d E[SD]T", account.text)  # sessions
