"""Alembic environment: Keel's metadata and the engine built from Keel's settings."""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.migrations import compare_type, keels_own
from app.models import metadata

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=config.version_table_name,  # type: ignore[attr-defined]
        render_as_batch=True,
        compare_type=compare_type,
        include_name=keels_own(metadata),
        user_module_prefix=None,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})  # type: ignore[attr-defined]
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    """Each migration runs in a transaction of its own, its DDL included, so one that fails
    leaves nothing of itself behind and the version at the last one that succeeded."""
    if connection.dialect.name != "sqlite":
        _configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # SQLite rebuilds a table to change its constraints (batch mode); dropping the old copy
    # with foreign keys enforced would delete or null every row that refers to it. The
    # pragma only takes effect outside a transaction.
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    # pysqlite begins a transaction only before INSERT, UPDATE and DELETE, so DDL would
    # commit as it runs; instead it begins none, and every transaction starts with BEGIN
    # (SQLAlchemy's SQLite dialect docs, "Serializable isolation / Savepoints /
    # Transactional DDL").
    driver = connection.connection.dbapi_connection
    implicit = driver.isolation_level  # type: ignore[union-attr]
    driver.isolation_level = None  # type: ignore[union-attr]
    event.listen(connection, "begin", _begin)
    try:
        _configure(
            connection=connection,
            transactional_ddl=True,
            transaction_per_migration=True,
            on_version_apply=_check_foreign_keys,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        event.remove(connection, "begin", _begin)
        driver.isolation_level = implicit  # type: ignore[union-attr]
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def _check_foreign_keys(ctx: MigrationContext, **_: object) -> None:
    """Run inside each migration's transaction: rows it left pointing nowhere undo it."""
    assert ctx.connection is not None
    if ctx.connection.exec_driver_sql("PRAGMA foreign_key_check").first():
        raise RuntimeError("the migration left rows whose foreign keys do not match")


async def run_migrations_online() -> None:
    engine: AsyncEngine = config.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
