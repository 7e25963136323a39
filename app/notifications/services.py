"""Reading the outbox (admins) and a user's notifications (the user), and marking read."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.audit import Actor, record
from app.core.db import rows_changed
from app.core.errors import NotFound
from app.core.pagination import Page, PageRequest, paginate
from app.notifications.models import MailMessage, Notification


class MessageNotFound(NotFound):
    """No such e-mail in the outbox."""

    def __init__(self) -> None:
        super().__init__("There is no such message.")


async def list_messages(session: AsyncSession, page: PageRequest) -> Page[MailMessage]:
    """Every e-mail Keel made, newest first (kept in the outbox or sent)."""
    statement = select(MailMessage).order_by(MailMessage.created_at.desc(), MailMessage.id)
    return await paginate(session, statement, page)


async def get_message(session: AsyncSession, message_id: UUID) -> MailMessage:
    message = await session.get(MailMessage, message_id)
    if message is None:
        raise MessageNotFound()
    return message


async def list_notifications(
    session: AsyncSession, user_id: UUID, page: PageRequest
) -> Page[Notification]:
    """The user's notifications, unread first, then newest first."""
    statement = (
        select(Notification)
        .where(Notification.user_id == user_id)
        .order_by(Notification.read_at.is_not(None), Notification.created_at.desc())
    )
    return await paginate(session, statement, page)


async def unread_count(session: AsyncSession, user_id: UUID) -> int:
    statement = select(func.count()).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)
    )
    return int(await session.scalar(statement) or 0)


async def mark_read(
    session: AsyncSession, actor: Actor, user_id: UUID, notification_id: UUID | None
) -> int:
    """Mark one of the user's notifications read (or all when `notification_id` is None);
    another user's notification is simply not found."""
    where = [Notification.user_id == user_id, Notification.read_at.is_(None)]
    if notification_id is not None:
        where.append(Notification.id == notification_id)
    count = await rows_changed(
        session, update(Notification).where(*where).values(read_at=datetime.now(UTC))
    )
    if count:
        record(
            session,
            actor,
            "notification.read",
            "notification",
            notification_id or "all",
            count=count,
        )
    return count
