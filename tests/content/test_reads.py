"""The read path without the ORM: app/core/reads.py and app/content/services/reads.py (both legs).

The public pages and the content API read through compiled Core statements; these tests
hold them to the ORM services' answers, so the two ways of reading never drift apart.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar import Litestar

from app.accounts.services.audit import Actor
from app.content.services import reads
from app.content.services.entries import (
    EntryFilters,
    EntryInput,
    list_entries,
    publish_entry,
    save_entry,
)
from app.content.services.public import now
from app.core.pagination import PageRequest
from app.core.reads import ReadQuery
from app.site_settings.services import read_settings, read_settings_from, write_setting
from tests.conftest import stopped_clock

FILTERS = [
    EntryFilters(),
    EntryFilters(public_only=True),
    EntryFilters(kind="page"),
    EntryFilters(status="draft"),
    EntryFilters(tag="Garden"),
    EntryFilters(q="tomato", public_only=True),
]


async def _seed(app: Litestar, accounts: dict) -> Actor:
    editor = accounts["editor"]
    actor = Actor(editor.id, editor.username)
    async with app.state.sessionmaker() as session, session.begin():
        for number in range(7):
            entry = await save_entry(
                session,
                actor,
                EntryInput(
                    kind="page" if number % 3 == 0 else "post",
                    title=f"Tomato notes {number}" if number % 2 else f"Other {number}",
                    body_markdown=f"Body {number}",
                    tags=["Garden", "Food"] if number % 2 else ["Food"],
                    nav_order=number if number % 3 == 0 else None,
                ),
            )
            if number < 5:
                await publish_entry(session, actor, entry)
    return actor


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr(f)[12:60])
async def test_the_api_list_answers_what_the_orm_service_answers(
    app: Litestar, accounts: dict, filters: EntryFilters
) -> None:
    await _seed(app, accounts)
    for page in (PageRequest(1, 3), PageRequest(2, 3), PageRequest(9, 3)):
        async with app.state.sessionmaker() as session:
            expected = await list_entries(session, filters, page)
            expected_tags = {e.id: sorted(t.name for t in e.tags) for e in expected.items}
        found = await reads.list_entries(app.state.reads, filters, page)
        assert [e.id for e in found.items] == [e.id for e in expected.items]
        assert found.total == expected.total
        assert {e.id: [t.name for t in e.tags] for e in found.items} == expected_tags
        for view, entry in zip(found.items, expected.items, strict=True):
            assert (view.title, view.status, view.body_html) == (
                entry.title,
                entry.status,
                entry.body_html,
            )
            assert view.author_name == accounts["editor"].name


async def test_an_entry_by_id_is_what_the_orm_loads_and_public_only_unless_previewed(
    app: Litestar, accounts: dict
) -> None:
    await _seed(app, accounts)
    async with app.state.sessionmaker() as session:
        entries = (await list_entries(session, EntryFilters(), PageRequest(1, 20))).items
        expected = {e.id: (e.title, e.status, sorted(t.name for t in e.tags)) for e in entries}
    for entry_id, (title, status, tags) in expected.items():
        row = await reads.entry_row_by_id(app.state.reads, entry_id, may_preview=True)
        assert row is not None
        view = reads.EntryView.of(row)
        assert (view.title, view.status, [t.name for t in view.tags]) == (title, status, tags)
        public = await reads.entry_row_by_id(app.state.reads, entry_id, may_preview=False)
        assert (public is not None) == (status == "published"), title


async def test_a_scheduled_entry_stays_hidden_until_its_time(app: Litestar, accounts: dict) -> None:
    actor = await _seed(app, accounts)
    with stopped_clock(app) as clock:
        async with app.state.sessionmaker() as session, session.begin():
            entry = await save_entry(session, actor, EntryInput(title="Soon", tags=["Later"]))
            await publish_entry(session, actor, entry, at=clock.now() + timedelta(hours=1))
            slug = entry.slug
        hidden = await reads.entry_for_reader(app.state.reads, "post", slug, may_preview=False)
        assert hidden is None
        preview = await reads.entry_for_reader(app.state.reads, "post", slug, may_preview=True)
        assert preview is not None and preview.status == "scheduled"
        assert [(t.name, t.slug) for t in preview.tags] == [("Later", "later")]
        clock.advance(timedelta(hours=1))
        public = await reads.entry_for_reader(app.state.reads, "post", slug, may_preview=False)
        assert public is not None and public.title == "Soon"


async def test_the_next_publication_is_the_earliest_scheduled_entry_still_to_come(
    app: Litestar, accounts: dict
) -> None:
    actor = await _seed(app, accounts)
    assert await reads.next_scheduled_publication(app.state.reads) is None
    moments = {"Later": now() + timedelta(days=2), "Sooner": now() + timedelta(hours=3)}
    async with app.state.sessionmaker() as session, session.begin():
        for title, moment in moments.items():
            entry = await save_entry(session, actor, EntryInput(title=title))
            await publish_entry(session, actor, entry, at=moment)
        due = await save_entry(session, actor, EntryInput(title="Due"))
        await publish_entry(session, actor, due, at=now() + timedelta(minutes=1))
        due.published_at = now() - timedelta(minutes=5)  # scheduled, and its time has come
        await save_entry(session, actor, EntryInput(title="Draft only"))
    found = await reads.next_scheduled_publication(app.state.reads)
    assert found == pytest.approx(moments["Sooner"].timestamp(), abs=0.001)


async def test_menu_pages_are_the_public_pages_with_a_nav_order(
    app: Litestar, accounts: dict
) -> None:
    await _seed(app, accounts)
    menu = await reads.nav_pages(app.state.reads)
    # pages are numbers 0, 3, 6; number 6 is a draft
    assert [row["title"] for row in menu] == ["Other 0", "Tomato notes 3"]


async def test_settings_read_the_same_both_ways(app: Litestar, accounts: dict) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "site_title", "Allotment")
    async with app.state.sessionmaker() as session:
        expected = await read_settings(session)
    assert await read_settings_from(app.state.reads) == expected
    assert expected["site_title"] == "Allotment"


async def test_reads_refuse_to_write_on_postgresql(app: Litestar, leg: str) -> None:
    """The read pool's sessions are read-only: a statement that writes cannot run there."""
    if leg != "services":
        pytest.skip("the read-only session setting is PostgreSQL's")
    from sqlalchemy import text

    with pytest.raises(Exception, match="read-only"):
        await app.state.reads.all(ReadQuery(text("CREATE TABLE nope (id int)")))
