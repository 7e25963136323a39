"""Sending one e-mail through the SMTP server SMTP_URL names, with the standard library
(smtplib in a thread, so the worker's event loop keeps running)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from app.settings import MailSettings

SMTP_TIMEOUT = 30.0


class MailNotSent(Exception):
    """The SMTP server refused the message or could not be reached (the job retries)."""


def build_message(mail: MailSettings, to: str, subject: str, body: str, key: str) -> EmailMessage:
    """A plain-text message; `key` (the job id) goes into the Message-ID for tracing."""
    message = EmailMessage()
    message["From"] = mail.mail_from
    message["To"] = to
    message["Subject"] = subject
    domain = mail.mail_from.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(idstring=f"keel-{key}", domain=domain)
    message.set_content(body)
    return message


def _send(url: str, message: EmailMessage) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parts.port or 465, timeout=SMTP_TIMEOUT, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=SMTP_TIMEOUT)
    with client:
        if parts.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


async def send_mail(mail: MailSettings, message: EmailMessage) -> None:
    """Hand `message` to the SMTP server; MailNotSent when that fails."""
    try:
        await asyncio.to_thread(_send, mail.smtp_url, message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailNotSent(f"SMTP delivery failed: {type(exc).__name__}: {exc}") from None
