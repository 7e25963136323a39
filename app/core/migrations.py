"""Alembic migrations through advanced-alchemy, for `keel db ...`, `make run` and the tests."""

from __future__ import annotations

from pathlib import Path

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.config import AlembicAsyncConfig, SQLAlchemyAsyncConfig
from advanced_alchemy.types import GUID
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
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
    """The revision the database is at (None when never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(
                sync, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
        )


def compare_type(*args: object) -> bool | None:
    """Alembic type comparison, minus GUID, which SQLite reports back as NUMERIC."""
    metadata_type = args[4]
    return False if isinstance(metadata_type, GUID) else None
