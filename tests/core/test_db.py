"""Database sessions: explicit commit, failed commits and outages never answer 2xx."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar, get, post
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.asgi import create_app
from app.core.db import DbSession, create_engine, is_unavailable
from app.settings import Settings
from tests.conftest import client_for, free_port

PARENT_CHILD = [
    "CREATE TABLE IF NOT EXISTS t_parent (id INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS t_child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
    "REFERENCES t_parent(id) DEFERRABLE INITIALLY DEFERRED)",
]


@post("/api/v1/_test/orphans", status_code=201)
async def add_orphan(db_session: DbSession) -> dict[str, bool]:
    """Inserts a child whose parent does not exist: only COMMIT can notice."""
    await db_session.execute(text("INSERT INTO t_child (id, parent_id) VALUES (1, 999)"))
    return {"created": True}


@post("/api/v1/_test/children", status_code=201)
async def add_child(db_session: DbSession) -> dict[str, bool]:
    await db_session.execute(text("INSERT INTO t_parent (id) VALUES (1)"))
    await db_session.execute(text("INSERT INTO t_child (id, parent_id) VALUES (1, 1)"))
    return {"created": True}


async def _exec(settings: Settings, *statements: str) -> list[object]:
    engine = create_engine(settings.db)
    results = []
    try:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
                results.append(result.scalar() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return results


async def test_a_failed_commit_never_answers_2xx_and_keeps_nothing(
    settings: Settings, app: Litestar
) -> None:
    await _exec(settings, *PARENT_CHILD)
    try:
        app.register(add_orphan)
        async with client_for(app) as client:
            response = await client.post("/api/v1/_test/orphans")
        assert response.status_code >= 500
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "created" not in response.text
        assert await _exec(settings, "SELECT COUNT(*) FROM t_child") == [0]
    finally:
        await _exec(settings, "DROP TABLE t_child", "DROP TABLE t_parent")


async def test_a_successful_request_commits_its_work(settings: Settings, app: Litestar) -> None:
    await _exec(settings, *PARENT_CHILD)
    try:
        app.register(add_child)
        async with client_for(app) as client:
            response = await client.post("/api/v1/_test/children")
        assert response.status_code == 201
        assert await _exec(settings, "SELECT COUNT(*) FROM t_child") == [1]
    finally:
        await _exec(settings, "DROP TABLE t_child", "DROP TABLE t_parent")


async def test_an_unreachable_database_answers_503_with_retry_after(settings: Settings) -> None:
    if settings.db.is_sqlite:
        url = "sqlite+aiosqlite:////proc/keel-no-such-dir/keel.db"
    else:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/keel"
    app = create_app(replace(settings, db=replace(settings.db, url=url, connect_timeout=1.0)))
    async with client_for(app) as client:
        api = await client.get("/api/v1/site")
        page = await client.get("/")
        ready = await client.get("/health/ready")
    await app.state.engine.dispose()
    assert api.status_code == 503 and api.headers["retry-after"]
    assert api.json()["detail"].startswith("The database is not answering")
    assert page.status_code == 503 and page.headers["retry-after"]
    assert "briefly unavailable" in page.text
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["database"]


async def test_an_exhausted_pool_answers_503_instead_of_waiting_forever(settings: Settings) -> None:
    db = replace(settings.db, pool_size=1, max_overflow=0, pool_timeout=0.3)
    app = create_app(replace(settings, db=db))
    held: AsyncSession | None = None
    try:
        async with app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            held = connection  # the only connection is checked out
            async with client_for(app) as client:
                response = await client.get("/api/v1/site")
        assert response.status_code == 503
        assert response.headers["retry-after"]
        async with client_for(app) as client:  # released: the same app serves again
            assert (await client.get("/api/v1/site")).status_code == 200
    finally:
        await app.state.engine.dispose()
    assert held is not None


async def test_database_comes_back_after_an_outage(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    """Connections broken behind the pools' backs are replaced: the ORM's by pre-ping, the
    read path's (app/core/reads.py) by running the read once more on a new connection."""
    assert (await client.get("/api/v1/site")).status_code == 200
    assert (await client.get("/api/v1/content?per_page=5")).status_code == 200
    if not settings.db.is_sqlite:
        killed = await _exec(
            settings,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name IN ('keel', 'keel-reads')",
        )
        assert killed[0] >= 2
    assert (await client.get("/api/v1/site")).status_code == 200
    assert (await client.get("/api/v1/content?per_page=6")).status_code == 200  # not cached


@get("/api/v1/_test/session")
async def needs_a_connection(db_session: DbSession) -> dict[str, bool]:
    await db_session.execute(text("SELECT 1"))
    return {"served": True}


async def test_a_full_pool_says_the_service_is_busy_not_that_the_database_is_away(
    settings: Settings,
) -> None:
    db = replace(settings.db, pool_size=1, max_overflow=0, pool_timeout=0.3)
    app = create_app(replace(settings, db=db))
    app.register(needs_a_connection)
    try:
        async with app.state.engine.connect() as held, client_for(app) as client:
            await held.execute(text("SELECT 1"))  # the only connection is checked out
            response = await client.get("/api/v1/_test/session")
    finally:
        await app.state.engine.dispose()
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["detail"].startswith("The service is busy right now")


async def test_only_the_drivers_os_errors_mean_the_database_is_away(tmp_path: Path) -> None:
    """An OSError's type does not say where it came from: a refused connection is an
    outage (503), a file that cannot be written is a bug or a broken disk (500)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OSError) as from_a_file:
        (blocker / "media").mkdir(parents=True)
    with pytest.raises(TimeoutError) as from_a_timer:
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    with pytest.raises(OSError) as from_the_driver:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/keel", timeout=2)
    assert not is_unavailable(from_a_file.value)
    assert not is_unavailable(from_a_timer.value)
    assert is_unavailable(from_the_driver.value)


@get("/api/v1/_test/driver-misuse")
async def misuse_the_driver(db_session: DbSession) -> dict[str, bool]:
    """A bug, not an outage: PostgreSQL's connection asked while it runs another statement
    (asyncpg: "another operation is in progress"), SQLite's given a value it cannot bind."""
    connection = await db_session.connection()
    if connection.dialect.name == "sqlite":
        await connection.execute(text("SELECT :value"), {"value": object()})
    driver = (await connection.get_raw_connection()).driver_connection
    running = asyncio.ensure_future(driver.fetch("SELECT pg_sleep(0.2)"))
    await asyncio.sleep(0.05)  # the statement above has the connection
    try:
        await connection.execute(text("SELECT 1"))
    finally:
        await running
    return {"served": True}


async def test_misusing_the_driver_is_a_500_with_an_error_id_not_an_outage(
    app: Litestar,
) -> None:
    app.register(misuse_the_driver)
    async with client_for(app) as client:
        response = await client.get("/api/v1/_test/driver-misuse")
    assert response.status_code == 500, response.text
    assert response.json()["error_id"] and "retry-after" not in response.headers


async def test_only_a_lost_connection_means_the_database_is_away_on_the_read_path(
    services_settings: Settings,
) -> None:
    """app/core/reads.py gets asyncpg's own errors: a closed connection is an outage, a
    connection used twice at once is a bug."""
    dsn = services_settings.db.url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn)
    running = asyncio.ensure_future(connection.fetch("SELECT pg_sleep(0.2)"))
    await asyncio.sleep(0.05)
    with pytest.raises(asyncpg.InterfaceError) as in_progress:
        await connection.fetch("SELECT 1")
    await running
    await connection.close()
    with pytest.raises(asyncpg.InterfaceError) as closed:
        await connection.fetch("SELECT 1")
    assert "another operation is in progress" in str(in_progress.value)
    assert not is_unavailable(in_progress.value)
    assert is_unavailable(closed.value)
