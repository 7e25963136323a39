"""import_runs: the committed outcome of each import job, so a second run imports nothing

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_runs",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("outcome", JsonB, nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_import_runs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_import_runs")),
    )


def downgrade() -> None:
    op.drop_table("import_runs")
