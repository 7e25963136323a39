"""Fixtures: settings, an app and a client for each storage leg.

Every test that touches storage runs twice: `embedded` (SQLite file + memory store) and
`services` (PostgreSQL + Valkey). Outside CI a missing service skips its leg with one
printed line; under CI=true it fails the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from app.accounts.models import User
from app.asgi import attach_runtime, create_app
from app.core.clock import Clock, clock_in_use
from app.core.db import create_engine, create_sessionmaker
from app.core.migrations import migration_commands
from app.core.runtime import runtime_of
from app.models import metadata
from app.runtime import build_runtime
from app.settings import ROOT, Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "KEEL_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
RUN_ID = os.getpid()
"""Databases and key prefixes carry it, so concurrent test runs never share state."""
PG_TEST_DB = f"keel_test_{RUN_ID}"
VALKEY_TEST_URL = os.environ.get("KEEL_TEST_VALKEY", "redis://127.0.0.1:6379/15")
LEGS = ("embedded", "services")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _missing_services() -> list[str]:
    missing = []
    if not _answers("127.0.0.1", 5432):
        missing.append("PostgreSQL on 127.0.0.1:5432")
    if not _answers("127.0.0.1", 6379):
        missing.append("Valkey/Redis on 127.0.0.1:6379")
    return missing


MISSING_SERVICES = _missing_services()


def pytest_report_header(config: pytest.Config) -> list[str]:
    if MISSING_SERVICES and not IN_CI:
        return [f"services leg SKIPPED: {', '.join(MISSING_SERVICES)} not answering"]
    return [f"storage legs: {', '.join(LEGS)}"]


def require_services() -> None:
    """Skip (locally) or fail (CI) when PostgreSQL or Valkey is not there."""
    if MISSING_SERVICES:
        message = f"services leg needs {', '.join(MISSING_SERVICES)}"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing service is a failure)", pytrace=False)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def own_valkey(folder: Path) -> AsyncIterator[str]:
    """A Valkey (redis-server) of the test's own on a free port, for tests that fault or
    flush the store (never the shared one); its URL. Stopped when the block ends."""
    server = shutil.which("valkey-server") or shutil.which("redis-server")
    if server is None:
        message = "valkey-server or redis-server is needed"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if _answers("127.0.0.1", port):
                break
            await asyncio.sleep(0.025)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


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
    """Environment variables for a `keel` subprocess on `leg`."""
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


@pytest.fixture(scope="session")
def leg_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Settings]]:
    """Migrated databases, one per leg, created once per test session and dropped after."""
    prepared: dict[str, Settings] = {}
    for leg in LEGS:
        var_dir = tmp_path_factory.mktemp(f"var-{leg}")
        if leg == "services":
            if MISSING_SERVICES:
                continue
            recreate_pg_database(PG_TEST_DB)
        settings = Settings.from_env(leg_environment(leg, var_dir), env_file=Path("/nonexistent"))
        migration_commands(settings.db).upgrade("head")
        prepared[leg] = settings.with_secret()
    yield prepared
    if "services" in prepared:
        recreate_pg_database(PG_TEST_DB, create=False)


@pytest.fixture(params=LEGS)
def leg(request: pytest.FixtureRequest) -> str:
    if request.param == "services":
        require_services()
    return request.param


async def empty_storage(settings: Settings) -> None:
    """Delete every row and every store key a test left behind."""
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


@pytest.fixture
async def settings(leg: str, leg_base: dict[str, Settings]) -> AsyncIterator[Settings]:
    """Settings for one test on its leg; tables are emptied and store keys removed after it."""
    yield leg_base[leg]
    await empty_storage(leg_base[leg])


@pytest.fixture
async def services_settings(leg_base: dict[str, Settings]) -> AsyncIterator[Settings]:
    """The services leg only, for what needs two processes sharing PostgreSQL and Valkey."""
    require_services()
    yield leg_base["services"]
    await empty_storage(leg_base["services"])


def with_app_settings(settings: Settings, **changes: object) -> Settings:
    return replace(settings, app=replace(settings.app, **changes))


def as_production(settings: Settings) -> Settings:
    """The same leg in production mode: a strong secret, a Valkey store and the site's
    public address, as required."""
    store = (
        settings.store
        if not settings.store.is_memory
        else replace(settings.store, url=VALKEY_TEST_URL, key_prefix=f"keeltest{RUN_ID}:")
    )
    production = with_app_settings(
        settings, env="production", secret_key="p" * 48, public_url="https://keel.example"
    )
    return replace(production, store=store)


PASSWORD = "correct horse battery staple"
"""Every test account's password."""


@pytest.fixture(scope="session")
def password_hash() -> str:
    from app.accounts.services.password_hashing import hasher

    return hasher.hash(PASSWORD)


async def create_accounts(settings: Settings, password_hash: str) -> dict[str, User]:
    """One active account per role (admin, editor, viewer), password PASSWORD."""
    engine = create_engine(settings.db)
    users = {}
    async with create_sessionmaker(engine)() as session, session.begin():
        for role in ("admin", "editor", "viewer"):
            user = User(
                email=f"{role}@example.org",
                username=role,
                display_name=role.capitalize(),
                password_hash=password_hash,
                role=role,
                is_active=True,
                failed_login_count=0,
                auth_version=1,
            )
            session.add(user)
            users[role] = user
    await engine.dispose()
    return users


@pytest.fixture
async def accounts(settings: Settings, password_hash: str) -> dict[str, User]:
    """An installation that is set up: one active account per role."""
    return await create_accounts(settings, password_hash)


@pytest.fixture
async def services_accounts(services_settings: Settings, password_hash: str) -> dict[str, User]:
    return await create_accounts(services_settings, password_hash)


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


_BUILT: dict[int, Litestar] = {}
"""An app per leg whose routes were built once (`create_app` spends most of its time
there), served with a new runtime by each test that takes `fresh_app`."""


@pytest.fixture
async def fresh_app(settings: Settings) -> AsyncIterator[Litestar]:
    """The app on an empty database: the first run, before any account exists. Each test
    gets a runtime of its own (engine, store client, page cache, figures...), opened on its
    own event loop; the routes are the leg's, built once. A test that changes the routes
    (a route group, `app.register`) leaves them to itself: the next test gets new ones."""
    application = _BUILT.get(id(settings))
    if application is None:
        application = _BUILT[id(settings)] = create_app(settings)
        runtime = runtime_of(application.state)
    else:
        runtime = build_runtime(settings)
        attach_runtime(application, runtime)
    routes = _routes(application)
    yield application
    await runtime.close()
    if _routes(application) != routes:
        del _BUILT[id(settings)]


def _routes(app: Litestar) -> list[tuple[str, tuple[str, ...]]]:
    """What `app` routes: each path with its handlers (added by `register` or a route group)."""
    return [
        (
            route.path,
            tuple(map(str, getattr(route, "route_handlers", None) or [route.route_handler])),
        )
        for route in app.routes
    ]


@pytest.fixture
async def app(fresh_app: Litestar, accounts: dict[str, User]) -> Litestar:
    """The app of a set-up installation (accounts exist), without its lifespan."""
    return fresh_app


async def fresh(app: Litestar, user: User) -> User:
    """`user` as the database has it now (role and auth_version may have changed)."""
    async with app.state.sessionmaker() as session:
        return await session.get(User, user.id) or user


@asynccontextmanager
async def signed_in(
    app: Litestar, user: User, client_ip: str = "203.0.113.7"
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a live session for `user` and a CSRF token to send."""
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
        client.headers["X-CSRF-Token"] = token  # what its pages hold (tests/core/test_csrf.py)
        yield client


async def api_token(app: Litestar, user: User) -> str:
    """An access token for `user` from a sign-in of its own (a token family in the
    database), as `POST /api/v1/auth/login` gives one."""
    async with app.state.sessionmaker() as session, session.begin():
        family, _ = await app.state.refresh_tokens.start(session, user.id, user.auth_version)
    return app.state.access_tokens.issue(user.id, user.role, user.auth_version, family)


async def bearer(app: Litestar, user: User) -> dict[str, str]:
    """The `Authorization` header of a new access token for `user` (see `api_token`)."""
    return {"Authorization": f"Bearer {await api_token(app, user)}"}


CSRF_IN_PAGE = re.compile(r'name="_csrf_token" value="([^"]+)"|"X-CSRF-Token": "([^"]+)"')


async def with_csrf(client: httpx.AsyncClient, page: str = "/login") -> str:
    """Fetch a page and send the CSRF token it holds as htmx would (a signed-in page holds
    its session's token; a form for anonymous visitors the token of the cookie it sets)."""
    response = await client.get(page)
    found = CSRF_IN_PAGE.search(response.text)
    token = next(filter(None, found.groups())) if found else client.cookies.get("keel_csrf")
    client.headers["X-CSRF-Token"] = token or ""
    return token or ""


def client_for(app: Litestar, client_ip: str = "203.0.113.7") -> httpx.AsyncClient:
    """An HTTP client over the app's ASGI interface, seen as coming from `client_ip`."""
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
async def local_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the same machine (loopback), as a developer's browser would be."""
    async with client_for(app, "127.0.0.1") as http:
        yield http


async def count_rows(settings: Settings, table: str) -> int:
    engine = create_engine(settings.db)
    try:
        async with engine.connect() as connection:
            return int(
                (await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            )
    finally:
        await engine.dispose()


def keel_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def run_keel(
    *args: str, env: dict[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        keel_command(*args),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


@pytest.fixture
def keel_env(leg: str, tmp_path: Path, settings: Settings) -> Iterator[dict[str, str]]:
    """Environment for a `keel` subprocess on this test's leg (migrated database; what the
    subprocess writes is removed after the test, as `settings` does for every test)."""
    env = leg_environment(leg, tmp_path)
    if leg == "embedded":
        env["DATABASE_URL"] = settings.db.url
    yield env
