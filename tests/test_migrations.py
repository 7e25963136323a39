"""The migrations in migrations/ create exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.core.db import create_engine
from app.core.migrations import compare_type
from app.core.models import metadata
from app.settings import Settings


async def test_models_and_migrations_agree(settings: Settings) -> None:
    engine = create_engine(settings.db)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={"compare_type": compare_type, "version_table": "alembic_version"},
                    ),
                    metadata,
                )
            )
    finally:
        await engine.dispose()
    assert differences == [], "run `keel db revision -m ...` for these model changes"
