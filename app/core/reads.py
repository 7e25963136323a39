"""Read-only queries for the hot paths: built once with SQLAlchemy Core, run without the ORM.

A `ReadQuery` is one Core statement with named `bindparam()`s, defined once at import.
On PostgreSQL it is compiled once for asyncpg and runs on a few asyncpg connections of its own:
no ORM, no session, no BEGIN/COMMIT (one round trip), no compilation per call. On SQLite
the same statement runs through SQLAlchemy Core on an engine of its own. On both, reads
never take a connection from the pool the requests' sessions use: a request holds its
session's connection while it reads here, and waiting on its own pool for a second one
deadlocks the pool once as many such requests are in flight as it has connections. A read
that finds every connection taken for `pool_timeout` raises ReadsBusy (503, busy). Both
return plain dicts keyed by column label; asyncpg already returns native UUIDs, aware
datetimes and numbers.
Writes never come here: they go through the ORM session and its transaction.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.settings import DatabaseSettings

Row = dict[str, Any]
Record = Mapping[str, Any]
"""A row as the driver gives it (`Reads.records`): read by column name, never changed."""
_Compiled = tuple[str, list[tuple[str, Callable[[Any], Any] | None]], dict[str, Any]]


class ReadsBusy(PoolTimeoutError):
    """No read connection came free within `pool_timeout`: like the requests' pool timing
    out (a SQLAlchemy pool TimeoutError, so `is_busy`), the service is busy."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no read connection came free within {waited} s")


class ReadQuery:
    """One read statement; call parameters fill the statement's `bindparam()`s by name."""

    __slots__ = ("_asyncpg", "statement")

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._asyncpg: _Compiled | None = None

    def compiled_for(self, engine: AsyncEngine) -> _Compiled:
        """SQL text, parameter order with bind processors, and the statement's own values."""
        if self._asyncpg is None:
            compiled = self.statement.compile(dialect=engine.dialect)  # no IN (expanding)
            processors = compiled._bind_processors
            order: list[tuple[str, Callable[[Any], Any] | None]] = []
            for name in compiled.positiontup or ():
                processor = processors.get(name)
                if processor is not None and not callable(processor):  # a tuple's, per element
                    raise TypeError(f"a ReadQuery takes no tuple parameter ({name})")
                order.append((name, processor))
            self._asyncpg = (compiled.string, order, dict(compiled.params))
        return self._asyncpg


class Reads:
    """Runs ReadQuery statements: on asyncpg directly (PostgreSQL) or through Core (SQLite).

    On PostgreSQL it keeps its own small set of connections instead of an asyncpg Pool:
    a semaphore of `read_pool_size` turns is the only queue (first come, first served:
    asyncpg's pool queue let a newcomer take a connection just handed to a waiter), and
    taking or returning an idle connection is a list operation, cheaper than the pool's
    acquire and release (docs/performance.md). A connection goes back only after a
    statement that completed; one that failed is closed. A statement that finds its
    connection closed by the server (a restart, an administrator) is run once more on a new
    connection: these are single reads, so repeating one is safe.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: DatabaseSettings,
        *,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.server_settings = {
            "application_name": "keel-reads",
            "statement_timeout": str(settings.statement_timeout_ms),
            **(server_settings or {}),
            "default_transaction_read_only": "on",
        }
        """What each of its connections is started with (PostgreSQL): a plugin's reads add
        the plugin's role and search path (app/extensions/services/isolation.py)."""
        self.on_asyncpg = engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"
        self._turns = asyncio.Semaphore(settings.read_pool_size)
        self._idle: list[tuple[asyncpg.Connection, float]] = []
        """Connections not in use, with the monotonic time each was returned; newest last."""
        self._closed = False
        self._own_engine: AsyncEngine | None = None
        """SQLite: `read_pool_size` connections beside the requests' pool, made at first use."""

    def figures(self) -> tuple[int, int]:
        """(statements running now, connections it may hold) on PostgreSQL; on SQLite the
        engine's pool of its own, when made."""
        if not self.on_asyncpg:
            pool = self._own_engine.pool if self._own_engine is not None else None
            checked_out = getattr(pool, "checkedout", None)
            return (checked_out() if callable(checked_out) else 0), self.settings.read_pool_size
        size = self.settings.read_pool_size
        return size - self._turns._value, size

    async def all(self, query: ReadQuery, **params: Any) -> list[Row]:
        """The rows `query` reads, each a dict of its own."""
        return [dict(record) for record in await self.records(query, **params)]

    async def records(self, query: ReadQuery, **params: Any) -> Sequence[Record]:
        """The rows as the driver gives them: read-only mappings, by column name, without
        the copy `all` makes (a tenth of a 20-row API list's CPU was spent copying them)."""
        if not self.on_asyncpg:
            async with self._engine().connect() as connection:
                result = await connection.execute(query.statement, params)
                return cast(Sequence[Record], result.mappings().all())
        sql, order, values = query.compiled_for(self.engine)
        arguments = []
        for name, process in order:
            value = params[name] if name in params else values[name]
            arguments.append(process(value) if process is not None and value is not None else value)
        if self._turns.locked():
            try:
                async with asyncio.timeout(self.settings.pool_timeout):
                    await self._turns.acquire()
            except TimeoutError:
                raise ReadsBusy(self.settings.pool_timeout) from None
        else:
            await self._turns.acquire()  # a free turn: no wait, so no timer either
        try:
            try:
                records = await self._fetch(sql, arguments)
            except _CONNECTION_LOST:
                records = await self._fetch(sql, arguments, fresh=True)
        finally:
            self._turns.release()
        return records

    async def one(self, query: ReadQuery, **params: Any) -> Row | None:
        rows = await self.all(query, **params)
        return rows[0] if rows else None

    async def _fetch(self, sql: str, arguments: list[Any], *, fresh: bool = False) -> list[Any]:
        connection = await self._connect() if fresh else self._take_idle() or await self._connect()
        try:
            records = await connection.fetch(sql, *arguments)
        except BaseException:
            connection.terminate()  # its state is unknown (cancelled mid-statement, say)
            raise
        if self._closed:
            connection.terminate()
        else:
            self._idle.append((connection, time.monotonic()))
        return records

    def _take_idle(self) -> asyncpg.Connection | None:
        """The most recently used idle connection; closes those idle past `pool_recycle`."""
        expired = time.monotonic() - self.settings.pool_recycle
        while self._idle and self._idle[0][1] < expired:
            self._idle.pop(0)[0].terminate()
        while self._idle:
            connection = self._idle.pop()[0]
            if not connection.is_closed():
                return connection
        return None

    async def _connect(self) -> asyncpg.Connection:
        url = make_url(self.settings.url).set(drivername="postgresql")
        connection = await asyncpg.connect(
            url.render_as_string(hide_password=False),
            timeout=self.settings.connect_timeout,
            server_settings=self.server_settings,
        )
        await _json_codecs(connection)
        return connection

    def _engine(self) -> AsyncEngine:
        if self._own_engine is None:
            own = replace(self.settings, pool_size=self.settings.read_pool_size, max_overflow=0)
            self._own_engine = create_engine(own)
        return self._own_engine

    async def close(self) -> None:
        self._closed = True
        if self._own_engine is not None:
            await self._own_engine.dispose()
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    await connection.close()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()


_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    ConnectionResetError,
)
"""The server closed the connection while it sat idle (restart, pg_terminate_backend)."""


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """JSON columns come back decoded, as SQLAlchemy's asyncpg dialect returns them."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
