"""Alembic migrations through advanced-alchemy, for `keel db ...`, `make run` and the tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.config import AlembicAsyncConfig, SQLAlchemyAsyncConfig
from advanced_alchemy.types import GUID
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import MIGRATIONS_DIR, create_engine
from app.settings import DatabaseSettings

VERSION_TABLE = "alembic_version"


def migration_commands(
    settings: DatabaseSettings, engine: AsyncEngine | None = None, migrations: Path = MIGRATIONS_DIR
) -> AlembicCommands:
    """`keel db ...` on the database of `settings`, with the migrations in `migrations`."""
    config = SQLAlchemyAsyncConfig(
        engine_instance=engine or create_engine(settings),
        alembic_config=AlembicAsyncConfig(
            script_location=str(migrations),
            version_table_name=VERSION_TABLE,
            render_as_batch=True,
            compare_type=True,
        ),
    )
    return AlembicCommands(sqlalchemy_config=config)


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None when never migrated). Alembic's INFO lines
    about its context are held back: the dashboard, /admin/system and readiness ask often,
    and `keel db upgrade` still shows what it runs."""
    async with engine.connect() as connection:
        return await connection.run_sync(_read_revision)


def _read_revision(connection: Connection) -> str | None:
    context_log = logging.getLogger("alembic.runtime.migration")
    level = context_log.level
    context_log.setLevel(logging.WARNING)
    try:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    finally:
        context_log.setLevel(level)
    return context.get_current_revision()


PLUGIN_OWNED = ("plugin_", "keel_shared")
"""Names Keel's migrations leave to the plugin engine: plugins' schemas (PostgreSQL) and
tables (SQLite), and the views Keel shares with plugins, which a migration of Keel's makes
by hand (app/extensions/services/isolation.py, shared.py)."""


def keels_own(metadata: MetaData) -> Callable[[str | None, str, Mapping[str, Any]], bool]:
    """Alembic's `include_name` for Keel's models in `metadata`: what autogenerate compares.
    A plugin's schema or table is not one of them, so a revision never drops it."""

    def include(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
        if name is None or type_ not in ("schema", "table") or name in metadata.tables:
            return True
        return not name.startswith(PLUGIN_OWNED)

    return include


def compare_type(*args: object) -> bool | None:
    """Alembic type comparison, minus GUID, which SQLite reports back as NUMERIC."""
    metadata_type = args[4]
    return False if isinstance(metadata_type, GUID) else None
