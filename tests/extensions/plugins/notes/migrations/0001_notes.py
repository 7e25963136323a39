"""The notes table."""

from sqlalchemy import Column, Integer, String


def upgrade(connection, storage):
    storage.table("notes", Column("id", Integer, primary_key=True), Column("text", String(200)))
    storage.metadata.create_all(connection)
