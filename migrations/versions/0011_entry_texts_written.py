"""entries.excerpt_written, entries.meta_description_written

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:30:00.000000

Whether the author wrote an entry's excerpt and meta description; if not, each save makes
them from the body again. Existing entries count as written when their text differs from
what Keel generated when they were saved (the generator as it was, copied here).
"""

import re
from collections.abc import Sequence
from html import unescape

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INLINE_TAGS = re.compile(
    r"</?(?:a|abbr|b|code|del|em|i|kbd|mark|s|small|span|strong|sub|sup|u)(?:\s[^>]*)?>"
)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _generated(html: str, limit: int) -> str:
    """What the generator of 0003..0010 made of `html` (app/content/services/markdown.py)."""
    text = _SPACE.sub(" ", unescape(_TAGS.sub(" ", _INLINE_TAGS.sub("", html)))).strip()
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text


def upgrade() -> None:
    for name in ("excerpt_written", "meta_description_written"):  # ADD COLUMN: no rebuild
        op.add_column(
            "entries", sa.Column(name, sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    entries = sa.table(
        "entries",
        sa.column("id"),
        sa.column("body_html", sa.Text()),
        sa.column("excerpt", sa.String()),
        sa.column("meta_description", sa.String()),
        sa.column("excerpt_written", sa.Boolean()),
        sa.column("meta_description_written", sa.Boolean()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(entries.c.id, entries.c.body_html, entries.c.excerpt, entries.c.meta_description)
    )
    for entry_id, html, excerpt, meta_description in rows.all():
        excerpt_written = bool(excerpt) and excerpt != _generated(html, 300)
        meta_written = bool(meta_description) and meta_description != _generated(html, 160)
        if excerpt_written or meta_written:
            bind.execute(
                entries.update()
                .where(entries.c.id == entry_id)
                .values(excerpt_written=excerpt_written, meta_description_written=meta_written)
            )


def downgrade() -> None:
    for name in ("meta_description_written", "excerpt_written"):
        op.drop_column("entries", name)
