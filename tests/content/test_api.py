"""`/api/v1/content`: app/content/api/entries.py (both storage legs)."""

from __future__ import annotations

from datetime import datetime, timedelta
from html.parser import HTMLParser
from uuid import UUID

import httpx
from litestar import Litestar
from sqlalchemy import select, update

from app.accounts.models import AuditEntry
from app.content.models import Entry, Revision
from app.settings import Settings
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import SteppedClock, count_rows, signed_in, stopped_clock

XSS_PAYLOADS = (
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "![pic](javascript:alert(1))",
    '<a href="javascript:alert(1)">raw link</a>',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<iframe src="https://evil.example"></iframe>',
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![data](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
)
DANGEROUS_TAGS = {"script", "svg", "iframe", "object", "embed", "style", "math"}

SUMMARY_FIELDS = {
    "id",
    "kind",
    "title",
    "slug",
    "status",
    "published_at",
    "excerpt",
    "tags",
    "author_id",
    "created_at",
    "updated_at",
    "url",
}


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def assert_sanitized(html: str) -> None:
    """No element that runs script: no script/svg/iframe, no on* handler, no javascript: or
    data: URL. Escaped source text (`&lt;script&gt;` shown as text) is harmless."""
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.found:
        assert tag not in DANGEROUS_TAGS, html
        for name, value in attrs:
            assert not name.startswith("on"), html
            url = (value or "").strip().lower()
            assert not url.startswith(("javascript:", "data:", "vbscript:")), html
    assert "<script" not in html.lower() and "<iframe" not in html.lower()


async def create(client: httpx.AsyncClient, **fields: object) -> dict:
    body = {"title": "Hello world", **fields}
    response = await client.post("/api/v1/content", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def set_published_at(app: Litestar, entry_id: str, moment: datetime) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Entry).where(Entry.id == UUID(entry_id)).values(published_at=moment)
        )


async def public_slugs(app: Litestar) -> list[str]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as anonymous:
        response = await anonymous.get("/api/v1/content")
    assert response.status_code == 200
    return sorted(item["slug"] for item in response.json()["items"])


# Writing --------------------------------------------------------------------------------


async def test_an_editor_creates_a_draft_with_a_generated_slug(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        body = await create(
            client, title="Héllo, World!", body_markdown="Some *text*.", tags=["News", " news "]
        )
    assert body["slug"] == "hello-world"
    assert body["status"] == "draft"
    assert body["kind"] == "post"
    assert body["url"] == "/blog/hello-world"
    assert body["body_html"] == "<p>Some <em>text</em>.</p>\n"
    assert body["tags"] == ["News"]
    assert body["author_id"] == str(accounts["editor"].id)
    assert body["view_count"] == 0
    assert set(body) == SUMMARY_FIELDS | {
        "meta_description",
        "nav_order",
        "body_markdown",
        "body_html",
        "view_count",
    }


async def test_stored_html_is_sanitized(app: Litestar, accounts: dict) -> None:
    """One entry per payload, all in one app (building it is what a test costs)."""
    async with api_as(app, accounts["editor"]) as client:
        for number, payload in enumerate(XSS_PAYLOADS):
            body = await create(
                client, title=f"Attack {number}", body_markdown=f"Before\n\n{payload}\n\nAfter"
            )
            fetched = await client.get(f"/api/v1/content/{body['id']}")
            assert_sanitized(body["body_html"])
            assert_sanitized(fetched.json()["body_html"])
            async with app.state.sessionmaker() as session:
                stored = await session.get(Entry, UUID(body["id"]))
            assert stored is not None
            assert_sanitized(stored.body_html)
            assert stored.body_markdown.endswith(f"{payload}\n\nAfter"), payload  # as typed


async def test_a_duplicate_slug_is_a_409_per_kind(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        await create(client, title="About")
        duplicate = await client.post("/api/v1/content", json={"title": "About"})
        as_page = await client.post("/api/v1/content", json={"title": "About", "kind": "page"})
    assert_problem(duplicate, 409, "slug")
    assert as_page.status_code == 201
    assert as_page.json()["url"] == "/about"


async def test_invalid_input_is_a_problem_with_the_field(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        no_title = await client.post("/api/v1/content", json={"title": "  "})
        bad_slug = await client.post("/api/v1/content", json={"title": "x", "slug": "Not OK"})
        reserved = await client.post(
            "/api/v1/content", json={"title": "x", "slug": "admin", "kind": "page"}
        )
        bad_kind = await client.post("/api/v1/content", json={"title": "x", "kind": "video"})
        bad_type = await client.post("/api/v1/content", json={"title": 5})
    assert_problem(no_title, 400, "title")
    assert_problem(bad_slug, 400, "slug")
    assert_problem(reserved, 400, "slug")
    assert_problem(bad_kind, 400, "kind")
    assert assert_problem(bad_type, 400)["errors"]


async def test_a_nav_order_past_an_integer_column_is_a_400_on_create_and_update(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        page = await create(client, title="Contact", kind="page", nav_order=2**31 - 1)
        refused = [
            await client.post(
                "/api/v1/content", json={"title": "x", "kind": "page", "nav_order": order}
            )
            for order in (2**31, -(2**31) - 1, 2**63, 10**30)
        ]
        patched = await client.patch(f"/api/v1/content/{page['id']}", json={"nav_order": 2**31})
        kept = await client.get(f"/api/v1/content/{page['id']}")
    assert page["nav_order"] == 2**31 - 1
    for response in (*refused, patched):
        assert_problem(response, 400, "nav_order")
    assert kept.json()["nav_order"] == 2**31 - 1
    assert await count_rows(settings, "entries") == 1


async def test_tags_that_share_an_address_are_one_tag_and_a_folded_name_fits_its_column(
    app: Litestar, accounts: dict
) -> None:
    """Tags are checked as they are stored: by address (`C++` and `C` are both /tags/c),
    and a 64-character name that folds into more letters (`ﬀ` is `ff`) still fits."""
    async with api_as(app, accounts["editor"]) as client:
        shared = await client.post("/api/v1/content", json={"title": "a", "tags": ["C++", "C"]})
        folded = await client.post("/api/v1/content", json={"title": "b", "tags": ["\ufb00" * 64]})
        found = await client.get("/api/v1/content", params={"tag": "\ufb00" * 64})
    assert shared.status_code == 201, shared.text
    assert shared.json()["tags"] == ["C++"]
    assert folded.status_code == 201, folded.text
    assert [item["title"] for item in found.json()["items"]] == ["b"]


async def test_an_entry_has_at_most_20_tags_and_thousands_are_refused_beside_the_field(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    """Tags that share an address count once; a 21st is refused, not dropped, and a
    request with thousands is answered at once (each tag is slugified once)."""
    twenty = [f"Tag {number}" for number in range(20)]
    async with api_as(app, accounts["editor"]) as client:
        kept = await client.post(
            "/api/v1/content", json={"title": "a", "tags": [*twenty, "TAG 0", "tag-1"]}
        )
        thousands = await client.post(
            "/api/v1/content", json={"title": "b", "tags": [f"t{n}" for n in range(2_000)]}
        )
        patched = await client.patch(
            f"/api/v1/content/{kept.json()['id']}", json={"tags": [*twenty, "one more"]}
        )
    assert kept.status_code == 201, kept.text
    assert kept.json()["tags"] == twenty
    for refused in (thousands, patched):
        assert "at most 20 tags" in assert_problem(refused, 400, "tags")["detail"]
    assert await count_rows(settings, "entries") == 1
    assert await count_rows(settings, "tags") == 20


async def test_a_publish_time_past_what_a_datetime_holds_is_a_400_naming_the_field(
    app: Litestar, accounts: dict
) -> None:
    """Year 9999 with a negative offset is a valid ISO 8601 time that overflows in UTC."""
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client)
        refused = [
            await client.post(
                f"/api/v1/content/{entry['id']}/publish", json={"published_at": moment}
            )
            for moment in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00")
        ]
        kept = await client.get(f"/api/v1/content/{entry['id']}")
    for response in refused:
        assert "between the years" in assert_problem(response, 400, "published_at")["detail"]
    assert kept.json()["status"] == "draft"


async def test_every_save_adds_a_revision(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        body = await create(client, body_markdown="one")
        patched = await client.patch(
            f"/api/v1/content/{body['id']}", json={"body_markdown": "two", "tags": ["a"]}
        )
        revisions = await client.get(f"/api/v1/content/{body['id']}/revisions")
    assert patched.status_code == 200
    assert patched.json()["body_markdown"] == "two"
    assert patched.json()["title"] == "Hello world"  # fields not given stay
    assert patched.json()["tags"] == ["a"]
    assert [r["body_markdown"] for r in revisions.json()] == ["two", "one"]
    assert revisions.json()[0]["author_name"] == "editor"


async def test_patch_keeps_the_slug_unique(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        await create(client, title="First")
        second = await create(client, title="Second")
        response = await client.patch(f"/api/v1/content/{second['id']}", json={"slug": "first"})
    assert_problem(response, 409, "slug")


async def test_delete_removes_the_entry_and_audits(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        body = await create(client)
        response = await client.delete(f"/api/v1/content/{body['id']}")
        again = await client.get(f"/api/v1/content/{body['id']}")
    assert response.status_code == 204
    assert_problem(again, 404)
    assert await count_rows(settings, "entries") == 0
    assert await count_rows(settings, "revisions") == 0
    async with app.state.sessionmaker() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert "content.deleted" in actions


# Publishing and visibility --------------------------------------------------------------


async def test_publishing_schedules_and_unpublishing_change_what_anonymous_callers_see(
    app: Litestar, accounts: dict
) -> None:
    with stopped_clock(app) as clock:
        await _publish_schedule_and_unpublish(app, accounts, clock)


async def _publish_schedule_and_unpublish(
    app: Litestar, accounts: dict, clock: SteppedClock
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        now_post = await create(client, title="Now")
        later = await create(client, title="Later")
        await create(client, title="Draft")
        assert await public_slugs(app) == []

        published = await client.post(f"/api/v1/content/{now_post['id']}/publish")
        assert published.status_code == 200
        assert published.json()["status"] == "published"
        soon = (clock.now() + timedelta(hours=1)).isoformat()
        scheduled = await client.post(
            f"/api/v1/content/{later['id']}/publish", json={"published_at": soon}
        )
        assert scheduled.json()["status"] == "scheduled"
        assert await public_slugs(app) == ["now"]
        assert await public_slugs(app) == ["now"]  # the second answer may come from the cache

        clock.advance(timedelta(hours=1))  # the time comes; nobody acts
        assert await public_slugs(app) == ["later", "now"]

        unpublished = await client.post(f"/api/v1/content/{now_post['id']}/unpublish")
        assert unpublished.json()["status"] == "draft"
        assert await public_slugs(app) == ["later"]
        everything = await client.get("/api/v1/content")
    assert everything.json()["total"] == 3  # editors see every status


async def test_a_publish_time_without_offset_is_refused(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        body = await create(client)
        response = await client.post(
            f"/api/v1/content/{body['id']}/publish", json={"published_at": "2030-01-01T10:00:00"}
        )
    assert_problem(response, 400, "published_at")


async def test_anonymous_callers_and_viewers_see_only_public_entries(
    app: Litestar, accounts: dict, client: httpx.AsyncClient
) -> None:
    async with api_as(app, accounts["editor"]) as editor:
        draft = await create(editor, title="Secret")
        public = await create(editor, title="Open")
        await editor.post(f"/api/v1/content/{public['id']}/publish")
    hidden = await client.get(f"/api/v1/content/{draft['id']}")
    shown = await client.get(f"/api/v1/content/{public['id']}")
    revisions = await client.get(f"/api/v1/content/{public['id']}/revisions")
    async with api_as(app, accounts["viewer"]) as viewer:
        as_viewer = await viewer.get("/api/v1/content", params={"status": "draft"})
        viewer_hidden = await viewer.get(f"/api/v1/content/{draft['id']}")
    assert_problem(hidden, 404)
    assert shown.status_code == 200 and shown.json()["title"] == "Open"
    assert_problem(revisions, 401)
    assert as_viewer.json()["items"] == []
    assert_problem(viewer_hidden, 404)


async def test_anonymous_writes_are_401_and_viewer_writes_403(
    app: Litestar, accounts: dict, client: httpx.AsyncClient
) -> None:
    async with api_as(app, accounts["editor"]) as editor:
        entry = await create(editor)
    url = f"/api/v1/content/{entry['id']}"
    assert_problem(await client.post("/api/v1/content", json={"title": "x"}), 401)
    assert_problem(await client.patch(url, json={"title": "x"}), 401)
    assert_problem(await client.delete(url), 401)
    assert_problem(await client.post(f"{url}/publish"), 401)
    assert_problem(await client.post(f"{url}/unpublish"), 401)
    async with api_as(app, accounts["viewer"]) as viewer:
        assert_problem(await viewer.post("/api/v1/content", json={"title": "x"}), 403)
        assert_problem(await viewer.post(f"{url}/publish"), 403)


async def test_unknown_entries_are_404(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        missing = "00000000-0000-0000-0000-000000000001"
        assert_problem(await client.get(f"/api/v1/content/{missing}"), 404)
        assert_problem(await client.patch(f"/api/v1/content/{missing}", json={}), 404)
        assert_problem(await client.post(f"/api/v1/content/{missing}/publish"), 404)


# Lists ----------------------------------------------------------------------------------


async def test_filters_and_pagination(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        for number in range(5):
            await create(
                client, title=f"Post {number}", tags=["even" if number % 2 == 0 else "odd"]
            )
        page = await create(client, title="Colophon", kind="page")
        await client.post(f"/api/v1/content/{page['id']}/publish")
        async with api_as(app, accounts["admin"]) as admin:
            await create(admin, title="Admin note")

        def slugs(response: httpx.Response) -> list[str]:
            assert response.status_code == 200, response.text
            return sorted(item["slug"] for item in response.json()["items"])

        pages = await client.get("/api/v1/content", params={"kind": "page"})
        published = await client.get("/api/v1/content", params={"status": "published"})
        by_admin = await client.get(
            "/api/v1/content", params={"author_id": str(accounts["admin"].id)}
        )
        even = await client.get("/api/v1/content", params={"tag": "even"})
        search = await client.get("/api/v1/content", params={"q": "POST 3"})
        first = await client.get("/api/v1/content", params={"per_page": 4})
        second = await client.get("/api/v1/content", params={"per_page": 4, "page": 2})
        bad_kind = await client.get("/api/v1/content", params={"kind": "video"})
        bad_status = await client.get("/api/v1/content", params={"status": "gone"})
    assert slugs(pages) == ["colophon"]
    assert slugs(published) == ["colophon"]
    assert slugs(by_admin) == ["admin-note"]
    assert slugs(even) == ["post-0", "post-2", "post-4"]
    assert slugs(search) == ["post-3"]
    body = first.json()
    assert (body["total"], body["page"], body["per_page"], len(body["items"])) == (7, 1, 4, 4)
    assert len(second.json()["items"]) == 3
    assert not {i["id"] for i in body["items"]} & {i["id"] for i in second.json()["items"]}
    assert_problem(bad_kind, 400, "kind")
    assert_problem(bad_status, 400, "status")


async def test_a_very_long_title_filter_counts_its_first_200_characters(
    app: Litestar, accounts: dict
) -> None:
    """SQLite refuses LIKE patterns over 50,000 bytes: a 60,000-character `q` was a 500 on
    the API and on /admin/content. Like the other searches, the filter is cut."""
    title = "Probe " + "x" * 194
    async with api_as(app, accounts["editor"]) as client:
        await create(client, title=title)
        answers = [
            await client.get("/api/v1/content", params={"q": title + "y" * 59_800}),
            await client.get("/api/v1/content", params={"q": "z" * 60_000}),
        ]
    async with signed_in(app, accounts["editor"]) as browser:
        page = await browser.get("/admin/content", params={"q": "z" * 60_000})
    assert [answer.status_code for answer in answers] == [200, 200]
    assert [len(answer.json()["items"]) for answer in answers] == [1, 0]
    assert page.status_code == 200


async def test_revisions_follow_the_entrys_visibility(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client)
    async with api_as(app, accounts["viewer"]) as viewer:
        response = await viewer.get(f"/api/v1/content/{entry['id']}/revisions")
    assert_problem(response, 404)
    async with app.state.sessionmaker() as session:
        assert len(list(await session.scalars(select(Revision)))) == 1


async def test_patch_leaves_the_menu_position_unless_given(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        page = await create(client, title="Contact", kind="page", nav_order=3)
        url = f"/api/v1/content/{page['id']}"
        kept = await client.patch(url, json={"title": "Contact us"})
        removed = await client.patch(url, json={"nav_order": None})
        post = await create(client, title="A post", nav_order=1)
    assert page["nav_order"] == 3
    assert kept.json()["nav_order"] == 3 and kept.json()["slug"] == "contact"
    assert removed.json()["nav_order"] is None
    assert post["nav_order"] is None  # only pages sit in the menu


# Representations: summaries on the list, `fields=` on lists and items ---------------------


async def test_the_list_answers_summaries_without_the_bodies(
    app: Litestar, accounts: dict, client: httpx.AsyncClient
) -> None:
    async with api_as(app, accounts["editor"]) as editor:
        entry = await create(editor, title="Summed up", body_markdown="Long *body*.", tags=["T"])
        await editor.post(f"/api/v1/content/{entry['id']}/publish")
        as_editor = (await editor.get("/api/v1/content")).json()
        full = (await editor.get(f"/api/v1/content/{entry['id']}")).json()
    anonymous = (await client.get("/api/v1/content")).json()
    for body in (as_editor, anonymous):
        assert set(body) == {"items", "total", "page", "per_page"}
        [item] = body["items"]
        assert set(item) == SUMMARY_FIELDS
        assert item == {name: full[name] for name in SUMMARY_FIELDS}
    assert full["body_html"] == "<p>Long <em>body</em>.</p>\n"  # the item stays full
    assert {"body_markdown", "meta_description", "nav_order", "view_count"} <= set(full)


async def test_the_list_with_every_field_answers_what_the_item_answers(
    app: Litestar, accounts: dict
) -> None:
    """List items are built from the row positionally (EntryOut.from_row): each field must
    land where the item, built from the model, has it."""
    async with api_as(app, accounts["editor"]) as editor:
        entry = await create(
            editor, title="Whole", body_markdown="Some *text*.", tags=["B", "A"], kind="page"
        )
        await editor.post(f"/api/v1/content/{entry['id']}/publish")
        full = (await editor.get(f"/api/v1/content/{entry['id']}")).json()
        listed = await editor.get("/api/v1/content", params={"fields": ",".join(full)})
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [full]
    assert full["tags"] == ["A", "B"] and full["url"] == "/whole"


async def test_fields_selects_what_the_list_and_the_item_answer(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client, title="Chosen", body_markdown="Some *text*.")
        listed = await client.get("/api/v1/content", params={"fields": "id,title,body_html"})
        summary_only = await client.get("/api/v1/content", params={"fields": "slug,tags"})
        item = await client.get(
            f"/api/v1/content/{entry['id']}", params={"fields": "body_markdown,view_count"}
        )
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "items": [{"id": entry["id"], "title": "Chosen", "body_html": entry["body_html"]}],
        "total": 1,
        "page": 1,
        "per_page": 20,
    }
    assert summary_only.json()["items"] == [{"slug": "chosen", "tags": []}]
    assert item.json() == {"body_markdown": "Some *text*.", "view_count": 0}


async def test_an_unknown_field_is_a_400_naming_it(
    app: Litestar, accounts: dict, client: httpx.AsyncClient
) -> None:
    async with api_as(app, accounts["editor"]) as editor:
        entry = await create(editor)
        on_list = await editor.get("/api/v1/content", params={"fields": "id,password,Title"})
        on_item = await editor.get(f"/api/v1/content/{entry['id']}", params={"fields": "x"})
    anonymous = await client.get("/api/v1/content", params={"fields": "title,author_name"})
    assert "password, Title" in assert_problem(on_list, 400, "fields")["detail"]
    assert "x" in assert_problem(on_item, 400, "fields")["detail"]
    assert "author_name" in assert_problem(anonymous, 400, "fields")["detail"]


async def test_fields_ignores_spaces_empty_names_and_repeats(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client, title="Tidy")

        async def items(fields: str) -> list[dict]:
            response = await client.get("/api/v1/content", params={"fields": fields})
            assert response.status_code == 200, response.text
            return response.json()["items"]

        assert await items(" title , ,id,title,") == [{"title": "Tidy", "id": entry["id"]}]
        for nothing in ("", ",", " , "):
            assert [set(item) for item in await items(nothing)] == [SUMMARY_FIELDS]
        whole = await client.get(f"/api/v1/content/{entry['id']}", params={"fields": ""})
    assert whole.json() == entry | {"updated_at": whole.json()["updated_at"]}


async def test_the_openapi_document_shows_fields_and_the_summary(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    content = document["paths"]["/api/v1/content"]["get"]
    [fields] = [p for p in content["parameters"] if p["name"] == "fields"]
    assert fields["in"] == "query" and "Comma-separated" in fields["description"]
    answer = content["responses"]["200"]["content"]["application/json"]["schema"]
    refs = [choice.get("$ref", "") for choice in answer["anyOf"]]
    assert any(ref.endswith("EntrySummaryPageOut") for ref in refs)
    schemas = document["components"]["schemas"]
    [summary] = [schema for name, schema in schemas.items() if name.endswith("EntrySummaryOut")]
    assert set(summary["properties"]) == SUMMARY_FIELDS
    item = document["paths"]["/api/v1/content/{entry_id}"]["get"]
    assert "fields" in {p["name"] for p in item["parameters"]}
