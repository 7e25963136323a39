"""The `notify` job: the outbox without SMTP_URL, a real SMTP server with it, once per job."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import User
from app.jobs.models import Job, JobStatus
from app.jobs.services.queue import enqueue
from app.jobs.services.registry import JobInputError
from app.notifications.models import MailMessage, Notification
from app.settings import MailSettings, Settings
from app.site_settings.services import write_setting
from tests.jobs.conftest import running_worker, wait_for_status
from tests.notifications.smtp_server import SmtpServer

Sessions = async_sessionmaker[AsyncSession]
DONE = {"succeeded", "failed", "dead"}


async def _notify(sessionmaker: Sessions, **payload: object) -> int:
    async with sessionmaker() as session, session.begin():
        return await enqueue(session, "notify", dict(payload))


async def _run(settings: Settings, sessionmaker: Sessions, job_id: int) -> Job:
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, DONE)
    assert job.status == "succeeded", job.last_error
    return job


async def _run_again(settings: Settings, sessionmaker: Sessions, job_id: int) -> Job:
    """Deliver the same job a second time, as after a worker lost its lease."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id).values(status=JobStatus.queued.value)
        )
    return await _run(settings, sessionmaker, job_id)


async def test_without_smtp_the_message_goes_to_the_outbox_and_the_user_is_notified(
    settings: Settings, sessionmaker: Sessions, accounts: dict[str, User]
) -> None:
    viewer = accounts["viewer"]
    job_id = await _notify(
        sessionmaker,
        user_id=str(viewer.id),
        subject="Your export is ready",
        body="Hello.",
        kind="export",
        link="/account",
    )
    job = await _run(settings, sessionmaker, job_id)
    assert job.result == {"mail": "outbox", "to": viewer.email, "notification": True}
    await _run_again(settings, sessionmaker, job_id)
    async with sessionmaker() as session:
        messages = list(await session.scalars(select(MailMessage)))
        notes = list(await session.scalars(select(Notification)))
    assert [(m.to_address, m.subject, m.body, m.kind, m.status) for m in messages] == [
        (viewer.email, "Your export is ready", "Hello.", "export", "outbox")
    ]
    assert [(n.user_id, n.text, n.link, n.read_at) for n in notes] == [
        (viewer.id, "Your export is ready", "/account", None)
    ]


async def test_with_smtp_the_message_arrives_once_even_when_the_job_runs_twice(
    settings: Settings, sessionmaker: Sessions
) -> None:
    async with SmtpServer() as server:
        with_smtp = replace(settings, mail=MailSettings(server.url, "keel@example.org"))
        job_id = await _notify(
            sessionmaker, to="someone@example.com", subject="Hi there", body="Line one.\n.\nEnd."
        )
        first = await _run(with_smtp, sessionmaker, job_id)
        second = await _run_again(with_smtp, sessionmaker, job_id)
    assert first.result["mail"] == "sent" and second.result["mail"] == "already sent"
    assert server.envelopes == [("keel@example.org", ["someone@example.com"])]
    (message,) = server.messages
    assert message["Subject"] == "Hi there" and message["To"] == "someone@example.com"
    assert message.get_payload(decode=True).decode().splitlines() == ["Line one.", ".", "End."]
    async with sessionmaker() as session:
        stored = (await session.scalars(select(MailMessage))).one()
        notes = await session.scalar(select(Notification.id))
    assert stored.status == "sent" and stored.sent_at is not None and notes is None


async def test_mail_comes_from_the_sender_address_setting_else_mail_from(
    settings: Settings, sessionmaker: Sessions
) -> None:
    async with SmtpServer() as server:
        with_smtp = replace(settings, mail=MailSettings(server.url, "keel@example.org"))
        await _run(
            with_smtp,
            sessionmaker,
            await _notify(sessionmaker, to="a@example.com", subject="One", body="."),
        )
        async with sessionmaker() as session, session.begin():
            await write_setting(session, "mail_sender", "Harbour Notes <news@harbour.example>")
        await _run(
            with_smtp,
            sessionmaker,
            await _notify(sessionmaker, to="b@example.com", subject="Two", body="."),
        )
    assert [message["From"] for message in server.messages] == [
        "keel@example.org",
        "Harbour Notes <news@harbour.example>",
    ]


async def test_an_unreachable_smtp_server_means_a_retry_not_a_lost_or_doubled_message(
    settings: Settings, sessionmaker: Sessions
) -> None:
    async with SmtpServer() as server:
        closed = server.url
    down = replace(settings, mail=MailSettings(closed, "keel@example.org"))
    job_id = await _notify(sessionmaker, to="a@example.com", subject="S", body="B")
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job_id).values(max_attempts=1))
    async with running_worker(down, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, DONE)
    assert job.status == "dead" and "SMTP delivery failed" in (job.last_error or "")
    async with sessionmaker() as session:
        assert await session.scalar(select(MailMessage.id)) is None  # rolled back: not sent


@pytest.mark.parametrize(
    "payload",
    [
        {"subject": "S", "body": "B"},
        {"to": "not an address", "subject": "S", "body": "B"},
        {"to": "a@example.com", "subject": "two\nlines", "body": "B"},
        {"to": "a@example.com", "subject": "", "body": "B"},
        {"to": "a@example.com", "subject": "S", "body": "B", "link": "javascript:alert(1)"},
        {"user_id": "nope", "subject": "S", "body": "B"},
    ],
)
async def test_a_bad_payload_is_refused_when_enqueued(
    sessionmaker: Sessions, payload: dict[str, object]
) -> None:
    async with sessionmaker() as session, session.begin():
        with pytest.raises(JobInputError):
            await enqueue(session, "notify", payload)


async def test_a_stalled_smtp_server_holds_up_no_other_write(
    settings: Settings, sessionmaker: Sessions
) -> None:
    """While the SMTP server sits on a message, the rest of the system writes as usual (on
    SQLite a write transaction held over the send locked the whole database)."""
    async with SmtpServer(stall_seconds=8) as server:
        with_smtp = replace(settings, mail=MailSettings(server.url, "keel@example.org"))
        job_id = await _notify(sessionmaker, to="a@example.com", subject="S", body="B")
        async with running_worker(with_smtp, sessionmaker, lease_seconds=30.0):
            await asyncio.wait_for(server.stalled.wait(), 10)
            started = time.monotonic()
            other = await _notify(sessionmaker, to="b@example.com", subject="T", body="C")
            took = time.monotonic() - started
            server.stall_seconds = 0
            job = await wait_for_status(sessionmaker, job_id, DONE, timeout=20)
    assert other and took < 1.0
    assert job.status == "succeeded", job.last_error
