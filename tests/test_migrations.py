"""The migrations in migrations/ create exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from app.core.db import MIGRATIONS_DIR, create_engine
from app.core.migrations import (
    compare_type,
    current_revision,
    head_revision,
    keels_own,
    migration_commands,
)
from app.models import metadata
from app.settings import Settings
from tests.conftest import PG_TEST_DB, count_rows, pg_url, recreate_pg_database


def autogenerate_differences(sync: Connection) -> list[Any]:
    """What `keel db revision --autogenerate` would write for this database (migrations/env.py's
    options)."""
    opts = {
        "compare_type": compare_type,
        "version_table": "alembic_version",
        "include_name": keels_own(metadata),
    }
    return list(compare_metadata(MigrationContext.configure(sync, opts=opts), metadata))


async def test_models_and_migrations_agree(settings: Settings) -> None:
    engine = create_engine(settings.db)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(autogenerate_differences)
    finally:
        await engine.dispose()
    assert differences == [], "run `keel db revision -m ...` for these model changes"


def test_a_plugins_tables_are_not_keels_to_compare_or_drop(tmp_path: Path) -> None:
    """`keel db revision --autogenerate` on a site with plugins installed must not write a
    migration that drops their tables (plugins migrate their own storage)."""
    settings = Settings.from_env(
        {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/keel.db", "VAR_DIR": str(tmp_path)},
        env_file=Path("/nonexistent"),
    )
    migration_commands(settings.db).upgrade("head")

    async def compare() -> list[object]:
        engine = create_engine(settings.db)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE plugin_notes_notes (id INTEGER)"))
                return await connection.run_sync(autogenerate_differences)
        finally:
            await engine.dispose()

    assert asyncio.run(compare()) == []
    include = keels_own(metadata)
    assert not include("plugin_notes_notes", "table", {})
    assert not include("plugin_notes", "schema", {})
    assert not include("keel_shared", "schema", {})
    assert include("plugin_registry", "table", {}) and include("entries", "table", {})


async def test_upgrades_keep_the_rows_that_refer_to_a_rebuilt_table(
    leg: str, tmp_path: Path, leg_base: dict[str, Settings]
) -> None:
    """SQLite changes a table's constraints by rebuilding it; dropping the old copy with
    foreign keys enforced deleted the import_runs that referred to it (ON DELETE CASCADE)."""
    settings = leg_base[leg]
    if leg == "embedded":
        url = f"sqlite+aiosqlite:///{tmp_path}/upgrade.db"
    else:
        recreate_pg_database(f"{PG_TEST_DB}_upgrade")
        url = pg_url(f"{PG_TEST_DB}_upgrade")
    db = replace(settings.db, url=url)
    upgraded = replace(settings, db=db)
    try:
        await asyncio.to_thread(migration_commands(db).upgrade, "0006")
        engine = create_engine(db)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(ROWS_AT_0006))
                await connection.execute(text(RUN_AT_0006))
        finally:
            await engine.dispose()
        await asyncio.to_thread(migration_commands(db).upgrade, "head")
        assert await count_rows(upgraded, "import_runs") == 1
        assert await count_rows(upgraded, "jobs") == 1
        await asyncio.to_thread(migration_commands(db).downgrade, "0006")
        assert await count_rows(upgraded, "import_runs") == 1
    finally:
        if leg == "services":
            recreate_pg_database(f"{PG_TEST_DB}_upgrade", create=False)


ROWS_AT_0006 = (
    "INSERT INTO jobs (id, type, queue, payload, status, priority, run_at, attempts, "
    "max_attempts, progress, progress_message, created_at, updated_at) VALUES (1, 'import', "
    "'default', '{}', 'succeeded', 0, CURRENT_TIMESTAMP, 1, 3, 100, '', CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP)"
)
RUN_AT_0006 = (
    "INSERT INTO import_runs (job_id, outcome, created_at) VALUES (1, '{}', CURRENT_TIMESTAMP)"
)


HALF_DONE = '''"""Creates a table and a row, then fails.

Revision ID: halfway
Revises: {base}
"""

import sqlalchemy as sa
from alembic import op

revision = "halfway"
down_revision = "{base}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO half_done (id) VALUES (1)")
    raise RuntimeError("the migration failed halfway")


def downgrade() -> None:
    op.drop_table("half_done")
'''


async def test_a_migration_that_fails_halfway_leaves_nothing_behind(
    leg: str, tmp_path: Path, leg_base: dict[str, Settings]
) -> None:
    """pysqlite begins no transaction before DDL, so on SQLite the table a failed
    migration had created stayed, and running the upgrade again failed on it."""
    base = head_revision()
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "halfway.py").write_text(HALF_DONE.format(base=base))
    if leg == "embedded":
        url = f"sqlite+aiosqlite:///{tmp_path}/halfway.db"
    else:
        recreate_pg_database(f"{PG_TEST_DB}_halfway")
        url = pg_url(f"{PG_TEST_DB}_halfway")
    db = replace(leg_base[leg].db, url=url)
    try:
        await asyncio.to_thread(migration_commands(db, migrations=migrations).upgrade, base)
        for _ in range(2):  # and again: nothing of the first attempt is in the way
            with pytest.raises(RuntimeError, match="failed halfway"):
                await asyncio.to_thread(migration_commands(db, migrations=migrations).upgrade)
            engine = create_engine(db)
            try:
                assert await current_revision(engine) == base
                async with engine.connect() as connection:
                    tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            finally:
                await engine.dispose()
            assert "half_done" not in tables
    finally:
        if leg == "services":
            recreate_pg_database(f"{PG_TEST_DB}_halfway", create=False)


async def test_reading_the_current_revision_logs_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """/admin, /admin/system and readiness read the revision every few seconds; Alembic's
    INFO lines about its context ("Context impl ...") filled the log with each read."""
    caplog.set_level(logging.INFO)
    engine = create_engine(settings.db)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
    assert logging.getLogger("alembic.runtime.migration").getEffectiveLevel() <= logging.INFO
