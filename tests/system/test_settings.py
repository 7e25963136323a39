"""Runtime settings an admin changes: app/system/services/settings.py, `/api/v1/settings`
and `/admin/settings` (both legs)."""

from __future__ import annotations

from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import PASSWORD, client_for, signed_in, with_csrf


async def _changes(app: Litestar) -> list[tuple[str, dict]]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry).where(AuditEntry.action == "setting.changed")
        return [(entry.resource_id, entry.details) for entry in await session.scalars(query)]


async def test_the_api_lists_every_setting_with_its_value_help_and_limits(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["admin"]) as client:
        listed = await client.get("/api/v1/settings")
        one = await client.get("/api/v1/settings/api_rate_limit_per_minute")
    assert listed.status_code == 200
    names = {item["name"] for item in listed.json()["items"]}
    assert {"site_title", "site_intro", "registration_open", "upload_max_bytes"} <= names
    assert listed.json()["total"] == len(names)
    body = one.json()
    assert body["value"] == body["default"] == 600 and body["type"] == "integer"
    assert body["minimum"] == 1 and body["help"] and body["title"]


async def test_only_admins_reach_the_settings(app: Litestar, accounts: dict) -> None:
    for role in ("viewer", "editor"):
        async with api_as(app, accounts[role]) as client:
            assert_problem(await client.get("/api/v1/settings"), 403)
            put = await client.put("/api/v1/settings/site_title", json={"value": "Mine"})
            assert_problem(put, 403)
    async with client_for(app) as anonymous:
        assert_problem(await anonymous.get("/api/v1/settings"), 401)
    assert await _changes(app) == []


async def test_a_change_is_audited_with_old_and_new_and_shows_on_public_pages(
    app: Litestar, accounts: dict
) -> None:
    async with client_for(app) as visitor:
        assert "A self-hosted site, running on Keel." in (await visitor.get("/")).text
        await visitor.get("/")  # kept by the page cache
        async with api_as(app, accounts["admin"]) as client:
            put = await client.put(
                "/api/v1/settings/site_intro", json={"value": "Notes from the garden."}
            )
            assert put.status_code == 200 and put.json()["value"] == "Notes from the garden."
            again = await client.put(
                "/api/v1/settings/site_intro", json={"value": "Notes from the garden."}
            )
            assert again.status_code == 200
        home = (await visitor.get("/")).text
    assert "Notes from the garden." in home and "running on Keel" not in home
    assert await _changes(app) == [
        (
            "site_intro",
            {"old": "A self-hosted site, running on Keel.", "new": "Notes from the garden."},
        )
    ]  # the unchanged second write is no change


async def test_a_value_that_does_not_fit_is_a_422_naming_the_setting(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["admin"]) as client:
        low = await client.put("/api/v1/settings/api_rate_limit_per_minute", json={"value": 0})
        text = await client.put(
            "/api/v1/settings/api_rate_limit_per_minute", json={"value": "many"}
        )
        blank = await client.put("/api/v1/settings/site_title", json={"value": "  "})
        unknown = await client.put("/api/v1/settings/no_such_thing", json={"value": 1})
        shape = await client.put("/api/v1/settings/site_title", json={"val": "x"})
    assert (
        "at least 1"
        in assert_problem(low, 422, "api_rate_limit_per_minute")["errors"][0]["message"]
    )
    assert_problem(text, 422, "api_rate_limit_per_minute")
    assert_problem(blank, 422, "site_title")
    assert_problem(unknown, 404)
    assert shape.status_code == 400
    assert await _changes(app) == []


async def test_the_form_shows_every_error_beside_its_field_and_saves_nothing(
    app: Litestar, accounts: dict
) -> None:
    async with signed_in(app, accounts["admin"]) as browser:
        page = await browser.get("/admin/settings")
        assert page.status_code == 200 and 'name="site_title"' in page.text
        refused = await browser.post(
            "/admin/settings",
            data={
                "site_title": "",
                "site_intro": "A new intro",
                "api_rate_limit_per_minute": "0",
                "upload_max_bytes": "lots",
                "audit_retention_days": "365",
                "job_retention_days": "30",
            },
        )
        assert refused.status_code == 422
        for name in ("site_title", "api_rate_limit_per_minute", "upload_max_bytes"):
            assert f'id="e-{name}"' in refused.text, name
        assert 'value="A new intro"' in refused.text or ">A new intro<" in refused.text
        assert await _changes(app) == []  # the valid intro was not saved either

        saved = await browser.post(
            "/admin/settings",
            data={
                "site_title": "Garden notes",
                "site_intro": "A new intro",
                "api_rate_limit_per_minute": "600",
                "upload_max_bytes": str(10 * 1024 * 1024),
                "audit_retention_days": "365",
                "job_retention_days": "30",
                "registration_open": "on",
            },
        )
        assert saved.status_code == 303
        shown = await browser.get(saved.headers["location"])
    assert "Settings saved" in shown.text
    changed = {name for name, _ in await _changes(app)}
    assert changed == {"site_title", "site_intro", "registration_open"}


async def test_viewers_do_not_see_the_settings_page(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["editor"]) as browser:
        page = await browser.get("/admin/settings")
        menu = await browser.get("/admin")
    assert page.status_code == 403
    assert "/admin/settings" not in menu.text


async def test_a_change_made_by_one_process_is_seen_by_another(
    app: Litestar, accounts: dict, settings
) -> None:
    from app.asgi import create_app

    other = create_app(settings)
    async with other.lifespan(), client_for(other) as visitor:
        await visitor.get("/")
        await visitor.get("/")  # the home page, kept by the other process's page cache
        async with api_as(app, accounts["admin"]) as client:
            await client.put("/api/v1/settings/site_title", json={"value": "Shared title"})
        assert (await visitor.get("/api/v1/site")).json()["title"] == "Shared title"
        if app.state.store.kind != "memory":  # processes share a page cache only on Valkey
            assert "Shared title" in (await visitor.get("/")).text


async def test_the_tagline_shows_in_the_header_and_describes_the_home_page_and_the_blog(
    app: Litestar, accounts: dict
) -> None:
    async with client_for(app) as visitor:
        before = (await visitor.get("/")).text
        assert 'class="tagline"' not in before
        assert '<meta name="description" content="A self-hosted site, running on Keel.">' in before
        async with api_as(app, accounts["admin"]) as admin:
            too_long = await admin.put("/api/v1/settings/site_tagline", json={"value": "x" * 151})
            assert_problem(too_long, 422, "site_tagline")
            put = await admin.put(
                "/api/v1/settings/site_tagline", json={"value": "Tides, boats & weather"}
            )
            assert put.status_code == 200, put.text
        home = (await visitor.get("/")).text
        blog = (await visitor.get("/blog")).text
    assert '<span class="tagline">Tides, boats &amp; weather</span>' in home
    assert "<title>Keel · Tides, boats &amp; weather</title>" in home
    for page in (home, blog):
        assert '<meta name="description" content="Tides, boats &amp; weather">' in page


async def test_registered_accounts_get_the_default_role_which_is_never_admin(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["admin"]) as admin:
        for refused in ("admin", "guest"):  # a guest is no account: registering would fail
            assert_problem(
                await admin.put("/api/v1/settings/default_role", json={"value": refused}),
                422,
                "default_role",
            )
        for name, value in (("registration_open", True), ("default_role", "editor")):
            put = await admin.put(f"/api/v1/settings/{name}", json={"value": value})
            assert put.status_code == 200, put.text
    async with client_for(app) as visitor:
        await with_csrf(visitor, "/register")
        registered = await visitor.post(
            "/register",
            data={
                "email": "writer@example.org",
                "username": "writer",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        assert registered.status_code == 303, registered.text
    async with app.state.sessionmaker() as session:
        role = await session.scalar(select(User.role).where(User.username == "writer"))
    assert role == "editor"
