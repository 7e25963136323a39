"""First run, sign in, sign out and registration pages: app/accounts/pages/sign_in.py."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.accounts.services.sessions import cookie_name
from app.core.db import create_engine, create_sessionmaker
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import PASSWORD, client_for, count_rows, signed_in, with_csrf

NEW_ADMIN = {
    "email": "owner@example.org",
    "username": "owner",
    "display_name": "Owner",
    "password": "a long and private passphrase",
    "password_confirm": "a long and private passphrase",
}


async def _actions(settings: Settings) -> list[str]:
    engine = create_engine(settings.db)
    async with create_sessionmaker(engine)() as session:
        rows = await session.scalars(select(AuditEntry.action).order_by(AuditEntry.created_at))
        actions = list(rows)
    await engine.dispose()
    return actions


async def test_every_page_leads_to_setup_while_no_account_exists(fresh_app: Litestar) -> None:
    async with client_for(fresh_app) as client:
        for path in ("/", "/admin", "/login", "/register"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/setup"
        assert (await client.get("/setup")).status_code == 200
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/api/v1/site")).status_code == 200


async def test_setup_creates_the_first_admin_signs_in_and_disappears(
    fresh_app: Litestar, settings: Settings
) -> None:
    async with client_for(fresh_app) as client:
        await with_csrf(client, "/setup")
        response = await client.post("/setup", data=NEW_ADMIN)
        assert response.status_code == 303 and response.headers["location"] == "/admin"
        assert (await client.get("/admin")).status_code == 200  # signed in
        await with_csrf(client, "/admin")  # a new session has its own token
        assert (await client.get("/setup")).status_code == 404  # gone for good
        assert (await client.post("/setup", data=NEW_ADMIN)).status_code == 404
    assert await count_rows(settings, "users") == 1
    assert "setup.completed" in await _actions(settings)


async def test_setup_form_shows_errors_beside_fields_and_keeps_input(
    fresh_app: Litestar, settings: Settings
) -> None:
    async with client_for(fresh_app) as client:
        await with_csrf(client, "/setup")
        weak = await client.post(
            "/setup",
            data={**NEW_ADMIN, "password": "password1234", "password_confirm": "password1234"},
        )
        differ = await client.post(
            "/setup", data={**NEW_ADMIN, "password_confirm": "something else entirely"}
        )
        bad_email = await client.post("/setup", data={**NEW_ADMIN, "email": "not-an-address"})
    assert weak.status_code == 400 and "common passwords" in weak.text
    assert 'value="owner@example.org"' in weak.text  # input kept
    assert "passphrase" not in weak.text  # passwords are never echoed
    assert differ.status_code == 400 and "The two passwords differ" in differ.text
    assert bad_email.status_code == 400 and "valid e-mail" in bad_email.text
    assert await count_rows(settings, "users") == 0


async def test_setup_form_shows_every_error_at_once(
    fresh_app: Litestar, settings: Settings
) -> None:
    """A new owner who gets the address, the name, the password and its confirmation wrong
    sees all four messages on the first try, each beside its field."""
    wrong = {
        "email": "not-an-address",
        "username": "no spaces",
        "display_name": "Owner",
        "password": "short",
        "password_confirm": "other",
    }
    async with client_for(fresh_app) as client:
        await with_csrf(client, "/setup")
        response = await client.post("/setup", data=wrong)
    assert response.status_code == 400
    shown = dict(re.findall(r'<p class="error" id="e-([a-z_]+)">([^<]+)</p>', response.text))
    assert set(shown) == {"email", "username", "password", "password_confirm"}, shown
    assert "valid e-mail" in shown["email"] and "differ" in shown["password_confirm"]
    assert await count_rows(settings, "users") == 0


async def test_two_concurrent_setups_make_exactly_one_admin(
    fresh_app: Litestar, settings: Settings
) -> None:
    async def submit(username: str) -> int:
        async with client_for(fresh_app) as client:
            await with_csrf(client, "/setup")
            data = {**NEW_ADMIN, "username": username, "email": f"{username}@example.org"}
            return (await client.post("/setup", data=data)).status_code

    results = await asyncio.gather(*(submit(f"owner{i}") for i in range(4)))
    assert await count_rows(settings, "users") == 1
    assert results.count(303) >= 1
    assert all(code in (303, 404) for code in results)


async def test_setup_without_csrf_token_is_refused_and_changes_nothing(
    fresh_app: Litestar, settings: Settings
) -> None:
    async with client_for(fresh_app) as client:
        response = await client.post("/setup", data=NEW_ADMIN)
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert await count_rows(settings, "users") == 0


async def test_sign_in_rotates_the_session_and_redirects_safely(
    app: Litestar, accounts: dict
) -> None:
    name = cookie_name(False)
    async with client_for(app) as client:
        await with_csrf(client)
        client.cookies.set(name, "attacker-chosen-session-id")
        response = await client.post(
            "/login", data={"login": "editor", "password": PASSWORD, "next": "//evil.example/x"}
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/admin"  # not the offsite `next`
        cookie = response.cookies.get(name)
        assert cookie and cookie != "attacker-chosen-session-id" and len(cookie) >= 22
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        assert (await client.get("/admin")).status_code == 200
        await with_csrf(client, "/admin")  # a new session has its own token
        back = await client.post(
            "/login", data={"login": "viewer", "password": PASSWORD, "next": "/admin?x=1"}
        )
        assert back.headers["location"] == "/admin?x=1"
        assert back.cookies.get(name) != cookie  # a new id at every sign-in


async def test_an_unknown_session_id_is_never_adopted(app: Litestar, accounts: dict) -> None:
    async with client_for(app) as client:
        client.cookies.set(cookie_name(False), "made-up-by-the-client")
        response = await client.get("/admin")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with client_for(app) as client:
        await with_csrf(client)
        wrong = await client.post(
            "/login", data={"login": "editor", "password": "not the password"}
        )
        unknown = await client.post(
            "/login", data={"login": "nobody", "password": "not the password"}
        )
    assert wrong.status_code == unknown.status_code == 400
    assert "The e-mail/username or password is not right." in wrong.text
    assert "The e-mail/username or password is not right." in unknown.text
    assert (await _actions(settings)).count("auth.login_failed") == 2


async def test_repeated_failures_lock_the_account_with_retry_after(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with client_for(app) as client:
        await with_csrf(client)
        for _ in range(settings.auth.login_max_failures):
            await client.post("/login", data={"login": "editor", "password": "wrong password!"})
        locked = await client.post("/login", data={"login": "editor", "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in locked.text
    assert "auth.login_throttled" in await _actions(settings)


async def test_one_address_is_throttled_across_accounts(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with client_for(app, "198.51.100.20") as client:
        await with_csrf(client)
        for i in range(settings.auth.login_max_failures_per_ip):
            await client.post("/login", data={"login": f"nobody{i}", "password": "wrong password!"})
        blocked = await client.post("/login", data={"login": "viewer", "password": PASSWORD})
    assert blocked.status_code == 429
    async with client_for(app, "198.51.100.21") as other:  # another address is not affected
        await with_csrf(other)
        assert (
            await other.post("/login", data={"login": "viewer", "password": PASSWORD})
        ).status_code == 303


async def test_sign_out_ends_the_session_server_side(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        session_cookie = client.cookies.get(cookie_name(False))
        assert (await client.get("/admin")).status_code == 200
        response = await client.post("/logout")
        assert response.status_code == 303
    async with client_for(app) as replay:  # the old cookie, replayed, is worthless
        replay.cookies.set(cookie_name(False), session_cookie)
        assert (await replay.get("/admin")).status_code == 303


async def test_a_deactivated_user_is_signed_out_on_the_next_request(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        assert (await client.get("/admin")).status_code == 200
        engine = create_engine(settings.db)
        async with create_sessionmaker(engine)() as session, session.begin():
            user = await session.get(User, accounts["editor"].id)
            user.is_active = False
        await engine.dispose()
        assert (await client.get("/admin")).status_code == 303


async def test_a_role_change_applies_at_once_and_rotates_the_session(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    name = cookie_name(False)
    async with signed_in(app, accounts["viewer"]) as client:
        before = client.cookies.get(name)
        engine = create_engine(settings.db)
        async with create_sessionmaker(engine)() as session, session.begin():
            (await session.get(User, accounts["viewer"].id)).role = "editor"
        await engine.dispose()
        response = await client.get("/admin")
        assert response.status_code == 200
        assert response.cookies.get(name) not in (None, before)
        assert "(editor)" in response.text
    async with client_for(app) as replay:
        replay.cookies.set(name, before)
        assert (await replay.get("/admin")).status_code == 303  # the old id was deleted


async def test_idle_sessions_expire(app: Litestar, accounts: dict) -> None:
    app.state.sessions.idle_seconds = 0.2
    async with signed_in(app, accounts["viewer"]) as client:
        assert (await client.get("/admin")).status_code == 200
        await asyncio.sleep(0.4)
        assert (await client.get("/admin")).status_code == 303


async def test_sessions_end_at_their_absolute_lifetime_even_when_busy(
    app: Litestar, accounts: dict
) -> None:
    app.state.sessions.max_seconds = 2.0  # room for a slow sign-in on a busy machine
    async with signed_in(app, accounts["viewer"]) as client:
        for _ in range(3):
            assert (await client.get("/admin")).status_code == 200
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        assert (await client.get("/admin")).status_code == 303


@pytest.mark.parametrize("open_", [False, True])
async def test_registration_exists_only_when_the_setting_is_on(
    app: Litestar, accounts: dict, settings: Settings, open_: bool
) -> None:
    if open_:
        engine = create_engine(settings.db)
        async with create_sessionmaker(engine)() as session, session.begin():
            await write_setting(session, "registration_open", True)
        await engine.dispose()
    async with client_for(app) as client:
        await with_csrf(client)
        page = await client.get("/register")
        data = {**NEW_ADMIN, "username": "newcomer", "email": "newcomer@example.org"}
        submitted = await client.post("/register", data=data)
        if open_:
            assert page.status_code == 200
            assert submitted.status_code == 303
            me = await client.get("/")
            assert "newcomer" in me.text.lower() or "Owner" in me.text
        else:
            assert page.status_code == 404 and submitted.status_code == 404
    registered = await count_rows(settings, "users") - 3
    assert registered == (1 if open_ else 0)


async def test_forged_identity_headers_are_ignored(
    client: httpx.AsyncClient, accounts: dict
) -> None:
    forged = {
        "X-User-Id": str(accounts["admin"].id),
        "X-User-Role": "admin",
        "X-User-Email": "admin@example.org",
    }
    assert (await client.get("/admin", headers=forged)).status_code == 303
    api = await client.get("/api/v1/auth/me", headers=forged)
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")


async def test_production_session_cookie_is_host_prefixed_and_secure(
    settings: Settings, accounts: dict
) -> None:
    from app.asgi import create_app
    from tests.conftest import as_production

    app = create_app(as_production(settings))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50123))
    try:  # Secure cookies travel over https only
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            await client.get("/login")
            token = client.cookies.get("__Host-keel_csrf")
            assert token, "the CSRF cookie is __Host- prefixed in production too"
            response = await client.post(
                "/login",
                data={"login": "viewer", "password": PASSWORD},
                headers={"X-CSRF-Token": token},
            )
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-keel_session=")
        lowered = cookie.lower()
        assert "secure" in lowered and "httponly" in lowered and "path=/" in lowered
        assert "domain=" not in lowered
    finally:
        await app.state.engine.dispose()
        await app.state.store.close()


HOSTILE_NEXT = [
    "/\t/evil.example/x",
    "/\n/evil.example/x",
    "/\r/evil.example/x",
    "/\r\n/evil.example/x",
    "/\\evil.example/x",
    "\\\\evil.example/x",
    "/\t\\evil.example/x",
    "\\/evil.example/x",
    "//evil.example/x",
    " //evil.example/x",
    "\x1f//evil.example/x",
    "https:evil.example/x",
    "https://evil.example/x",
    "HTTPS:\\\\evil.example/x",
    "\u200b//evil.example/x",
    "javascript:alert(document.domain)",
    "java\tscript:alert(document.domain)",
    " javascript:alert(document.domain)",
    "evil.example/x",
    "",
]
"""`next` values a browser would follow off the site (WHATWG URL parsing strips tab and
newline anywhere, C0 controls and spaces at the ends, and reads `\\` as `/`), or that are no
path at all: sign-in falls back to its default page for every one."""

ODD_BUT_SAME_SITE_NEXT = {
    "/%09/evil.example/x": "/%09/evil.example/x",
    "/\u200b/evil.example/x": "/%E2%80%8B/evil.example/x",
    "/blog/café?q=日本": "/blog/caf%C3%A9?q=%E6%97%A5%E6%9C%AC",
    "/blog/ünï code#part": "/blog/%C3%BCn%C3%AF%20code#part",
    "/admin/users?role=admin&q=a%20b": "/admin/users?role=admin&q=a%20b",
    "  /admin\t/users\n": "/admin/users",
}
"""Paths on this site written oddly: kept, percent-encoded so the Location header is valid
(a browser would encode them the same way)."""

SAME_SITE_PATH = re.compile(r"/(?![/\\])[!-~]*")
"""A path-absolute reference in printable ASCII: no browser leaves the site through it."""


def assert_same_site_path(location: str) -> None:
    assert SAME_SITE_PATH.fullmatch(location) and "\\" not in location, location


@pytest.mark.parametrize("target", HOSTILE_NEXT)
async def test_a_next_that_leaves_the_site_is_replaced_by_the_default_page(
    app: Litestar, accounts: dict, target: str
) -> None:
    async with client_for(app) as client:
        await with_csrf(client)
        response = await client.post(
            "/login", data={"login": "editor", "password": PASSWORD, "next": target}
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/admin"
        signed_in_again = await client.get("/login", params={"next": target})
        assert signed_in_again.status_code == 303
        assert signed_in_again.headers["location"] == "/"


@pytest.mark.parametrize(("target", "location"), ODD_BUT_SAME_SITE_NEXT.items())
async def test_a_same_site_next_is_kept_and_percent_encoded(
    app: Litestar, accounts: dict, target: str, location: str
) -> None:
    async with client_for(app) as client:
        await with_csrf(client)
        form = await client.get("/login", params={"next": target})
        assert form.status_code == 200
        assert f'name="next" value="{location}"' in form.text.replace("&amp;", "&")
        response = await client.post(
            "/login", data={"login": "viewer", "password": PASSWORD, "next": target}
        )
        assert response.status_code == 303
        assert response.headers["location"] == location
        assert_same_site_path(location)
        signed_in_again = await client.get("/login", params={"next": target})
        assert signed_in_again.headers["location"] == location


async def test_the_reported_tab_redirect_stays_on_the_site(app: Litestar, accounts: dict) -> None:
    """The report: signed in, `/login?next=/%09/evil.example/x` answered `/\\t/evil.example/x`."""
    async with signed_in(app, accounts["admin"]) as client:
        for query in ("next=/%09/evil.example/x", "next=/%0a/evil.example", "next=/%0d%0a/x"):
            response = await client.get(f"/login?{query}")
            assert response.status_code == 303, query
            assert response.headers["location"] == "/", query


CLEAR_SITE_DATA = '"cache", "storage"'


async def test_sign_out_tells_the_browser_to_forget_what_it_kept(
    app: Litestar, accounts: dict
) -> None:
    """htmx keeps pages for Back in the tab's sessionStorage, the browser in its cache:
    signing out clears both (Clear-Site-Data), and the answer itself is never stored."""
    async with signed_in(app, accounts["editor"]) as client:
        response = await client.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert response.headers["clear-site-data"] == CLEAR_SITE_DATA
    assert response.headers["cache-control"] == "no-store"
    async with signed_in(app, accounts["editor"]) as client:
        everywhere = await client.post("/account/sign-out-everywhere")
    assert everywhere.status_code == 303 and everywhere.headers["location"] == "/login"
    assert everywhere.headers["clear-site-data"] == CLEAR_SITE_DATA
