"""`/admin/outbox` (admins only) and `/account/notifications` (each user their own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.notifications.models import OUTBOX, MailMessage, Notification
from tests.conftest import client_for, signed_in

NOW = datetime.now(UTC)


async def _messages(app: Litestar, count: int) -> list[MailMessage]:
    async with app.state.sessionmaker() as session, session.begin():
        messages = [
            MailMessage(
                job_id=1000 + n,
                to_address=f"person{n}@example.com",
                subject=f"Subject {n}",
                body=f"Body <b>{n}</b>",
                kind="test",
                status=OUTBOX,
                created_at=NOW - timedelta(minutes=count - n),
            )
            for n in range(count)
        ]
        session.add_all(messages)
    return messages


async def _notes(app: Litestar, user: User, *texts: str) -> list[Notification]:
    async with app.state.sessionmaker() as session, session.begin():
        notes = [
            Notification(
                user_id=user.id, text=text, link="/account", created_at=NOW - timedelta(minutes=i)
            )
            for i, text in enumerate(texts)
        ]
        session.add_all(notes)
    return notes


async def test_the_outbox_is_for_admins_only(app: Litestar, accounts: dict[str, User]) -> None:
    (message,) = await _messages(app, 1)
    for role in ("viewer", "editor"):
        async with signed_in(app, accounts[role]) as client:
            assert (await client.get("/admin/outbox")).status_code == 403
            assert (await client.get(f"/admin/outbox/{message.id}")).status_code == 403
    async with client_for(app) as anonymous:
        response = await anonymous.get("/admin/outbox")
        assert response.status_code in (302, 303, 401)


async def test_admins_page_through_the_outbox_newest_first_and_read_a_message(
    app: Litestar, accounts: dict[str, User]
) -> None:
    messages = await _messages(app, 51)
    async with signed_in(app, accounts["admin"]) as client:
        first = await client.get("/admin/outbox")
        second = await client.get("/admin/outbox?page=2")
        detail = await client.get(f"/admin/outbox/{messages[0].id}")
        missing = await client.get(f"/admin/outbox/{uuid4()}")
        bad = await client.get("/admin/outbox/not-a-uuid")
        odd_page = await client.get("/admin/outbox?page=abc")
    assert first.status_code == 200 and "Page 1 of 2" in first.text
    assert first.text.index("Subject 50") < first.text.index("Subject 49")
    assert "Subject 0<" not in first.text and "Subject 0<" in second.text
    assert detail.status_code == 200 and "person0@example.com" in detail.text
    assert "Body &lt;b&gt;0&lt;/b&gt;" in detail.text  # shown as text, never as HTML
    assert missing.status_code == 404 and bad.status_code in (400, 404)
    assert odd_page.status_code == 400


async def test_a_user_sees_only_their_notifications_and_marks_them_read(
    app: Litestar, accounts: dict[str, User]
) -> None:
    viewer, editor = accounts["viewer"], accounts["editor"]
    first, second = await _notes(app, viewer, "Export ready", "Report ready")
    (theirs,) = await _notes(app, editor, "Editor's own note")
    async with signed_in(app, viewer) as client:
        page = await client.get("/account/notifications")
        assert page.status_code == 200
        assert "Export ready" in page.text and "Report ready" in page.text
        assert "Editor's own note" not in page.text
        assert (await client.get("/account/notifications/count")).text == "Notifications (2)"
        header = await client.get("/account")
        assert 'hx-get="/account/notifications/count"' in header.text

        done = await client.post(f"/account/notifications/{first.id}/read")
        assert done.status_code == 303
        assert (await client.get("/account/notifications/count")).text == "Notifications (1)"
        # Another user's notification is not theirs to mark.
        await client.post(f"/account/notifications/{theirs.id}/read")
        await client.post("/account/notifications/read-all")
        assert (await client.get("/account/notifications/count")).text == "Notifications"
        del client.headers["X-CSRF-Token"]
        refused = await client.post("/account/notifications/read-all")
        assert refused.status_code == 403
    async with app.state.sessionmaker() as session:
        read = {n.text: n.read_at is not None for n in await session.scalars(select(Notification))}
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert read == {"Export ready": True, "Report ready": True, "Editor's own note": False}
    assert actions.count("notification.read") == 2
    assert second.user_id == viewer.id


async def test_notifications_need_a_signed_in_user(app: Litestar) -> None:
    async with client_for(app) as client:
        response = await client.get("/account/notifications")
    assert response.status_code in (302, 303, 401)
