"""The guestbook's pages: signing on /p/guestbook/ (the form, its errors, escaping, the
limit) and moderating on /admin/plugins/guestbook/."""

from __future__ import annotations

import re
from typing import Any

import httpx

from keel.testing import PluginSite

PAGE = "/p/guestbook/"
MODERATION = "/admin/plugins/guestbook/"
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def page_token(client: httpx.AsyncClient) -> str:
    """The CSRF token the page's form holds (for a visitor: of the cookie it sets)."""
    page = await client.get(PAGE)
    assert page.status_code == 200, page.text
    found = CSRF_FIELD.search(page.text)
    assert found, page.text
    return found.group(1)


async def test_an_entry_signed_on_the_page_shows_once_an_editor_approves_it(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        signed = await visitor.post(PAGE, data={"name": "Ada", "message": "Hi there"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/p/guestbook/?signed=pending"
        thanked = await visitor.get(signed.headers["location"])
    assert "once an editor approves it" in thanked.text
    assert "Hi there" not in thanked.text  # pending: not shown yet
    (entry_id,) = await guestbook.pending_ids()
    async with site.client("editor") as editor:
        moderation = await editor.get(MODERATION)
        assert moderation.status_code == 200 and "Hi there" in moderation.text
        approved = await editor.post(f"{MODERATION}entries/{entry_id}/approve")
        assert approved.status_code == 303
    assert await guestbook.listed() == ["Ada"]
    async with site.client() as visitor:
        assert "Hi there" in (await visitor.get(PAGE)).text


async def test_the_page_form_needs_the_csrf_token_it_holds(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client(csrf=False) as visitor:
        forged = await visitor.post(PAGE, data={"name": "Mallory", "message": "Hi"})
        assert forged.status_code == 403
        token = await page_token(visitor)
        signed = await visitor.post(
            PAGE, data={"name": "Ada", "message": "Hi there", "_csrf_token": token}
        )
    assert signed.status_code == 303
    assert len(await guestbook.pending_ids()) == 1


async def test_with_approval_off_the_page_thanks_and_shows_the_entry(site: PluginSite) -> None:
    await site.configure(needs_approval=False)
    async with site.client() as visitor:
        signed = await visitor.post(PAGE, data={"name": "Ada", "message": "Hello"})
        assert signed.headers["location"] == "/p/guestbook/?signed=approved"
        page = await visitor.get(signed.headers["location"])
    assert "Thank you for signing!" in page.text and "Hello" in page.text
    assert "An editor reads each entry" not in page.text


async def test_a_blank_form_comes_back_with_both_errors_beside_their_fields(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        blank = await visitor.post(PAGE, data={"name": "Ada", "message": ""})
        both = await visitor.post(PAGE, data={"name": "", "message": " "})
        long_name = await visitor.post(
            PAGE, data={"name": "A" * 81, "message": "Kept <b>as typed</b>"}
        )
    assert blank.status_code == 400
    assert 'id="e-message"' in blank.text and 'id="e-name"' not in blank.text
    assert 'value="Ada"' in blank.text
    assert both.status_code == 400
    assert 'id="e-name">Say who you are.' in both.text
    assert 'id="e-message">Write a message.' in both.text
    assert long_name.status_code == 400 and 'id="e-name">At most 80 characters' in long_name.text
    assert "Kept &lt;b&gt;as typed&lt;/b&gt;</textarea>" in long_name.text
    assert await guestbook.pending_ids() == []


async def test_past_the_limit_the_page_says_so_and_keeps_the_input(site: PluginSite) -> None:
    await site.configure(entries_per_hour=1)
    async with site.client() as visitor:
        assert (await visitor.post(PAGE, data={"name": "One", "message": "Hi"})).status_code == 303
        page = await visitor.post(PAGE, data={"name": "Once more", "message": "Hi"})
    assert page.status_code == 429
    assert "You have signed 1 times" in page.text
    assert 'value="Once more"' in page.text


async def test_html_in_a_message_is_shown_as_text(site: PluginSite, guestbook: Any) -> None:
    hostile = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
    async with site.client() as visitor:
        entry_id = await guestbook.sign(visitor, "<b>Bold</b>", hostile)
    async with site.client("editor") as editor:
        await editor.post(f"{MODERATION}entries/{entry_id}/approve")
    async with site.client() as visitor:
        page = await visitor.get(PAGE)
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;Bold&lt;/b&gt;" in page.text


async def test_the_page_links_its_pages_with_keel_s_pager(site: PluginSite) -> None:
    await site.configure(needs_approval=False, entries_per_hour=30)
    async with site.client() as visitor:
        for number in range(21):  # one more than a page holds
            await visitor.post(PAGE, data={"name": f"Visitor {number}", "message": "Hi"})
        first = await visitor.get(PAGE)
        second = await visitor.get(PAGE, params={"page": 2})
    assert "Page 1 of 2 · 21 in all" in first.text and 'href="?page=2"' in first.text
    assert "Visitor 20" in first.text and "Visitor 0" not in first.text
    assert "Page 2 of 2" in second.text and 'href="?page=1"' in second.text
    assert "Visitor 0" in second.text


async def test_the_moderation_page_approves_and_deletes(site: PluginSite, guestbook: Any) -> None:
    async with site.client() as visitor:
        keep = await guestbook.sign(visitor, "Keep me", "A kind word")
        drop = await guestbook.sign(visitor, "Drop me", "Buy cheap watches")
    async with site.client("editor") as editor:
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
    async with site.client("editor", csrf=False) as forger:
        assert (await forger.post(f"{MODERATION}entries/{keep}/delete")).status_code == 403
    assert await guestbook.listed() == ["Keep me"]
    async with site.client() as visitor:
        assert "A kind word" in (await visitor.get(PAGE)).text


async def test_the_moderation_page_is_for_editors_and_admins(site: PluginSite) -> None:
    async with site.client("viewer") as viewer:
        assert (await viewer.get(MODERATION)).status_code == 403
        assert (await viewer.post(f"{MODERATION}entries/1/approve")).status_code == 403
    async with site.client() as visitor:
        away = await visitor.get(MODERATION)
        assert away.status_code in (302, 303) and "/login" in away.headers["location"]
    async with site.client("admin") as admin:
        page = await admin.get(MODERATION)
    assert page.status_code == 200
    assert "No entries wait for approval." in page.text and "Nothing approved yet." in page.text
    assert 'href="/admin/users"' in page.text  # Keel's admin layout around it
    assert 'href="/admin/plugins/-/guestbook/settings"' in page.text


async def test_the_page_uses_keel_s_layout_and_the_plugin_s_stylesheet(site: PluginSite) -> None:
    async with site.client() as visitor:
        page = await visitor.get(PAGE)
        css = await visitor.get("/p/guestbook/static/guestbook.css")
    assert page.status_code == 200
    assert 'class="site-header"' in page.text and "/static/css/app.css" in page.text
    assert "/p/guestbook/static/guestbook.css" in page.text
    assert "No entries yet." in page.text
    assert css.status_code == 200 and ".guestbook" in css.text
