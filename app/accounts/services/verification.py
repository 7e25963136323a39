"""Address verification: a one-time link (valid a day) e-mailed by a `notify` job to a
self-registered user, and again whenever a user changes their address."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import AuditEntry, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.throttle import Throttled
from app.accounts.services.users import AccountConflict, AccountNotFound
from app.core.queueing import enqueue
from app.core.store import Store

VERIFY_KEY = "email-verify:"
VERIFY_SECONDS = 24 * 3600
VERIFY_MAIL_SUBJECT = "Confirm your e-mail address"
RESEND_KEY = "email-verify-resent:"
RESEND_MAX = 3
"""Links a user may ask for again per RESEND_WINDOW_SECONDS (each is an e-mail Keel sends)."""
RESEND_WINDOW_SECONDS = 3600


class VerificationInvalid(AccountNotFound):
    """A verification link that is unknown, expired, used, or for an address since changed."""

    def __init__(self) -> None:
        super().__init__("This link has expired or was already used.")


def _key(token: str) -> str:
    return VERIFY_KEY + hashlib.sha256(token.encode()).hexdigest()


async def send_address_verification(
    session: AsyncSession,
    store: Store,
    actor: Actor,
    user: User,
    link_for: Callable[[str], str],
    *,
    asked_again: bool = False,
) -> int:
    """Store a one-time token for the user's current address (only its hash is kept) and
    enqueue the e-mail with its link in the caller's transaction; returns the job id.
    `asked_again`: the user's own "send the link again", at most RESEND_MAX an hour per
    account (Throttled beyond), AccountConflict when the address is confirmed already."""
    if asked_again:
        await _may_ask_again(store, user)
    token = secrets.token_urlsafe(32)
    ticket = {"user_id": str(user.id), "email": user.email}
    await store.set(_key(token), json.dumps(ticket), ttl=VERIFY_SECONDS)
    body = (
        f"Confirm that {user.email} is the address of the account {user.username}:\n"
        f"{link_for(token)}\n\nThe link works once, for 24 hours. If you did not sign up, "
        "ignore this message.\n"
    )
    job_id = await enqueue(
        session,
        "notify",
        {"to": user.email, "subject": VERIFY_MAIL_SUBJECT, "body": body, "kind": "verify_email"},
    )
    record(
        session,
        actor,
        "user.email_verification_sent",
        "user",
        user.id,
        job_id=job_id,
        email=user.email,
    )
    return job_id


async def _may_ask_again(store: Store, user: User) -> None:
    if user.email_verified_at is not None:
        raise AccountConflict("This address is confirmed already.")
    asked = await store.incr(f"{RESEND_KEY}{user.id}", ttl=RESEND_WINDOW_SECONDS)
    if asked > RESEND_MAX:
        raise Throttled(
            RESEND_WINDOW_SECONDS,
            f"You asked for {RESEND_MAX} links this hour already. Check your inbox and spam "
            "folder, or try again in an hour.",
        )


async def verification_sent_at(session: AsyncSession, user: User) -> datetime | None:
    """When a link for the user's current address was last e-mailed (the audit log says),
    or None: an account made by an admin or at setup was never sent one."""
    query = (
        select(AuditEntry.created_at, AuditEntry.details)
        .where(
            AuditEntry.action == "user.email_verification_sent",
            AuditEntry.resource_type == "user",
            AuditEntry.resource_id == str(user.id),
        )
        .order_by(AuditEntry.created_at.desc())
        .limit(1)
    )
    last = (await session.execute(query)).first()
    if last is None or (last.details or {}).get("email", user.email) != user.email:
        return None
    return last.created_at


async def find_verification(session: AsyncSession, store: Store, token: str) -> User:
    """The account a verification link is for, without using it; else VerificationInvalid."""
    raw = await store.get(_key(token)) if 0 < len(token) <= 128 else None
    if raw is None:
        raise VerificationInvalid()
    ticket = json.loads(raw)
    user = await session.get(User, UUID(ticket["user_id"]))
    if user is None or user.email != ticket["email"]:
        raise VerificationInvalid()
    return user


async def verify_address(session: AsyncSession, store: Store, actor: Actor, token: str) -> User:
    """Mark the address verified and use the link up (of two racing uses, one wins)."""
    user = await find_verification(session, store, token)
    if await store.delete(_key(token)) == 0:
        raise VerificationInvalid()
    user.email_verified_at = datetime.now(UTC)
    actor = Actor(user.id, user.username, actor.ip_address, actor.user_agent)
    record(session, actor, "user.email_verified", "user", user.id, email=user.email)
    return user
