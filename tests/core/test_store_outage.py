"""Keel while its Valkey is paused (SIGSTOP), on either leg's database with a private
redis-server: requests skip the store instead of each waiting for its socket timeout,
nothing answers 500, and sessions and the page cache work again once it answers."""

from __future__ import annotations

import asyncio
import time

import httpx
from litestar import Litestar

from app.accounts.models import Role, User
from app.accounts.services.api_keys import create_api_key
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.content.services.entries import EntryInput, publish_entry, save_entry
from app.settings import Settings
from tests.conftest import PASSWORD, bearer, client_for, signed_in, with_csrf
from tests.private_valkey import private_valkey

SOCKET_TIMEOUT = 4.0
SKIPPED = SOCKET_TIMEOUT / 2
"""A request that skipped the store answers well within this (in milliseconds; the bounds
are loose so a busy machine never fails the test: speed is measured in bench/); one that
waited on the paused store took at least SOCKET_TIMEOUT."""
RECOVERY = 15.0
"""Seconds after the store answers again by which sessions and the page cache are back (a
probe interval, 0.25 s, measured by bench/store_outage.py)."""


async def published_post(app: Litestar, author: User, title: str = "Outage probe") -> str:
    async with app.state.sessionmaker() as session, session.begin():
        actor = Actor(author.id, author.username)
        entry = await save_entry(session, actor, EntryInput(title=title, body_markdown="Before."))
        await publish_entry(session, actor, entry)
        return entry.slug


async def api_key(app: Litestar, admin: User, role: str = "editor") -> str:
    """An API key's secret: a credential that needs no store (sessions and tokens do)."""
    async with app.state.sessionmaker() as session, session.begin():
        actor = Actor(admin.id, admin.username)
        _, secret = await create_api_key(session, actor, Role.admin, admin.id, "ops", role, None)
    return secret


async def timed(client: httpx.AsyncClient, path: str, **kwargs: object) -> tuple[int, float]:
    started = time.monotonic()
    response = await client.get(path, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.monotonic() - started


async def test_requests_skip_a_paused_store_and_work_again_once_it_answers(
    settings: Settings, accounts: dict[str, User]
) -> None:
    with private_valkey() as valkey:
        app = create_app(valkey.settings(settings, socket_timeout=SOCKET_TIMEOUT))
        slug = await published_post(app, accounts["editor"])
        secret = await api_key(app, accounts["admin"])
        async with (
            app.lifespan(),
            signed_in(app, accounts["viewer"]) as browser,
            client_for(app) as visitor,
        ):
            # (client, path, headers, status while the store is away)
            requests = {
                "public post": (visitor, f"/blog/{slug}", {}, 200),
                "public API list": (visitor, "/api/v1/content", {}, 200),
                "API list with an API key": (
                    visitor,
                    "/api/v1/content?per_page=5",
                    {"X-API-Key": secret},
                    200,
                ),
                "API list with an access token": (
                    visitor,
                    "/api/v1/content?per_page=5",
                    await bearer(app, accounts["editor"]),
                    200,
                ),
                # a public page stays readable with a session cookie (as a visitor sees it)
                "public post with a session cookie": (browser, f"/blog/{slug}", {}, 200),
                "account page (session)": (browser, "/account", {}, 503),
            }
            for client, path, headers, _ in requests.values():
                assert (await client.get(path, headers=headers)).status_code == 200, path
            valkey.pause()
            status, _ = await timed(browser, "/account")  # waits for the store's timeout
            assert status == 503
            for _ in range(3):
                for name, (client, path, headers, expected) in requests.items():
                    status, took = await timed(client, path, headers=headers)
                    assert status == expected, f"{name}: {status}"
                    assert took < SKIPPED, f"{name} waited {took:.2f} s on the paused store"
            valkey.resume()
            resumed = time.monotonic()
            while (await browser.get("/account")).status_code != 200:
                assert time.monotonic() - resumed < RECOVERY, "sessions did not come back"
                await asyncio.sleep(0.05)
            while (await visitor.get(f"/blog/{slug}")).headers.get("x-cache") != "hit":
                assert time.monotonic() - resumed < RECOVERY, "the page cache did not come back"
                await asyncio.sleep(0.05)
            assert not app.state.page_cache.degraded
            ready = await visitor.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["cache"] == {"status": "ok"}
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_api_sign_in_refresh_and_sign_out_work_while_the_store_is_paused(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """API tokens need no store: their families, refresh tokens and signed-out ids live in
    the database, the login throttle counts in the process and the rate limit fails open.
    So the API signs in, refreshes and signs out with Valkey away, and sign-out holds."""
    with private_valkey() as valkey:
        app = create_app(valkey.settings(settings, socket_timeout=SOCKET_TIMEOUT))
        async with app.lifespan(), client_for(app) as client:
            valkey.pause()
            wrong = {"login": "editor", "password": "not the password"}
            assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
            login = {"login": "editor", "password": PASSWORD}
            signed_in = await client.post("/api/v1/auth/login", json=login)
            assert signed_in.status_code == 200, signed_in.text
            first = signed_in.json()
            refresh = {"refresh_token": first["refresh_token"]}
            refreshed = await client.post("/api/v1/auth/refresh", json=refresh)
            assert refreshed.status_code == 200, refreshed.text
            tokens = refreshed.json()
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            me = await client.get("/api/v1/auth/me", headers=headers)
            assert me.status_code == 200 and me.json()["username"] == "editor"
            assert (await client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
            assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
            again = {"refresh_token": tokens["refresh_token"]}
            assert (await client.post("/api/v1/auth/refresh", json=again)).status_code == 401
            valkey.resume()
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_api_sign_out_everywhere_holds_while_the_store_is_paused(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """The account's version, in the database, is what ends every sign-in: with the store
    away, the browser sessions cannot be deleted, but the tokens are refused all the same
    (and so would the sessions be, once the store answers)."""
    with private_valkey() as valkey:
        app = create_app(valkey.settings(settings, socket_timeout=SOCKET_TIMEOUT))
        async with app.lifespan(), client_for(app) as client:
            valkey.pause()
            login = {"login": "editor", "password": PASSWORD}
            tokens = (await client.post("/api/v1/auth/login", json=login)).json()
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            everywhere = await client.post("/api/v1/auth/sign-out-everywhere", headers=headers)
            assert everywhere.status_code == 204, everywhere.text
            assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
            again = {"refresh_token": tokens["refresh_token"]}
            assert (await client.post("/api/v1/auth/refresh", json=again)).status_code == 401
            valkey.resume()
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_a_full_store_refuses_new_sessions_with_a_503_and_serves_the_rest(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """Valkey full (`maxmemory` without eviction; a read-only replica answers alike): it
    still reads, so signed-in pages and public ones work, but a new session cannot be
    stored: the sign-in answers 503 like an outage (it was a 500), not a bug."""
    with private_valkey() as valkey:
        app = create_app(valkey.settings(settings))
        slug = await published_post(app, accounts["editor"])
        async with (
            app.lifespan(),
            signed_in(app, accounts["viewer"]) as browser,
            client_for(app) as visitor,
        ):
            valkey.refuse_writes()
            assert (await browser.get("/account")).status_code == 200
            assert (await visitor.get(f"/blog/{slug}")).status_code == 200
            token = await with_csrf(visitor)
            form = {"login": "editor", "password": PASSWORD, "_csrf_token": token}
            refused = await visitor.post("/login", data=form)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"]
            valkey.refuse_writes(False)
            assert (await visitor.post("/login", data=form)).status_code in (302, 303)
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_store_failures_are_counted_by_command_and_reason_for_the_scrape(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """`keel_store_failures_total`: a command that waited on the paused store is
    `unanswered`, one skipped while the store was taken for down is `skipped`; the counts
    wait in the process until the store takes them."""
    from tests.core.test_metrics import parse_exposition, value
    from tests.system.test_metrics import SCRAPER, with_token

    with private_valkey() as valkey:
        app = create_app(with_token(valkey.settings(settings, socket_timeout=0.5)))
        secret = await api_key(app, accounts["admin"])
        async with app.lifespan(), client_for(app) as client:
            valkey.pause()
            for _ in range(3):  # the API rate limit asks the store on every request
                assert (await timed(client, "/api/v1/site", headers={"X-API-Key": secret}))[
                    0
                ] == 200
            valkey.resume()
            deadline = time.monotonic() + RECOVERY
            while True:
                response = await client.get("/metrics", headers=SCRAPER)  # 503 until back
                if response.status_code == 200:
                    samples = parse_exposition(response.text)
                    failures = "keel_store_failures_total"
                    unanswered = value(samples, failures, command="incr", reason="unanswered")
                    skipped = value(samples, failures, command="incr", reason="skipped")
                    if unanswered and skipped:
                        break
                assert time.monotonic() < deadline, response.text
                await asyncio.sleep(0.2)
        assert unanswered == 1 and skipped == 2
        await app.state.engine.dispose()
        await app.state.store.close()
