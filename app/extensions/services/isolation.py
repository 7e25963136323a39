"""Each plugin's own storage, and running as the plugin.

PostgreSQL: schema `plugin_<name>` owned by role `keel_plugin_<name>`, which is no superuser
and holds no privilege on Keel's tables; a plugin's transactions run as that role
(`SET LOCAL ROLE`), so its queries against Keel's tables fail with a permission error.
SQLite: tables named `plugin_<name>_<table>`, isolated by convention only.

The role switch is least privilege, not a sandbox: the connection still belongs to Keel's
user, and SQL written to do so can `RESET ROLE` (tests/extensions/test_isolation.py shows
it). It keeps a plugin's mistakes away from Keel's data; trust in a plugin's code comes from
its checksum and signature.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, delete, event, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.schema import SchemaItem

from app.core.errors import Conflict, InvalidField
from app.core.events import Events
from app.core.reads import Reads
from app.extensions.models import PluginMigration, PluginRecord
from app.extensions.services.manifest import NAME
from app.extensions.services.shared import SHARED_SCHEMA
from app.settings import DatabaseSettings

DIALECTS = ("postgresql", "sqlite")
PLUGIN_READ_CONNECTIONS = 4
"""The most read connections one plugin keeps open in a process (at most DB_READ_POOL_SIZE)."""
MIGRATION_FILE = re.compile(r"^(\d{4}_[a-z0-9_]+)\.py$")
"""`migrations/NNNN_<what>.py`: run in file-name order, recorded by the file's stem."""

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint and index names carry the (prefixed) table name: on SQLite index names share
one namespace with Keel's."""


class PluginStorageError(Conflict):
    """A plugin's storage could not be made, dropped or migrated as asked (409)."""


def valid_plugin_name(name: str) -> str:
    """`name`, when it may name a plugin's role, schema and tables (the manifest's rule:
    a-z, 0-9 and _, starting with a letter, 2-40 characters); every identifier this module
    builds comes from a name checked here."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidField(
            "A plugin name is 2-40 characters: a-z, 0-9 and _, starting with a letter.", "name"
        )
    return name


class PluginStorage:
    """Where one plugin's tables live, for plugin code to declare them the same way on both
    databases: `entries = storage.table("entries", Column(...))`, then `select(entries)`."""

    def __init__(self, name: str, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise InvalidField(f"Plugins store data on {' or '.join(DIALECTS)}.", "dialect")
        self.name = valid_plugin_name(name)
        self.dialect = dialect
        self.metadata = MetaData(schema=self.schema, naming_convention=_NAMING)
        """The plugin's own: `storage.metadata.create_all(connection)` in a migration makes
        the tables declared so far."""

    @classmethod
    def of(cls, name: str, bind: AsyncEngine | AsyncConnection | AsyncSession) -> PluginStorage:
        """The storage of plugin `name` on the database `bind` talks to."""
        return cls(name, _dialect_of(bind))

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def schema(self) -> str | None:
        """`plugin_<name>` on PostgreSQL; None on SQLite, which has one namespace."""
        return f"plugin_{self.name}" if self.postgres else None

    @property
    def role(self) -> str | None:
        """`keel_plugin_<name>`, the role the plugin's transactions run as (PostgreSQL)."""
        return f"keel_plugin_{self.name}" if self.postgres else None

    @property
    def table_prefix(self) -> str:
        """What the plugin's table names start with on SQLite (none on PostgreSQL)."""
        return "" if self.postgres else f"plugin_{self.name}_"

    def table_name(self, local_name: str) -> str:
        """The database's name for the plugin's table `local_name` (for raw SQL on SQLite;
        on PostgreSQL the search path finds it by its own name)."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", local_name):
            raise InvalidField(
                "A plugin table's name is a-z, 0-9 and _, starting with a letter.", "table"
            )
        return self.table_prefix + local_name

    def table(self, local_name: str, *columns: Column[Any] | SchemaItem, **kw: Any) -> Table:
        """Declare the plugin's table `local_name` (in schema `plugin_<name>` on PostgreSQL,
        named `plugin_<name>_<local_name>` on SQLite), or get the one declared already: a
        plugin may declare its tables where it uses them, as often as it runs that code."""
        name = self.table_name(local_name)
        key = f"{self.schema}.{name}" if self.schema else name
        if key in self.metadata.tables:
            return self.metadata.tables[key]
        return Table(name, self.metadata, *columns, **kw)


def _dialect_of(bind: AsyncEngine | AsyncConnection | AsyncSession) -> str:
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def _quoted(identifier: str) -> str:
    """A role or schema name as a quoted identifier. Only names this module built from a
    checked plugin name reach here (a-z, 0-9, _), so no quote can be inside."""
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,62}", identifier), identifier
    return f'"{identifier}"'


@asynccontextmanager
async def _connection(
    bind: AsyncEngine | AsyncConnection | AsyncSession,
) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction: the engine's in one of its own (committed at the end),
    or the caller's, in the caller's transaction (the caller commits)."""
    if isinstance(bind, AsyncEngine):
        async with bind.begin() as connection:
            yield connection
    elif isinstance(bind, AsyncSession):
        yield await bind.connection()
    else:
        yield bind


async def create_storage(bind: AsyncEngine | AsyncConnection | AsyncSession, name: str) -> None:
    """Make plugin `name`'s storage (idempotent). PostgreSQL: role `keel_plugin_<name>`
    (NOLOGIN, no superuser, CREATEDB, CREATEROLE, BYPASSRLS or REPLICATION), granted to Keel's
    user so Keel may act as it; schema `plugin_<name>` owned by it; then a check that the role
    holds no privilege on Keel's schema `public` or anything in it; it may read the views Keel
    shares (`grant_shared_views`). SQLite: nothing to make.
    Keel's user needs CREATEROLE on PostgreSQL."""
    storage = PluginStorage.of(name, bind)
    if not storage.postgres:
        return
    assert storage.role and storage.schema
    role, schema = _quoted(storage.role), _quoted(storage.schema)
    async with _connection(bind) as connection:
        # Roles are cluster-wide: another database (another Keel, another test run) may make
        # the same one at the same moment.
        await connection.exec_driver_sql(
            "DO $$BEGIN "
            f"CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
            "NOREPLICATION NOINHERIT; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$"
        )
        await connection.exec_driver_sql(f"GRANT {role} TO CURRENT_USER")
        await connection.exec_driver_sql(
            f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}"
        )
        await connection.exec_driver_sql(f"REVOKE ALL ON SCHEMA public FROM {role}")
        await connection.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await connection.exec_driver_sql(
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}"
        )
        await grant_shared_views(connection, role)
        problems = await _isolation_problems(connection, storage.role, storage.schema)
    if problems:
        raise PluginStorageError(
            f"Plugin {name!r} would not be isolated on this database: {'; '.join(problems)}."
        )


async def grant_shared_views(connection: AsyncConnection, role: str) -> None:
    """Let the (quoted) `role` read the views Keel shares with plugins (`shared.py`), those
    that exist and those a later migration adds; nothing else of schema `keel_shared`."""
    shared = _quoted(SHARED_SCHEMA)
    await connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {shared} TO {role}")
    await connection.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {shared} TO {role}")
    await connection.exec_driver_sql(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {shared} GRANT SELECT ON TABLES TO {role}"
    )


async def _isolation_problems(connection: AsyncConnection, role: str, schema: str) -> list[str]:
    """What would let the role reach past its own schema: its attributes (a role of that name
    may have been there before), roles it belongs to, a schema owned by someone else, and
    any privilege on Keel's schema `public` or its tables and sequences, held directly or
    through PUBLIC."""
    problems = []
    attributes = (
        await connection.execute(
            text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication,"
                " rolcanlogin, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
                " FROM pg_roles r WHERE rolname = :role"
            ),
            {"role": role},
        )
    ).one()
    labels = ("SUPERUSER", "CREATEDB", "CREATEROLE", "BYPASSRLS", "REPLICATION", "LOGIN")
    held = [label for label, value in zip(labels, attributes[:6], strict=True) if value]
    if held:
        problems.append(f"role {role} has {', '.join(held)}")
    if attributes[6]:
        problems.append(f"role {role} is a member of other roles")
    owner = (
        await connection.execute(
            text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :schema"),
            {"schema": schema},
        )
    ).scalar_one()
    if owner != role:
        problems.append(f"schema {schema} belongs to {owner}, not {role}")
    if (
        await connection.execute(
            text("SELECT has_schema_privilege(:role, 'public', 'CREATE')"), {"role": role}
        )
    ).scalar_one():
        problems.append(
            "it may create objects in schema public (REVOKE CREATE ON SCHEMA public FROM PUBLIC)"
        )
    reachable = (
        await connection.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND CASE WHEN c.relkind = 'S'"
                " THEN has_sequence_privilege(:role, c.oid, 'USAGE,SELECT,UPDATE')"
                " WHEN c.relkind IN ('r', 'v', 'm', 'p', 'f')"
                " THEN has_table_privilege(:role, c.oid,"
                " 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
                " ELSE false END ORDER BY c.relname"
            ),
            {"role": role},
        )
    ).scalars()
    names = list(reachable)
    if names:
        problems.append(f"it has privileges on Keel's {', '.join(names)}")
    return problems


async def drop_storage(bind: AsyncEngine | AsyncConnection | AsyncSession, name: str) -> None:
    """Remove plugin `name`'s storage, its data and its record of migrations run
    (idempotent). PostgreSQL: the schema with everything in it, then the role, unless
    another database of the cluster still has objects of it. SQLite: every table named with
    the plugin's prefix, except a longer-named plugin's (`plugin_a_` is also the start of
    `plugin_a_b_`)."""
    storage = PluginStorage.of(name, bind)
    async with _connection(bind) as connection:
        # first: on SQLite this DELETE opens the transaction the DROPs then run in
        await connection.execute(delete(PluginMigration).where(PluginMigration.plugin == name))
        if storage.postgres:
            assert storage.role and storage.schema
            role, schema = _quoted(storage.role), _quoted(storage.schema)
            await connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await connection.exec_driver_sql(
                "DO $$BEGIN "
                f"IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{storage.role}') THEN "
                f"DROP OWNED BY {role}; "
                f"BEGIN DROP ROLE {role}; "
                "EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END; "
                "END IF; END$$"
            )
            return
        await _drop_prefixed_tables(connection, storage)


async def _drop_prefixed_tables(connection: AsyncConnection, storage: PluginStorage) -> None:
    others = (
        await connection.execute(
            select(PluginRecord.name).where(
                PluginRecord.name.startswith(storage.name + "_", autoescape=True)
            )
        )
    ).scalars()
    foreign = tuple(f"plugin_{other}_" for other in others)
    rows = await connection.exec_driver_sql(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')"
    )
    mine = [
        (kind, table)
        for kind, table in rows
        if table.startswith(storage.table_prefix) and not table.startswith(foreign)
    ]
    await connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    quote = connection.dialect.identifier_preparer.quote_identifier
    for kind, table in sorted(mine, key=lambda item: item[0] != "view"):
        await connection.exec_driver_sql(f"DROP {kind.upper()} IF EXISTS {quote(table)}")


def _act_as(connection: Connection, storage: PluginStorage) -> None:
    """Make the rest of this transaction the plugin's: its role, and its schema first on the
    search path (then `public`, so a query naming Keel's table fails for want of permission
    rather than as a table that does not exist). `set_config(..., true)` is `SET LOCAL`:
    it ends with the transaction, so no pooled connection stays the plugin's."""
    connection.execute(
        text("SELECT set_config('role', :role, true), set_config('search_path', :path, true)"),
        {"role": storage.role, "path": f"{_quoted(storage.schema or '')}, public"},
    )


@asynccontextmanager
async def plugin_session(
    sessionmaker: async_sessionmaker[AsyncSession], name: str
) -> AsyncIterator[AsyncSession]:
    """A session for plugin `name`'s own work. On PostgreSQL every transaction it begins runs
    as the plugin's role with the plugin's schema on the search path; its connection is
    reset (role, search path) before it goes back to the pool, even when plugin SQL changed
    them for the whole session. On SQLite it is a plain session."""
    async with sessionmaker() as probe:
        dialect = _dialect_of(probe)
    storage = PluginStorage(name, dialect)
    if not storage.postgres:
        async with sessionmaker() as session:
            yield session
        return
    engine = probe.bind
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        try:
            async with sessionmaker(bind=connection) as session:

                def act_as_plugin(
                    _session: Session, _transaction: SessionTransaction, sync: Connection
                ) -> None:
                    _act_as(sync, storage)

                event.listen(session.sync_session, "after_begin", act_as_plugin)
                yield session
        finally:
            try:
                if connection.in_transaction():
                    await connection.rollback()
                await _reset(connection)
            except Exception:  # a connection that cannot be reset must not serve Keel
                await connection.invalidate()
                raise


@asynccontextmanager
async def as_keel(session: AsyncSession, name: str) -> AsyncIterator[None]:
    """Within a transaction of plugin `name`'s session, run the block as Keel (its user and
    search path), then as the plugin again: what Keel writes on the plugin's behalf (a job
    it enqueues) joins the plugin's transaction, while the plugin's own SQL keeps no
    privilege on Keel's tables. On SQLite, or in a session not acting as the plugin,
    nothing changes."""
    storage = PluginStorage.of(name, session)
    if not storage.postgres or await session.scalar(text("SELECT current_user")) != storage.role:
        yield
        return
    await session.execute(
        text(
            "SELECT set_config('role', 'none', true), set_config('search_path', "
            "(SELECT reset_val FROM pg_settings WHERE name = 'search_path'), true)"
        )
    )
    try:
        yield
    finally:
        await session.run_sync(lambda sync: _act_as(sync.connection(), storage))


async def _reset(connection: AsyncConnection) -> None:
    """Give the connection back as Keel's user with the default search path, whatever
    session-level `SET`s plugin SQL made (one round trip, outside any transaction)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.execute("RESET SESSION AUTHORIZATION; RESET ROLE; RESET search_path")


Upgrade = Callable[[Connection, PluginStorage], None]
"""A migration's `upgrade(connection, storage)`."""

_loads = itertools.count()


def load_migrations(folder: Path) -> list[tuple[str, Upgrade]]:
    """The upgrade functions of `folder/migrations/NNNN_<what>.py`, in file-name order, by
    the file's stem. Each module is loaded from its path under a module name of its own
    (plugin folders never go on `sys.path`)."""
    directory = folder / "migrations"
    if not directory.is_dir():
        return []
    migrations = []
    for path in sorted(directory.glob("*.py")):
        if path.name == "__init__.py":
            continue
        found = MIGRATION_FILE.match(path.name)
        if not found:
            raise PluginStorageError(
                f"Plugin migration {path.name!r} is not named NNNN_<what>.py "
                "(four digits, then a-z, 0-9 and _).",
                "migrations",
            )
        module = _load_module(path, found.group(1))
        upgrade = getattr(module, "upgrade", None)
        if not callable(upgrade):
            raise PluginStorageError(
                f"Plugin migration {path.name!r} defines no upgrade(connection, storage).",
                "migrations",
            )
        migrations.append((found.group(1), upgrade))
    return migrations


def _load_module(path: Path, stem: str) -> ModuleType:
    module_name = f"keel_plugin_migration_{next(_loads)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginStorageError(f"Plugin migration {path.name!r} cannot be loaded.", "migrations")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # while it runs: dataclasses and typing look it up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginStorageError(
            f"Plugin migration {path.name!r} failed to load: {type(exc).__name__}: {exc}",
            "migrations",
        ) from exc
    finally:
        del sys.modules[module_name]
    return module


async def run_migrations(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, folder: Path
) -> list[str]:
    """Run plugin `name`'s migrations that have not run yet, in file-name order; the ones
    run. Each runs in a transaction of its own together with its `plugin_migrations` row,
    as the plugin (its role, on PostgreSQL); one that fails leaves nothing of itself, stops
    the rest and raises PluginStorageError naming it, the earlier ones staying applied.
    The plugin's `plugin_registry` row must exist (committed)."""
    valid_plugin_name(name)
    migrations = load_migrations(folder)
    async with sessionmaker() as session:
        if await session.get(PluginRecord, name) is None:
            raise PluginStorageError(f"Plugin {name!r} is not in the registry.", "name")
        done = set(
            (
                await session.execute(
                    select(PluginMigration.migration).where(PluginMigration.plugin == name)
                )
            ).scalars()
        )
    ran = []
    for migration, upgrade in migrations:
        if migration in done:
            continue
        await _run_one(sessionmaker, name, migration, upgrade)
        ran.append(migration)
    return ran


async def _run_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    migration: str,
    upgrade: Upgrade,
) -> None:
    async with sessionmaker() as session:
        storage = PluginStorage.of(name, session)
        try:
            async with session.begin():
                # The row first, as Keel (the plugin's role may not write it); on SQLite
                # this INSERT also opens the transaction the migration's DDL runs in.
                await session.execute(
                    insert(PluginMigration).values(
                        plugin=name, migration=migration, applied_at=datetime.now(UTC)
                    )
                )
                connection = await session.connection()

                def run(sync: Connection) -> None:
                    if storage.postgres:
                        _act_as(sync, storage)
                    upgrade(sync, storage)

                await connection.run_sync(run)
        except DBAPIError as exc:
            raise PluginStorageError(
                f"Plugin {name!r}: migration {migration} failed: {_first_line(exc.orig)}",
                "migrations",
            ) from exc
        except Exception as exc:
            raise PluginStorageError(
                f"Plugin {name!r}: migration {migration} failed: {type(exc).__name__}: {exc}",
                "migrations",
            ) from exc


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0]}"


def plugin_reads(engine: AsyncEngine, settings: DatabaseSettings, name: str) -> Reads | None:
    """Plugin `name`'s own read path on PostgreSQL, the one Keel's public pages use
    (`Reads`: one round trip on connections of its own, no session, no transaction): its
    connections start as the plugin's role with the plugin's schema as the search path,
    read-only, and serve no one else. None on SQLite, where a plugin reads through Keel's
    (one database file, isolation by convention)."""
    storage = PluginStorage(name, engine.dialect.name)
    if not storage.postgres:
        return None
    return Reads(
        engine,
        replace(settings, read_pool_size=min(settings.read_pool_size, PLUGIN_READ_CONNECTIONS)),
        server_settings={
            "application_name": f"keel-plugin-{name}",
            "role": str(storage.role),
            "search_path": str(storage.schema),
        },
    )


def storage_sessions(
    sessionmaker: async_sessionmaker[AsyncSession], events: Events | None = None
) -> Callable[[str], AbstractAsyncContextManager[AsyncSession]]:
    """What a plugin's `ctx.session()` opens: a transaction on its own storage, as its
    role (`plugin_session`), committed when the block ends without an error; then what it
    emitted goes to `events` (the runtime's), as a request's does: the wake-up of the
    workers for a job it enqueued."""

    @asynccontextmanager
    async def open_session(name: str) -> AsyncIterator[AsyncSession]:
        async with plugin_session(sessionmaker, name) as session:
            async with session.begin():
                yield session
            if events is not None:
                await events.deliver(session)

    return open_session
