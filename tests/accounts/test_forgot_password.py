"""Self-service "forgot password": /forgot-password and `request_password_reset` (both legs)."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select, update

from app.accounts.models import AuditEntry, User
from app.accounts.services.passwords import (
    FORGOT_MAX_PER_ADDRESS,
    FORGOT_MAX_PER_IP,
    RESET_LINK_KEY,
)
from app.asgi import create_app
from app.jobs.models import Job
from app.notifications.models import MailMessage, Notification
from app.settings import Settings
from tests.conftest import PASSWORD, client_for, with_app_settings, with_csrf
from tests.jobs.conftest import running_worker, wait_for_status

NEW_PASSWORD = "a long and unusual passphrase"
ANSWER = "If an active account uses that address, we sent it a link"


async def ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/forgot-password", data={"email": email})


async def notify_jobs(app: Litestar) -> list[Job]:
    async with app.state.sessionmaker() as session:
        query = select(Job).where(Job.type == "notify").order_by(Job.id)
        return list(await session.scalars(query))


def link_in(job: Job) -> str:
    found = re.search(r"http://127\.0\.0\.1:8000(/reset/[\w-]+)", job.payload["body"])
    assert found, job.payload
    return found.group(1)


async def test_the_answer_is_the_same_and_only_a_known_address_gets_a_job(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with client_for(app) as client:
        await with_csrf(client, "/forgot-password")
        known = await ask(client, viewer.email.upper())
        unknown = await ask(client, "nobody@example.com")
        assert known.status_code == unknown.status_code == 303
        assert known.headers["location"] == unknown.headers["location"]
        page = await client.get(known.headers["location"])
        assert page.status_code == 200 and ANSWER in page.text
    (job,) = await notify_jobs(app)
    assert job.payload["user_id"] == str(viewer.id)
    assert job.payload["kind"] == "password_reset" and job.status == "queued"
    async with app.state.sessionmaker() as session:
        entries = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.created_at)))
    requested = [e for e in entries if e.action == "user.password_reset_requested"]
    assert [(e.resource_id, (e.details or {}).get("found")) for e in requested] == [
        (str(viewer.id), None),
        (None, False),
    ]
    assert "user.password_reset_link_created" in [e.action for e in entries]


SITE_ADDRESSES = [
    ({"public_url": "https://keel.example"}, "https://keel.example"),
    # development may leave PUBLIC_URL unset: then HOST and PORT of `keel serve` (a
    # wildcard bind address means this machine), never the request's Host
    ({"public_url": "", "host": "0.0.0.0", "port": 8123}, "http://127.0.0.1:8123"),
]


@pytest.mark.parametrize(("changes", "base"), SITE_ADDRESSES)
async def test_the_mailed_link_is_on_the_sites_address_whatever_the_host_header(
    settings: Settings, accounts: dict[str, User], changes: dict[str, object], base: str
) -> None:
    """Password-reset poisoning: a stranger asks for someone's reset with a forged Host;
    the e-mailed link must still point at the site, or its token leaks to the stranger."""
    app = create_app(with_app_settings(settings, **changes))
    try:
        async with client_for(app) as client:
            await with_csrf(client, "/forgot-password")
            client.headers["Host"] = "evil.example"
            assert (await ask(client, accounts["viewer"].email)).status_code == 303
        (job,) = await notify_jobs(app)
    finally:
        await app.state.engine.dispose()
    assert "evil.example" not in job.payload["body"]
    assert re.search(re.escape(base) + r"/reset/[\w-]+", job.payload["body"])


async def test_the_mailed_link_sets_a_password_once_and_lives_one_hour(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with client_for(app) as client:
        await with_csrf(client, "/forgot-password")
        await ask(client, viewer.email)
        await ask(client, viewer.email)
        first, second = await notify_jobs(app)
        used, expiring = link_in(first), link_in(second)
        assert (await client.get(used)).status_code == 200
        form = {"new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
        done = await client.post(used, data=form)
        assert done.status_code == 303 and done.headers["location"] == "/login"
        again = await client.post(used, data=form)
        assert again.status_code == 404
        # The other link died with the password change (the account's auth_version moved on).
        assert (await client.get(expiring)).status_code == 404
        login = await client.post("/login", data={"login": viewer.email, "password": NEW_PASSWORD})
        assert login.status_code == 303

        await ask(client, viewer.email)
        *_, third = await notify_jobs(app)
        link = link_in(third)
        store = app.state.store
        key = RESET_LINK_KEY + hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
        await store.set(key, await store.get(key), ttl=0.05)  # the hour runs out
        await asyncio.sleep(0.2)
        assert (await client.get(link)).status_code == 404


async def test_the_notify_job_puts_the_link_in_the_outbox(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with client_for(app) as client:
        await with_csrf(client, "/forgot-password")
        await ask(client, viewer.email)
    (job,) = await notify_jobs(app)
    settings = app.state.settings
    async with running_worker(settings, app.state.sessionmaker):
        done = await wait_for_status(app.state.sessionmaker, job.id, {"succeeded", "dead"})
    assert done.status == "succeeded", done.last_error
    async with app.state.sessionmaker() as session:
        message = (await session.scalars(select(MailMessage))).one()
        note = (await session.scalars(select(Notification))).one()
    assert message.to_address == viewer.email and message.kind == "password_reset"
    assert link_in(job) in message.body and note.user_id == viewer.id


async def test_a_deactivated_account_gets_nothing_but_the_same_answer(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.id == viewer.id).values(is_active=False))
    async with client_for(app) as client:
        await with_csrf(client, "/forgot-password")
        response = await ask(client, viewer.email)
    assert response.status_code == 303 and await notify_jobs(app) == []


async def test_requests_are_limited_per_address_quietly_and_per_client_with_429(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with client_for(app, "198.51.100.9") as client:
        await with_csrf(client, "/forgot-password")
        answers = {(await ask(client, viewer.email)).status_code for _ in range(5)}
        assert answers == {303}
        assert len(await notify_jobs(app)) == FORGOT_MAX_PER_ADDRESS
        for _ in range(FORGOT_MAX_PER_IP - 5):
            assert (await ask(client, "nobody@example.com")).status_code == 303
        refused = await ask(client, "nobody@example.com")
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert "Too many requests" in refused.text
    async with client_for(app, "198.51.100.10") as other:
        await with_csrf(other, "/forgot-password")
        assert (await ask(other, "nobody@example.com")).status_code == 303


async def test_bad_input_is_a_form_error_and_posts_need_the_csrf_token(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        assert (await ask(client, accounts["viewer"].email)).status_code == 403  # no token
        await with_csrf(client, "/forgot-password")
        for bad in ("", "no-at-sign", "x" * 5000):
            response = await ask(client, bad)
            assert response.status_code == 400 and "e-mail address of your account" in response.text
        odd = await client.post("/forgot-password", data={"email": "a@" + "\x00" * 10})
        assert odd.status_code == 400 and "NUL character" in odd.text  # app/core/boundary.py
    assert await notify_jobs(app) == []


async def test_the_sign_in_page_links_to_it(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    assert 'href="/forgot-password"' in page.text
    assert PASSWORD  # the accounts exist; the page is the ordinary sign-in page
