"""Content rules: app/content/services/entries.py, markdown.py and views.py (both legs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from litestar import Litestar

from app.accounts.services.audit import Actor
from app.content.services import entries as services
from app.content.services.entries import (
    ContentError,
    EntryInput,
    SlugTaken,
    get_entry,
    list_revisions,
    publish_entry,
    restore_revision,
    save_entry,
    slugify,
    unpublish_entry,
)
from app.content.services.markdown import plain_text, render_markdown, sanitize_html
from app.content.services.public import get_public_entry, list_public_posts
from app.core.pagination import PageRequest

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "![img](javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<iframe src=https://evil.example></iframe>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<body onload=alert(1)>",
    "[x](JaVaScRiPt:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
]
DANGEROUS_TAGS = {"script", "iframe", "svg", "math", "style", "object", "embed", "body", "div"}


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k.lower(): (v or "") for k, v in attrs}))


def dangers(html: str) -> list[str]:
    """What in `html` could run script: dangerous elements, handlers, script URLs, styles."""
    parser = _Elements()
    parser.feed(html)
    problems = []
    for tag, attrs in parser.found:
        if tag in DANGEROUS_TAGS:
            problems.append(f"<{tag}>")
        for name, value in attrs.items():
            url = "".join(value.split()).lower()
            if name.startswith("on") or name == "style":
                problems.append(f"{tag}[{name}]")
            if name in ("href", "src") and url.startswith(("javascript:", "data:", "vbscript:")):
                problems.append(f"{tag}[{name}={value}]")
    return problems


def test_the_danger_detector_detects_danger() -> None:
    assert dangers('<img src=x onerror=alert(1)><a href="javascript:x">') == [
        "img[onerror]",
        "a[href=javascript:x]",
    ]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_rendered_markdown_never_carries_script(payload: str) -> None:
    assert dangers(render_markdown(f"Hello\n\n{payload}\n\nbye")) == []


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_the_sanitizer_alone_strips_raw_html_attacks(payload: str) -> None:
    assert dangers(sanitize_html(payload)) == []


def test_safe_markdown_keeps_its_meaning() -> None:
    html = render_markdown(
        "# Title\n\nSome *text* and [a link](https://example.org).\n\n![cat](/media/a.png)"
    )
    assert "<h1>Title</h1>" in html and "<em>text</em>" in html
    assert 'href="https://example.org"' in html and "noopener" in html
    assert '<img src="/media/a.png" alt="cat">' in html


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Hello, World!", "hello-world"),
        ("Crème brûlée  recipes", "creme-brulee-recipes"),
        ("???", "untitled"),
    ],
)
def test_slugs_come_from_titles(title: str, slug: str) -> None:
    assert slugify(title) == slug


async def _editor(app: Litestar, accounts: dict) -> Actor:
    user = accounts["editor"]
    return Actor(user.id, user.username)


async def test_every_save_keeps_a_revision_and_restore_brings_text_back(
    app: Litestar, accounts: dict
) -> None:
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="First", body_markdown="one"))
        entry = await save_entry(
            session, actor, EntryInput(title="First", body_markdown="two"), entry
        )
        revisions = await list_revisions(session, entry.id)
        assert [r.body_markdown for r in revisions] == ["two", "one"]
        oldest = revisions[-1]
        entry = await restore_revision(session, actor, entry, oldest.id)
        assert entry.body_markdown == "one" and entry.body_html == "<p>one</p>\n"
        assert len(await list_revisions(session, entry.id)) == 3


async def test_slugs_are_unique_per_kind(app: Litestar, accounts: dict) -> None:
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        await save_entry(session, actor, EntryInput(kind="post", title="About"))
        await save_entry(session, actor, EntryInput(kind="page", title="About"))  # other kind: fine
        with pytest.raises(ContentError) as duplicate:
            await save_entry(session, actor, EntryInput(kind="post", title="About"))
    assert duplicate.value.status == 409 and duplicate.value.field == "slug"


async def test_reserved_addresses_cannot_be_page_slugs(app: Litestar, accounts: dict) -> None:
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        with pytest.raises(ContentError, match="used by the site"):
            await save_entry(session, actor, EntryInput(kind="page", title="Admin", slug="admin"))


async def test_a_scheduled_post_is_never_visible_early_and_appears_on_time(
    app: Litestar, accounts: dict
) -> None:
    actor = await _editor(app, accounts)
    soon = datetime.now(UTC) + timedelta(hours=1)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="Tomorrow's news"))
        await publish_entry(session, actor, entry, soon)
        assert entry.status == "scheduled"
        assert await get_public_entry(session, "post", entry.slug) is None
        assert (await list_public_posts(session, PageRequest())).total == 0
        entry.published_at = datetime.now(UTC) - timedelta(seconds=1)  # the time has come
        await session.flush()
        assert await get_public_entry(session, "post", entry.slug) is not None
        assert (await list_public_posts(session, PageRequest())).total == 1


async def test_unpublishing_hides_an_entry_at_once(app: Litestar, accounts: dict) -> None:
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="Now you see it"))
        await publish_entry(session, actor, entry)
        assert await get_public_entry(session, "post", entry.slug) is not None
        await unpublish_entry(session, actor, entry)
        await session.flush()
        assert await get_public_entry(session, "post", entry.slug) is None


async def test_invalid_input_names_the_field(app: Litestar, accounts: dict) -> None:
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        for data, field in [
            (EntryInput(title=""), "title"),
            (EntryInput(title="x", slug="Not A Slug"), "slug"),
            (EntryInput(kind="video", title="x"), "kind"),
        ]:
            with pytest.raises(ContentError) as error:
                await save_entry(session, actor, data)
            assert error.value.field == field


async def test_views_are_counted_in_the_store_and_moved_to_the_entry_once(
    app: Litestar, accounts: dict
) -> None:
    import asyncio

    from app.content.services.entries import get_entry
    from app.content.services.views import flush_view_counts

    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="Popular"))
    views = app.state.views
    for _ in range(7):
        views.count(str(entry.id))
    await views.flush()  # from the process to the store, in one increment
    moved = await asyncio.gather(
        flush_view_counts(app.state.sessionmaker, app.state.store),
        flush_view_counts(app.state.sessionmaker, app.state.store),
    )
    assert sum(moved) == 7  # two workers flushing at once never count a view twice
    views.count(str(entry.id))
    await views.flush()
    assert await flush_view_counts(app.state.sessionmaker, app.state.store) == 1
    async with app.state.sessionmaker() as session:
        assert (await get_entry(session, entry.id)).view_count == 8


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("Some *text*.", "Some text."),
        ("A [link](https://example.org), **bold** and `code`!", "A link, bold and code!"),
        ("# Title\n\nFirst paragraph.\n\n- one\n- two", "Title. First paragraph. one. two"),
        (
            "## Setup\n\nInstall it:\n\n```\npip install keel\nkeel serve\n```\n\nDone",
            "Setup. Install it: pip install keel. keel serve. Done",
        ),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a. b. 1. 2"),
        ("A line  \nbreak", "A line break"),
        ('Tom &amp; Jerry\'s "show"', 'Tom & Jerry\'s "show"'),
    ],
)
def test_the_plain_text_of_an_entry_reads_as_its_words_do(markdown: str, text: str) -> None:
    """Excerpts, meta descriptions and search read the words as written: no space before
    punctuation where an inline tag ended, each block (heading, list item, line of code,
    cell) a sentence of its own, every entity decoded."""
    assert plain_text(render_markdown(markdown)) == text


async def test_a_save_that_loses_the_address_to_a_concurrent_save_changes_nothing(
    app: Litestar, accounts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address check passed, then another save took the address before this one's
    flush (the unique index refuses it): the entry is as it was and the session clean, so
    the editor's form can show the refusal without rolling anything back itself."""
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        await save_entry(session, actor, EntryInput(kind="post", title="Taken"))
        entry = await save_entry(session, actor, EntryInput(kind="post", title="Mine"))
    monkeypatch.setattr(services, "taken_slugs", _nothing_taken)
    async with app.state.sessionmaker() as session:
        entry = await get_entry(session, entry.id)
        with pytest.raises(SlugTaken):
            await save_entry(
                session, actor, EntryInput(kind="post", title="Renamed", slug="taken"), entry
            )
        assert not session.dirty and not session.new
        assert (entry.title, entry.slug, [tag.name for tag in entry.tags]) == ("Mine", "mine", [])
        assert len(await list_revisions(session, entry.id)) == 1  # the session still works


async def _nothing_taken(*_args: object, **_kwargs: object) -> set[str]:
    return set()


async def test_publishing_a_published_entry_keeps_its_date_unless_a_time_is_given(
    app: Litestar, accounts: dict
) -> None:
    actor = await _editor(app, accounts)
    last_week = datetime.now(UTC) - timedelta(days=7)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="Old news"))
        await publish_entry(session, actor, entry, last_week)
        await publish_entry(session, actor, entry)
        assert (entry.status, entry.published_at) == ("published", last_week)
        yesterday = datetime.now(UTC) - timedelta(days=1)
        await publish_entry(session, actor, entry, yesterday)
        assert entry.published_at == yesterday
        scheduled = await save_entry(session, actor, EntryInput(title="Went live"))
        await publish_entry(session, actor, scheduled, datetime.now(UTC) + timedelta(hours=1))
        scheduled.published_at = last_week  # its time has come: public, still "scheduled"
        await publish_entry(session, actor, scheduled)
        assert scheduled.published_at == last_week
        await unpublish_entry(session, actor, entry)
        await publish_entry(session, actor, entry)  # a draft again: published now
        assert entry.published_at is not None and entry.published_at > yesterday


async def test_excerpt_and_meta_description_follow_the_body_until_the_author_writes_them(
    app: Litestar, accounts: dict
) -> None:
    """A client that sends back every field it read (the generated texts included) does
    not make them the author's; an empty field makes them follow the body again."""
    actor = await _editor(app, accounts)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(session, actor, EntryInput(title="T", body_markdown="One."))
        read = (entry.excerpt, entry.meta_description)
        entry = await save_entry(
            session,
            actor,
            EntryInput(title="T", body_markdown="Two.", excerpt=read[0], meta_description=read[1]),
            entry,
        )
        assert (entry.excerpt, entry.meta_description) == ("Two.", "Two.")
        assert not entry.excerpt_written and not entry.meta_description_written
        entry = await save_entry(
            session,
            actor,
            EntryInput(title="T", body_markdown="Three.", excerpt="Mine.", meta_description="Two."),
            entry,
        )
        assert (entry.excerpt, entry.meta_description) == ("Mine.", "Three.")
        entry = await save_entry(
            session, actor, EntryInput(title="T", body_markdown="Four.", excerpt="Mine."), entry
        )
        assert (entry.excerpt, entry.excerpt_written) == ("Mine.", True)
        entry = await save_entry(
            session, actor, EntryInput(title="T", body_markdown="Five."), entry
        )
        assert (entry.excerpt, entry.excerpt_written) == ("Five.", False)
