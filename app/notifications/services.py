"""Reading the outbox (admins) and a user's notifications (the user), and marking read.

Mail: sending one e-mail through the SMTP server SMTP_URL names, with the standard library.

smtplib blocks, so each conversation runs in a thread of its own and the event loop awaits
its outcome. The thread is a daemon (a process that exits never waits for it), and when
the await is cancelled (a worker's grace period ran out) the connection is shut down at
once: the thread wakes with an error, and a message the server had not acknowledged is
dropped by the server. One it had acknowledged is sent again by the job's next run with
the same Message-ID (`message_id`), so the copy is recognisably the same mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import socket
import ssl
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.services.audit import Actor, record
from app.core.db import rows_changed
from app.core.errors import NotFound
from app.core.pagination import Page, PageRequest, paginate
from app.notifications.models import MailMessage, Notification
from app.settings import MailSettings
from app.site_settings.services import SettingDefinition, define


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


EMAIL_ADDRESS = re.compile(r"[^@\s<>]{1,64}@[^@\s<>]+\.[^@\s<>]{2,}")


def _valid_sender(value: str) -> str | None:
    if not value:
        return None
    address = parseaddr(value)[1]
    if not EMAIL_ADDRESS.fullmatch(address) or "\n" in value or "\r" in value:
        return 'must be an e-mail address, e.g. news@example.org or "Site <news@example.org>"'
    return None


MAIL_SENDER = define(
    SettingDefinition(
        "mail_sender",
        str,
        "",
        'The From address of the e-mails Keel sends, e.g. "Harbour Notes <news@example.org>". '
        "Empty: MAIL_FROM from the configuration.",
        label="Sender address",
        max_length=200,
        validate=_valid_sender,
    )
)


async def mail_sender(session: AsyncSession, mail: MailSettings) -> str:
    """Who Keel's e-mails come from: the `mail_sender` setting, else MAIL_FROM."""
    return await MAIL_SENDER.read(session) or mail.mail_from


SMTP_TIMEOUT = 30.0


class MailNotSent(Exception):
    """The SMTP server refused the message or could not be reached (the job retries)."""


def message_id(mail: MailSettings, job_id: int, enqueued_at: datetime | None) -> str:
    """The Message-ID of a `notify` job's mail: the same on every run of that job, and
    unlike any other installation's (the job's enqueue time, to the microsecond)."""
    domain = parseaddr(mail.mail_from)[1].rpartition("@")[2] or "localhost"
    stamp = f".{int(enqueued_at.timestamp() * 1_000_000):x}" if enqueued_at else ""
    return f"<keel.notify.{job_id}{stamp}@{domain}>"


def build_message(sender: str, to: str, subject: str, body: str, key: str) -> EmailMessage:
    """A plain-text message from `sender` whose Message-ID is `key` (see `message_id`)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = key
    message.set_content(body)
    return message


class _Conversation:
    """The sockets of one SMTP conversation, so another thread can end it (`abort`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.aborted = False

    def opened(self, sock: socket.socket) -> None:
        """Called in the sending thread with each socket the client talks through."""
        with self._lock:
            if self.aborted:
                sock.close()
                raise MailNotSent("the send was cancelled")
            self._sockets.append(sock)

    def abort(self) -> None:
        """Shut every socket down: a thread blocked on one wakes with an error at once."""
        with self._lock:
            self.aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # closed already, or detached by TLS
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Tracked(smtplib.SMTP):
    """An SMTP client that reports its sockets (the plain one, then the TLS one)."""

    conversation: _Conversation

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.conversation.opened(sock)
        return sock

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        reply = super().starttls(*args, **kwargs)
        self.conversation.opened(self.sock)  # type: ignore[arg-type]
        return reply


class _TrackedSSL(_Tracked, smtplib.SMTP_SSL):
    pass


def _send(url: str, message: EmailMessage, conversation: _Conversation) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    client: _Tracked
    if parts.scheme == "smtps":
        client = _TrackedSSL(timeout=SMTP_TIMEOUT, context=ssl.create_default_context())
    else:
        client = _Tracked(timeout=SMTP_TIMEOUT)
    client.conversation = conversation
    with client:
        client.connect(host, parts.port or (465 if parts.scheme == "smtps" else 25))
        if parts.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


async def send_mail(mail: MailSettings, message: EmailMessage) -> None:
    """Hand `message` to the SMTP server; MailNotSent when that fails. Cancelling the call
    ends the conversation at once (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[None] = loop.create_future()
    conversation = _Conversation()

    def settle(error: BaseException | None) -> None:
        if outcome.done():  # cancelled meanwhile
            return
        if error is None:
            outcome.set_result(None)
        else:
            outcome.set_exception(error)

    def converse() -> None:
        error: BaseException | None = None
        try:
            _send(mail.smtp_url, message, conversation)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=converse, name="smtp-send", daemon=True).start()
    try:
        await outcome
    except asyncio.CancelledError:
        conversation.abort()
        raise
    except (OSError, smtplib.SMTPException, MailNotSent) as exc:
        raise MailNotSent(f"SMTP delivery failed: {type(exc).__name__}: {exc}") from None
