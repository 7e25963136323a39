"""The `notify` job: an e-mail (through SMTP when SMTP_URL is set, else into the admin
outbox) and, when the payload names a user, an in-app notification for them.

Each run is keyed by its job id: the message and the notification have a unique `job_id`,
so a job that runs again (its worker died, a retry) does not send or add anything twice,
once a run has recorded the message as sent. A run stopped between the SMTP server taking
the message and that record (a worker's grace period ran out, a crash) leaves it to the
next run, which sends it again: at least once, with the same Message-ID.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import User
from app.core.db import dialect_insert
from app.jobs.models import Job
from app.jobs.services.queue import is_postgres
from app.jobs.services.registry import JobContext, JobFailed, job_handler
from app.notifications.models import OUTBOX, SENDING, SENT, MailMessage, Notification
from app.notifications.services import (
    MailNotSent,
    build_message,
    mail_sender,
    message_id,
    send_mail,
)


class NotifyPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Who (`user_id`, or a bare address in `to`), what (`subject`, plain-text `body`), and
    optionally a `kind` (`password_reset`, ...) and a `link` for the in-app notification."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    user_id: UUID | None = None
    to: Annotated[str, msgspec.Meta(max_length=320)] = ""
    kind: Annotated[str, msgspec.Meta(max_length=64)] = ""
    link: Annotated[str, msgspec.Meta(max_length=500)] = ""

    def __post_init__(self) -> None:
        if self.user_id is None and not self.to:
            raise ValueError("a notification needs `user_id` or `to`")
        if self.to and ("@" not in self.to or any(c in self.to for c in "\r\n,;<> ")):
            raise ValueError("`to` must be one e-mail address")
        if self.link and not (
            (self.link.startswith("/") and not self.link.startswith(("//", "/\\")))
            or self.link.startswith(("https://", "http://"))
        ):
            raise ValueError("`link` must be a path on this site or an http(s) address")
        if "\r" in self.subject or "\n" in self.subject:
            raise ValueError("`subject` must be one line")


@job_handler("notify", timeout=120, max_attempts=5, payload=NotifyPayload)
async def run_notify(ctx: JobContext[NotifyPayload]) -> dict[str, Any]:
    """Send an e-mail (or keep it in the outbox) and notify the user in the app."""
    note = ctx.payload
    now = datetime.now(UTC)
    async with ctx.sessionmaker() as session, session.begin():
        user = await session.get(User, note.user_id) if note.user_id else None
        if note.user_id and user is None:
            raise JobFailed(f"There is no user {note.user_id}.")
        if user is not None:
            await session.execute(
                dialect_insert(session, Notification)
                .values(
                    user_id=user.id,
                    job_id=ctx.job_id,
                    text=note.subject,
                    link=note.link,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["job_id"])
            )
        address = note.to or (user.email if user else "")
        enqueued_at = await session.scalar(select(Job.created_at).where(Job.id == ctx.job_id))
        sender = await mail_sender(session, ctx.mail)
    key = message_id(ctx.mail, ctx.job_id, enqueued_at)
    status = await _deliver(ctx, note, address, user.id if user else None, now, key, sender)
    return {"mail": status, "to": address, "notification": user is not None}


async def _deliver(
    ctx: JobContext[NotifyPayload],
    note: NotifyPayload,
    address: str,
    user_id: UUID | None,
    now: datetime,
    key: str,
    sender: str,
) -> str:
    """Store the message keyed by job id; send it unless an earlier run already did."""
    smtp = bool(ctx.mail.smtp_url)
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(
            dialect_insert(session, MailMessage)
            .values(
                job_id=ctx.job_id,
                user_id=user_id,
                to_address=address,
                subject=note.subject,
                body=note.body,
                kind=note.kind,
                status=SENDING if smtp else OUTBOX,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["job_id"])
        )
        status = await session.scalar(
            select(MailMessage.status).where(MailMessage.job_id == ctx.job_id).with_for_update()
        )
        if not smtp or status in (SENT, OUTBOX):
            return "already sent" if status == SENT else OUTBOX
        message = build_message(sender, address, note.subject, note.body, key)
        if is_postgres(session):
            # The row stays locked while the SMTP server takes the message, so two runs of
            # the job (one that lost its lease, say) never both send.
            await send_mail(ctx.mail, message)
            await _mark_sent(session, ctx.job_id)
            return SENT
    # SQLite's write lock is the whole database's: held over the send, it would stop every
    # other write for as long as the server takes. The row is committed first (and removed
    # again when the server refuses the message, as a rollback would); the job's lease
    # keeps other runs away meanwhile.
    try:
        await send_mail(ctx.mail, message)
    except MailNotSent:
        async with ctx.sessionmaker() as session, session.begin():
            await session.execute(
                delete(MailMessage).where(
                    MailMessage.job_id == ctx.job_id, MailMessage.status == SENDING
                )
            )
        raise
    async with ctx.sessionmaker() as session, session.begin():
        await _mark_sent(session, ctx.job_id)
    return SENT


async def _mark_sent(session: AsyncSession, job_id: int) -> None:
    await session.execute(
        update(MailMessage)
        .where(MailMessage.job_id == job_id)
        .values(status=SENT, sent_at=datetime.now(UTC))
    )
