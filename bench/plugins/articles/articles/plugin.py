"""A page of the same weight as Keel's post page (one row read by key, the public layout,
the same markup), served by a plugin: bench/content_load.py compares the two."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, DateTime, String, Table, Text, bindparam, delete, insert, select

from keel.plugin import (
    Context,
    FromPath,
    JSONBody,
    NotFound,
    Plugin,
    PluginContext,
    ReadQuery,
    Request,
    Response,
    get,
    public,
    put,
    requires_editor,
)


def articles(ctx: PluginContext) -> Table:
    return ctx.storage.table(  # type: ignore[no-any-return]
        "articles",
        Column("slug", String(200), primary_key=True),
        Column("title", String(300), nullable=False),
        Column("body_html", Text, nullable=False),
        Column("tags", String(500), nullable=False, default=""),
        Column("published_at", DateTime(timezone=True), nullable=False),
    )


@put("/articles/{slug:str}", guards=[requires_editor])
async def store_article(
    ctx: Context, slug: FromPath[str], data: JSONBody[dict[str, Any]]
) -> dict[str, str]:
    """PUT /api/plugins/articles/articles/{slug}: {"title", "body_html", "tags", "published_at"}."""
    table = articles(ctx)
    async with ctx.session() as session:
        await session.execute(delete(table).where(table.c.slug == slug))
        await session.execute(
            insert(table).values(
                slug=slug,
                title=str(data["title"]),
                body_html=str(data["body_html"]),
                tags=",".join(str(tag) for tag in data.get("tags", [])),
                published_at=datetime.fromisoformat(str(data["published_at"])),
            )
        )
    return {"slug": slug}


@cache
def article_query(ctx: PluginContext) -> ReadQuery:
    """One article by its slug (built once per load of the plugin)."""
    table = articles(ctx)
    return ReadQuery(select(table).where(table.c.slug == bindparam("slug")))


@get("/{slug:str}", guards=[public])
async def article_page(
    request: Request[Any, Any, Any], ctx: Context, slug: FromPath[str]
) -> Response[str]:
    """/p/articles/{slug}: the article in Keel's public layout."""
    row = await ctx.reads.one(article_query(ctx), slug=slug)
    if row is None:
        raise NotFound("No such article.")
    tags = [{"name": tag, "slug": tag} for tag in row["tags"].split(",") if tag]
    return ctx.render(request, "articles/article.html", {"entry": {**row, "tags": tags}})


class Articles(Plugin):
    api_routes = [store_article]
    pages = [article_page]
