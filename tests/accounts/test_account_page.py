"""The account page: app/accounts/pages/account.py (both storage legs)."""

from __future__ import annotations

import re

import httpx
from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.accounts.services.sessions import cookie_name
from tests.conftest import PASSWORD, client_for, signed_in

NEW_PASSWORD = "a brand new long passphrase"
SESSION_COOKIE = cookie_name(production=False)


async def reload(app: Litestar, user: User) -> User:
    async with app.state.sessionmaker() as session:
        fresh = await session.get(User, user.id)
        assert fresh is not None
        return fresh


async def audit_entries(app: Litestar, action: str) -> list[AuditEntry]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry).where(AuditEntry.action == action)
        return list((await session.scalars(query)).all())


async def is_signed_in(client: httpx.AsyncClient) -> bool:
    response = await client.get("/account")
    return response.status_code == 200


def session_ids(html: str) -> list[str]:
    return re.findall(r'data-session="([0-9a-f]+)"', html)


def current_session_id(html: str) -> str:
    found = re.search(r'data-session="([0-9a-f]+)" data-current', html)
    assert found, "no session is marked as this browser"
    return found.group(1)


async def sign_in_with(app: Litestar, login: str, password: str) -> int:
    async with client_for(app, "198.51.100.9") as client:
        await client.get("/login")
        token = client.cookies.get("keel_csrf") or ""
        response = await client.post(
            "/login",
            data={"login": login, "password": password, "_csrf_token": token},
        )
        return response.status_code


async def test_anonymous_visitors_are_sent_to_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/account")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Faccount"


async def test_the_page_shows_the_profile_and_the_layout_links_to_it(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        page = await client.get("/account")
        home = await client.get("/")
    assert page.status_code == 200
    assert 'value="viewer@example.org"' in page.text
    assert 'value="Viewer"' in page.text
    assert 'href="/account"' in home.text


async def test_a_profile_update_is_saved_and_audited(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        response = await client.post(
            "/account/profile", data={"display_name": "Vera", "email": "Vera@Example.org"}
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/account?saved=profile"
        page = await client.get(response.headers["location"])
    assert "Your profile was saved." in page.text
    stored = await reload(app, viewer)
    assert (stored.display_name, stored.email) == ("Vera", "vera@example.org")
    [entry] = await audit_entries(app, "user.updated")
    assert entry.user_id == viewer.id
    assert entry.resource_id == str(viewer.id)
    assert entry.details == {
        "changes": {
            "display_name": ["Viewer", "Vera"],
            "email": ["viewer@example.org", "vera@example.org"],
        }
    }


async def test_a_refused_profile_update_comes_back_with_the_message_and_input(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        taken = await client.post(
            "/account/profile", data={"display_name": "Vera", "email": "editor@example.org"}
        )
        invalid = await client.post(
            "/account/profile", data={"display_name": "Vera", "email": "not-an-address"}
        )
    assert taken.status_code == 400
    assert "An account with this e-mail address exists." in taken.text
    assert 'id="e-email"' in taken.text
    assert 'value="editor@example.org"' in taken.text
    assert 'value="Vera"' in taken.text
    assert invalid.status_code == 400
    assert "Enter a valid e-mail address." in invalid.text
    stored = await reload(app, viewer)
    assert (stored.display_name, stored.email) == ("Viewer", "viewer@example.org")
    assert await audit_entries(app, "user.updated") == []


async def test_a_wrong_current_password_changes_nothing(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        response = await client.post(
            "/account/password",
            data={
                "current_password": "not the password at all",
                "new_password": NEW_PASSWORD,
                "new_password_confirm": NEW_PASSWORD,
            },
        )
        assert response.status_code == 400
        assert "The current password is not right." in response.text
        assert 'id="e-current_password"' in response.text
        assert NEW_PASSWORD not in response.text
        assert await is_signed_in(client)
    stored = await reload(app, viewer)
    assert (stored.password_hash, stored.auth_version) == (viewer.password_hash, 1)
    assert await audit_entries(app, "user.password_changed") == []


async def test_the_new_password_must_be_typed_twice_the_same(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.post(
            "/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "new_password_confirm": NEW_PASSWORD + "!",
            },
        )
    assert response.status_code == 400
    assert "The two passwords differ." in response.text
    assert (await reload(app, accounts["viewer"])).auth_version == 1


async def test_a_password_change_keeps_this_browser_and_ends_the_others(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as this, signed_in(app, viewer, "192.0.2.44") as other:
        old_cookie = this.cookies.get(SESSION_COOKIE)
        response = await this.post(
            "/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "new_password_confirm": NEW_PASSWORD,
            },
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/account?saved=password"
        new_cookie = response.cookies.get(SESSION_COOKIE)
        assert new_cookie and new_cookie != old_cookie  # a fresh session id
        this.cookies.delete(SESSION_COOKIE)  # as a browser replaces it (the jar keys by domain)
        this.cookies.set(SESSION_COOKIE, new_cookie)
        page = await this.get("/account?saved=password")
        assert page.status_code == 200
        assert "Password changed; other sessions were signed out" in page.text
        assert len(session_ids(page.text)) == 1
        assert not await is_signed_in(other)
    assert len(await audit_entries(app, "user.password_changed")) == 1
    assert await sign_in_with(app, "viewer", PASSWORD) == 400
    assert await sign_in_with(app, "viewer", NEW_PASSWORD) == 303


async def test_the_sessions_are_listed_and_one_can_be_revoked(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as this, signed_in(app, viewer, "192.0.2.44") as other:
        page = await this.get("/account")
        listed = session_ids(page.text)
        assert len(listed) == 2
        assert "192.0.2.44" in page.text and "203.0.113.7" in page.text
        assert "This browser" in page.text
        mine = current_session_id(page.text)
        [theirs] = [short_id for short_id in listed if short_id != mine]

        response = await this.post(f"/account/sessions/{theirs}/revoke")
        assert response.status_code == 303
        assert response.headers["location"] == "/account?saved=session"
        assert not await is_signed_in(other)
        assert await is_signed_in(this)
        assert session_ids((await this.get("/account")).text) == [mine]

        again = await this.post(f"/account/sessions/{theirs}/revoke")
        assert again.status_code == 404
    [entry] = await audit_entries(app, "auth.session_revoked")
    assert entry.details == {"browser_session": theirs}


async def test_revoking_this_browsers_session_signs_it_out(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        mine = current_session_id((await client.get("/account")).text)
        response = await client.post(f"/account/sessions/{mine}/revoke")
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert not await is_signed_in(client)


async def test_nobody_revokes_another_users_session(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with (
        signed_in(app, accounts["viewer"]) as victim,
        signed_in(app, accounts["admin"]) as admin,
    ):
        theirs = current_session_id((await victim.get("/account")).text)
        response = await admin.post(f"/account/sessions/{theirs}/revoke")
        assert response.status_code == 404
        assert await is_signed_in(victim)


async def test_sign_out_everywhere_ends_every_session(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as this, signed_in(app, viewer, "192.0.2.44") as other:
        response = await this.post("/account/sign-out-everywhere")
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert not await is_signed_in(this)
        assert not await is_signed_in(other)
    [entry] = await audit_entries(app, "auth.signed_out_everywhere")
    assert entry.details == {"sessions": 2}
    assert await app.state.sessions.list_for_user(viewer.id) == []


async def test_sign_out_everywhere_also_ends_api_tokens(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as api:
        login = {"login": "viewer", "password": PASSWORD}
        tokens = (await api.post("/api/v1/auth/login", json=login)).json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await api.get("/api/v1/auth/me", headers=bearer)).status_code == 200
        async with signed_in(app, accounts["viewer"]) as browser:
            await browser.post("/account/sign-out-everywhere")
        assert (await api.get("/api/v1/auth/me", headers=bearer)).status_code == 401
        refresh = {"refresh_token": tokens["refresh_token"]}
        assert (await api.post("/api/v1/auth/refresh", json=refresh)).status_code == 401


async def test_posts_without_the_csrf_token_are_refused_and_change_nothing(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        del client.headers["X-CSRF-Token"]
        profile = await client.post(
            "/account/profile", data={"display_name": "Mallory", "email": "m@example.org"}
        )
        everywhere = await client.post("/account/sign-out-everywhere")
        assert (profile.status_code, everywhere.status_code) == (403, 403)
        assert await is_signed_in(client)
    stored = await reload(app, viewer)
    assert (stored.display_name, stored.email) == ("Viewer", "viewer@example.org")
    assert await audit_entries(app, "user.updated") == []


async def test_staff_see_their_account_in_the_admin_layout_and_members_in_the_public_one(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Staff (viewer and up) work in the admin area, so their own pages keep its menu; an
    account without admin access (role guest) is refused there in the public layout."""
    async with app.state.sessionmaker() as session, session.begin():
        member = User(
            email="member@example.org",
            username="member",
            display_name="Member",
            password_hash=accounts["viewer"].password_hash,
            role="guest",
            is_active=True,
            failed_login_count=0,
            auth_version=1,
        )
        session.add(member)
    async with signed_in(app, accounts["viewer"]) as client:
        for path in ("/account", "/account/notifications"):
            page = await client.get(path)
            assert page.status_code == 200 and '<body class="admin"' in page.text, path
        account = await client.get("/account")
        notifications = await client.get("/account/notifications")
    assert 'href="/account" aria-current="page"' in account.text
    assert 'href="/account/notifications" aria-current="page"' in notifications.text
    async with signed_in(app, member) as client:
        refused = await client.get("/account")
    assert refused.status_code == 403 and '<body class="public"' in refused.text
