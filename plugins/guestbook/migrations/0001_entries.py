"""The guestbook's entries: a name, a message, whether an editor approved it, and when."""

from sqlalchemy import Boolean, Column, DateTime, Integer, String, Text


def upgrade(connection, storage):  # type: ignore[no-untyped-def]
    storage.table(
        "entries",
        Column("id", Integer, primary_key=True),
        Column("name", String(80), nullable=False),
        Column("message", Text, nullable=False),
        Column("approved", Boolean, nullable=False, default=False, index=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    storage.metadata.create_all(connection)


def downgrade(connection, storage):  # type: ignore[no-untyped-def]
    storage.table("entries").drop(connection)
