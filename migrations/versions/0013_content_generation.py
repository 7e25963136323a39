"""content_generation: a number the database changes with every change of content

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 20:10:00.000000

One row (id 1) whose `generation` triggers set to a new random number in every transaction
that inserts, updates or deletes entries, tags or entry_tags (and on TRUNCATE), whatever
wrote them: Keel's services, a job, a cascade, a script. A process that reads it in each
request can keep what it read from those tables while the number stays the same
(app/content/services/list_cache.py). Random, not counted: a counter starts again when
the row is deleted or a backup is restored, and the same number would then stand for
other content. PostgreSQL: deferred constraint triggers, so the row changes once per
transaction, at its COMMIT (a transaction holds the row's lock only while it commits: no
deadlock between two that change several entries). SQLite: a trigger per row and event
(its writers take turns anyway).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("entries", "tags", "entry_tags")
RANDOM = {
    "postgresql": "floor(random() * 1e15)::bigint",
    "sqlite": "abs(random() % 1000000000000000)",
}
"""A new number below 10^15 (about 50 random bits: two changes never meet on one)."""


def _change(dialect: str) -> str:
    return (
        f"INSERT INTO content_generation (id, generation) VALUES (1, {RANDOM[dialect]})"  # noqa: S608 (constants)
        " ON CONFLICT (id) DO UPDATE SET generation = excluded.generation"
    )


def upgrade() -> None:
    op.create_table(
        "content_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_generation")),
    )
    dialect = op.get_bind().dialect.name
    op.execute(_change(dialect))
    if dialect != "postgresql":
        for table in TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_{event.lower()}_content_generation"
                    f" AFTER {event} ON {table} FOR EACH ROW BEGIN {_change(dialect)}; END"
                )
        return
    op.execute(
        "CREATE FUNCTION keel_content_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN"
        " IF TG_LEVEL = 'STATEMENT'"
        " OR current_setting('keel.content_changed', true) IS DISTINCT FROM 'yes' THEN"
        " PERFORM set_config('keel.content_changed', 'yes', true);"
        f" {_change(dialect)};"
        " END IF;"
        " RETURN NULL;"
        " END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_content_generation"
            f" AFTER INSERT OR UPDATE OR DELETE ON {table}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
            " EXECUTE FUNCTION keel_content_changed()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_truncate_content_generation AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION keel_content_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for table in TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{event}_content_generation")
    else:
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_content_generation ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_truncate_content_generation ON {table}")
        op.execute("DROP FUNCTION IF EXISTS keel_content_changed()")
    op.drop_table("content_generation")
