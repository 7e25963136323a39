"""One-time password-reset links: the services and app/accounts/pages/reset.py (both legs)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import Role, User
from app.accounts.services.audit import Actor
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.passwords import (
    RESET_LINK_KEY,
    PasswordResetInvalid,
    consume_password_reset,
    create_password_reset,
)
from app.accounts.services.users import AccountError
from app.core.store import Store
from tests.accounts.test_users_pages import audit_actions, reload
from tests.conftest import PASSWORD, client_for, signed_in, with_csrf

NEW_PASSWORD = "a long and unusual passphrase"
EXPIRED = "This link has expired or was already used"


async def reset_token(app: Litestar, admin: User, user: User) -> str:
    """A fresh reset link's token, made as the admin page makes it."""
    async with signed_in(app, admin) as client:
        response = await client.post(f"/admin/users/{user.id}/reset-link")
    found = re.search(r"/reset/([\w-]+)</code>", response.text)
    assert found, response.text
    return found.group(1)


async def submit(
    client: httpx.AsyncClient, token: str, password: str, confirm: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/reset/{token}",
        data={
            "new_password": password,
            "new_password_confirm": password if confirm is None else confirm,
        },
    )


async def api_login(app: Litestar, login: str, password: str) -> int:
    async with client_for(app, "198.51.100.20") as client:
        response = await client.post(
            "/api/v1/auth/login", json={"login": login, "password": password}
        )
        return response.status_code


async def test_a_reset_link_sets_a_new_password_exactly_once(app: Litestar, accounts: dict) -> None:
    token = await reset_token(app, accounts["admin"], accounts["viewer"])
    async with client_for(app) as client:
        await with_csrf(client)
        form = await client.get(f"/reset/{token}")
        assert form.status_code == 200
        assert "Set a new password" in form.text and "viewer" in form.text
        response = await submit(client, token, NEW_PASSWORD)
        assert response.status_code == 303 and response.headers["location"] == "/login"
        second_look = await client.get(f"/reset/{token}")
        second_use = await submit(client, token, "yet another long passphrase")
    for answer in (second_look, second_use):
        assert answer.status_code == 404 and EXPIRED in answer.text
    assert await api_login(app, "viewer", PASSWORD) == 401  # the old password is gone
    assert await api_login(app, "viewer", NEW_PASSWORD) == 200


async def test_using_a_link_ends_the_users_sessions_and_is_audited(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    token = await reset_token(app, accounts["admin"], viewer)
    async with signed_in(app, viewer) as browser:
        assert (await browser.get("/admin")).status_code == 200
        async with client_for(app, "198.51.100.30") as stranger:
            await with_csrf(stranger)
            assert (await submit(stranger, token, NEW_PASSWORD)).status_code == 303
        assert (await browser.get("/admin")).status_code == 303  # signed out everywhere
    actions = await audit_actions(app)
    assert "user.password_reset_link_created" in actions
    assert "user.password_changed" in actions and "user.password_reset" in actions


async def test_an_unknown_token_gives_the_clear_expired_page(client: httpx.AsyncClient) -> None:
    await with_csrf(client)
    look = await client.get("/reset/not-a-real-token")
    use = await submit(client, "not-a-real-token", NEW_PASSWORD)
    for answer in (look, use):
        assert answer.status_code == 404
        assert EXPIRED in answer.text and "Ask an administrator for a new one." in answer.text
        assert answer.headers["cache-control"] == "no-store"


async def test_a_link_lives_one_hour_and_an_expired_one_gives_the_clear_page(
    app: Litestar, accounts: dict
) -> None:
    token = await reset_token(app, accounts["admin"], accounts["viewer"])
    store = app.state.store
    key = RESET_LINK_KEY + hashlib.sha256(token.encode()).hexdigest()
    if store.kind == "memory":
        remaining = store._data[key][1] - time.monotonic()
    else:
        remaining = await store.client.pttl(store.prefix + key) / 1000
    assert 3590 < remaining <= 3600
    assert RESET_LINK_KEY + token not in await store.keys(RESET_LINK_KEY + "*")  # only a hash
    await store.set(key, await store.get(key), ttl=0.05)  # let it run out now
    await asyncio.sleep(0.2)
    async with client_for(app) as client:
        response = await client.get(f"/reset/{token}")
    assert response.status_code == 404 and EXPIRED in response.text


async def test_a_mismatch_or_a_weak_password_keeps_the_link_usable(
    app: Litestar, accounts: dict
) -> None:
    token = await reset_token(app, accounts["admin"], accounts["viewer"])
    async with client_for(app) as client:
        await with_csrf(client)
        mismatch = await submit(client, token, NEW_PASSWORD, "something different")
        weak = await submit(client, token, "password1234")
        personal = await submit(client, token, "viewer@example.org")
        assert (await submit(client, token, NEW_PASSWORD)).status_code == 303
    assert mismatch.status_code == 400 and "The two passwords differ." in mismatch.text
    assert weak.status_code == 400 and "common passwords" in weak.text
    assert personal.status_code == 400 and "must not be your username" in personal.text
    assert "password1234" not in weak.text


async def test_a_post_without_the_csrf_token_is_refused(app: Litestar, accounts: dict) -> None:
    token = await reset_token(app, accounts["admin"], accounts["viewer"])
    async with client_for(app) as client:
        response = await submit(client, token, NEW_PASSWORD)
        still_valid = await client.get(f"/reset/{token}")
    assert response.status_code == 403
    assert still_valid.status_code == 200


async def test_a_link_dies_when_the_password_changes_another_way_or_the_user_is_deactivated(
    app: Litestar, accounts: dict
) -> None:
    viewer, editor = accounts["viewer"], accounts["editor"]
    first = await reset_token(app, accounts["admin"], viewer)
    second = await reset_token(app, accounts["admin"], editor)
    async with client_for(app) as client:
        await with_csrf(client)
        assert (await submit(client, first, NEW_PASSWORD)).status_code == 303
        async with signed_in(app, accounts["admin"]) as admin:
            await admin.post(f"/admin/users/{editor.id}/deactivate")
            refused = await admin.post(f"/admin/users/{editor.id}/reset-link")
        gone = await client.get(f"/reset/{second}")
    assert gone.status_code == 404 and EXPIRED in gone.text
    assert refused.status_code == 409  # no links for a deactivated account
    assert (await reload(app, editor.id)).is_active is False  # type: ignore[union-attr]


async def test_the_service_checks_who_may_make_a_link(app: Litestar, accounts: dict) -> None:
    editor = Actor(accounts["editor"].id, "editor")
    async with app.state.sessionmaker() as session:
        admin = await session.get(User, accounts["admin"].id)
        assert admin is not None
        with pytest.raises(AccountError) as refused:
            await create_password_reset(session, app.state.store, editor, Role.editor, admin)
    assert refused.value.status == 403
    assert await app.state.store.keys(RESET_LINK_KEY + "*") == []


class _UsedMeanwhile:
    """The store as a second use of the same link leaves it: the link is there when it is
    looked up, and gone when this use deletes it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> str | None:
        return await self.store.get(key)

    async def delete(self, key: str) -> int:
        await self.store.delete(key)
        return 0


async def test_a_link_used_meanwhile_changes_nothing_in_the_session(
    app: Litestar, accounts: dict
) -> None:
    """Of two racing uses the one that deletes the link wins; the other raises having set
    nothing (the password, the sign-out of every session, the audit entry)."""
    viewer = accounts["viewer"]
    token = await reset_token(app, accounts["admin"], viewer)
    async with app.state.sessionmaker() as session:
        user = await session.get(User, viewer.id)
        assert user is not None
        before = (user.password_hash, user.auth_version, user.password_changed_at)
        with pytest.raises(PasswordResetInvalid):
            await consume_password_reset(
                session,
                _UsedMeanwhile(app.state.store),  # type: ignore[arg-type]
                PasswordHashing(1),
                Actor(None, "visitor"),
                token,
                NEW_PASSWORD,
            )
        assert not session.dirty and not session.new
        assert (user.password_hash, user.auth_version, user.password_changed_at) == before
