"""Request and response shapes of the content API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self
from uuid import UUID

import msgspec

from app.content.models import Entry, Kind
from app.content.services.public import public_path
from app.content.services.reads import tag_names
from app.core.numbers import Int32
from app.core.reads import Record


class EntrySummaryOut(msgspec.Struct):
    """An entry in a list: what finding and linking it takes, without the bodies
    (`fields=` asks for any field of `EntryOut` instead)."""

    id: UUID
    kind: str
    title: str
    slug: str
    status: str
    """`draft`, `scheduled`, `published` or `archived`."""
    published_at: datetime | None
    excerpt: str
    tags: list[str]
    author_id: UUID | None
    created_at: datetime
    updated_at: datetime
    url: str
    """The public address (it answers only once the entry is public)."""

    @classmethod
    def from_row(cls, row: Record) -> Self:
        """Straight from a row of app/content/services/reads.py (no EntryView between).
        Positional, in the order the fields are declared (a list builds 20 of these per
        request; keywords cost more)."""
        kind, slug = row["kind"], row["slug"]
        return cls(
            row["id"],
            kind,
            row["title"],
            slug,
            row["status"],
            row["published_at"],
            row["excerpt"],
            tag_names(row),
            row["author_id"],
            row["created_at"],
            row["updated_at"],
            public_path(kind, slug),
            *cls._details_of(row),
        )

    @staticmethod
    def _details_of(row: Record) -> tuple[Any, ...]:
        """What a full representation adds to the summary's fields, in their order."""
        return ()


class EntryOut(EntrySummaryOut):
    """An entry in full: the summary's fields, its bodies and the rest."""

    meta_description: str
    nav_order: int | None
    body_markdown: str
    body_html: str
    """Rendered and sanitized when the entry was saved."""
    view_count: int

    @staticmethod
    def _details_of(row: Record) -> tuple[Any, ...]:
        return (
            row["meta_description"],
            row["nav_order"],
            row["body_markdown"],
            row["body_html"],
            row["view_count"] or 0,
        )

    @classmethod
    def of(cls, entry: Entry) -> EntryOut:
        """Not a plain copy: the tags' names, a view count of 0 for none, the public url."""
        return cls(
            id=entry.id,
            kind=entry.kind,
            title=entry.title,
            slug=entry.slug,
            status=entry.status,
            published_at=entry.published_at,
            excerpt=entry.excerpt,
            meta_description=entry.meta_description,
            tags=[tag.name for tag in entry.tags],
            nav_order=entry.nav_order,
            author_id=entry.author_id,
            body_markdown=entry.body_markdown,
            body_html=entry.body_html,
            view_count=entry.view_count or 0,
            created_at=entry.created_at,
            updated_at=entry.updated_at,
            url=public_path(entry.kind, entry.slug),
        )


class EntrySummaryPageOut(msgspec.Struct):
    """One page of entries, as summaries (`Page.envelope`)."""

    items: list[EntrySummaryOut]
    total: int
    page: int
    per_page: int


class EntryCreate(msgspec.Struct):
    title: str
    kind: str = Kind.post.value
    """`post` or `page`."""
    slug: str = ""
    """Lowercase letters, digits and dashes; made from the title when empty."""
    body_markdown: str = ""
    excerpt: str = ""
    meta_description: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    nav_order: Int32 | None = None
    """Pages only: its place in the site menu."""


class EntryUpdate(msgspec.Struct):
    """Only the fields given change; the kind never does."""

    title: str | None = None
    slug: str | None = None
    body_markdown: str | None = None
    excerpt: str | None = None
    meta_description: str | None = None
    tags: list[str] | None = None
    nav_order: Int32 | msgspec.UnsetType | None = msgspec.UNSET
    """Pages only; `null` takes the page out of the site menu."""


class PublishIn(msgspec.Struct):
    published_at: datetime | None = None
    """With its offset; a future time schedules the entry. Now when absent."""


class RevisionOut(msgspec.Struct):
    id: UUID
    entry_id: UUID
    author_id: UUID | None
    author_name: str
    title: str
    body_markdown: str
    created_at: datetime
