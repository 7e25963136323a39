"""The CSRF layer (app/core/csrf.py) on both legs: a token bound to the browser session,
same-origin unsafe requests only, and malformed tokens refused with a 403, never a 500."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.accounts.services.sessions import SESSION_PREFIX, USER_INDEX_PREFIX, digest_of
from app.asgi import create_app
from app.settings import Settings
from tests.conftest import PASSWORD, client_for, fresh, signed_in, with_app_settings, with_csrf

TOKEN_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def page_token(client: httpx.AsyncClient, page: str = "/admin/users") -> str:
    """The token a form on `page` holds, as the browser would post it."""
    response = await client.get(page)
    found = TOKEN_FIELD.search(response.text)
    assert found, (page, response.status_code)
    return found.group(1)


async def deactivate(
    browser: httpx.AsyncClient, user: User, token: str | bytes, **headers: str | bytes
) -> httpx.Response:
    """The admin form that deactivates `user`, sent with `token` in the htmx header."""
    return await browser.post(
        f"/admin/users/{user.id}/deactivate", headers={"X-CSRF-Token": token, **headers}
    )


async def is_active(app: Litestar, user: User) -> bool:
    return (await fresh(app, user)).is_active


async def test_another_browsers_token_does_not_pass_with_a_session(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Issue 12 #5: a token with its cookie, taken from any other browser (an anonymous
    one, or another user's session), passed with the admin's session."""
    viewer = accounts["viewer"]
    async with client_for(app) as stranger:
        anonymous_token = await with_csrf(stranger)
        anonymous_cookie = stranger.cookies["keel_csrf"]
    async with signed_in(app, accounts["editor"]) as other:
        others_token = await page_token(other)
    async with signed_in(app, accounts["admin"]) as admin:
        for cookie in [c for c in admin.cookies.jar if c.name == "keel_csrf"]:
            admin.cookies.delete(cookie.name, cookie.domain, cookie.path)
        admin.cookies.set("keel_csrf", anonymous_cookie)
        assert (await deactivate(admin, viewer, anonymous_token)).status_code == 403
        assert (await deactivate(admin, viewer, others_token)).status_code == 403
        form = await admin.post(
            f"/admin/users/{viewer.id}/deactivate",
            data={"_csrf_token": anonymous_token},
            headers={"X-CSRF-Token": ""},
        )
        assert form.status_code == 403
        assert await is_active(app, viewer)
        allowed = await deactivate(admin, viewer, await page_token(admin))
        assert allowed.status_code == 303
    assert not await is_active(app, viewer)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "http://evil.example/form"},
        {"Referer": "http://user@evil.example@testserver/form"},  # no browser sends one
        {"Referer": "not a url"},
    ],
)
async def test_a_cross_origin_post_is_refused_even_with_a_valid_token(
    app: Litestar, accounts: dict[str, User], headers: dict[str, str]
) -> None:
    async with signed_in(app, accounts["admin"]) as admin:
        token = await page_token(admin)
        refused = await deactivate(admin, accounts["viewer"], token, **headers)
        assert refused.status_code == 403
        assert await is_active(app, accounts["viewer"])
        same_site = await deactivate(
            admin,
            accounts["viewer"],
            token,
            Origin="http://testserver",
            Referer="http://testserver/admin/users",
        )
        assert same_site.status_code == 303


async def test_anonymous_forms_check_the_origin_too(app: Litestar) -> None:
    async with client_for(app) as visitor:
        await with_csrf(visitor)
        data = {"login": "viewer", "password": PASSWORD}
        refused = await visitor.post("/login", data=data, headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert (await visitor.post("/login", data=data)).status_code == 303


@pytest.fixture
async def public_url_app(settings: Settings, accounts: dict[str, User]) -> AsyncIterator[Litestar]:
    application = create_app(with_app_settings(settings, public_url="https://keel.example"))
    yield application
    await application.state.engine.dispose()
    await application.state.store.close()


async def test_with_public_url_set_the_site_origin_is_that_address(
    public_url_app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(public_url_app, accounts["admin"]) as admin:
        token = await page_token(admin)
        viewer = accounts["viewer"]
        refused = await deactivate(admin, viewer, token, Origin="http://testserver")
        assert refused.status_code == 403
        allowed = await deactivate(admin, viewer, token, Origin="https://KEEL.example:443")
        assert allowed.status_code == 303


MALFORMED = [
    "é" * 128,
    "é",
    "a" * 64 + "é" * 64,
    "\N{ZERO WIDTH SPACE}" + "0" * 127,
    "0" * 10_000,
    "",
]


@pytest.mark.parametrize("token", MALFORMED)
async def test_a_malformed_token_is_a_403_never_a_500(
    app: Litestar, accounts: dict[str, User], token: str
) -> None:
    """Issue 12 #14: a token with a non-ASCII character answered 500 inside the
    comparison; header, form field and cookie alike, with a session or without."""
    raw = token.encode()  # as a client may send it; the server reads headers as Latin-1
    form = {"login": "x", "password": "y"}
    async with client_for(app) as visitor:
        valid = await with_csrf(visitor)
        del visitor.headers["X-CSRF-Token"]
        as_header = await visitor.post("/login", data=form, headers={"X-CSRF-Token": raw})
        as_field = await visitor.post("/login", data={**form, "_csrf_token": token})
        as_cookie = await visitor.post(
            "/login",
            data={**form, "_csrf_token": valid},
            headers={"Cookie": b"keel_csrf=" + (raw or b"x")},
        )
        assert [r.status_code for r in (as_header, as_field, as_cookie)] == [403] * 3
    async with signed_in(app, accounts["admin"]) as admin:
        assert (await deactivate(admin, accounts["viewer"], raw)).status_code == 403
        as_field = await admin.post(
            f"/admin/users/{accounts['viewer'].id}/deactivate",
            data={"_csrf_token": token},
            headers={"X-CSRF-Token": ""},
        )
        assert as_field.status_code == 403
    assert await is_active(app, accounts["viewer"])


async def test_a_malformed_cookie_is_replaced_on_the_next_page(app: Litestar) -> None:
    async with client_for(app) as visitor:
        page = await visitor.get("/login", headers={"Cookie": "keel_csrf=not-a-token"})
        token = TOKEN_FIELD.search(page.text)
        assert token and token.group(1) != "not-a-token"
        assert page.headers["set-cookie"].startswith(f"keel_csrf={token.group(1)};")
        form = {"login": "viewer", "password": PASSWORD, "_csrf_token": token.group(1)}
        assert (await visitor.post("/login", data=form)).status_code == 303


async def test_pages_work_after_signing_in_and_a_new_session_needs_its_own_token(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Sign in through the form (the anonymous token), use a form of the new session, sign
    out and in as someone else: the first session's token no longer passes, the form's
    own field passes even when a stale htmx header (hx-headers on <body>, which a boosted
    swap does not update) comes with it."""
    async with client_for(app) as browser:
        login_token = await page_token(browser, "/login")
        data = {"login": "admin", "password": PASSWORD, "_csrf_token": login_token}
        assert (await browser.post("/login", data=data)).status_code == 303
        first = await page_token(browser)
        assert first != login_token
        assert (await deactivate(browser, accounts["viewer"], first)).status_code == 303
        assert (await browser.post("/logout", data={"_csrf_token": first})).status_code == 303
        login_token = await page_token(browser, "/login")
        data = {"login": "editor", "password": PASSWORD, "_csrf_token": login_token}
        assert (await browser.post("/login", data=data)).status_code == 303
        second = await page_token(browser)
        assert second != first
        reactivate = f"/admin/users/{accounts['viewer'].id}/reactivate"
        stale = await browser.post(reactivate, headers={"X-CSRF-Token": first})
        assert stale.status_code == 403
        form = await browser.post(
            reactivate, data={"_csrf_token": second}, headers={"X-CSRF-Token": first}
        )
        assert form.status_code == 303
    assert await is_active(app, accounts["viewer"])


async def test_a_form_posted_after_the_session_ended_leads_to_sign_in(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["admin"]) as admin:
        token = await page_token(admin)
        await app.state.store.delete(*await app.state.store.keys("session:*"))
        response = await deactivate(
            admin, accounts["viewer"], token, Referer="http://testserver/admin/users"
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=%2Fadmin%2Fusers"
    assert await is_active(app, accounts["viewer"])


async def _session_written_before_csrf_secrets(app: Litestar, user: User, role: str) -> str:
    """A browser session for `user` as the store kept it before sessions had a CSRF secret
    (no `csrf_secret` field), recorded with `role`; its id, for the cookie."""
    session_id, now = secrets.token_urlsafe(32), time.time()
    digest = digest_of(session_id)
    record = {
        "user_id": str(user.id),
        "auth_version": user.auth_version,
        "role": role,
        "created_at": now,
        "last_seen": now,
        "ip_address": "203.0.113.7",
        "user_agent": "pytest",
        "digest": digest,
    }
    await app.state.store.set(SESSION_PREFIX + digest, json.dumps(record), ttl=3600)
    await app.state.store.set(f"{USER_INDEX_PREFIX}{user.id}:{digest}", "1", ttl=3600)
    return session_id


@pytest.mark.parametrize("recorded_role", ["admin", "editor"])
async def test_a_session_stored_before_csrf_secrets_keeps_its_forms_working(
    app: Litestar, accounts: dict[str, User], recorded_role: str
) -> None:
    """A session without a CSRF secret took its session id's digest instead, and the id
    changes when the role does: the page that replaced the id (the user had been made an
    admin since) held a token that the next request's session refused, so its form answered
    403. Such a session keeps one secret from its first request on."""
    admin, viewer = accounts["admin"], accounts["viewer"]
    session_id = await _session_written_before_csrf_secrets(app, admin, recorded_role)
    async with client_for(app) as browser:
        # the jar's name for the host `testserver`, so the replaced id overwrites this one
        browser.cookies.set("keel_session", session_id, domain="testserver.local")
        token = await page_token(browser)
        assert (browser.cookies["keel_session"] == session_id) == (recorded_role == "admin")
        foreign = await deactivate(browser, viewer, "0" * 64)
        assert foreign.status_code == 403
        assert (await deactivate(browser, viewer, token)).status_code == 303
    assert not await is_active(app, viewer)


async def test_a_visitor_gets_a_csrf_cookie_only_from_a_page_with_a_form(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """The token is made when a page's form asks for it (a page without one sets no
    cookie: tests/extensions/test_host.py); the sign-in page sets it once, and its form
    passes with it."""
    async with client_for(app) as visitor:
        missing = await visitor.get("/no-such-page")
        assert missing.status_code == 404 and "set-cookie" not in missing.headers
        page = await visitor.get("/login")
        token = TOKEN_FIELD.search(page.text)
        assert token and page.headers["set-cookie"].startswith(f"keel_csrf={token.group(1)};")
        again = await visitor.get("/login")
        assert "set-cookie" not in again.headers  # the browser holds it now
        assert TOKEN_FIELD.search(again.text).group(1) == token.group(1)  # type: ignore[union-attr]
        form = {"login": "viewer", "password": PASSWORD, "_csrf_token": token.group(1)}
        assert (await visitor.post("/login", data=form)).status_code == 303
