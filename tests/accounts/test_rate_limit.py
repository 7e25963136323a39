"""The per-identity API rate limit: app/accounts/guards/rate_limit.py (both storage legs)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import httpx
import pytest
from litestar import Litestar

from app.accounts.guards import rate_limit
from app.accounts.models import Role, User
from app.accounts.services.api_keys import create_api_key
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import SteppedClock, bearer, client_for, free_port, with_app_settings
from tests.core.test_store import silent_server

LIMIT = 3


async def set_limit(app: Litestar, value: int) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "api_rate_limit_per_minute", value)


def fresh_window(*apps: Litestar) -> SteppedClock:
    """Hold the apps' clock one second into a minute of its own (each test's), so the
    one-minute window cannot roll over in the middle of a test."""
    minute = (int(time.time() // 60) + next(_MINUTES)) * 60
    clock = SteppedClock(datetime.fromtimestamp(minute + 1, UTC))
    for app in apps:
        app.state.runtime.clock = clock
    return clock


_MINUTES = itertools.count(10_000)
"""Minutes far ahead of now, a new one per test: no two tests share a window in the store."""


@asynccontextmanager
async def app_with(settings: Settings) -> AsyncIterator[Litestar]:
    application = create_app(settings)
    try:
        yield application
    finally:
        await application.state.engine.dispose()
        await application.state.store.close()


async def spend(client: httpx.AsyncClient, times: int, **kwargs: object) -> list[httpx.Response]:
    return [await client.get("/api/v1/auth/me", **kwargs) for _ in range(times)]  # type: ignore[arg-type]


async def test_the_request_over_the_limit_is_a_429_with_retry_after(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await set_limit(app, LIMIT)
    fresh_window(app)
    async with client_for(app) as client:
        allowed = await spend(client, LIMIT, headers=await bearer(app, accounts["admin"]))
        refused = await client.get("/api/v1/auth/me", headers=await bearer(app, accounts["admin"]))

    assert [r.status_code for r in allowed] == [200] * LIMIT
    assert [r.headers["ratelimit-remaining"] for r in allowed] == ["2", "1", "0"]
    assert {r.headers["ratelimit-limit"] for r in allowed} == {"3"}
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert body["status"] == 429 and body["error_id"] and "3 per minute" in body["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]


async def test_concurrent_requests_of_one_caller_each_get_their_own_count(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Requests that arrive while the caller's count is on the way to the store are
    counted together (app/accounts/services/throttle.py RateCounts): exactly the limit is
    let through, every answer names a different remainder, and the store holds them all."""
    await set_limit(app, 31)
    fresh_window(app)
    headers = await bearer(app, accounts["viewer"])
    async with client_for(app) as client:
        first = await client.get("/api/v1/auth/me", headers=headers)  # reads the limit
        assert first.headers["ratelimit-remaining"] == "30"
        answers = await asyncio.gather(
            *(client.get("/api/v1/auth/me", headers=headers) for _ in range(45))
        )
        after = await client.get("/api/v1/auth/me", headers=headers)
    allowed = [r for r in answers if r.status_code == 200]
    assert len(allowed) == 30
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in allowed) == list(range(30))
    assert [r.status_code for r in answers].count(429) == 15
    assert after.status_code == 429


async def test_a_batch_of_counts_fails_open_when_the_store_fails(
    app: Litestar, accounts: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose command does not reach the store lets each of its requests through,
    as a single request's would."""
    from app.accounts.services.throttle import RateCounts
    from app.core.store import StoreUnavailable

    counts = app.state.runtime.service(RateCounts)
    passed = 0

    async def away(*_: object, **__: object) -> int:
        nonlocal passed
        passed += 1
        await asyncio.sleep(0.01)
        raise StoreUnavailable[0]("store away")

    monkeypatch.setattr(counts.store, "incr", away)
    decisions = await asyncio.gather(*(counts.take("user:x", 2, 61.0) for _ in range(10)))
    assert all(d.allowed and d.remaining == 2 for d in decisions)
    assert passed < 10, "the requests that arrived meanwhile went to the store as one batch"


async def test_every_api_response_carries_the_rate_limit_headers(
    app: Litestar, accounts: dict[str, User]
) -> None:
    fresh_window(app)
    async with client_for(app) as client:
        site = await client.get("/api/v1/site")
        anonymous = await client.get("/api/v1/auth/me")
        page = await client.get("/login")
        health = await client.get("/health/live")
    for response in (site, anonymous):
        assert response.headers["ratelimit-limit"] == "600", "the default limit"
        assert int(response.headers["ratelimit-remaining"]) < 600
        assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
    assert anonymous.status_code == 401
    assert "ratelimit-limit" not in page.headers, "pages are not API requests"
    assert "ratelimit-limit" not in health.headers


async def test_pages_are_not_counted(app: Litestar, accounts: dict[str, User]) -> None:
    await set_limit(app, LIMIT)
    fresh_window(app)
    async with client_for(app) as client:
        pages = [await client.get("/login") for _ in range(LIMIT + 2)]
        api = await client.get("/api/v1/site")
    assert {r.status_code for r in pages} == {200}
    assert api.headers["ratelimit-remaining"] == str(LIMIT - 1)


async def test_two_identities_have_separate_budgets(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await set_limit(app, LIMIT)
    async with app.state.sessionmaker() as session, session.begin():
        admin = accounts["admin"]
        _, secret = await create_api_key(
            session, Actor(admin.id, admin.username), Role.admin, admin.id, "ci", "viewer", None
        )
    fresh_window(app)
    async with client_for(app) as client:
        admin_spent = await spend(client, LIMIT + 1, headers=await bearer(app, admin))
        editor = await client.get("/api/v1/auth/me", headers=await bearer(app, accounts["editor"]))
        key = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})

    assert admin_spent[-1].status_code == 429
    assert editor.status_code == 200 and editor.headers["ratelimit-remaining"] == "2"
    assert key.status_code == 200, "a key has its own budget, apart from its creator's"
    assert key.headers["ratelimit-remaining"] == "2"


async def test_a_revoked_access_token_is_refused_without_spending_the_budget(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """A revoked token is refused before it is counted: a stolen, revoked token must not
    be able to use up its owner's minute."""
    await set_limit(app, LIMIT)
    editor = accounts["editor"]
    revoked, live = await bearer(app, editor), await bearer(app, editor)
    fresh_window(app)
    async with client_for(app) as client:
        out = await client.post("/api/v1/auth/logout", headers=revoked, json={})
        refused = await spend(client, LIMIT + 2, headers=revoked)
        after = await client.get("/api/v1/auth/me", headers=live)
    assert out.status_code == 204
    assert {r.status_code for r in refused} == {401}
    assert after.status_code == 200 and after.headers["ratelimit-remaining"] == str(LIMIT - 2)


async def test_a_new_minute_brings_a_new_budget(app: Litestar, accounts: dict[str, User]) -> None:
    await set_limit(app, LIMIT)
    clock = fresh_window(app)
    async with client_for(app) as client:
        spent = [await client.get("/api/v1/site") for _ in range(LIMIT + 1)]
        clock.advance(timedelta(seconds=58))  # 59 s into the same minute
        still = await client.get("/api/v1/site")
        clock.advance(timedelta(seconds=1))  # the next minute
        renewed = await client.get("/api/v1/site")
    assert [r.status_code for r in spent] == [200] * LIMIT + [429]
    assert spent[0].headers["ratelimit-reset"] == "59"
    assert still.status_code == 429 and still.headers["retry-after"] == "1"
    assert renewed.status_code == 200 and renewed.headers["ratelimit-remaining"] == "2"


async def test_anonymous_callers_are_counted_by_client_address(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await set_limit(app, LIMIT)
    fresh_window(app)
    async with client_for(app, "198.51.100.1") as first, client_for(app, "198.51.100.2") as second:
        spent = [await first.get("/api/v1/site") for _ in range(LIMIT + 1)]
        forged = await first.get("/api/v1/site", headers={"X-Forwarded-For": "192.0.2.99"})
        other = await second.get("/api/v1/site")
    assert [r.status_code for r in spent] == [200] * LIMIT + [429]
    assert forged.status_code == 429, "X-Forwarded-For from an untrusted peer changes nothing"
    assert other.status_code == 200 and other.headers["ratelimit-remaining"] == "2"


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(
    settings: Settings, accounts: dict[str, User]
) -> None:
    proxied = with_app_settings(settings, trusted_proxies=(ip_network("10.0.0.0/8"),))
    async with app_with(proxied) as app:
        await set_limit(app, LIMIT)
        fresh_window(app)
        async with client_for(app, "10.0.0.5") as proxy:
            one = [
                await proxy.get("/api/v1/site", headers={"X-Forwarded-For": "198.51.100.1"})
                for _ in range(LIMIT + 1)
            ]
            two = await proxy.get("/api/v1/site", headers={"X-Forwarded-For": "198.51.100.2"})
    assert [r.status_code for r in one] == [200] * LIMIT + [429]
    assert two.status_code == 200


async def test_a_changed_limit_is_picked_up_within_seconds(
    app: Litestar, accounts: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit is cached per process, so the API costs no settings query per request."""
    monkeypatch.setattr(rate_limit, "LIMIT_REFRESH_SECONDS", 0.3)
    await set_limit(app, LIMIT)
    fresh_window(app)
    async with client_for(app) as client:
        before = await client.get("/api/v1/site")
        await set_limit(app, 50)
        cached = await client.get("/api/v1/site")
        await asyncio.sleep(0.4)
        after = await client.get("/api/v1/site")
    assert before.headers["ratelimit-limit"] == "3"
    assert cached.headers["ratelimit-limit"] == "3"
    assert after.headers["ratelimit-limit"] == "50"


@pytest.mark.parametrize("leg", ["services"], indirect=True)
async def test_processes_share_one_budget(settings: Settings, accounts: dict[str, User]) -> None:
    """Two app instances, as two granian workers would be, count against one Valkey."""
    async with app_with(settings) as first, app_with(settings) as second:
        await set_limit(first, LIMIT)
        fresh_window(first, second)
        headers = await bearer(first, accounts["viewer"])
        async with client_for(first) as one, client_for(second) as two:
            statuses = [
                (await client.get("/api/v1/auth/me", headers=headers)).status_code
                for client in (one, two, one, two)
            ]
    assert statuses == [200, 200, 200, 429]


async def _api_key(app: Litestar, admin: User) -> str:
    async with app.state.sessionmaker() as session, session.begin():
        _, secret = await create_api_key(
            session, Actor(admin.id, admin.username), Role.admin, admin.id, "ci", "viewer", None
        )
    return secret


def fail_open_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The warnings of requests let through because the store failed (one each)."""
    return [
        r for r in caplog.records if r.name == "keel.throttle" and "request allowed" in r.message
    ]


@pytest.mark.parametrize("leg", ["services"], indirect=True)
async def test_an_unreachable_valkey_lets_api_requests_through(
    settings: Settings, accounts: dict[str, User], caplog: pytest.LogCaptureFixture
) -> None:
    down = replace(
        settings, store=replace(settings.store, url=f"redis://127.0.0.1:{free_port()}/0")
    )
    async with app_with(down) as app:
        secret = await _api_key(app, accounts["admin"])
        async with client_for(app) as client:
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="keel.throttle"):
                with_key = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})
                anonymous = await client.get("/api/v1/site")
            elapsed = time.monotonic() - started
    assert with_key.status_code == 200 and with_key.json()["via"] == "api_key"
    assert anonymous.status_code == 200
    assert with_key.headers["ratelimit-remaining"] == with_key.headers["ratelimit-limit"]
    assert len(fail_open_warnings(caplog)) == 2
    assert elapsed < 3, "failing open must not wait on the store"


@pytest.mark.parametrize("leg", ["services"], indirect=True)
async def test_a_hung_valkey_lets_api_requests_through_after_its_timeout(
    settings: Settings, accounts: dict[str, User], caplog: pytest.LogCaptureFixture
) -> None:
    async with silent_server() as port:
        hung = replace(
            settings,
            store=replace(settings.store, url=f"redis://127.0.0.1:{port}/0", socket_timeout=0.3),
        )
        async with app_with(hung) as app:
            secret = await _api_key(app, accounts["admin"])
            async with client_for(app) as client:
                started = time.monotonic()
                with caplog.at_level(logging.WARNING, logger="keel.throttle"):
                    response = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})
                elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert len(fail_open_warnings(caplog)) == 1
    assert elapsed < 2, "bounded by the store's socket timeout"


async def test_any_other_store_error_also_lets_requests_through(
    app: Litestar,
    accounts: dict[str, User],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A misconfigured store (wrong password, read-only replica) is a warning, not a 500."""

    async def broken_incr(*_: object, **__: object) -> int:
        raise RuntimeError("NOAUTH Authentication required.")

    monkeypatch.setattr(app.state.store, "incr", broken_incr)
    async with client_for(app) as client:
        with caplog.at_level(logging.WARNING, logger="keel.throttle"):
            response = await client.get("/api/v1/site")
    assert response.status_code == 200
    assert response.headers["ratelimit-remaining"] == response.headers["ratelimit-limit"]
    assert len(fail_open_warnings(caplog)) == 1
