"""The site settings registry: app/site_settings/services.py (both storage legs)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from litestar import Litestar

from app.accounts.services.users import REGISTRATION_OPEN
from app.asgi import create_app
from app.content.services.media import UPLOAD_MAX_BYTES
from app.core.db import create_engine, create_sessionmaker
from app.core.registry import RegistryClash
from app.settings import Settings
from app.site_settings.services import (
    SETTINGS,
    SettingDefinition,
    SettingError,
    define,
    read_setting,
    read_settings,
    write_setting,
)
from tests.conftest import client_for, count_rows


async def _write(settings: Settings, name: str, value: object) -> object:
    engine = create_engine(settings.db)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await write_setting(session, name, value)
    finally:
        await engine.dispose()


async def _read(settings: Settings, name: str) -> object:
    engine = create_engine(settings.db)
    try:
        async with create_sessionmaker(engine)() as session:
            return await read_setting(session, name)
    finally:
        await engine.dispose()


async def test_unwritten_settings_read_their_defaults(settings: Settings) -> None:
    engine = create_engine(settings.db)
    async with create_sessionmaker(engine)() as session:
        values = await read_settings(session)
    await engine.dispose()
    assert values == {name: d.default for name, d in SETTINGS.items()}
    assert values["site_title"] == "Keel"
    assert values["registration_open"] is False


async def test_a_written_value_is_typed_and_read_back(settings: Settings) -> None:
    assert await _write(settings, "registration_open", "on") is True
    assert await _write(settings, "api_rate_limit_per_minute", " 120 ") == 120
    assert await _read(settings, "registration_open") is True
    assert await _read(settings, "api_rate_limit_per_minute") == 120
    assert await _write(settings, "api_rate_limit_per_minute", 300) == 300
    assert await _read(settings, "api_rate_limit_per_minute") == 300
    assert await count_rows(settings, "system_settings") == 2


async def test_a_setting_is_read_through_its_definition_with_its_type(settings: Settings) -> None:
    engine = create_engine(settings.db)
    try:
        async with create_sessionmaker(engine)() as session:
            assert await REGISTRATION_OPEN.read(session) is False  # the default
            assert await UPLOAD_MAX_BYTES.read(session) == UPLOAD_MAX_BYTES.default
        await _write(settings, "registration_open", "yes")
        await _write(settings, "upload_max_bytes", "2048")
        async with create_sessionmaker(engine)() as session:
            assert await REGISTRATION_OPEN.read(session) is True
            assert await UPLOAD_MAX_BYTES.read(session) == 2048
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("site_title", "   ", "must not be empty"),
        ("site_title", "x" * 101, "at most 100 characters"),
        ("api_rate_limit_per_minute", "many", "whole number"),
        ("api_rate_limit_per_minute", 0, "at least 1"),
        ("registration_open", "perhaps", "true or false"),
        ("no_such_setting", "x", "not a known setting"),
    ],
)
async def test_invalid_values_are_refused_and_nothing_is_written(
    settings: Settings, name: str, value: object, message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        await _write(settings, name, value)
    assert await count_rows(settings, "system_settings") == 0


async def test_a_change_is_seen_by_every_process_at_once(
    settings: Settings, accounts: dict
) -> None:
    """Two app instances (as two granian workers would be) share one database."""
    first, second = create_app(settings), create_app(settings)
    async with (
        first.lifespan(),
        second.lifespan(),
        client_for(first) as a,
        client_for(second) as b,
    ):
        assert (await b.get("/api/v1/site")).json()["title"] == "Keel"
        await _write(settings, "site_title", "Harbour Notes")
        assert (await a.get("/api/v1/site")).json()["title"] == "Harbour Notes"
        assert (await b.get("/api/v1/site")).json()["title"] == "Harbour Notes"
        page = await b.get("/")
        assert "<h1>Harbour Notes</h1>" in page.text


async def test_site_endpoint_reports_public_settings(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    response = await client.get("/api/v1/site")
    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Keel"
    assert body["registration_open"] is False
    assert set(body) == {"title", "intro", "registration_open", "version"}


async def test_a_setting_added_while_keel_runs_is_read_written_and_refused_once_removed(
    settings: Settings,
) -> None:
    greeting = SettingDefinition("blog_greeting", str, "Hello", "What the blog says first.")
    define(greeting, owner="blog")
    try:
        engine = create_engine(settings.db)
        async with create_sessionmaker(engine)() as session:
            assert (await read_settings(session))["blog_greeting"] == "Hello"
        await engine.dispose()
        assert await _write(settings, "blog_greeting", " Hi ") == "Hi"
        assert await _read(settings, "blog_greeting") == "Hi"
    finally:
        SETTINGS.remove("blog")
    engine = create_engine(settings.db)
    async with create_sessionmaker(engine)() as session:
        assert "blog_greeting" not in await read_settings(session)
    await engine.dispose()
    with pytest.raises(SettingError, match="not a known setting"):
        await _write(settings, "blog_greeting", "Hey")


def test_a_plugin_cannot_take_the_name_of_a_keel_setting() -> None:
    with pytest.raises(RegistryClash, match="setting 'site_title' is already registered by 'keel'"):
        define(SettingDefinition("site_title", str, "Mine", "A plugin's title."), owner="blog")
    assert SETTINGS["site_title"].default == "Keel"


def _settings_known_after(statement: str) -> list[str]:
    script = (
        f"{statement}\n"
        "from app.site_settings.services import SETTINGS\n"
        "print(' '.join(sorted(name for name, _ in SETTINGS.items())))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_every_process_knows_every_setting_keel_defines() -> None:
    """Each domain defines its settings where it reads them; building a runtime (the web app,
    `keel worker`, the CLI, a script) knows all of Keel's, so none is "not a known setting"
    by name in a process that happened not to import its module."""
    everything = (
        "import importlib, pkgutil, app\n"
        "for module in pkgutil.walk_packages(app.__path__, 'app.'):\n"
        "    if module.name != 'app.__main__':\n"
        "        importlib.import_module(module.name)"
    )
    defined = _settings_known_after(everything)
    assert {"upload_max_bytes", "job_retention_days", "api_rate_limit_per_minute"} <= set(defined)
    assert _settings_known_after("import app.runtime") == defined
