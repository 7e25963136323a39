"""Address verification: self-registration and an address change e-mail a one-time link
(app/accounts/pages/verify.py, app/accounts/services/verification.py; both legs)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.accounts.services.verification import VERIFY_KEY, VERIFY_SECONDS
from app.jobs.models import Job
from app.site_settings.services import write_setting
from tests.conftest import client_for, signed_in, with_csrf

EXPIRED = "This link has expired or was already used"


async def verify_jobs(app: Litestar) -> list[Job]:
    async with app.state.sessionmaker() as session:
        jobs = await session.scalars(select(Job).where(Job.type == "notify").order_by(Job.id))
        return [job for job in jobs if job.payload.get("kind") == "verify_email"]


def link_in(job: Job) -> str:
    found = re.search(r"http://127\.0\.0\.1:8000(/verify-email/[\w-]+)", job.payload["body"])
    assert found, job.payload
    return found.group(1)


async def by_username(app: Litestar, username: str) -> User:
    async with app.state.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def open_registration(app: Litestar) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "registration_open", True)


async def test_a_self_registered_user_confirms_the_address_once(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await open_registration(app)
    async with client_for(app) as client:
        await with_csrf(client, "/register")
        form = {
            "email": "newcomer@example.com",
            "username": "newcomer",
            "password": "a long and unusual passphrase",
            "password_confirm": "a long and unusual passphrase",
            "display_name": "",
        }
        registered = await client.post("/register", data=form)
        assert registered.status_code == 303, registered.text
    user = await by_username(app, "newcomer")
    assert user.email_verified_at is None
    (job,) = await verify_jobs(app)
    assert job.payload["to"] == "newcomer@example.com"
    link = link_in(job)
    store = app.state.store
    key = VERIFY_KEY + hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
    if store.kind == "memory":
        assert key in store._data
    else:
        assert 0 < await store.client.pttl(store.prefix + key) <= VERIFY_SECONDS * 1000
    async with client_for(app) as visitor:
        await with_csrf(visitor, link)
        shown = await visitor.get(link)
        assert shown.status_code == 200 and "newcomer@example.com" in shown.text
        assert (
            await by_username(app, "newcomer")
        ).email_verified_at is None  # a GET changes nothing
        confirmed = await visitor.post(link)
        assert confirmed.status_code == 303
        done = await visitor.get(confirmed.headers["location"])
        assert "Address confirmed" in done.text
        again = await visitor.post(link)
        assert again.status_code == 404 and EXPIRED in again.text
        assert (await visitor.get("/verify-email/unknown-token")).status_code == 404
    assert (await by_username(app, "newcomer")).email_verified_at is not None
    async with app.state.sessionmaker() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert "user.email_verification_sent" in actions and "user.email_verified" in actions


async def test_changing_the_address_unconfirms_it_and_mails_the_new_one(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        unchanged = await client.post(
            "/account/profile", data={"email": viewer.email, "display_name": "Vee"}
        )
        assert unchanged.status_code == 303 and await verify_jobs(app) == []
        changed = await client.post(
            "/account/profile", data={"email": "moved@example.com", "display_name": "Vee"}
        )
        assert changed.status_code == 303
        (job,) = await verify_jobs(app)
        assert job.payload["to"] == "moved@example.com"
        page = await client.get("/account")
        assert "Not confirmed yet" in page.text
        first = link_in(job)
        # A link for an address that changed again is dead.
        await client.post("/account/profile", data={"email": "again@example.com"})
        assert (await client.get(first)).status_code == 404
        newest = link_in((await verify_jobs(app))[-1])
        assert (await client.post(newest)).status_code == 303
        assert "Confirmed." in (await client.get("/account")).text


async def test_verification_posts_need_the_csrf_token(app: Litestar, accounts: dict) -> None:
    async with client_for(app) as client:
        response = await client.post("/verify-email/whatever")
    assert response.status_code == 403


async def test_the_account_page_tells_the_truth_and_sends_the_link_again_on_request(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """An account made at setup was never sent a link: the page says so (not "follow the
    link we e-mailed") and sends one on request, audited, a few an hour at most."""
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as client:
        page = await client.get("/account")
        assert "we e-mailed" not in page.text and "No confirmation link was sent" in page.text
        assert "Send a confirmation link</button>" in page.text
        sent = await client.post("/account/verification")
        assert sent.headers["location"] == "/account?saved=verification"
        (job,) = await verify_jobs(app)
        assert job.payload["to"] == viewer.email
        page = await client.get(sent.headers["location"])
        assert "A confirmation link is on its way" in page.text
        assert "We e-mailed a confirmation link to" in page.text
        assert "Send the link again</button>" in page.text
        for _ in range(2):
            assert (await client.post("/account/verification")).status_code == 303
        refused = await client.post("/account/verification")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "3600"
        assert "3 links this hour already" in refused.text
        assert len(await verify_jobs(app)) == 3
    async with app.state.sessionmaker() as session:
        sent_actions = await session.scalars(
            select(AuditEntry.action).where(AuditEntry.action == "user.email_verification_sent")
        )
        assert len(list(sent_actions)) == 3


async def test_a_confirmed_address_is_not_sent_another_link(
    app: Litestar, accounts: dict[str, User]
) -> None:
    admin = accounts["admin"]
    async with app.state.sessionmaker() as session, session.begin():
        user = await session.get(User, admin.id)
        assert user is not None
        user.email_verified_at = datetime.now(UTC)
    async with signed_in(app, admin) as client:
        page = await client.get("/account")
        refused = await client.post("/account/verification")
    assert "Send a confirmation link" not in page.text and "Confirmed." in page.text
    assert refused.status_code == 409 and "confirmed already" in refused.text
    assert await verify_jobs(app) == []


async def test_sending_the_link_again_needs_the_csrf_token(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        del client.headers["X-CSRF-Token"]
        response = await client.post("/account/verification", data={})
    assert response.status_code == 403
    assert await verify_jobs(app) == []
