"""Content's events: what happened to an entry or a media file, for whoever subscribed
(plugins, through `keel.plugin`).

The services emit them on the session of the change (`entries.py`, `media.py`), so every
path that changes content emits them: the API, the admin pages and the CSV import. They are
delivered after the COMMIT, in the process that committed, and never for a change that
rolled back (app/core/events.py). Payloads are frozen dataclasses of plain values: never
an ORM object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from app.content.models import Entry, Media, Status
from app.content.services.public import now, public_path
from app.core.events import emit

ENTRY_PUBLISHED = "entry.published"
"""An entry was published now or scheduled for later (`EntryEvent.scheduled`), or its
publication time changed."""
ENTRY_UPDATED = "entry.updated"
"""A published or scheduled entry was saved (edited, or a revision restored)."""
ENTRY_UNPUBLISHED = "entry.unpublished"
"""A published or scheduled entry went back to draft or was archived (`status` says which)."""
ENTRY_DELETED = "entry.deleted"
"""An entry was deleted, whatever its status (`status` says what it was)."""
MEDIA_UPLOADED = "media.uploaded"
"""A file was added to the media library."""

ENTRY_EVENTS = (ENTRY_PUBLISHED, ENTRY_UPDATED, ENTRY_UNPUBLISHED, ENTRY_DELETED)
MEDIA_EVENTS = (MEDIA_UPLOADED,)

_ANNOUNCED = (Status.published.value, Status.scheduled.value)
"""Statuses whose entries visitors see or will see: only their changes are announced."""


@dataclass(frozen=True)
class EntryEvent:
    """A page or post as the change left it (`entry.deleted`: as it was)."""

    name: str
    """The event: `entry.published`, `entry.updated`, `entry.unpublished`, `entry.deleted`."""
    id: UUID
    kind: str
    """`page` or `post`."""
    title: str
    slug: str
    path: str
    """Where visitors read it (`/blog/<slug>`, `/<slug>`), once it is public."""
    status: str
    """`draft`, `scheduled`, `published` or `archived`."""
    published_at: datetime | None
    """When it is (or became) public, in UTC; None if it never was published."""
    scheduled: bool
    """Published for a time still to come: visitors see it from `published_at`, not yet."""
    author_id: UUID | None
    at: datetime
    """When the change was made (UTC)."""


@dataclass(frozen=True)
class MediaEvent:
    """A file of the media library."""

    name: str
    """The event: `media.uploaded`."""
    id: UUID
    filename: str
    """The name it was uploaded with."""
    content_type: str
    size: int
    """Bytes."""
    width: int | None
    """Pixels, for an image."""
    height: int | None
    path: str
    """Where it is served (`/media/<stored name>`)."""
    uploaded_by_id: UUID | None
    at: datetime


def is_announced(entry: Entry) -> bool:
    """Whether `entry` is published or scheduled: its changes are events, a draft's are not."""
    return entry.status in _ANNOUNCED


def emit_entry_event(session: Any, name: str, entry: Entry) -> None:
    """Note `name` about `entry` as it is now, delivered if the session commits."""
    moment = now()
    published_at = entry.published_at
    emit(
        session,
        name,
        EntryEvent(
            name=name,
            id=entry.id,
            kind=entry.kind,
            title=entry.title,
            slug=entry.slug,
            path=public_path(entry.kind, entry.slug),
            status=entry.status,
            published_at=published_at,
            scheduled=is_announced(entry) and published_at is not None and published_at > moment,
            author_id=entry.author_id,
            at=moment,
        ),
    )


def emit_media_uploaded(session: Any, media: Media, path: str) -> None:
    """Note that `media` (served at `path`) was uploaded, delivered if the session commits."""
    emit(
        session,
        MEDIA_UPLOADED,
        MediaEvent(
            name=MEDIA_UPLOADED,
            id=media.id,
            filename=media.original_name,
            content_type=media.content_type,
            size=media.size,
            width=media.width,
            height=media.height,
            path=path,
            uploaded_by_id=media.uploaded_by_id,
            at=now(),
        ),
    )
