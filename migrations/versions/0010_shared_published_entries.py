"""keel_shared.published_entries: the published, public entries, shared with plugins

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 11:05:00.000000

A read-only view of what visitors can read now (the visitor's filter of
app/content/services/public.py at the database's clock), with the entry's public path and
its rendered HTML. PostgreSQL: in schema `keel_shared`, whose views every plugin role may
read (granted here to the roles of plugins installed already, and at each install by
`isolation.create_storage`); the view reads `entries` as its owner, Keel's user, so the
roles still hold no privilege on Keel's tables. SQLite: `keel_shared_published_entries`.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "id, kind, title, slug,"
    " CASE WHEN kind = 'post' THEN '/blog/' || slug ELSE '/' || slug END AS path,"
    " body_html, published_at, updated_at"
)
PUBLIC = "status IN ('published', 'scheduled') AND published_at IS NOT NULL"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute(
            f"CREATE VIEW keel_shared_published_entries AS SELECT {COLUMNS} FROM entries"  # noqa: S608 (constants)
            f" WHERE {PUBLIC} AND published_at <= strftime('%Y-%m-%d %H:%M:%f', 'now')"
        )
        return
    op.execute("CREATE SCHEMA IF NOT EXISTS keel_shared")
    op.execute("REVOKE ALL ON SCHEMA keel_shared FROM PUBLIC")
    op.execute(
        f"CREATE VIEW keel_shared.published_entries AS SELECT {COLUMNS} FROM public.entries"  # noqa: S608 (constants)
        f" WHERE {PUBLIC} AND published_at <= CURRENT_TIMESTAMP"
    )
    op.execute("REVOKE ALL ON keel_shared.published_entries FROM PUBLIC")
    op.execute(
        "DO $$DECLARE plugin record; BEGIN"
        " FOR plugin IN SELECT r.rolname FROM plugin_registry p"
        " JOIN pg_roles r ON r.rolname = 'keel_plugin_' || p.name LOOP"
        " EXECUTE format('GRANT USAGE ON SCHEMA keel_shared TO %I', plugin.rolname);"
        " EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA keel_shared TO %I',"
        " plugin.rolname);"
        " EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA keel_shared"
        " GRANT SELECT ON TABLES TO %I', plugin.rolname);"
        " END LOOP; END$$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP VIEW IF EXISTS keel_shared_published_entries")
        return
    op.execute("DROP SCHEMA IF EXISTS keel_shared CASCADE")
