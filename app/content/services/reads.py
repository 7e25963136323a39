"""The read side of content on the hot paths: an entry page and the API list.

Each is one statement defined here once, run through app/core/reads.py (asyncpg directly on
PostgreSQL), with the author's name and the tags folded into the same row, so a post page
costs one round trip and no ORM work. Visibility is the same `is_public()` filter the
services use; everything that writes stays in app/content/services/entries.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, bindparam, exists, func, or_, select

from app.accounts.models import User
from app.content.models import Entry, Kind, Status, Tag, content_generation, entry_tags
from app.content.services.entries import EntryFilters, check_filters, tag_slug, title_pattern
from app.content.services.public import is_public, now
from app.core.pagination import Page, PageRequest
from app.core.reads import ReadQuery, Reads, Record, Row

T = TypeVar("T")
TAG_SEPARATOR = "\x1e"
NAME_SEPARATOR = "\x1f"
"""Tags travel as `name\\x1fslug\\x1e…` in one column; tag names may not hold control
characters (app/content/services/entries.py refuses them)."""


@dataclass(frozen=True, slots=True)
class TagRef:
    name: str
    slug: str


@dataclass(slots=True)
class EntryView:
    """An entry as read for display: the columns of `Entry`, its author's name and tags."""

    id: UUID
    kind: str
    title: str
    slug: str
    status: str
    published_at: datetime | None
    excerpt: str
    meta_description: str
    nav_order: int | None
    author_id: UUID | None
    author_name: str
    body_markdown: str
    body_html: str
    view_count: int
    created_at: datetime
    updated_at: datetime
    tags: list[TagRef]

    @classmethod
    def of(cls, row: Record) -> EntryView:
        tags = [TagRef(*pair.split(NAME_SEPARATOR, 1)) for pair in _split(row["tags"])]
        tags.sort(key=lambda tag: tag.name)
        return cls(**{name: row[name] for name in _ENTRY_FIELDS}, tags=tags)


def _split(joined: str | None) -> list[str]:
    return joined.split(TAG_SEPARATOR) if joined else []


def tag_names(row: Record) -> list[str]:
    """The names of a row's tags, in the order EntryView keeps them (by name)."""
    names = [pair.partition(NAME_SEPARATOR)[0] for pair in _split(row["tags"])]
    names.sort()
    return names


_SUMMARY_COLUMNS = (
    Entry.id,
    Entry.kind,
    Entry.title,
    Entry.slug,
    Entry.status,
    Entry.published_at,
    Entry.excerpt,
    Entry.author_id,
    Entry.created_at,
    Entry.updated_at,
)
"""What a summary (the API list's default item) is made of: no bodies, no author's name."""
_ENTRY_COLUMNS = (
    *_SUMMARY_COLUMNS,
    Entry.meta_description,
    Entry.nav_order,
    Entry.body_markdown,
    Entry.body_html,
    Entry.view_count,
)
_ENTRY_FIELDS = (*(column.key for column in _ENTRY_COLUMNS), "author_name")
_NOW = bindparam("now", type_=Entry.published_at.type)


def _tags() -> ColumnElement[Any]:
    """An entry's tags as one aggregated column (`name\\x1fslug\\x1e…`)."""
    return (
        select(func.aggregate_strings(Tag.name + NAME_SEPARATOR + Tag.slug, TAG_SEPARATOR))
        .select_from(Tag)
        .join(entry_tags, entry_tags.c.tag_id == Tag.id)
        .where(entry_tags.c.entry_id == Entry.id)
        .scalar_subquery()
        .label("tags")
    )


def _entries(*where: ColumnElement[bool]) -> Select[Any]:
    """Entries with `author_name` and `tags` (one aggregated column) in the same row."""
    author_name = func.coalesce(func.nullif(User.display_name, ""), User.username, "")
    return (
        select(*_ENTRY_COLUMNS, author_name.label("author_name"), _tags())
        .outerjoin(User, User.id == Entry.author_id)
        .where(*where)
    )


def _summaries(*where: ColumnElement[bool]) -> Select[Any]:
    """Entries with only the columns of a summary and their tags."""
    return select(*_SUMMARY_COLUMNS, _tags()).where(*where)


_BY_SLUG = (Entry.kind == bindparam("kind"), Entry.slug == bindparam("slug"))
PUBLIC_ENTRY = ReadQuery(_entries(*_BY_SLUG, is_public(_NOW)))
ANY_ENTRY = ReadQuery(_entries(*_BY_SLUG))
_BY_ID = Entry.id == bindparam("entry_id", type_=Entry.id.type)
PUBLIC_ENTRY_BY_ID = ReadQuery(_entries(_BY_ID, is_public(_NOW)))
ANY_ENTRY_BY_ID = ReadQuery(_entries(_BY_ID))
NAV_PAGES = ReadQuery(
    select(Entry.title, Entry.slug)
    .where(Entry.kind == Kind.page.value, Entry.nav_order.is_not(None), is_public(_NOW))
    .order_by(Entry.nav_order, Entry.title)
)
NEXT_PUBLICATION = ReadQuery(
    select(func.min(Entry.published_at).label("moment")).where(
        Entry.status == Status.scheduled.value, Entry.published_at > _NOW
    )
)

CONTENT_GENERATION = ReadQuery(select(content_generation.c.generation))


async def entry_for_reader(
    reads: Reads, kind: str, slug: str, *, may_preview: bool
) -> EntryView | None:
    """What a reader sees at an entry's address: a public entry, or (for an editor's
    preview) the entry in any status. None means "not found"."""
    if may_preview:
        row = await reads.one(ANY_ENTRY, kind=kind, slug=slug)
    else:
        row = await reads.one(PUBLIC_ENTRY, kind=kind, slug=slug, now=now())
    return EntryView.of(row) if row is not None else None


async def entry_row_by_id(reads: Reads, entry_id: UUID, *, may_preview: bool) -> Row | None:
    """The API's entry by id, as a row (`EntryView.of` or `EntryOut.from_row` shape it):
    public only, unless the caller may preview. None means "not found"."""
    if may_preview:
        return await reads.one(ANY_ENTRY_BY_ID, entry_id=entry_id)
    return await reads.one(PUBLIC_ENTRY_BY_ID, entry_id=entry_id, now=now())


async def nav_pages(reads: Reads) -> list[Row]:
    """Public pages that belong in the site menu (`title`, `slug`), in menu order."""
    return await reads.all(NAV_PAGES, now=now())


async def next_scheduled_publication(reads: Reads) -> float | None:
    """When the next scheduled entry becomes public (epoch seconds), if any. Pages ask it
    while they hold the request's session, so it reads beside that pool, never from it."""
    row = await reads.one(NEXT_PUBLICATION, now=now())
    moment = row["moment"] if row is not None else None
    return moment.timestamp() if moment is not None else None


async def current_content_generation(reads: Reads) -> int:
    """The database's content generation now: a number that every committed change of
    entries, tags or entry tags replaces by a new random one (0 without its row)."""
    records = await reads.records(CONTENT_GENERATION)
    return int(records[0]["generation"]) if records else 0


@cache
def _list_queries(
    public_only: bool, kind: bool, status: bool, author: bool, tag: bool, q: bool, summary: bool
) -> tuple[ReadQuery, ReadQuery]:
    """The page query (with the total as a window column) and the count query for one
    combination of filters and columns; each combination is compiled once."""
    where: list[ColumnElement[bool]] = []
    if public_only:
        where.append(is_public(_NOW))
    if kind:
        where.append(Entry.kind == bindparam("kind"))
    if status:
        where.append(Entry.status == bindparam("status"))
    if author:
        where.append(Entry.author_id == bindparam("author_id"))
    if tag:
        tagged = (
            select(entry_tags.c.entry_id)
            .join(Tag, Tag.id == entry_tags.c.tag_id)
            .where(entry_tags.c.entry_id == Entry.id, Tag.slug == bindparam("tag"))
        )
        where.append(exists(tagged))
    if q:
        where.append(or_(Entry.title.ilike(bindparam("q")), Entry.slug.ilike(bindparam("q"))))
    rows = (
        (_summaries if summary else _entries)(*where)
        .add_columns(func.count().over().label("total"))
        .order_by(Entry.updated_at.desc(), Entry.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    count = select(func.count().label("total")).select_from(Entry).where(*where)
    return ReadQuery(rows), ReadQuery(count)


async def list_entries(
    reads: Reads,
    filters: EntryFilters,
    page: PageRequest,
    shape: Callable[[Record], T] = EntryView.of,  # type: ignore[assignment]
    *,
    summary: bool = False,
) -> Page[T]:
    """The API list: what `services.list_entries` answers, newest change first, in one
    round trip (a second one only for a page past the end). Each row becomes `shape(row)`
    (an EntryView by default; the API builds its response items straight from the row).
    With `summary` the rows hold only what a summary needs (`_SUMMARY_COLUMNS`, the tags):
    no bodies read, sent or decoded."""
    check_filters(filters)
    rows_query, count_query = _list_queries(
        filters.public_only,
        bool(filters.kind),
        bool(filters.status),
        filters.author_id is not None,
        bool(filters.tag),
        bool(filters.q),
        summary,
    )
    params: dict[str, Any] = {"limit": page.per_page, "offset": page.offset}
    if filters.public_only:
        params["now"] = now()
    if filters.kind:
        params["kind"] = filters.kind
    if filters.status:
        params["status"] = filters.status
    if filters.author_id is not None:
        params["author_id"] = filters.author_id
    if filters.tag:
        params["tag"] = tag_slug(filters.tag)
    if filters.q:
        params["q"] = title_pattern(filters.q)
    rows = await reads.records(rows_query, **params)
    if rows:
        total = int(rows[0]["total"])
    elif page.offset:
        del params["limit"], params["offset"]
        total = int((await reads.one(count_query, **params) or {}).get("total", 0))
    else:
        total = 0
    return Page([shape(row) for row in rows], total, page.page, page.per_page)
