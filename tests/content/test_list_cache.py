"""Editors' API lists kept per content generation: app/content/services/list_cache.py and
the triggers of migration 0013 (both legs). What matters to a caller: a kept list is the
list read anew, and any committed change, made anywhere and by any means, shows in the
next list."""

from __future__ import annotations

import gzip

import httpx
from litestar import Litestar
from sqlalchemy import text

from app.asgi import create_app
from app.content.services.list_cache import LIST_CACHE_REQUESTS
from app.content.services.reads import current_content_generation
from app.core.db import create_engine
from app.core.metrics import counter_key
from app.core.runtime import runtime_of
from app.settings import Settings
from tests.accounts.test_users_api import api_as
from tests.content.test_api import create

LIST = "/api/v1/content?per_page=50"


def by_title(response: httpx.Response, field: str) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return {item["title"]: item[field] for item in response.json()["items"]}


def titles(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(item["title"] for item in response.json()["items"])


def hits(app: Litestar) -> int:
    pending = runtime_of(app.state).figures.pending
    return int(pending.get(counter_key(LIST_CACHE_REQUESTS, ("hit",)), 0))


async def write_elsewhere(settings: Settings, statement: str, **params: object) -> None:
    """A change committed on a connection of its own: no event, no request of this app."""
    engine = create_engine(settings.db)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


async def test_a_kept_list_is_the_list_read_anew(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        await create(client, title="One", tags=["News"])
        await create(client, title="Two")
        first = await client.get(LIST)
        before = hits(app)
        again = await client.get(LIST)
        assert hits(app) == before + 1
        fields = await client.get(LIST + "&fields=title,view_count")
    other = create_app(settings)  # another process: nothing kept yet
    try:
        async with api_as(other, accounts["editor"]) as client:
            anew = await client.get(LIST)
    finally:
        await runtime_of(other.state).close()
    assert first.content == again.content == anew.content
    assert first.headers["etag"] == again.headers["etag"] == anew.headers["etag"]
    assert titles(first) == ["One", "Two"]
    assert fields.json()["items"][0].keys() == {"title", "view_count"}
    assert fields.headers["etag"] != first.headers["etag"]


async def test_every_change_committed_anywhere_shows_in_the_next_list(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client, title="First", tags=["News"])
        seen = [(await client.get(LIST)).headers["etag"]]

        async def listed() -> httpx.Response:
            response = await client.get(LIST)
            assert response.headers["etag"] not in seen, "a change did not show"
            seen.append(response.headers["etag"])
            return response

        await create(client, title="Second")
        assert titles(await listed()) == ["First", "Second"]
        await client.patch(f"/api/v1/content/{entry['id']}", json={"title": "Renamed"})
        assert titles(await listed()) == ["Renamed", "Second"]
        await client.post(f"/api/v1/content/{entry['id']}/publish")
        assert by_title(await listed(), "status") == {"Renamed": "published", "Second": "draft"}
        # committed by another process, without Keel's services: a tag renamed, a title
        # changed, a tag taken off, an author deleted, an entry removed
        await write_elsewhere(settings, "UPDATE tags SET name = 'Gazette'")
        assert by_title(await listed(), "tags") == {"Renamed": ["Gazette"], "Second": []}
        await write_elsewhere(settings, "UPDATE entries SET title = 'Third' WHERE title = 'Second'")
        assert titles(await listed()) == ["Renamed", "Third"]
        await write_elsewhere(settings, "DELETE FROM entry_tags")
        assert by_title(await listed(), "tags") == {"Renamed": [], "Third": []}
        await write_elsewhere(settings, "UPDATE entries SET author_id = NULL")
        assert by_title(await listed(), "author_id") == {"Renamed": None, "Third": None}
        await client.delete(f"/api/v1/content/{entry['id']}")
        assert titles(await listed()) == ["Third"]


async def test_a_change_rolled_back_keeps_the_generation_and_a_commit_changes_it(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        await create(client, title="Kept")
    reads = runtime_of(app.state).reads
    before = await current_content_generation(reads)
    engine = create_engine(settings.db)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(text("UPDATE entries SET title = 'Gone'"))
            await connection.execute(text("UPDATE entries SET excerpt = 'gone'"))
            await transaction.rollback()
        assert await current_content_generation(reads) == before
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(text("UPDATE entries SET title = 'Changed'"))
            await connection.execute(text("UPDATE entries SET excerpt = 'changed'"))
            assert await current_content_generation(reads) == before  # not seen before COMMIT
            await transaction.commit()
        assert await current_content_generation(reads) != before
        async with engine.begin() as connection:  # a deleted row, as a reset leaves it
            await connection.execute(text("DELETE FROM content_generation"))
        assert await current_content_generation(reads) == 0
        await write_elsewhere(settings, "UPDATE entries SET title = 'Again'")
        assert await current_content_generation(reads) not in (0, before)
    finally:
        await engine.dispose()


async def test_if_none_match_answers_304_until_an_entry_changes(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client, title="Cached")
        first = await client.get(LIST)
        etag = first.headers["etag"]
        held = await client.get(LIST, headers={"If-None-Match": etag})
        held_weak = await client.get(LIST, headers={"If-None-Match": f'"x", W/{etag}'})
        held_any = await client.get(LIST, headers={"If-None-Match": "*"})
        other = await client.get(LIST, headers={"If-None-Match": '"c0-0000"'})
        await client.patch(f"/api/v1/content/{entry['id']}", json={"title": "Changed"})
        changed = await client.get(LIST, headers={"If-None-Match": etag})
    assert (held.status_code, held.content) == (304, b"")
    assert held.headers["etag"] == etag
    assert held_weak.status_code == held_any.status_code == 304
    assert other.status_code == 200 and other.content == first.content
    assert changed.status_code == 200
    assert titles(changed) == ["Changed"]
    assert changed.headers["etag"] != etag


async def test_a_kept_list_is_sent_compressed_when_asked(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        for number in range(12):
            await create(client, title=f"Post number {number}", body_markdown="Words. " * 40)
        raw = await client.get(LIST, headers={"Accept-Encoding": "identity"})
        asked = []
        for _ in range(2):  # read, then kept
            response = await client.send(
                client.build_request("GET", LIST, headers={"Accept-Encoding": "gzip"}),
                stream=True,
            )
            sent = b"".join([chunk async for chunk in response.aiter_raw()])
            asked.append((response.headers, gzip.decompress(sent)))
            await response.aclose()
    assert "content-encoding" not in raw.headers
    for headers, body in asked:
        assert headers["content-encoding"] == "gzip"
        assert "accept-encoding" in headers["vary"].lower()
        assert headers["etag"] == "W/" + raw.headers["etag"]
        assert body == raw.content


async def test_viewers_and_visitors_lists_are_not_kept_here(app: Litestar, accounts: dict) -> None:
    """Their lists hold only public entries, which also change with the clock (a scheduled
    post going public): the page cache keeps visitors' answers, with its own bounds."""
    async with api_as(app, accounts["editor"]) as client:
        entry = await create(client, title="Public")
        await client.post(f"/api/v1/content/{entry['id']}/publish")
    async with api_as(app, accounts["viewer"]) as client:
        viewer = await client.get(LIST)
    assert titles(viewer) == ["Public"]
    assert "etag" not in viewer.headers
