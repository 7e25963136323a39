"""After-commit events: subscribers hear only what committed, and none can fail the change."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar, post
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import DbSession, create_engine, create_sessionmaker
from app.core.events import Event, Events, emit, is_pending, on_commit, on_rollback
from app.core.registry import KEEL
from app.settings import Settings
from tests.conftest import client_for


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.db)
    yield create_sessionmaker(engine)
    await engine.dispose()


def listening(*names: str) -> tuple[Events, list[Event]]:
    events, heard = Events(), []

    async def hear(event: Event) -> None:
        heard.append(event)

    for name in names:
        events.subscribe(KEEL, name, hear, name="test.hear")
    return events, heard


async def test_a_committed_change_delivers_its_events_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    events, heard = listening("entry.published", "user.created")
    async with sessions() as session:
        async with session.begin():
            await session.execute(text("SELECT 1"))
            emit(session, "entry.published", 1)
            emit(session, "user.created", "ada")
            emit(session, "entry.unheard")
            assert heard == []  # nothing before the COMMIT
        await events.deliver(session)
        assert heard == [Event("entry.published", 1), Event("user.created", "ada")]
        await events.deliver(session)  # delivered once
    assert len(heard) == 2


async def test_a_rolled_back_change_delivers_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    events, heard = listening("entry.published")
    async with sessions() as session:
        with pytest.raises(RuntimeError):
            async with session.begin():
                await session.execute(text("SELECT 1"))
                emit(session, "entry.published", 1)
                raise RuntimeError("the service refused")
        await events.deliver(session)
        async with session.begin():  # the next transaction of the same session starts clean
            await session.execute(text("SELECT 1"))
            assert not is_pending(session, "entry.published")
        await events.deliver(session)
    assert heard == []


async def test_a_failing_subscriber_breaks_neither_the_commit_nor_the_others(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    events, heard = listening()

    async def broken(event: Event) -> None:
        raise ValueError("a bug in a subscriber")

    async def hear(event: Event) -> None:
        heard.append(event)

    events.subscribe(KEEL, "entry.published", broken, name="broken")
    events.subscribe("a-plugin", "entry.published", hear, name="plugin.hear")
    async with sessions() as session:
        async with session.begin():
            await session.execute(text("SELECT 1"))
            emit(session, "entry.published", 1)
            emit(session, "entry.published", 2)
        with caplog.at_level(logging.ERROR, logger="keel.events"):
            await events.deliver(session)
    assert heard == [Event("entry.published", 1), Event("entry.published", 2)]
    failures = [r for r in caplog.records if r.getMessage().startswith("event subscriber failed")]
    assert len(failures) == 2 and failures[0].exc_info is not None


async def test_once_keeps_one_of_the_same_event_and_an_owner_can_unsubscribe(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    events, heard = listening("jobs.added")
    async with sessions() as session:
        async with session.begin():
            await session.execute(text("SELECT 1"))
            for queue in ("default", "mail", "default"):
                emit(session, "jobs.added", queue, once=True)
            assert is_pending(session, "jobs.added")
        await events.deliver(session)
        assert [event.payload for event in heard] == ["default", "mail"]
        assert len(events.unsubscribe(KEEL)) == 1
        async with session.begin():
            await session.execute(text("SELECT 1"))
            emit(session, "jobs.added", "default")
        await events.deliver(session)
    assert len(heard) == 2


async def test_commit_and_rollback_actions_follow_the_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    done: list[str] = []
    async with sessions() as session:
        async with session.begin():
            await session.execute(text("SELECT 1"))
            on_commit(session, lambda: done.append("committed"))
            on_rollback(session, lambda: done.append("not committed"))
        assert done == ["committed"]
        with pytest.raises(RuntimeError):
            async with session.begin():
                await session.execute(text("SELECT 1"))
                on_commit(session, lambda: done.append("committed again"))
                on_rollback(session, lambda: done.append("rolled back"))
                raise RuntimeError
    assert done == ["committed", "rolled back"]


@post("/api/v1/_test/emits", status_code=201)
async def emits(db_session: DbSession) -> dict[str, bool]:
    await db_session.execute(text("SELECT 1"))
    emit(db_session, "test.emitted", "committed")
    return {"emitted": True}


@post("/api/v1/_test/emits-then-fails", status_code=201)
async def emits_then_fails(db_session: DbSession) -> dict[str, bool]:
    await db_session.execute(text("SELECT 1"))
    emit(db_session, "test.emitted", "rolled back")
    raise ValueError("the handler failed after emitting")


async def test_a_request_delivers_what_it_committed_and_nothing_of_a_failure(
    app: Litestar,
) -> None:
    heard: list[Event] = []

    async def hear(event: Event) -> None:
        heard.append(event)

    app.state.events.subscribe("a-plugin", "test.emitted", hear)
    app.register(emits)
    app.register(emits_then_fails)
    async with client_for(app) as client:
        assert (await client.post("/api/v1/_test/emits")).status_code == 201
        assert (await client.post("/api/v1/_test/emits-then-fails")).status_code == 500
    assert heard == [Event("test.emitted", "committed")]
