"""The guestbook's main flows, as visitors, editors and admins use it: signing on the page
and through the API, approval, approval switched off, and the limit per address."""

from __future__ import annotations

import httpx

from keel.testing import PluginSite, assert_problem

ENTRIES = "/api/plugins/guestbook/entries"
PAGE = "/p/guestbook/"
MODERATION = "/admin/plugins/guestbook/"


async def listed(site: PluginSite) -> list[str]:
    """The names on the public list (approved entries), newest first."""
    async with site.client() as anyone:
        answer = await anyone.get(ENTRIES)
    assert answer.status_code == 200, answer.text
    return [item["name"] for item in answer.json()["items"]]


async def sign(client: httpx.AsyncClient, name: str, message: str = "Lovely site!") -> int:
    answer = await client.post(ENTRIES, json={"name": name, "message": message})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def test_an_entry_signed_on_the_page_shows_once_an_editor_approves_it(
    site: PluginSite,
) -> None:
    async with site.client() as visitor:
        signed = await visitor.post(PAGE, data={"name": "Ada", "message": "Hi there"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/p/guestbook/?signed=pending"
        thanked = await visitor.get(signed.headers["location"])
    assert "once an editor approves it" in thanked.text
    assert "Hi there" not in thanked.text
    async with site.client("editor") as editor:
        moderation = await editor.get(MODERATION)
        assert moderation.status_code == 200 and "Hi there" in moderation.text
        (entry_id,) = await pending_ids(site)
        approved = await editor.post(f"{MODERATION}entries/{entry_id}/approve")
        assert approved.status_code == 303
    assert await listed(site) == ["Ada"]
    async with site.client() as visitor:
        assert "Hi there" in (await visitor.get(PAGE)).text


async def test_the_page_form_needs_the_csrf_token(site: PluginSite) -> None:
    async with site.client(csrf=False) as forger:
        forged = await forger.post(PAGE, data={"name": "Mallory", "message": "Hi"})
    assert forged.status_code == 403
    assert await pending_ids(site) == []


async def test_an_entry_signed_through_the_api_is_approved_there_by_an_editor(
    site: PluginSite,
) -> None:
    async with site.client() as visitor:
        entry_id = await sign(visitor, "Grace", "Hello from Grace")
    assert await listed(site) == []
    async with site.client("viewer", token=True) as viewer:
        assert_problem(await viewer.post(f"{ENTRIES}/{entry_id}/approve"), 403)
    async with site.client("editor", token=True) as editor:
        approved = await editor.post(f"{ENTRIES}/{entry_id}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert_problem(await editor.post(f"{ENTRIES}/99999/approve"), 404)
    assert await listed(site) == ["Grace"]


async def test_with_approval_off_new_entries_show_at_once(site: PluginSite) -> None:
    assert (await site.configure(needs_approval=False))["needs_approval"] is False
    async with site.client() as visitor:
        answer = await visitor.post(ENTRIES, json={"name": "Grace", "message": "Hi!"})
        assert answer.status_code == 201 and answer.json()["status"] == "approved"
        signed = await visitor.post(PAGE, data={"name": "Ada", "message": "Hello"})
        assert signed.headers["location"] == "/p/guestbook/?signed=approved"
    assert await listed(site) == ["Ada", "Grace"]


async def test_one_address_signs_at_most_entries_per_hour_times(site: PluginSite) -> None:
    await site.configure(entries_per_hour=2)
    async with site.client() as visitor:
        await sign(visitor, "One")
        await sign(visitor, "Two")
        refused = await visitor.post(ENTRIES, json={"name": "Three", "message": "Hi"})
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
        page = await visitor.post(PAGE, data={"name": "Three", "message": "Hi"})
    assert page.status_code == 429
    assert "You have signed 2 times" in page.text and 'value="Three"' in page.text
    async with site.client(client_ip="198.51.100.9") as another:
        await sign(another, "Someone else")
    assert len(await pending_ids(site)) == 3


async def test_the_entries_are_kept_in_the_plugin_s_own_table(site: PluginSite) -> None:
    async with site.client() as visitor:
        await sign(visitor, " Ada\nLovelace ", "one\r\ntwo")
    entries = site.module("guestbook.entries")
    table = entries.entries_table(site.ctx)
    async with site.ctx.session() as session:
        rows = (await session.execute(table.select())).all()
    assert [(row.name, row.message, row.approved) for row in rows] == [
        ("Ada Lovelace", "one\ntwo", False)
    ]


async def pending_ids(site: PluginSite) -> list[int]:
    """The ids of the entries waiting for approval, read from the plugin's table."""
    table = site.module("guestbook.entries").entries_table(site.ctx)
    async with site.ctx.session() as session:
        rows = await session.execute(table.select().where(table.c.approved.is_(False)))
        return [row.id for row in rows]
