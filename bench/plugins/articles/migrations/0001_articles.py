"""The articles: what a core post page shows (title, date, tags, rendered body)."""

from sqlalchemy import Column, DateTime, String, Text


def upgrade(connection, storage):  # type: ignore[no-untyped-def]
    storage.table(
        "articles",
        Column("slug", String(200), primary_key=True),
        Column("title", String(300), nullable=False),
        Column("body_html", Text, nullable=False),
        Column("tags", String(500), nullable=False, default=""),
        Column("published_at", DateTime(timezone=True), nullable=False),
    )
    storage.metadata.create_all(connection)


def downgrade(connection, storage):  # type: ignore[no-untyped-def]
    storage.table("articles").drop(connection)
