"""Fixtures: settings, an app and a client for each storage leg.

Every test that touches storage runs twice: `embedded` (SQLite file + memory store) and
`services` (PostgreSQL + Valkey). Outside CI a missing service skips its leg with one
printed line; under CI=true it fails the run. The legs, accounts, clients and clock come
from Keel's test kit for plugins (keel/testing.py), so Keel's tests and plugins' share them.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import text

from app.accounts.models import User
from app.asgi import attach_runtime, create_app
from app.core.db import create_engine
from app.core.runtime import runtime_of
from app.runtime import build_runtime
from app.settings import ROOT, Settings
from keel.testing import (  # noqa: F401  (tests import these from here)
    IN_CI,
    LEGS,
    PASSWORD,
    PG_TEST_DB,
    RUN_ID,
    VALKEY_TEST_URL,
    SteppedClock,
    api_token,
    bearer,
    client_for,
    create_accounts,
    empty_storage,
    fresh,
    leg_environment,
    pg_url,
    port_answers,
    prepared_leg,
    recreate_pg_database,
    require_services,
    signed_in,
    stopped_clock,
)
from keel.testing import missing_services as _missing_services
from keel.testing import password_hash as kit_password_hash

MISSING_SERVICES = _missing_services()


LONGEST_FILES = (
    "tests/test_cli.py",
    "tests/test_openapi_fuzz.py",
    "tests/extensions/test_lifecycle.py",
    "tests/test_hostile_input.py",
    "tests/jobs/test_worker_processes.py",
    "tests/extensions/test_scaffold.py",
    "tests/extensions/test_host.py",
    "tests/site_settings/test_services.py",
    "tests/extensions/test_events.py",
    "tests/notifications/test_worker_shutdown.py",
)
"""The files that take longest (`--durations`), longest first: minutes of `keel`
subprocesses, walks over every route, a plugin's own test run."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order in which xdist hands out whole files (`--dist loadfile`, with
    `--no-loadscope-reorder`): the longest files first, then the others by their number of
    tests (xdist's own order, which put the longest files, having few tests, last: one
    worker ran them while the other had nothing left). Browser tests stay last."""
    counts = Counter(item.path for item in items)

    def order(item: pytest.Item) -> tuple[bool, int, int]:
        if item.get_closest_marker("browser") is not None:
            return (True, 0, 0)  # as pytest ordered them: each server is started once
        name = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        rank = LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)
        return (False, rank, -counts[item.path])

    items.sort(key=order)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if MISSING_SERVICES and not IN_CI:
        return [f"services leg SKIPPED: {', '.join(MISSING_SERVICES)} not answering"]
    return [f"storage legs: {', '.join(LEGS)}"]


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
            if port_answers("127.0.0.1", port):
                break
            await asyncio.sleep(0.025)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.fixture(scope="session")
def leg_base(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Settings]:
    """Migrated databases, one per leg, created once per test session and dropped after
    (the kit's: plugins' tests in the same run share them)."""
    return {
        leg: prepared_leg(request.config, tmp_path_factory, leg)
        for leg in LEGS
        if leg == "embedded" or not MISSING_SERVICES
    }


@pytest.fixture(params=LEGS)
def leg(request: pytest.FixtureRequest) -> str:
    if request.param == "services":
        require_services()
    return request.param


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


@pytest.fixture(scope="session")
def password_hash() -> str:
    return kit_password_hash()


@pytest.fixture
async def accounts(settings: Settings, password_hash: str) -> dict[str, User]:
    """An installation that is set up: one active account per role."""
    return await create_accounts(settings, password_hash)


@pytest.fixture
async def services_accounts(services_settings: Settings, password_hash: str) -> dict[str, User]:
    return await create_accounts(services_settings, password_hash)


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


CSRF_IN_PAGE = re.compile(r'name="_csrf_token" value="([^"]+)"|"X-CSRF-Token": "([^"]+)"')


async def with_csrf(client: httpx.AsyncClient, page: str = "/login") -> str:
    """Fetch a page and send the CSRF token it holds as htmx would (a signed-in page holds
    its session's token; a form for anonymous visitors the token of the cookie it sets)."""
    response = await client.get(page)
    found = CSRF_IN_PAGE.search(response.text)
    token = next(filter(None, found.groups())) if found else client.cookies.get("keel_csrf")
    client.headers["X-CSRF-Token"] = token or ""
    return token or ""


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
