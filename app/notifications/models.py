"""Tables of the notifications domain: e-mail messages (sent or kept in the outbox) and
in-app notifications. Both are keyed by the `notify` job that made them, so a second run
of that job finds its earlier work instead of repeating it."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDBase
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

OUTBOX = "outbox"
"""Kept for admins to read: no SMTP_URL was set."""
SENDING = "sending"
"""Handed to the SMTP server by a run that has not confirmed it yet."""
SENT = "sent"


class MailMessage(UUIDBase):
    """One e-mail a `notify` job produced (`job_id` is unique: one message per job)."""

    __tablename__ = "mail_messages"
    __table_args__ = (Index("ix_mail_messages_created_at", "created_at"),)

    job_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    user_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("users.id", ondelete="SET NULL"))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class Notification(UUIDBase):
    """A line in a user's notification list, until they mark it read."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_created", "user_id", "created_at"),)

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    text: Mapped[str] = mapped_column(String(500))
    link: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
