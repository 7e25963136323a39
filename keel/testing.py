"""`keel.testing`: the test kit for plugins (it follows `keel.plugin.API_VERSION`: a minor
version adds to it, a major one may change it).

A plugin's tests import this module and `keel.plugin`, nothing else of Keel. In the
plugin's `tests/conftest.py`:

    from pathlib import Path

    from keel.testing import site_fixture

    site = site_fixture(Path(__file__).parents[1])  # this plugin's folder

and a test (asyncio_mode = "auto", as Keel's pyproject.toml sets it):

    from keel.testing import PluginSite

    async def test_visitors_see_the_page(site: PluginSite) -> None:
        async with site.client() as visitor:
            assert (await visitor.get("/p/hello/")).status_code == 200

Each test gets a `PluginSite`: Keel's real ASGI app (its middleware, guards, CSRF and the
plugin mounts) over a database of its own leg, with one account per role and the plugin
installed and activated through Keel's lifecycle, as `keel plugins install` and
`keel plugins activate` do. It runs on two legs: `embedded` (SQLite in a temporary folder,
the in-memory store) and `services` (PostgreSQL and Valkey at KEEL_TEST_PG and
KEEL_TEST_VALKEY, by default on 127.0.0.1; when they do not answer the leg is skipped, or
fails under CI=true). Everything is torn down after the test: the plugin is uninstalled
(its storage dropped) and Keel's tables emptied.

It needs Keel's development dependencies (pytest, pytest-asyncio, httpx: `make install`);
the production image has none of them and never imports this module. Keel's own tests
(tests/conftest.py) use the same helpers. The guide: docs/plugins.md, "Testing your plugin".
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import shutil
import socket
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
from litestar import Litestar
from litestar.middleware.csrf import generate_csrf_token
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import User
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.core.clock import Clock, clock_in_use
from app.core.db import create_engine, create_sessionmaker
from app.core.migrations import migration_commands
from app.core.queueing import enqueue
from app.core.runtime import Runtime, runtime_of
from app.extensions.models import PluginRecord
from app.extensions.services import isolation, lifecycle
from app.extensions.services.host import PluginContext, PluginHost
from app.extensions.services.manifest import read_manifest
from app.jobs.models import Job, JobStatus
from app.jobs.services.worker import Worker
from app.models import metadata
from app.settings import Settings
from keel.plugin import API_VERSION

__all__ = [
    "API_VERSION",
    "LEGS",
    "PASSWORD",
    "ROLES",
    "FinishedJob",
    "PluginSite",
    "PluginStepFailed",
    "SteppedClock",
    "assert_problem",
    "client_for",
    "keel_settings",
    "plugin_site",
    "require_services",
    "signed_in",
    "site_fixture",
]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "KEEL_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
"""A PostgreSQL server for the `services` leg (a database of the run's own is made on it;
its user needs CREATEDB and CREATEROLE)."""
VALKEY_TEST_URL = os.environ.get("KEEL_TEST_VALKEY", "redis://127.0.0.1:6379/15")
"""A Valkey (or Redis) for the `services` leg; the run's keys carry a prefix of its own."""
RUN_ID = os.getpid()
"""Databases and key prefixes carry it, so concurrent test runs never share state."""
PG_TEST_DB = f"keel_test_{RUN_ID}"
LEGS = ("embedded", "services")
"""`embedded`: SQLite in a temporary folder and the in-memory store. `services`:
PostgreSQL and Valkey."""
ROLES = ("admin", "editor", "viewer")
"""Each site has one active account per role: username and role alike."""
PASSWORD = "correct horse battery staple"  # noqa: S105 (the test accounts')
"""Every test account's password."""
VISITOR_ADDRESS = "203.0.113.7"
"""The client address a site's clients come from, unless a test names another."""


T = TypeVar("T")
UNFINISHED = Job.status.in_((JobStatus.queued.value, JobStatus.running.value))


class PluginStepFailed(AssertionError):
    """A lifecycle step left the plugin in `error` (a hook or a migration failed); the
    message is the one an admin would see."""


# -- the legs -------------------------------------------------------------------------------


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _host_and_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = httpx.URL(url.replace("postgresql+asyncpg", "postgresql"))
    return parsed.host or "127.0.0.1", parsed.port or default_port


@functools.cache
def missing_services() -> tuple[str, ...]:
    """The services of the `services` leg that do not answer (checked once a run)."""
    missing = []
    for label, url, port in (
        ("PostgreSQL", PG_ADMIN_URL, 5432),
        ("Valkey/Redis", VALKEY_TEST_URL, 6379),
    ):
        host, port = _host_and_port(url, port)
        if not port_answers(host, port):
            missing.append(f"{label} on {host}:{port}")
    return tuple(missing)


def require_services() -> None:
    """Skip the test (locally) or fail it (CI=true) when PostgreSQL or Valkey is not there."""
    if missing := missing_services():
        message = f"services leg needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing service is a failure)", pytrace=False)
        pytest.skip(message)


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def recreate_pg_database(name: str, create: bool = True) -> None:
    """Drop and create a PostgreSQL database (in its own thread: the caller may run a loop)."""

    async def run() -> None:
        import asyncpg

        dsn = pg_url("postgres").replace("postgresql+asyncpg", "postgresql")
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result()


def leg_environment(leg: str, var_dir: Path) -> dict[str, str]:
    """Environment variables of a Keel on `leg` with its files in `var_dir` (for
    `Settings.from_env`, or a `keel` subprocess)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VALKEY_", "DB_"))}
    env.update(VAR_DIR=str(var_dir), APP_ENV="development", LOG_LEVEL="INFO")
    env.pop("SECRET_KEY", None)
    if leg == "embedded":
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{var_dir}/keel.db"
    else:
        env["DATABASE_URL"] = pg_url(PG_TEST_DB)
        env["VALKEY_URL"] = VALKEY_TEST_URL
        env["VALKEY_KEY_PREFIX"] = f"keeltest{RUN_ID}:"
    return env


def keel_settings(leg: str, var_dir: Path) -> Settings:
    """Settings of a Keel on `leg` over a new, migrated database (the `services` leg's
    database is made again); its files go in `var_dir`. Slow (the migrations): the
    pytest helpers make one per leg and run, then empty its tables after each test."""
    if leg == "services":
        recreate_pg_database(PG_TEST_DB)
    settings = Settings.from_env(leg_environment(leg, var_dir), env_file=Path("/nonexistent"))
    migration_commands(settings.db).upgrade("head")
    return settings.with_secret()


_PREPARED = pytest.StashKey[dict[str, Settings]]()


def prepared_leg(config: pytest.Config, factory: pytest.TempPathFactory, leg: str) -> Settings:
    """The run's migrated database on `leg`, made the first time a test asks (once per
    pytest run, shared by Keel's tests and plugins'); the services leg's database is
    dropped when the run ends."""
    prepared = config.stash.setdefault(_PREPARED, {})
    if leg not in prepared:
        prepared[leg] = keel_settings(leg, factory.mktemp(f"var-{leg}"))
        if leg == "services":
            config.add_cleanup(functools.partial(recreate_pg_database, PG_TEST_DB, False))
    return prepared[leg]


async def empty_storage(settings: Settings) -> None:
    """Delete every row of Keel's tables and every store key a test left behind."""
    engine = create_engine(settings.db)
    async with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            await connection.execute(table.delete())
    await engine.dispose()
    if not settings.store.is_memory:
        from valkey.asyncio import Valkey

        client = Valkey.from_url(settings.store.url)
        keys = [key async for key in client.scan_iter(match=settings.store.key_prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# -- accounts and clients -------------------------------------------------------------------


@functools.cache
def password_hash() -> str:
    """PASSWORD, hashed once a process (hashing is slow on purpose)."""
    from app.accounts.services.password_hashing import hasher

    return hasher.hash(PASSWORD)


async def create_accounts(settings: Settings, hashed: str | None = None) -> dict[str, User]:
    """One active account per role (admin, editor, viewer), password PASSWORD."""
    engine = create_engine(settings.db)
    users = {}
    async with create_sessionmaker(engine)() as session, session.begin():
        for role in ROLES:
            user = User(
                email=f"{role}@example.org",
                username=role,
                display_name=role.capitalize(),
                password_hash=hashed or password_hash(),
                role=role,
                is_active=True,
                failed_login_count=0,
                auth_version=1,
            )
            session.add(user)
            users[role] = user
    await engine.dispose()
    return users


def client_for(app: Litestar, client_ip: str = VISITOR_ADDRESS) -> httpx.AsyncClient:
    """An HTTP client over the app's ASGI interface, seen as coming from `client_ip`."""
    # httpx types an ASGI app narrower than Litestar's (equivalent) __call__
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50123))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def fresh(app: Litestar, user: User) -> User:
    """`user` as the database has it now (role and auth_version may have changed)."""
    async with app.state.sessionmaker() as session:
        return await session.get(User, user.id) or user


@asynccontextmanager
async def signed_in(
    app: Litestar, user: User, client_ip: str = VISITOR_ADDRESS
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a live session for `user` and the session's CSRF token
    in its `X-CSRF-Token` header (what htmx sends from its pages)."""
    from app.accounts.services.sessions import cookie_name
    from app.core.csrf import session_csrf_token

    user = await fresh(app, user)
    session_id = await app.state.sessions.create(
        user.id, user.auth_version, user.role, client_ip, "pytest"
    )
    browser_session = await app.state.sessions.load(session_id)
    token = session_csrf_token(app.state.settings.app.secret_key, browser_session.csrf_secret)
    async with client_for(app, client_ip) as client:
        client.cookies.set(cookie_name(app.state.settings.app.is_production), session_id)
        client.headers["X-CSRF-Token"] = token
        yield client


def with_visitor_csrf(app: Litestar, client: httpx.AsyncClient) -> str:
    """Give an anonymous client the CSRF cookie a page with a form would set, and its token
    in the `X-CSRF-Token` header (Keel's double-submit check for visitors)."""
    settings = app.state.settings.app
    token = generate_csrf_token(secret=settings.secret_key)
    name = "__Host-keel_csrf" if settings.is_production else "keel_csrf"
    client.cookies.set(name, token)
    client.headers["X-CSRF-Token"] = token
    return token


async def api_token(app: Litestar, user: User) -> str:
    """An access token for `user` from a sign-in of its own (a token family in the
    database), as `POST /api/v1/auth/login` gives one."""
    async with app.state.sessionmaker() as session, session.begin():
        family, _ = await app.state.refresh_tokens.start(session, user.id, user.auth_version)
    return str(app.state.access_tokens.issue(user.id, user.role, user.auth_version, family))


async def bearer(app: Litestar, user: User) -> dict[str, str]:
    """The `Authorization` header of a new access token for `user` (see `api_token`)."""
    return {"Authorization": f"Bearer {await api_token(app, user)}"}


PROBLEM = "application/problem+json"


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    """Assert that `response` is Keel's problem details with `status` (and, given `field`,
    that its first error names it); the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"] and body["instance"], body
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


# -- time -----------------------------------------------------------------------------------


class SteppedClock(Clock):
    """A clock that moves only when the test moves it (`runtime.clock`, schedule ticks)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def advance(self, by: timedelta) -> None:
        self.at += by

    def now(self) -> datetime:
        return self.at

    def time(self) -> float:
        return self.at.timestamp()


@contextmanager
def stopped_clock(*apps: Litestar) -> Iterator[SteppedClock]:
    """Stop time at now for the apps' requests and for the test itself (services it calls
    directly): it moves only when the test advances it, so a scheduled moment comes
    without waiting for it."""
    clock = SteppedClock(datetime.now(UTC))
    for app in apps:
        app.state.runtime.clock = clock
    with clock_in_use(clock):
        yield clock


# -- a Keel with the plugin -----------------------------------------------------------------


@dataclass(frozen=True)
class FinishedJob:
    """A job as `PluginSite.run_jobs` left it."""

    id: int
    type: str
    status: str
    """succeeded, failed, cancelled or dead."""
    result: Any
    last_error: str | None


class PluginSite:
    """A Keel serving one plugin, for a test: `app` (the ASGI app), `users` (an account per
    role), `name` (the plugin's), and the steps an admin takes. Made by `plugin_site` (or a
    `site_fixture`); the lifecycle steps run as Keel's own, then this process's plugin host
    follows them at once."""

    def __init__(self, app: Litestar, name: str, users: Mapping[str, User]) -> None:
        self.app = app
        self.name = name
        self.users = dict(users)
        self._actor = Actor.system("keel.testing")

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self.app.state)

    @property
    def settings(self) -> Settings:
        """Keel's settings of this site (leg, PLUGINS_DIR, ...)."""
        return self.runtime.settings

    @property
    def host(self) -> PluginHost:
        return self.runtime.service(PluginHost)

    # -- the lifecycle, as an admin runs it ----------------------------------------------

    async def install(self) -> str:
        """`keel plugins install`: storage, migrations, `on_install`. The new status."""
        row = await lifecycle.install(
            self.runtime, self._actor, self.name, lifecycle.hooks_of(self.runtime)
        )
        return await self._after(row)

    async def activate(self) -> str:
        """`keel plugins activate`: served from now on. The new status."""
        return await self._step(lifecycle.activate)

    async def deactivate(self) -> str:
        """`keel plugins deactivate`: its addresses answer 404. The new status."""
        return await self._step(lifecycle.deactivate)

    async def uninstall(self) -> None:
        """`keel plugins uninstall --yes`: its data is gone."""
        hooks = lifecycle.hooks_of(self.runtime)

        async def uninstall(session: AsyncSession) -> None:
            await lifecycle.uninstall(
                session, self.runtime, self._actor, self.name, hooks, confirm=True
            )

        await self._committed(uninstall)
        await self.host.sync()

    async def configure(self, **values: Any) -> dict[str, Any]:
        """Change some of the plugin's settings, as an admin saves the settings form
        (checked against the manifest's schema: InvalidFields when a value is wrong); the
        plugin is loaded again with them. The settings now."""

        async def save(session: AsyncSession) -> dict[str, Any]:
            row = await lifecycle.get_plugin(session, self.name)
            merged = {**(row.settings or {}), **values}
            row = await lifecycle.save_settings(session, self._actor, self.name, merged)
            return dict(row.settings or {})

        saved = await self._committed(save)
        await self.host.sync()
        return saved

    async def status(self) -> str | None:
        """The plugin's status in the registry (None: not installed)."""
        async with self.runtime.sessionmaker() as session:
            row = await session.get(PluginRecord, self.name)
            return None if row is None else row.status

    async def _step(self, step: Callable[..., Awaitable[PluginRecord]]) -> str:
        hooks = lifecycle.hooks_of(self.runtime)

        async def run(session: AsyncSession) -> PluginRecord:
            return await step(session, self.runtime, self._actor, self.name, hooks)

        return await self._after(await self._committed(run))

    async def _committed(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in a transaction of its own, committed, then its events delivered (as
        after a request's COMMIT)."""
        async with self.runtime.sessionmaker(expire_on_commit=False) as session:
            async with session.begin():
                done = await work(session)
            await self.runtime.events.deliver(session)
        return done

    async def _after(self, row: PluginRecord) -> str:
        await self.host.sync()
        if row.status == "error":
            raise PluginStepFailed(f"{self.name}: {row.error}")
        return str(row.status)

    # -- clients ---------------------------------------------------------------------------

    @asynccontextmanager
    async def client(
        self,
        role: str | None = None,
        *,
        token: bool = False,
        csrf: bool = True,
        client_ip: str = VISITOR_ADDRESS,
    ) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client on the app. `role` None: an anonymous visitor (with the CSRF
        cookie and header a page's form gives, unless `csrf=False`); "admin", "editor" or
        "viewer": signed in with a browser session and its CSRF token, or with `token=True`
        an API access token instead (`Authorization: Bearer`, no cookies)."""
        if role is None:
            async with client_for(self.app, client_ip) as visitor:
                if csrf:
                    with_visitor_csrf(self.app, visitor)
                yield visitor
            return
        user = self.users[role]
        if token:
            async with client_for(self.app, client_ip) as caller:
                caller.headers.update(await bearer(self.app, user))
                yield caller
            return
        async with signed_in(self.app, user, client_ip) as browser:
            if not csrf:
                del browser.headers["X-CSRF-Token"]
            yield browser

    # -- the plugin's code and data --------------------------------------------------------

    @property
    def ctx(self) -> PluginContext:
        """The plugin's `PluginContext` as its handlers get it while it is active (else one
        made for the test): `async with site.ctx.session() as session:` reads its tables."""
        loaded = self.host.loaded.get(self.name)
        if loaded is not None:
            return loaded.context
        folder = self.settings.app.plugins_dir / self.name
        return self.host.context_of(self.name, read_manifest(folder / "plugin.toml").version, {})

    def module(self, name: str) -> ModuleType:
        """A module of the active plugin, as Keel loaded it: `site.module("hello.greetings")`
        (a plugin's own package is not importable by its name)."""
        loaded = self.host.loaded.get(self.name)
        if loaded is None:
            raise LookupError(f"{self.name} is not active here")
        return importlib.import_module(f"{loaded.module}.{name}")

    # -- jobs and time ---------------------------------------------------------------------

    async def enqueue(self, type: str, payload: dict[str, Any] | None = None) -> int:
        """Add a job to Keel's queue as Keel would (a schedule, the jobs API); its id."""

        async def add(session: AsyncSession) -> int:
            return int(await enqueue(session, type, payload))

        return await self._committed(add)

    async def run_jobs(self, timeout: float = 30.0) -> list[FinishedJob]:
        """Run Keel's worker (the plugin's job types included while it is active) until no
        job is queued or running, a failed attempt retried at once, then stop it; the jobs
        that were waiting or were added meanwhile, as they finished, oldest first.
        TimeoutError when some are still unfinished after `timeout` seconds."""
        async with self.runtime.sessionmaker() as session:
            last = int(await session.scalar(select(func.coalesce(func.max(Job.id), 0))) or 0)
            waiting = set((await session.scalars(select(Job.id).where(UNFINISHED))).all())
        quick = replace(self.settings.worker, poll_interval=0.05, retry_backoff=0.0)
        worker = Worker(
            replace(self.settings, worker=quick),
            self.runtime.store,
            self.runtime.sessionmaker,
            schedules=False,
        )
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(timeout):
                while await self._unfinished_jobs():
                    if task.done():
                        await task  # the worker's own failure
                    await asyncio.sleep(0.02)
        finally:
            worker.request_stop()
            await task
        async with self.runtime.sessionmaker() as session:
            ran = await session.scalars(
                select(Job).where(Job.id.in_(waiting) | (Job.id > last)).order_by(Job.id)
            )
            return [
                FinishedJob(job.id, job.type, job.status, job.result, job.last_error) for job in ran
            ]

    async def _unfinished_jobs(self) -> int:
        async with self.runtime.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).where(UNFINISHED)) or 0)

    @contextmanager
    def clock(self) -> Iterator[SteppedClock]:
        """Stop the site's time at now (`with site.clock() as clock: clock.advance(...)`):
        rate-limit windows and schedules move only when the test moves them."""
        with stopped_clock(self.app) as stopped:
            yield stopped


def copy_plugin(folder: Path, plugins_dir: Path) -> Path:
    """A copy of the plugin in `folder` under `plugins_dir`, named as its manifest names it
    (the folder a plugin is installed from must bear its name); the copy."""
    name = tomllib.loads((folder / "plugin.toml").read_text())["plugin"]["name"]
    target = plugins_dir / name
    shutil.copytree(
        folder, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    )
    return target


@asynccontextmanager
async def plugin_site(
    folder: Path | str,
    settings: Settings,
    work_dir: Path,
    *,
    install: bool = True,
    activate: bool = True,
    values: Mapping[str, Any] | None = None,
) -> AsyncIterator[PluginSite]:
    """Keel on `settings`' (migrated) database serving a copy of the plugin in `folder`
    (copied under `work_dir`), with one account per role, the plugin installed and active
    (unless told otherwise) and its settings changed by `values`. Afterwards the plugin
    is uninstalled and Keel's tables and store keys emptied."""
    plugins_dir = work_dir / "plugins"
    plugins_dir.mkdir(parents=True, exist_ok=True)
    name = copy_plugin(Path(folder), plugins_dir).name
    app_settings = replace(settings.app, plugins_dir=plugins_dir)
    try:
        users = await create_accounts(settings)
        app = create_app(replace(settings, app=app_settings))
        site = PluginSite(app, name, users)
        try:
            if install:
                await site.install()
                if values:
                    await site.configure(**values)
                if activate:
                    await site.activate()
            yield site
        finally:
            with suppress(lifecycle.PluginNotFound):
                await site.uninstall()
            await isolation.drop_storage(site.runtime.engine, name)
            await site.host.stop()
            await site.runtime.close()
    finally:
        await empty_storage(settings)


def site_fixture(
    folder: Path | str,
    *,
    legs: Sequence[str] = LEGS,
    install: bool = True,
    activate: bool = True,
    values: Mapping[str, Any] | None = None,
) -> Any:
    """A pytest fixture giving each test a `PluginSite` of the plugin in `folder`, on each
    leg in `legs` (the test runs once per leg). Assign it in `conftest.py` under the name
    tests ask for: `site = site_fixture(Path(__file__).parents[1])`."""
    plugin_folder = Path(folder).resolve()

    @pytest_asyncio.fixture(params=list(legs))
    async def site(
        request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[PluginSite]:
        leg = request.param
        if leg == "services":
            require_services()
        settings = await asyncio.to_thread(prepared_leg, request.config, tmp_path_factory, leg)
        async with plugin_site(
            plugin_folder, settings, tmp_path, install=install, activate=activate, values=values
        ) as made:
            yield made

    return site
