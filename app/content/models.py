"""Tables of the content domain: entries (pages and posts), tags, revisions, media."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDAuditBase, UUIDBase, orm_registry
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Kind(enum.StrEnum):
    page = "page"
    post = "post"


class Status(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    published = "published"
    archived = "archived"


entry_tags = Table(
    "entry_tags",
    orm_registry.metadata,
    Column("entry_id", GUID, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", GUID, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


content_generation = Table(
    "content_generation",
    orm_registry.metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)
"""One row (id 1): a random number the database itself sets anew, by triggers, in every
transaction that changes an entry, a tag or an entry's tags (migration 0013), so a read of
it tells whether anything read from those tables before may have changed since
(app/content/services/list_cache.py). No row reads as 0."""


class Tag(UUIDBase):
    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)


class Entry(UUIDAuditBase):
    """A page or a post. `body_html` is rendered and sanitized when the entry is saved."""

    __tablename__ = "entries"
    __table_args__ = (
        UniqueConstraint("kind", "slug", name="uq_entries_kind_slug"),
        Index("ix_entries_public", "kind", "status", "published_at"),
    )

    kind: Mapped[str] = mapped_column(String(8))
    title: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(120))
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    excerpt: Mapped[str] = mapped_column(String(500), default="")
    meta_description: Mapped[str] = mapped_column(String(300), default="")
    excerpt_written: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Whether the author wrote the excerpt; if not, every save makes it from the body."""
    meta_description_written: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    """Whether the author wrote the meta description; if not, it follows the body."""
    status: Mapped[str] = mapped_column(String(12), default=Status.draft.value)
    published_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    """When a published or scheduled entry is (or becomes) public."""
    author_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL")
    )
    nav_order: Mapped[int | None] = mapped_column(Integer)
    """Pages with a nav order appear in the site menu, lowest first."""
    view_count: Mapped[int] = mapped_column(Integer, default=0)

    tags: Mapped[list[Tag]] = relationship(secondary=entry_tags, lazy="selectin", order_by=Tag.name)


class Revision(UUIDBase):
    """The text of an entry as one save left it."""

    __tablename__ = "revisions"
    __table_args__ = (Index("ix_revisions_entry_created", "entry_id", "created_at"),)

    entry_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("entries.id", ondelete="CASCADE"))
    author_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL")
    )
    author_name: Mapped[str] = mapped_column(String(120), default="")
    title: Mapped[str] = mapped_column(String(200))
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class Media(UUIDAuditBase):
    """An uploaded image or PDF, stored under MEDIA_DIR with a random name."""

    __tablename__ = "media"

    original_name: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(80), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    alt_text: Mapped[str] = mapped_column(String(300), default="")
    uploaded_by_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL")
    )
