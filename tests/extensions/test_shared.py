"""What Keel shares with plugins (app/extensions/services/shared.py and migration 0010):
the view of published entries, readable through a plugin's own session on both legs, and
on PostgreSQL the only thing of Keel's a plugin role may read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.models import User
from app.accounts.services.audit import Actor
from app.content.services.entries import EntryInput, publish_entry, save_entry
from app.content.services.public import now
from app.core.db import create_engine, create_sessionmaker
from app.core.migrations import migration_commands
from app.extensions.services.isolation import create_storage, drop_storage, plugin_session
from app.extensions.services.shared import SharedViews
from app.settings import Settings
from tests.conftest import PG_TEST_DB, RUN_ID, pg_url, recreate_pg_database
from tests.extensions.test_isolation import insufficient_privilege, register

READER = f"reader{RUN_ID}"
"""A plugin name of this run (PostgreSQL roles are the cluster's)."""


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.db)
    yield engine
    await drop_storage(engine, READER)
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


async def entry(
    sessionmaker: async_sessionmaker[AsyncSession],
    author: User,
    title: str,
    *,
    kind: str = "post",
    publish: timedelta | None = timedelta(0),
) -> None:
    """An entry by `author`; published `publish` from now (None: a draft)."""
    actor = Actor(author.id, author.username)
    async with sessionmaker() as session, session.begin():
        saved = await save_entry(
            session,
            actor,
            EntryInput(kind=kind, title=title, body_markdown=f"[{title}](https://example.org/)"),
        )
        if publish is not None:
            await publish_entry(session, actor, saved, now() + publish)


async def test_a_plugin_reads_the_entries_visitors_can_read_now(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    accounts: dict[str, User],
) -> None:
    editor = accounts["editor"]
    await entry(sessionmaker, editor, "A post")
    await entry(sessionmaker, editor, "About", kind="page")
    await entry(sessionmaker, editor, "A draft", publish=None)
    await entry(sessionmaker, editor, "Tomorrow", publish=timedelta(days=1))
    await create_storage(engine, READER)
    await register(sessionmaker, READER)
    view = SharedViews(engine.dialect.name).published_entries
    async with plugin_session(sessionmaker, READER) as session:
        rows = (await session.execute(select(view).order_by(view.c.title))).all()
    assert [(row.kind, row.title, row.path) for row in rows] == [
        ("post", "A post", "/blog/a-post"),
        ("page", "About", "/about"),
    ]
    assert 'href="https://example.org/"' in rows[0].body_html
    assert rows[0].published_at.tzinfo is not None and rows[0].published_at <= now()


async def test_on_postgres_a_plugin_reads_the_view_but_still_not_keels_tables(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    accounts: dict[str, User],
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the permission boundary is PostgreSQL's")
    await entry(sessionmaker, accounts["editor"], "Shared")
    await create_storage(engine, READER)
    view = SharedViews("postgresql").published_entries
    async with plugin_session(sessionmaker, READER) as session:
        assert (await session.execute(select(view.c.title))).scalars().all() == ["Shared"]
    for statement in (
        "SELECT title FROM entries",
        "SELECT email FROM users",
        "UPDATE keel_shared.published_entries SET title = 'x'",
        "CREATE VIEW keel_shared.mine AS SELECT 1",
    ):
        async with plugin_session(sessionmaker, READER) as session:
            with pytest.raises(DBAPIError) as refused:
                await session.execute(text(statement))
            assert insufficient_privilege(refused), statement


async def test_plugins_installed_before_the_view_existed_may_read_it(
    settings: Settings,
) -> None:
    if not settings.db.url.startswith("postgresql"):
        pytest.skip("grants are PostgreSQL's")
    name = f"{PG_TEST_DB}_shared"
    recreate_pg_database(name)
    db = replace(settings.db, url=pg_url(name))
    engine = create_engine(db)
    role = f"keel_plugin_{READER}"
    try:
        await asyncio.to_thread(migration_commands(db).upgrade, "0009")
        await register(create_sessionmaker(engine), READER)
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                f'DO $$BEGIN CREATE ROLE "{role}" NOLOGIN; '
                "EXCEPTION WHEN duplicate_object THEN NULL; END$$"
            )
        await asyncio.to_thread(migration_commands(db).upgrade, "head")
        async with engine.connect() as connection:
            may_read = await connection.scalar(
                text("SELECT has_table_privilege(:role, :view, 'SELECT')"),
                {"role": role, "view": "keel_shared.published_entries"},
            )
        assert may_read is True
    finally:
        await drop_storage(engine, READER)
        await engine.dispose()
        recreate_pg_database(name, create=False)
