"""Read-only queries for the hot paths: built once with SQLAlchemy Core, run without the ORM.

A `ReadQuery` is one Core statement with named `bindparam()`s, defined once at import.
On PostgreSQL it is compiled once for asyncpg and runs on a small asyncpg pool of its own:
no ORM, no session, no BEGIN/COMMIT (one round trip), no compilation per call. On SQLite
the same statement runs through SQLAlchemy Core on the engine. Both return plain dicts
keyed by column label; asyncpg already returns native UUIDs, aware datetimes and numbers.
Writes never come here: they go through the ORM session and its transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import Executable
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import DatabaseSettings

Row = dict[str, Any]
_Compiled = tuple[str, list[tuple[str, Callable[[Any], Any] | None]], dict[str, Any]]


class ReadQuery:
    """One read statement; call parameters fill the statement's `bindparam()`s by name."""

    __slots__ = ("_asyncpg", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._asyncpg: _Compiled | None = None

    def compiled_for(self, engine: AsyncEngine) -> _Compiled:
        """SQL text, parameter order with bind processors, and the statement's own values."""
        if self._asyncpg is None:
            compiled = self.statement.compile(dialect=engine.dialect)  # no IN (expanding)
            processors = compiled._bind_processors
            order = [(name, processors.get(name)) for name in compiled.positiontup or ()]
            self._asyncpg = (compiled.string, order, dict(compiled.params))
        return self._asyncpg


class Reads:
    """Runs ReadQuery statements: on asyncpg directly (PostgreSQL) or through Core (SQLite)."""

    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.on_asyncpg = engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._turns = asyncio.Semaphore(settings.read_pool_size)
        """First come, first served: asyncpg's pool queue lets a newcomer take a connection
        that was just handed to a waiter, so under load some requests waited ten times the
        median. With at most pool-size callers inside, its queue never has a waiter."""

    async def all(self, query: ReadQuery, **params: Any) -> list[Row]:
        if not self.on_asyncpg:
            async with self.engine.connect() as connection:
                result = await connection.execute(query.statement, params)
                return [dict(row) for row in result.mappings()]
        sql, order, values = query.compiled_for(self.engine)
        arguments = []
        for name, process in order:
            value = params[name] if name in params else values[name]
            arguments.append(process(value) if process is not None and value is not None else value)
        pool = self._pool or await self._open()
        async with asyncio.timeout(self.settings.pool_timeout):  # no task per acquire
            await self._turns.acquire()
        try:
            connection = await pool.acquire()
            try:
                records = await connection.fetch(sql, *arguments)
            finally:
                await pool.release(connection)
        finally:
            self._turns.release()
        return [dict(record) for record in records]

    async def one(self, query: ReadQuery, **params: Any) -> Row | None:
        rows = await self.all(query, **params)
        return rows[0] if rows else None

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                url = make_url(self.settings.url).set(drivername="postgresql")
                self._pool = await asyncpg.create_pool(
                    url.render_as_string(hide_password=False),
                    min_size=0,
                    max_size=self.settings.read_pool_size,
                    max_inactive_connection_lifetime=self.settings.pool_recycle,
                    timeout=self.settings.connect_timeout,
                    init=_json_codecs,
                    reset=_keep_session,
                    server_settings={
                        "application_name": "keel-reads",
                        "statement_timeout": str(self.settings.statement_timeout_ms),
                        "default_transaction_read_only": "on",
                    },
                )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to undo on release: these sessions only run single read statements (no
    locks, cursors, LISTEN or SET), so asyncpg's reset round trip per query is skipped."""


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """JSON columns come back decoded, as SQLAlchemy's asyncpg dialect returns them."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
