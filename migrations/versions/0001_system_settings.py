"""system settings

Revision ID: 0001
Revises:
Create Date: 2026-11-23 06:51:51.055833
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "system_settings",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", JsonB, nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        # References users(id) once the users table exists (identity issue).
        sa.Column("updated_by", GUID(length=16), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_system_settings")),
    )


def downgrade() -> None:
    op.drop_table("system_settings")
