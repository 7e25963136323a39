"""The database engine, the per-request session, and what counts as "database unavailable".

Sessions commit explicitly when the handler returns, before the response is built, so a
failed COMMIT becomes an error response instead of a 2xx over lost data.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import asyncpg
from litestar.di import NamedDependency
from sqlalchemy import CursorResult, Executable, event, text
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import ROOT, DatabaseSettings

MIGRATIONS_DIR = ROOT / "migrations"

DbSession = NamedDependency[AsyncSession]
"""Annotation for a handler parameter named `db_session`: the request's session."""


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An engine whose pool pings, recycles and times out instead of hanging."""
    if settings.is_sqlite:
        path = settings.url.split(":///", 1)[1]
        if path and ":memory:" not in path:
            with contextlib.suppress(OSError):  # an unusable path shows up as "unavailable"
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_pre_ping=True,
            pool_timeout=settings.pool_timeout,
            connect_args={"timeout": settings.connect_timeout},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        settings.url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.connect_timeout,
            "server_settings": {
                "application_name": "keel",
                "statement_timeout": str(settings.statement_timeout_ms),
            },
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL for concurrent readers, enforced foreign keys, and waiting on a busy writer."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


def dialect_insert(session: AsyncSession, table: Any) -> PostgresInsert | SqliteInsert:
    """`INSERT INTO table` in the session's database's own dialect, for its `ON CONFLICT`
    clauses (`on_conflict_do_nothing`, `on_conflict_do_update`: spelled alike in both)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return (postgres_insert if postgres else sqlite_insert)(table)


async def rows_changed(session: AsyncSession | AsyncConnection, statement: Executable) -> int:
    """Run an INSERT, UPDATE or DELETE without RETURNING; the number of rows it matched
    (`Session.execute` is typed to return a plain `Result`, which has no row count)."""
    result = await session.execute(statement)
    assert isinstance(result, CursorResult)  # what SQLAlchemy returns for such a statement
    return result.rowcount


async def ping(engine: AsyncEngine, timeout: float) -> None:
    """Run `SELECT 1` within `timeout` seconds; raise when the database does not answer."""

    async def _select_one() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    await asyncio.wait_for(_select_one(), timeout)


# SQLSTATE classes and codes that mean "the server cannot serve us now", not "your query is wrong".
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "53400")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


_DRIVERS = ("asyncpg", "aiosqlite", "sqlite3")


def raised_in(exc: BaseException, modules: tuple[str, ...]) -> bool:
    """Whether code of `modules` (or their submodules) is on `exc`'s traceback: where an
    OSError comes from, since its type does not say (a refused connection and a full
    disk are both OSErrors)."""
    trace = exc.__traceback__
    while trace is not None:
        name = trace.tb_frame.f_globals.get("__name__", "")
        if name in modules or name.startswith(tuple(module + "." for module in modules)):
            return True
        trace = trace.tb_next
    return False


def is_busy(exc: BaseException) -> bool:
    """No pooled connection came free within `pool_timeout`: the database answers, this
    process has too much to do (503 with its own message; `is_unavailable` too, for the
    worker, which waits either way)."""
    return isinstance(exc, PoolTimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    """Errors that mean "the database cannot be reached right now": answer 503, not 500.
    Only the driver's and the pool's: an OSError counts when the driver raised it. An
    interface error counts only when it says the connection is gone; otherwise (asyncpg's
    "another operation is in progress", a value the driver cannot send) it is a bug."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate and str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(exc, InterfaceError):
            return _says_connection_lost(exc.orig)
        if isinstance(exc, OperationalError):
            message = str(exc.orig).lower()
            lost = sqlstate is None and ("connect" in message or "closed" in message)
            return lost or any(text in message for text in _SQLITE_UNAVAILABLE)
        return False
    if isinstance(exc, asyncpg.PostgresError):  # raised directly by app/core/reads.py
        return str(getattr(exc, "sqlstate", "")).startswith(_UNAVAILABLE_SQLSTATES)
    if isinstance(exc, asyncpg.InterfaceError):
        return _says_connection_lost(exc)
    return isinstance(exc, OSError) and raised_in(exc, _DRIVERS)  # refused, reset, timed out


_CONNECTION_LOST = ("connection is closed", "connection was closed")
"""How asyncpg's interface errors say the connection is gone (closed by the server, or
terminated after a failure), as SQLAlchemy's asyncpg dialect recognises it."""


def _says_connection_lost(exc: BaseException | None) -> bool:
    return any(words in str(exc).lower() for words in _CONNECTION_LOST)


def describe_url(url: str) -> str:
    """The database URL with any password hidden, for logs and `keel check`."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
