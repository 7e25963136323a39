"""request_stats, view_stats: analytics per minute, hour and day (branch analytics)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 14:00:00.000000

Requests by route group and status class, with latency buckets, and entry views, per
period; the `analytics_rollup` job fills them from the store's per-minute hashes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_stats",
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("start", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("route_group", sa.String(length=16), nullable=False),
        sa.Column("status_class", sa.String(length=3), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("buckets", JsonB, nullable=False),
        sa.PrimaryKeyConstraint(
            "period_seconds", "start", "route_group", "status_class", name=op.f("pk_request_stats")
        ),
    )
    op.create_table(
        "view_stats",
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("start", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period_seconds", "start", name=op.f("pk_view_stats")),
    )


def downgrade() -> None:
    op.drop_table("view_stats")
    op.drop_table("request_stats")
