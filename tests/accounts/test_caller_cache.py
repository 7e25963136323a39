"""Kept credential checks (app/accounts/services/callers.py): a process remembers for up to
KEEP_SECONDS who an access token or API key stands for, and a change of the account, the
token or the key takes effect on the next request all the same: in the process that made
it, and in another process as soon as the store's message arrives (both storage legs; two
processes on the services leg)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar
from sqlalchemy import update

from app.accounts.models import ApiKey, Role, User
from app.accounts.services.audit import Actor
from app.accounts.services.callers import KEEP_SECONDS, CallerCache
from app.accounts.services.users import update_user
from app.asgi import create_app
from app.core.db import create_engine
from app.core.runtime import runtime_of
from app.runtime import build_runtime
from app.settings import Settings
from tests.conftest import bearer, client_for
from tests.jobs.test_api import api_key


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Litestar]:
    """A started app (its lifespan ran: the cache follows the change channel)."""
    app = create_app(settings)
    async with app.lifespan():
        yield app


def kept(app: Litestar) -> int:
    """How many credential checks the app's process keeps now."""
    return len(runtime_of(app.state).service(CallerCache)._kept)


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/api/v1/auth/me", headers=headers)


async def bearers(app: Litestar, accounts: dict[str, User], *roles: str) -> list[dict[str, str]]:
    """An access token's header for each account named."""
    return [await bearer(app, accounts[role]) for role in roles]


async def key_id_named(client: httpx.AsyncClient, admin: dict[str, str], name: str) -> str:
    listed = (await client.get("/api/v1/api-keys", headers=admin)).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    return str(next(item["id"] for item in items if item["name"] == name))


async def test_a_token_is_checked_once_and_a_role_change_acts_on_the_next_request(
    settings: Settings, accounts: dict[str, User]
) -> None:
    async with serving(settings) as app, client_for(app) as client:
        editor, admin = await bearers(app, accounts, "editor", "admin")
        assert (await me(client, editor)).json()["role"] == "editor"
        assert kept(app) == 1
        assert (await me(client, editor)).json()["role"] == "editor"  # from what was kept
        changed = await client.patch(
            f"/api/v1/users/{accounts['editor'].id}", json={"role": "viewer"}, headers=admin
        )
        assert changed.status_code == 200
        assert (await me(client, editor)).json()["role"] == "viewer"
        made = await client.post("/api/v1/content", json={"title": "Nope"}, headers=editor)
        assert made.status_code == 403


async def test_deactivation_deletion_and_sign_out_refuse_the_next_request(
    settings: Settings, accounts: dict[str, User]
) -> None:
    async with serving(settings) as app, client_for(app) as client:
        admin, editor, viewer = await bearers(app, accounts, "admin", "editor", "viewer")
        for headers in (editor, viewer, admin):
            assert (await me(client, headers)).status_code == 200
        editor_id, viewer_id = accounts["editor"].id, accounts["viewer"].id
        off = await client.patch(
            f"/api/v1/users/{editor_id}", json={"is_active": False}, headers=admin
        )
        assert off.status_code == 200
        assert (await me(client, editor)).status_code == 401
        assert (await client.delete(f"/api/v1/users/{viewer_id}", headers=admin)).status_code == 204
        assert (await me(client, viewer)).status_code == 401
        assert (await client.post("/api/v1/auth/logout", headers=admin)).status_code == 204
        assert (await me(client, admin)).status_code == 401


async def test_a_revoked_api_key_and_a_removed_creator_refuse_the_next_request(
    settings: Settings, accounts: dict[str, User]
) -> None:
    async with serving(settings) as app, client_for(app) as client:
        admin = await bearer(app, accounts["admin"])
        key = await api_key(app, accounts["admin"], "editor", "revoked soon")
        by_editor = await api_key(app, accounts["editor"], "editor", "the editor's")
        for headers in (key, by_editor, key, by_editor):
            assert (await me(client, headers)).status_code == 200
        key_id = await key_id_named(client, admin, "revoked soon")
        assert (await client.delete(f"/api/v1/api-keys/{key_id}", headers=admin)).status_code == 204
        assert (await me(client, key)).status_code == 401
        editor_id = accounts["editor"].id
        assert (await client.delete(f"/api/v1/users/{editor_id}", headers=admin)).status_code == 204
        assert (await me(client, by_editor)).status_code == 401


async def test_a_change_made_outside_keels_sessions_acts_within_the_bound(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """No message announces a write made with plain SQL: the kept check lasts at most
    KEEP_SECONDS (the documented bound)."""
    async with serving(settings) as app, client_for(app) as client:
        editor = await bearer(app, accounts["editor"])
        key = await api_key(app, accounts["admin"], "editor", "raw")
        assert (await me(client, editor)).status_code == 200
        assert (await me(client, key)).status_code == 200
        engine = create_engine(settings.db)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(User.__table__)
                    .where(User.__table__.c.id == accounts["editor"].id)
                    .values(is_active=False)
                )
                await connection.execute(
                    update(ApiKey.__table__).values(revoked_at=ApiKey.__table__.c.created_at)
                )
        finally:
            await engine.dispose()
        changed_at = time.monotonic()
        while (await me(client, editor)).status_code == 200 or (
            await me(client, key)
        ).status_code == 200:
            assert time.monotonic() - changed_at < KEEP_SECONDS + 0.5
            await asyncio.sleep(0.05)


async def test_another_process_forgets_at_once_when_the_store_says_so(
    services_settings: Settings, services_accounts: dict[str, User]
) -> None:
    """Two processes on one database and store: the token and key checks kept by the
    second end within well under KEEP_SECONDS of a change committed by the first."""
    editor_user = services_accounts["editor"]
    async with (
        serving(services_settings) as first,
        serving(services_settings) as second,
        client_for(first) as one,
        client_for(second) as two,
    ):
        admin = await bearer(first, services_accounts["admin"])
        editor = await bearer(first, editor_user)
        key = await api_key(first, services_accounts["admin"], "editor", "shared")
        assert (await me(two, editor)).json()["role"] == "editor"
        assert (await me(two, key)).status_code == 200
        assert kept(second) == 2
        changed = await one.patch(
            f"/api/v1/users/{editor_user.id}", json={"role": "viewer"}, headers=admin
        )
        assert changed.status_code == 200
        await until(lambda: kept(second) == 0, within=KEEP_SECONDS / 2)
        assert (await me(two, editor)).json()["role"] == "viewer"
        assert (await me(two, key)).status_code == 200
        key_id = await key_id_named(one, admin, "shared")
        revoked = await one.delete(f"/api/v1/api-keys/{key_id}", headers=admin)
        assert revoked.status_code == 204
        await until(lambda: kept(second) == 0, within=KEEP_SECONDS / 2)
        assert (await me(two, key)).status_code == 401
        assert (await one.delete(f"/api/v1/users/{editor_user.id}", headers=admin)).is_success
        await until(lambda: kept(second) == 0, within=KEEP_SECONDS / 2)
        assert (await me(two, editor)).status_code == 401


async def until(condition: object, within: float) -> None:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < within, "the other process still keeps its checks"
        await asyncio.sleep(0.02)


async def test_a_role_change_from_the_command_line_reaches_a_running_process(
    services_settings: Settings, services_accounts: dict[str, User]
) -> None:
    """`keel users set-role` commits in a runtime of its own (app/__main__.py `_with_session`):
    its after-commit event tells the running processes through the store."""
    editor_user = services_accounts["editor"]
    async with serving(services_settings) as app, client_for(app) as client:
        editor = await bearer(app, editor_user)
        assert (await me(client, editor)).json()["role"] == "editor"
        cli = build_runtime(services_settings)
        try:
            async with cli.sessionmaker() as session:
                async with session.begin():
                    user = await session.get(User, editor_user.id)
                    assert user is not None
                    await update_user(session, Actor.system("cli"), Role.admin, user, role="viewer")
                await cli.events.deliver(session)
        finally:
            await cli.close()
        await until(lambda: kept(app) == 0, within=KEEP_SECONDS / 2)
        assert (await me(client, editor)).json()["role"] == "viewer"
