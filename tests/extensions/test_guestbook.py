"""The guestbook shipped with Keel (plugins/guestbook), installed and activated through
the admin API as an admin would, then used as visitors, editors and viewers would (both
legs)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.asgi import create_app
from app.extensions.services.host import PluginHost
from app.settings import ROOT, Settings
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import bearer, client_for, signed_in, stopped_clock, with_app_settings

GUESTBOOK = ROOT / "plugins" / "guestbook"
ENTRIES = "/api/plugins/guestbook/entries"
PAGE = "/p/guestbook/"
MODERATION = "/admin/plugins/guestbook/"
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
PER_HOUR = 5
"""The manifest's default `entries_per_hour`."""


@pytest.fixture
async def site(
    settings: Settings, accounts: dict[str, User], tmp_path: Path
) -> AsyncIterator[Litestar]:
    """The app over a PLUGINS_DIR holding a copy of the guestbook, installed and active
    (without the app's lifespan: `synced` brings a change in); uninstalled after."""
    plugins_dir = tmp_path / "plugins"
    shutil.copytree(GUESTBOOK, plugins_dir / "guestbook")
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    async with api_as(app, accounts["admin"]) as admin:
        installed = await admin.post("/api/v1/plugins/guestbook/install")
        assert installed.status_code == 200, installed.text
        activated = await admin.post("/api/v1/plugins/guestbook/activate")
        assert activated.json()["status"] == "active", activated.text
    await synced(app)
    yield app
    async with api_as(app, accounts["admin"]) as admin:  # its storage goes with it
        gone = await admin.post("/api/v1/plugins/guestbook/uninstall", json={"confirm": True})
        assert gone.status_code == 204, gone.text
    await app.state.runtime.service(PluginHost).stop()
    await app.state.runtime.close()


async def synced(app: Litestar) -> None:
    await app.state.runtime.service(PluginHost).sync()


async def listed(app: Litestar) -> list[str]:
    """The names on the public list of entries (approved ones), newest first."""
    async with client_for(app) as anyone:
        answer = await anyone.get(ENTRIES)
    assert answer.status_code == 200, answer.text
    return [item["name"] for item in answer.json()["items"]]


async def sign(client: httpx.AsyncClient, name: str, message: str = "Lovely site!") -> int:
    answer = await client.post(ENTRIES, json={"name": name, "message": message})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "pending"
    return int(answer.json()["id"])


async def page_token(client: httpx.AsyncClient) -> str:
    """The CSRF token the page's form holds (for a visitor: of the cookie it sets)."""
    page = await client.get(PAGE)
    assert page.status_code == 200, page.text
    found = CSRF_FIELD.search(page.text)
    assert found, page.text
    return found.group(1)


# -- the API ------------------------------------------------------------------------------


async def test_a_new_entry_is_pending_until_an_editor_approves_it(
    site: Litestar, accounts: dict
) -> None:
    async with client_for(site) as visitor:
        entry_id = await sign(visitor, "Ada", "Hello from Ada")
    assert await listed(site) == []
    async with api_as(site, accounts["editor"]) as editor:
        approved = await editor.post(f"{ENTRIES}/{entry_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        assert (await editor.post(f"{ENTRIES}/{entry_id}/approve")).status_code == 200
        assert_problem(await editor.post(f"{ENTRIES}/99999/approve"), 404)
    async with client_for(site) as anyone:
        body = (await anyone.get(ENTRIES)).json()
    assert body["items"] == [
        {
            "id": entry_id,
            "name": "Ada",
            "message": "Hello from Ada",
            "status": "approved",
            "created_at": body["items"][0]["created_at"],
        }
    ]
    assert (body["total"], body["page"], body["per_page"]) == (1, 1, 20)


async def test_viewers_and_visitors_may_not_approve(site: Litestar, accounts: dict) -> None:
    async with client_for(site) as visitor:
        entry_id = await sign(visitor, "Eve")
        assert_problem(await visitor.post(f"{ENTRIES}/{entry_id}/approve"), 401)
        assert_problem(await visitor.delete(f"{ENTRIES}/{entry_id}"), 401)
    async with api_as(site, accounts["viewer"]) as viewer:
        assert_problem(await viewer.post(f"{ENTRIES}/{entry_id}/approve"), 403)
        assert_problem(await viewer.delete(f"{ENTRIES}/{entry_id}"), 403)
    assert await listed(site) == []


async def test_an_editor_deletes_an_entry(site: Litestar, accounts: dict) -> None:
    async with client_for(site) as visitor:
        entry_id = await sign(visitor, "Spammer")
    async with api_as(site, accounts["editor"]) as editor:
        assert (await editor.delete(f"{ENTRIES}/{entry_id}")).status_code == 204
        assert_problem(await editor.delete(f"{ENTRIES}/{entry_id}"), 404)
        assert_problem(await editor.post(f"{ENTRIES}/{entry_id}/approve"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "message": "Hi"}, "name"),
        ({"name": "   ", "message": "Hi"}, "name"),
        ({"message": "Hi"}, "name"),
        ({"name": 42, "message": "Hi"}, "name"),
        ({"name": "x" * 81, "message": "Hi"}, "name"),
        ({"name": "Ada", "message": ""}, "message"),
        ({"name": "Ada", "message": "\n\t "}, "message"),
        ({"name": "Ada", "message": "x" * 2001}, "message"),
    ],
)
async def test_a_blank_or_too_long_name_or_message_is_a_422_naming_the_field(
    site: Litestar, body: dict, field: str
) -> None:
    async with client_for(site) as visitor:
        refused = await visitor.post(ENTRIES, json=body)
    problem = assert_problem(refused, 422, field)
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_both_fields_wrong_name_both(site: Litestar) -> None:
    async with client_for(site) as visitor:
        refused = await visitor.post(ENTRIES, json={"name": "", "message": ""})
    problem = assert_problem(refused, 422)
    assert {error["field"] for error in problem["errors"]} == {"name", "message"}


async def test_without_approval_new_entries_are_listed_at_once(
    site: Litestar, accounts: dict
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        saved = await admin.put(
            "/api/v1/plugins/guestbook/settings", json={"values": {"needs_approval": False}}
        )
        assert saved.status_code == 200, saved.text
    await synced(site)  # a settings change loads the plugin again, with them
    async with client_for(site) as visitor:
        answer = await visitor.post(ENTRIES, json={"name": "Grace", "message": "Hi!"})
    assert answer.status_code == 201 and answer.json()["status"] == "approved"
    assert await listed(site) == ["Grace"]


async def test_the_list_is_paginated_newest_first(site: Litestar, accounts: dict) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        await admin.put(
            "/api/v1/plugins/guestbook/settings", json={"values": {"needs_approval": False}}
        )
    await synced(site)
    for number in range(3):
        async with client_for(site, f"198.51.100.{number}") as visitor:
            await visitor.post(ENTRIES, json={"name": f"Visitor {number}", "message": "Hi"})
    async with client_for(site) as anyone:
        first = (await anyone.get(ENTRIES, params={"per_page": 2})).json()
        second = (await anyone.get(ENTRIES, params={"per_page": 2, "page": 2})).json()
        far = (await anyone.get(ENTRIES, params={"page": 10**30, "per_page": -5})).json()
    assert [item["name"] for item in first["items"]] == ["Visitor 2", "Visitor 1"]
    assert [item["name"] for item in second["items"]] == ["Visitor 0"]
    assert (first["total"], second["page"]) == (3, 2)
    assert far["items"] == [] and far["per_page"] == 1


async def test_one_address_signs_at_most_entries_per_hour_times(site: Litestar) -> None:
    async with client_for(site) as visitor:
        for number in range(PER_HOUR):
            await sign(visitor, f"Visitor {number}")
        refused = await visitor.post(ENTRIES, json={"name": "Once more", "message": "Hi"})
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
        token = await page_token(visitor)
        page = await visitor.post(
            PAGE, data={"name": "Once more", "message": "Hi", "_csrf_token": token}
        )
    assert page.status_code == 429
    assert "You have signed 5 times" in page.text
    assert 'value="Once more"' in page.text  # what they wrote is kept
    async with client_for(site, "198.51.100.9") as another:
        await sign(another, "Someone else")


async def test_the_count_starts_again_in_the_next_hour(site: Litestar) -> None:
    with stopped_clock(site) as clock:
        async with client_for(site) as visitor:
            for number in range(PER_HOUR):
                await sign(visitor, f"Visitor {number}")
            assert_problem(await visitor.post(ENTRIES, json={"name": "A", "message": "B"}), 429)
            clock.advance(timedelta(hours=1))
            await sign(visitor, "An hour later")


# -- the pages ------------------------------------------------------------------------------


async def test_the_page_form_needs_the_csrf_token(site: Litestar, accounts: dict) -> None:
    async with client_for(site) as visitor:
        forged = await visitor.post(PAGE, data={"name": "Mallory", "message": "Hi"})
        assert forged.status_code == 403
        token = await page_token(visitor)
        signed = await visitor.post(
            PAGE, data={"name": "Ada", "message": "Hi there", "_csrf_token": token}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/p/guestbook/?signed=pending"
        thanked = await visitor.get(signed.headers["location"])
    assert "once an editor approves it" in thanked.text
    assert "Hi there" not in thanked.text  # pending: not shown yet
    async with signed_in(site, accounts["editor"]) as editor_browser:
        moderation = await editor_browser.get(MODERATION)
    assert moderation.status_code == 200 and "Hi there" in moderation.text
    assert await listed(site) == []


async def test_a_blank_form_comes_back_with_both_errors_beside_their_fields(
    site: Litestar,
) -> None:
    async with client_for(site) as visitor:
        token = await page_token(visitor)
        blank = await visitor.post(PAGE, data={"name": "Ada", "message": "", "_csrf_token": token})
        both = await visitor.post(PAGE, data={"name": "", "message": " ", "_csrf_token": token})
        long_name = await visitor.post(
            PAGE, data={"name": "A" * 81, "message": "Kept <b>as typed</b>", "_csrf_token": token}
        )
    assert blank.status_code == 400
    assert 'id="e-message"' in blank.text and 'id="e-name"' not in blank.text
    assert 'value="Ada"' in blank.text
    assert both.status_code == 400
    assert 'id="e-name">Say who you are.' in both.text
    assert 'id="e-message">Write a message.' in both.text
    assert long_name.status_code == 400 and 'id="e-name">At most 80 characters' in long_name.text
    assert "Kept &lt;b&gt;as typed&lt;/b&gt;</textarea>" in long_name.text
    assert await listed(site) == []


async def test_html_in_a_message_is_shown_as_text(site: Litestar, accounts: dict) -> None:
    hostile = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
    async with client_for(site) as visitor:
        entry_id = await sign(visitor, "<b>Bold</b>", hostile)
    async with api_as(site, accounts["editor"]) as editor:
        await editor.post(f"{ENTRIES}/{entry_id}/approve")
    async with client_for(site) as visitor:
        page = await visitor.get(PAGE)
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;Bold&lt;/b&gt;" in page.text


async def test_control_characters_are_dropped_and_lines_kept(
    site: Litestar, accounts: dict
) -> None:
    async with client_for(site) as visitor:
        answer = await visitor.post(
            ENTRIES,
            json={"name": " Ada\nLovelace\u202e ", "message": "one\r\ntwo\x07\n\n\n\nthree\u200b"},
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "Ada Lovelace"
    assert answer.json()["message"] == "one\ntwo\n\nthree"


async def test_the_moderation_page_approves_and_deletes(site: Litestar, accounts: dict) -> None:
    async with client_for(site) as visitor:
        keep = await sign(visitor, "Keep me", "A kind word")
        drop = await sign(visitor, "Drop me", "Buy cheap watches")
    async with signed_in(site, accounts["editor"]) as editor:
        page = await editor.get(MODERATION)
        assert page.status_code == 200
        assert f'action="/admin/plugins/guestbook/entries/{keep}/approve"' in page.text
        assert f'action="/admin/plugins/guestbook/entries/{drop}/delete"' in page.text
        assert page.text.count('name="_csrf_token"') >= 4  # each button's form has one
        approved = await editor.post(f"{MODERATION}entries/{keep}/approve")
        assert approved.status_code == 303
        assert approved.headers["location"] == "/admin/plugins/guestbook/?notice=approved"
        deleted = await editor.post(f"{MODERATION}entries/{drop}/delete")
        assert deleted.status_code == 303
        assert (await editor.post(f"{MODERATION}entries/{drop}/delete")).status_code == 404
        after = await editor.get(MODERATION)
        assert "No entries wait for approval." in after.text
        del editor.headers["X-CSRF-Token"]
        forged = await editor.post(f"{MODERATION}entries/{keep}/delete")
        assert forged.status_code == 403
    assert await listed(site) == ["Keep me"]
    async with client_for(site) as visitor:
        assert "A kind word" in (await visitor.get(PAGE)).text


async def test_the_moderation_page_is_for_editors_and_admins(
    site: Litestar, accounts: dict
) -> None:
    async with signed_in(site, accounts["viewer"]) as viewer:
        assert (await viewer.get(MODERATION)).status_code == 403
        assert (await viewer.post(f"{MODERATION}entries/1/approve")).status_code == 403
    async with client_for(site) as visitor:
        away = await visitor.get(MODERATION)
        assert away.status_code in (302, 303) and "/login" in away.headers["location"]
    async with signed_in(site, accounts["admin"]) as admin:
        page = await admin.get(MODERATION)
    assert page.status_code == 200
    assert "No entries wait for approval." in page.text and "Nothing approved yet." in page.text
    assert 'href="/admin/users"' in page.text  # Keel's admin layout around it
    assert 'href="/admin/plugins/-/guestbook/settings"' in page.text


async def test_the_page_uses_keel_s_layout_and_the_plugin_s_stylesheet(site: Litestar) -> None:
    async with client_for(site) as visitor:
        page = await visitor.get(PAGE)
        css = await visitor.get("/p/guestbook/static/guestbook.css")
    assert page.status_code == 200
    assert 'class="site-header"' in page.text and "/static/css/app.css" in page.text
    assert "/p/guestbook/static/guestbook.css" in page.text
    assert "No entries yet." in page.text
    assert css.status_code == 200 and ".guestbook" in css.text


async def test_the_page_shows_the_site_s_title_and_menu_as_keel_s_own_pages_do(
    site: Litestar, accounts: dict
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        titled = await admin.put("/api/v1/settings/site_title", json={"value": "Harbour Notes"})
        assert titled.status_code == 200, titled.text
        about = await admin.post(
            "/api/v1/content", json={"title": "About us", "kind": "page", "nav_order": 1}
        )
        assert about.status_code == 201, about.text
        published = await admin.post(f"/api/v1/content/{about.json()['id']}/publish", json={})
        assert published.status_code == 200, published.text
    async with client_for(site) as visitor:
        page = await visitor.get(PAGE)
    assert page.status_code == 200, page.text
    header = page.text.split('class="site-header"', 1)[1].split("</header>", 1)[0]
    assert "Harbour Notes" in header and 'href="/about-us"' in header


async def test_an_api_token_signs_too_and_bearer_callers_are_not_csrf_checked(
    site: Litestar, accounts: dict
) -> None:
    async with client_for(site) as client:
        client.headers.update(await bearer(site, accounts["viewer"]))
        await sign(client, "Viewer")
