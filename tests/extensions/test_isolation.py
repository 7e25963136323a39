"""Each plugin's own storage (app/extensions/services/isolation.py), on both legs, and the
PostgreSQL permission boundary on the services leg."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    Integer,
    String,
    Table,
    bindparam,
    insert,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.errors import InvalidField
from app.core.reads import ReadQuery, Reads
from app.extensions.models import PluginMigration, PluginRecord
from app.extensions.services.isolation import (
    PluginStorage,
    PluginStorageError,
    create_storage,
    drop_storage,
    load_migrations,
    plugin_reads,
    plugin_session,
    run_migrations,
)
from app.settings import Settings
from tests.conftest import RUN_ID

NOTES = f"notes{RUN_ID}"
"""Plugin names carry the run's id: PostgreSQL roles are cluster-wide, shared by every
test run on the machine."""
OTHER = f"other{RUN_ID}"

CREATE_ENTRIES = """
from sqlalchemy import Column, Integer, String

def upgrade(connection, storage):
    storage.table(
        "entries",
        Column("id", Integer, primary_key=True),
        Column("message", String(200), nullable=False),
    )
    storage.metadata.create_all(connection)
"""

ADD_TAGS_THEN_FAIL = """
from sqlalchemy import Column, Integer

def upgrade(connection, storage):
    storage.table("tags", Column("id", Integer, primary_key=True))
    storage.metadata.create_all(connection)
    raise RuntimeError("the author's bug")
"""

ADD_TAGS = """
from sqlalchemy import Column, Integer

def upgrade(connection, storage):
    storage.table("tags", Column("id", Integer, primary_key=True))
    storage.metadata.create_all(connection)
"""


def entries_of(storage: PluginStorage) -> Table:
    return storage.table(
        "entries",
        Column("id", Integer, primary_key=True),
        Column("message", String(200), nullable=False),
    )


def write_plugin(root: Path, name: str, migrations: dict[str, str]) -> Path:
    folder = root / name
    (folder / "migrations").mkdir(parents=True)
    for file_name, source in migrations.items():
        (folder / "migrations" / file_name).write_text(dedent(source))
    return folder


async def register(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> None:
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        session.add(
            PluginRecord(
                name=name,
                version="1.0.0",
                display_name=name,
                description="",
                author="",
                manifest={},
                status="installed",
                installed_at=now,
                updated_at=now,
                checksum="0" * 64,
                generation=1,
            )
        )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The leg's engine; every plugin storage a test made is dropped after it (roles are
    the cluster's and outlive the test database)."""
    engine = create_engine(settings.db)
    yield engine
    for name in (NOTES, OTHER, f"{NOTES}_b"):
        await drop_storage(engine, name)
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


def postgres_only(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the permission boundary is PostgreSQL's")


def insufficient_privilege(error: pytest.ExceptionInfo[DBAPIError]) -> bool:
    return (
        getattr(error.value.orig, "sqlstate", None) == asyncpg.InsufficientPrivilegeError.sqlstate
    )


# The names


def test_a_plugins_tables_live_in_its_schema_on_postgres_and_under_its_prefix_on_sqlite() -> None:
    postgres, sqlite = PluginStorage("notes", "postgresql"), PluginStorage("notes", "sqlite")
    assert (postgres.schema, postgres.role) == ("plugin_notes", "keel_plugin_notes")
    assert (sqlite.schema, sqlite.role) == (None, None)
    on_postgres, on_sqlite = entries_of(postgres), entries_of(sqlite)
    assert (on_postgres.schema, on_postgres.name) == ("plugin_notes", "entries")
    assert (on_sqlite.schema, on_sqlite.name) == (None, "plugin_notes_entries")
    assert postgres.table("entries") is on_postgres
    assert on_postgres.metadata is postgres.metadata is not sqlite.metadata


@pytest.mark.parametrize(
    "name", ["", "a", "Notes", "a-b", "notes\n", 'x"; DROP ROLE postgres; --', "n" * 41]
)
def test_only_a_plugin_name_builds_identifiers(name: str) -> None:
    with pytest.raises(InvalidField):
        PluginStorage(name, "postgresql")


def test_a_plugin_table_name_is_a_plain_identifier() -> None:
    with pytest.raises(InvalidField):
        PluginStorage("notes", "sqlite").table_name('entries"; --')


# Storage, migrations and sessions on both legs


async def test_a_migration_makes_a_table_the_plugin_reads_and_writes_through_its_session(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_plugin(tmp_path, NOTES, {"0001_entries.py": CREATE_ENTRIES})
    await create_storage(engine, NOTES)
    await register(sessionmaker, NOTES)

    assert await run_migrations(sessionmaker, NOTES, folder) == ["0001_entries"]
    entries = entries_of(PluginStorage.of(NOTES, engine))
    async with plugin_session(sessionmaker, NOTES) as session:
        await session.execute(insert(entries).values(message="hello"))
        await session.commit()
    async with plugin_session(sessionmaker, NOTES) as session:
        assert (await session.execute(select(entries.c.message))).scalars().all() == ["hello"]


async def test_a_plugin_reads_its_tables_on_keels_fast_read_path(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    """`ctx.reads`: on PostgreSQL connections of the plugin's own, as its role and in its
    schema; on SQLite Keel's own read path."""
    folder = write_plugin(tmp_path, NOTES, {"0001_entries.py": CREATE_ENTRIES})
    await create_storage(engine, NOTES)
    await register(sessionmaker, NOTES)
    await run_migrations(sessionmaker, NOTES, folder)
    entries = entries_of(PluginStorage.of(NOTES, engine))
    async with plugin_session(sessionmaker, NOTES) as session:
        await session.execute(insert(entries).values(message="hello"))
        await session.commit()
    reads = plugin_reads(engine, settings.db, NOTES) or Reads(engine, settings.db)
    try:
        message = ReadQuery(select(entries.c.message).where(entries.c.id == bindparam("id")))
        assert await reads.one(message, id=1) == {"message": "hello"}
        assert await reads.one(message, id=2) is None
        if engine.dialect.name == "postgresql":
            who = ReadQuery(select(literal_column("current_user").label("role")))
            assert await reads.one(who) == {"role": f"keel_plugin_{NOTES}"}
            keel_users = table("users", schema="public")
            users = ReadQuery(select(literal_column("id")).select_from(keel_users))
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reads.all(users)
    finally:
        await reads.close()


async def test_migrations_run_once_in_file_name_order(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_plugin(
        tmp_path, NOTES, {"0002_tags.py": ADD_TAGS, "0001_entries.py": CREATE_ENTRIES}
    )
    await create_storage(engine, NOTES)
    await register(sessionmaker, NOTES)

    assert await run_migrations(sessionmaker, NOTES, folder) == ["0001_entries", "0002_tags"]
    assert await run_migrations(sessionmaker, NOTES, folder) == []
    async with sessionmaker() as session:
        recorded = await session.execute(
            select(PluginMigration.migration).where(PluginMigration.plugin == NOTES)
        )
        assert sorted(recorded.scalars()) == ["0001_entries", "0002_tags"]


async def test_a_failing_migration_leaves_nothing_of_itself_and_the_earlier_ones_applied(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_plugin(
        tmp_path, NOTES, {"0001_entries.py": CREATE_ENTRIES, "0002_tags.py": ADD_TAGS_THEN_FAIL}
    )
    await create_storage(engine, NOTES)
    await register(sessionmaker, NOTES)

    with pytest.raises(PluginStorageError, match=r"migration 0002_tags failed.*the author's bug"):
        await run_migrations(sessionmaker, NOTES, folder)

    storage = PluginStorage.of(NOTES, engine)
    assert await tables_of(engine, storage) == {"entries"}
    async with sessionmaker() as session:
        recorded = await session.execute(
            select(PluginMigration.migration).where(PluginMigration.plugin == NOTES)
        )
        assert list(recorded.scalars()) == ["0001_entries"]
    (folder / "migrations" / "0002_tags.py").write_text(dedent(ADD_TAGS))
    assert await run_migrations(sessionmaker, NOTES, folder) == ["0002_tags"]
    assert await tables_of(engine, storage) == {"entries", "tags"}


async def tables_of(engine: AsyncEngine, storage: PluginStorage) -> set[str]:
    """The plugin's tables by their own names, as the database lists them."""
    async with engine.connect() as connection:
        if storage.postgres:
            rows = await connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"),
                {"schema": storage.schema},
            )
            return set(rows.scalars())
        rows = await connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        prefix = storage.table_prefix
        return {name[len(prefix) :] for name in rows.scalars() if name.startswith(prefix)}


async def test_dropping_storage_removes_everything_and_it_can_be_made_again(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_plugin(tmp_path, NOTES, {"0001_entries.py": CREATE_ENTRIES})
    await create_storage(engine, NOTES)
    await create_storage(engine, NOTES)  # idempotent
    await register(sessionmaker, NOTES)
    await run_migrations(sessionmaker, NOTES, folder)
    storage = PluginStorage.of(NOTES, engine)

    await drop_storage(engine, NOTES)
    await drop_storage(engine, NOTES)  # idempotent

    assert await tables_of(engine, storage) == set()
    async with engine.connect() as connection:
        assert (await connection.execute(select(PluginMigration))).first() is None
        if storage.postgres:
            schemas = await connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"),
                {"name": storage.schema},
            )
            roles = await connection.execute(
                text("SELECT count(*) FROM pg_roles WHERE rolname = :name"),
                {"name": storage.role},
            )
            assert (schemas.scalar_one(), roles.scalar_one()) == (0, 0)
    await create_storage(engine, NOTES)
    assert await run_migrations(sessionmaker, NOTES, folder) == ["0001_entries"]
    assert await tables_of(engine, storage) == {"entries"}


async def test_storage_can_be_made_and_dropped_inside_the_callers_transaction(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    postgres_only(engine)
    async with sessionmaker() as session:
        await create_storage(session, NOTES)
        await session.rollback()
    async with engine.connect() as connection:
        roles = await connection.execute(
            text("SELECT count(*) FROM pg_roles WHERE rolname = :name"),
            {"name": f"keel_plugin_{NOTES}"},
        )
        assert roles.scalar_one() == 0


async def test_dropping_a_plugins_storage_on_sqlite_spares_a_longer_named_plugins_tables(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("a schema of its own on PostgreSQL")
    longer = f"{NOTES}_b"  # its prefix plugin_notesN_b_ starts with plugin_notesN_
    for name in (NOTES, longer):
        await register(sessionmaker, name)
        folder = write_plugin(tmp_path, name, {"0001_entries.py": CREATE_ENTRIES})
        await run_migrations(sessionmaker, name, folder)

    await drop_storage(engine, NOTES)

    assert await tables_of(engine, PluginStorage.of(NOTES, engine)) == {"b_entries"}
    assert await tables_of(engine, PluginStorage.of(longer, engine)) == {"entries"}


async def test_migrations_need_the_plugin_in_the_registry(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    folder = write_plugin(tmp_path, NOTES, {"0001_entries.py": CREATE_ENTRIES})
    with pytest.raises(PluginStorageError, match="not in the registry"):
        await run_migrations(sessionmaker, NOTES, folder)


def test_a_misnamed_migration_is_refused_not_skipped(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path, "notes", {"1_entries.py": CREATE_ENTRIES})
    with pytest.raises(PluginStorageError, match=r"1_entries\.py"):
        load_migrations(folder)


def test_a_migration_without_upgrade_is_refused(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path, "notes", {"0001_nothing.py": "VALUE = 1\n"})
    with pytest.raises(PluginStorageError, match="no upgrade"):
        load_migrations(folder)


def test_migrations_load_from_their_files_without_touching_the_import_path(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path, "notes", {"0001_entries.py": CREATE_ENTRIES})
    path, modules = list(sys.path), set(sys.modules)

    (name, upgrade), *_ = load_migrations(folder)

    assert name == "0001_entries" and callable(upgrade)
    assert sys.path == path and set(sys.modules) == modules


# The PostgreSQL boundary


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "SELECT * FROM public.users",
        "INSERT INTO audit_log (id, action) VALUES (gen_random_uuid(), 'forged')",
        "CREATE TABLE public.x (id int)",
        "SELECT * FROM plugin_registry",
    ],
)
async def test_a_plugin_session_has_no_privilege_on_keels_tables(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], statement: str
) -> None:
    postgres_only(engine)
    await create_storage(engine, NOTES)
    async with plugin_session(sessionmaker, NOTES) as session:
        with pytest.raises(DBAPIError) as error:
            await session.execute(text(statement))
    assert insufficient_privilege(error), error.value


async def test_a_plugin_session_runs_as_the_plugins_role_in_every_transaction(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    postgres_only(engine)
    await create_storage(engine, NOTES)
    who = text("SELECT current_user, (current_schemas(false))[1]")
    async with plugin_session(sessionmaker, NOTES) as session:
        for _ in range(2):
            assert tuple((await session.execute(who)).one()) == (
                f"keel_plugin_{NOTES}",
                f"plugin_{NOTES}",
            )
            await session.commit()


async def test_a_pooled_connection_goes_back_to_keel_after_a_plugin_session(
    settings: Settings, engine: AsyncEngine
) -> None:
    postgres_only(engine)
    await create_storage(engine, NOTES)
    one_connection = create_engine(replace(settings.db, pool_size=1, max_overflow=0))
    sessionmaker = create_sessionmaker(one_connection)
    try:
        async with sessionmaker() as session:
            keel = (await session.execute(text("SELECT current_user"))).scalar_one()
            path = (await session.execute(text("SHOW search_path"))).scalar_one()
            backend = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with plugin_session(sessionmaker, NOTES) as session:
            # plugin SQL that changes the whole session, not just its transaction
            await session.execute(text(f"SET SESSION ROLE keel_plugin_{NOTES}"))
            await session.execute(text(f"SET search_path = plugin_{NOTES}"))
            await session.commit()
        async with sessionmaker() as session:
            assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() == backend
            assert (await session.execute(text("SELECT current_user"))).scalar_one() == keel
            assert (await session.execute(text("SHOW search_path"))).scalar_one() == path
            await session.execute(text("SELECT count(*) FROM users"))
    finally:
        await one_connection.dispose()


async def test_two_plugins_do_not_see_each_others_tables(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    postgres_only(engine)
    for name in (NOTES, OTHER):
        await create_storage(engine, name)
        await register(sessionmaker, name)
        await run_migrations(
            sessionmaker, name, write_plugin(tmp_path, name, {"0001_entries.py": CREATE_ENTRIES})
        )
    async with plugin_session(sessionmaker, NOTES) as session:
        with pytest.raises(DBAPIError) as error:
            await session.execute(text(f"SELECT * FROM plugin_{OTHER}.entries"))
    assert insufficient_privilege(error), error.value


async def test_the_plugins_role_has_no_power_of_its_own(engine: AsyncEngine) -> None:
    postgres_only(engine)
    await create_storage(engine, NOTES)
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolcanlogin,"
                    " pg_has_role(rolname, session_user, 'MEMBER')"
                    " FROM pg_roles WHERE rolname = :role"
                ),
                {"role": f"keel_plugin_{NOTES}"},
            )
        ).one()
    assert tuple(row) == (False, False, False, False, False, False)


async def test_the_plugins_role_cannot_become_keels_user(engine: AsyncEngine) -> None:
    """Logged in as the plugin's role, `SET ROLE <Keel's user>` fails: the role is no
    member of Keel's user. (SESSION AUTHORIZATION stands in for a login as the role; it
    takes the superuser the test database's user is.)"""
    postgres_only(engine)
    await create_storage(engine, NOTES)
    async with engine.connect() as connection:
        keel = (await connection.execute(text("SELECT session_user"))).scalar_one()
        await connection.execute(text(f"SET LOCAL SESSION AUTHORIZATION keel_plugin_{NOTES}"))
        with pytest.raises(DBAPIError) as error:
            await connection.execute(text(f'SET LOCAL ROLE "{keel}"'))
    assert insufficient_privilege(error), error.value


@pytest.mark.parametrize(
    "escape",
    ["RESET ROLE", "SET LOCAL ROLE {keel}", "SELECT set_config('role', 'none', true)"],
)
async def test_plugin_sql_written_to_escape_can_reset_the_role_least_privilege_not_a_sandbox(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], escape: str
) -> None:
    """What `SET ROLE` on Keel's own connection cannot stop: PostgreSQL checks SET ROLE
    against the session's user (Keel's), not the current role. docs/plugins.md says so."""
    postgres_only(engine)
    await create_storage(engine, NOTES)
    async with plugin_session(sessionmaker, NOTES) as session:
        keel = (await session.execute(text("SELECT session_user"))).scalar_one()
        await session.execute(text(escape.format(keel=f'"{keel}"')))
        assert (await session.execute(text("SELECT current_user"))).scalar_one() == keel
        await session.execute(text("SELECT count(*) FROM users"))


async def test_storage_is_refused_where_public_may_read_a_keel_table(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Keel's tables carry no grant to PUBLIC; where someone added one, a plugin would
    inherit it, so its storage is not made."""
    postgres_only(engine)
    async with engine.begin() as connection:
        await connection.execute(text("GRANT SELECT ON users TO PUBLIC"))
    try:
        with pytest.raises(PluginStorageError, match="privileges on Keel's users"):
            await create_storage(engine, NOTES)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("REVOKE SELECT ON users FROM PUBLIC"))
