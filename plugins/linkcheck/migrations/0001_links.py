"""The link check's tables: each distinct link found in the published entries and its
last result, the entries that link to it, and the runs."""

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String


def upgrade(connection, storage):  # type: ignore[no-untyped-def]
    links = storage.table(
        "links",
        Column("id", Integer, primary_key=True),
        Column("url", String(2000), nullable=False, unique=True),
        Column("status", Integer),
        Column("error", String(200)),
        Column("broken", Boolean, nullable=False, default=False, index=True),
        Column("checked_at", DateTime(timezone=True)),
        Column("first_broken_at", DateTime(timezone=True)),
        Column("last_broken_at", DateTime(timezone=True)),
    )
    storage.table(
        "sources",
        Column("link_id", Integer, ForeignKey(links.c.id), primary_key=True),
        Column("entry_id", String(36), primary_key=True),
        Column("title", String(200), nullable=False),
        Column("path", String(200), nullable=False),
    )
    storage.table(
        "runs",
        Column("id", Integer, primary_key=True),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
        Column("entries", Integer, nullable=False, default=0),
        Column("links", Integer, nullable=False, default=0),
        Column("checked", Integer, nullable=False, default=0),
        Column("broken", Integer, nullable=False, default=0),
    )
    storage.metadata.create_all(connection)


def downgrade(connection, storage):  # type: ignore[no-untyped-def]
    for name in ("sources", "runs", "links"):
        storage.table(name).drop(connection)
