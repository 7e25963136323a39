"""Counts of content for the admin dashboard: entries by the status editors see, what is
scheduled next, and what visitors read most."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.content.models import Entry, Kind, Status
from app.content.services.public import is_public, public_path


@dataclass(frozen=True)
class ContentCounts:
    by_status: dict[str, int]
    """Entries by the status editors see (a scheduled entry whose time has come is
    published), every status present."""
    posts: int
    pages: int
    views: int
    """Views counted into `entries.view_count` so far, over every entry."""

    @property
    def total(self) -> int:
        return self.posts + self.pages


@dataclass(frozen=True)
class ListedEntry:
    """An entry as a dashboard list shows it: no bodies."""

    id: UUID
    kind: str
    title: str
    slug: str
    published_at: datetime | None
    view_count: int
    public: bool

    @property
    def path(self) -> str | None:
        """Where visitors read it, while they may."""
        return public_path(self.kind, self.slug) if self.public else None


async def content_counts(session: AsyncSession) -> ContentCounts:
    """Entries by shown status and kind, and every view counted, in one query."""
    shown = is_public().label("public")
    rows = await session.execute(
        select(Entry.kind, Entry.status, shown, func.count(), func.sum(Entry.view_count)).group_by(
            Entry.kind, Entry.status, shown
        )
    )
    by_status = {status.value: 0 for status in Status}
    kinds = {kind.value: 0 for kind in Kind}
    views = 0
    for kind, status, public, count, viewed in rows:
        status = Status.published.value if public else status
        by_status[status] = by_status.get(status, 0) + count
        kinds[kind] = kinds.get(kind, 0) + count
        views += viewed or 0
    return ContentCounts(by_status, kinds[Kind.post.value], kinds[Kind.page.value], views)


_LISTED = (Entry.id, Entry.kind, Entry.title, Entry.slug, Entry.published_at, Entry.view_count)


async def _listed(session: AsyncSession, statement: Select[Any]) -> list[ListedEntry]:
    rows = await session.execute(statement)
    return [ListedEntry(*row) for row in rows]


async def scheduled_next(session: AsyncSession, now: datetime, limit: int = 5) -> list[ListedEntry]:
    """Entries scheduled to become public after `now`, soonest first."""
    statement = (
        select(*_LISTED, false())
        .where(Entry.status == Status.scheduled.value, Entry.published_at > now)
        .order_by(Entry.published_at, Entry.id)
        .limit(limit)
    )
    return await _listed(session, statement)


async def most_viewed(session: AsyncSession, limit: int = 5) -> list[ListedEntry]:
    """The entries with the most counted views (any view at all), most first."""
    statement = (
        select(*_LISTED, is_public())
        .where(Entry.view_count > 0)
        .order_by(Entry.view_count.desc(), Entry.id)
        .limit(limit)
    )
    return await _listed(session, statement)


async def entry_titles(session: AsyncSession, ids: Collection[UUID]) -> dict[UUID, str]:
    """The titles of the entries of `ids` that still exist."""
    if not ids:
        return {}
    rows = await session.execute(select(Entry.id, Entry.title).where(Entry.id.in_(ids)))
    return {entry_id: title for entry_id, title in rows}
