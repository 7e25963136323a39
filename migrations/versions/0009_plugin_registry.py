"""plugin_registry, plugin_migrations: the plugin host's tables

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plugin_registry",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("manifest", JsonB, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("installed_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("archive", sa.LargeBinary(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("settings", JsonB, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plugin_registry")),
    )
    op.create_table(
        "plugin_migrations",
        sa.Column("plugin", sa.String(length=40), nullable=False),
        sa.Column("migration", sa.String(length=200), nullable=False),
        sa.Column("applied_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plugin"],
            ["plugin_registry.name"],
            name=op.f("fk_plugin_migrations_plugin_plugin_registry"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plugin", "migration", name=op.f("pk_plugin_migrations")),
    )


def downgrade() -> None:
    op.drop_table("plugin_migrations")
    op.drop_table("plugin_registry")
