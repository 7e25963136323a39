"""jobs.created_by_api_key_id: a job records the API key that enqueued it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


KEEP_TYPES = [
    sa.Column(
        "created_by_id",
        GUID(length=16),
        sa.ForeignKey("users.id", name="fk_jobs_created_by_id_users", ondelete="SET NULL"),
    )
]
"""SQLite rebuilds the table to add a foreign key, and its reflection reads a GUID column
as NUMERIC: the existing column is declared again as it is."""


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, reflect_args=KEEP_TYPES) as batch_op:
        batch_op.add_column(sa.Column("created_by_api_key_id", GUID(length=16), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_created_by_api_key_id_api_keys"),
            "api_keys",
            ["created_by_api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            "ix_jobs_created_by_api_key_created_at",
            ["created_by_api_key_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, reflect_args=KEEP_TYPES) as batch_op:
        batch_op.drop_index("ix_jobs_created_by_api_key_created_at")
        batch_op.drop_constraint(
            batch_op.f("fk_jobs_created_by_api_key_id_api_keys"), type_="foreignkey"
        )
        batch_op.drop_column("created_by_api_key_id")
