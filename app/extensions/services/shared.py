"""What Keel shares with plugins: read-only views of its data, made by Keel's migrations
(`migrations/versions/0010_shared_published_entries.py`) and given to a plugin as
SQLAlchemy tables (`ctx.shared.published_entries`).

PostgreSQL: the views live in schema `keel_shared`; every plugin role may read them (USAGE
on the schema and SELECT on its views, granted at install by `isolation.create_storage`),
while it still holds no privilege on Keel's tables: a view reads its tables as its owner,
Keel's user. SQLite: the views are named `keel_shared_<view>`, like the plugins' prefixed
tables (isolation there is by convention only).
"""

from __future__ import annotations

from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Column, MetaData, String, Table, Text

SHARED_SCHEMA = "keel_shared"
"""The PostgreSQL schema of the shared views."""


class SharedViews:
    """The views Keel shares, as tables a plugin selects from with its own session."""

    def __init__(self, dialect: str) -> None:
        postgres = dialect == "postgresql"
        self.metadata = MetaData(schema=SHARED_SCHEMA if postgres else None)
        prefix = "" if postgres else f"{SHARED_SCHEMA}_"
        self.published_entries = Table(
            f"{prefix}published_entries",
            self.metadata,
            Column("id", GUID, primary_key=True),
            Column("kind", String(8)),
            Column("title", String(200)),
            Column("slug", String(120)),
            Column("path", Text),
            Column("body_html", Text),
            Column("published_at", DateTimeUTC(timezone=True)),
            Column("updated_at", DateTimeUTC(timezone=True)),
        )
        """The entries visitors can read now (published, or scheduled and due): `id`,
        `kind` (`page` or `post`), `title`, `slug`, `path` (the public address on the
        site: `/blog/<slug>` or `/<slug>`), `body_html` (rendered and sanitized),
        `published_at`, `updated_at`."""
