"""What the listener heard."""

from sqlalchemy import Column, Integer, String, Text


def upgrade(connection, storage):
    storage.table(
        "heard",
        Column("id", Integer, primary_key=True),
        Column("event", String(40), nullable=False),
        Column("detail", Text, nullable=False),
    )
    storage.metadata.create_all(connection)
