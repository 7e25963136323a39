"""What visitors see: an entry is public when it is published or scheduled and its publish
time has come (`is_public`, `visible_to_public`); that filter runs in every public query,
so a scheduled post appears on time with nobody acting and never early. "Now" is the clock
of the request running (`now`). Also the public queries of the ORM path (the blog, tags,
search, the sitemap) and the authors' names they show."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import User
from app.content.models import Entry, Kind, Status, Tag
from app.core.clock import current_clock
from app.core.pagination import Page, PageRequest, paginate


def now() -> datetime:
    """The moment publication is decided at: the clock of the request running now
    (app/core/clock.py), so a test moves it instead of waiting for a scheduled time."""
    return current_clock().now()


def is_public(moment: datetime | ColumnElement[datetime] | None = None) -> ColumnElement[bool]:
    """The visitor's filter: published or scheduled, and the publish time (`moment`, by
    default now) has come."""
    return and_(
        or_(Entry.status == Status.published.value, Entry.status == Status.scheduled.value),
        Entry.published_at.is_not(None),
        Entry.published_at <= (now() if moment is None else moment),
    )


class Publication(Protocol):
    """What says whether visitors see an entry: an `Entry`, or a read's `EntryView`."""

    @property
    def status(self) -> str: ...
    @property
    def published_at(self) -> datetime | None: ...


_PUBLIC_PREFIX = ("/", "/blog/")
_POST = Kind.post.value


def public_path(kind: str, slug: str) -> str:
    """Where visitors read an entry: `/blog/<slug>` for posts, `/<slug>` for pages."""
    return _PUBLIC_PREFIX[kind == _POST] + slug


def visible_to_public(entry: Publication) -> bool:
    return (
        entry.status in (Status.published.value, Status.scheduled.value)
        and entry.published_at is not None
        and entry.published_at <= now()
    )


def shown_status(entry: Publication) -> str:
    """The status editors see: a scheduled entry whose time has come is published."""
    return Status.published.value if visible_to_public(entry) else entry.status


async def get_public_entry(session: AsyncSession, kind: str, slug: str) -> Entry | None:
    return await session.scalar(
        select(Entry).where(Entry.kind == kind, Entry.slug == slug, is_public())
    )


async def list_public_posts(
    session: AsyncSession, page: PageRequest, tag_slug: str | None = None
) -> Page[Entry]:
    query = select(Entry).where(Entry.kind == Kind.post.value, is_public())
    if tag_slug:
        query = query.where(Entry.tags.any(Tag.slug == tag_slug))
    return await paginate(session, query.order_by(Entry.published_at.desc(), Entry.id), page)


async def search_public(session: AsyncSession, q: str, page: PageRequest) -> Page[Entry]:
    """Full-text search on PostgreSQL; every word must appear (case-insensitive) on SQLite."""
    q = q.strip()[:200]
    query = select(Entry).where(is_public())
    if session.get_bind().dialect.name == "postgresql":
        document = func.to_tsvector("simple", Entry.title + " " + Entry.body_markdown)
        terms = func.websearch_to_tsquery("simple", q)
        query = query.where(document.op("@@")(terms)).order_by(func.ts_rank(document, terms).desc())
    else:
        for word in q.split()[:10]:
            pattern = f"%{word.replace('%', '').replace('_', '')}%"
            query = query.where(or_(Entry.title.ilike(pattern), Entry.body_markdown.ilike(pattern)))
        query = query.order_by(Entry.published_at.desc())
    return await paginate(session, query, page)


async def get_tag(session: AsyncSession, slug: str) -> Tag | None:
    return await session.scalar(select(Tag).where(Tag.slug == slug))


async def list_public_entries(session: AsyncSession) -> list[Entry]:
    """Every public page and post (for the sitemap), newest first."""
    query = select(Entry).where(is_public()).order_by(Entry.published_at.desc(), Entry.id)
    return list((await session.scalars(query)).all())


async def author_names(session: AsyncSession, entries: list[Entry]) -> dict[UUID | None, str]:
    """Each author's display name (or username), by user id, in one query."""
    ids = {entry.author_id for entry in entries if entry.author_id is not None}
    if not ids:
        return {}
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(ids))
    )
    return {user_id: display or username for user_id, display, username in rows}
