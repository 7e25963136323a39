"""Passwords: changing them, and one-time reset links."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.password_hashing import (
    PasswordHashing,
    PasswordRuleError,
    check_password_rules,
)
from app.accounts.services.throttle import Throttled
from app.accounts.services.users import (
    AccountConflict,
    AccountForbidden,
    AccountNotFound,
    InvalidAccount,
    can_manage,
    find_by_login,
)
from app.core.queueing import enqueue, enqueue_many
from app.core.store import Store


async def change_password(
    session: AsyncSession,
    hashing: PasswordHashing,
    actor: Actor,
    user: User,
    current: str,
    new: str,
) -> User:
    """The user's own change: needs the current password; ends their other sessions."""
    if not await hashing.verify(user.password_hash, current[:1024]):
        raise InvalidAccount("The current password is not right.", "current_password")
    return await set_password(session, hashing, actor, user, new)


def check_new_password(user: User, new: str) -> None:
    """InvalidAccount (beside `new_password`) when `new` breaks a password rule for `user`."""
    try:
        check_password_rules(new, username=user.username, email=user.email)
    except PasswordRuleError as exc:
        raise InvalidAccount(str(exc), "new_password") from None


async def set_password(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, user: User, new: str
) -> User:
    check_new_password(user, new)
    return _password_set(session, actor, user, await hashing.hash(new))


def _password_set(session: AsyncSession, actor: Actor, user: User, password_hash: str) -> User:
    """Store a checked password's hash; every session and token of `user` ends."""
    user.password_hash = password_hash
    user.password_changed_at = datetime.now(UTC)
    user.auth_version += 1
    user.failed_login_count = 0
    user.locked_until = None
    record(session, actor, "user.password_changed", "user", user.id)
    return user


RESET_LINK_KEY = "password-reset:"
RESET_LINK_SECONDS = 3600


class PasswordResetInvalid(AccountNotFound):
    """A reset link that is unknown, expired, used, or no longer matches its account."""

    def __init__(self) -> None:
        super().__init__("This link has expired or was already used.")


def _reset_key(token: str) -> str:
    return RESET_LINK_KEY + hashlib.sha256(token.encode()).hexdigest()


async def create_password_reset(
    session: AsyncSession,
    store: Store,
    actor: Actor,
    actor_role: Role,
    user: User,
    ttl: int = RESET_LINK_SECONDS,
) -> str:
    """A one-time link token for `user` (valid `ttl` seconds, an hour by default); only its
    hash is stored."""
    if actor.user_id != user.id and not can_manage(actor_role, user.role_level):
        raise AccountForbidden("You cannot reset this account's password.")
    if not user.is_active:
        raise AccountConflict("This account is deactivated; reactivate it first.")
    token = secrets.token_urlsafe(32)
    ticket = {"user_id": str(user.id), "auth_version": user.auth_version}
    await store.set(_reset_key(token), json.dumps(ticket), ttl=ttl)
    record(session, actor, "user.password_reset_link_created", "user", user.id, expires_in=ttl)
    return token


def reset_link(base_url: str, token: str) -> str:
    """The absolute address of a one-time link on the site at `base_url` (the `/reset/`
    page, `app.accounts.pages.reset`)."""
    return f"{base_url.rstrip('/')}/reset/{token}"


SETUP_LINK_SECONDS = 3 * 24 * 3600
"""How long the "set your password" link of an imported account works."""
SETUP_MAIL_SUBJECT = "Set your password"


async def send_password_setup(
    session: AsyncSession,
    store: Store,
    actor: Actor,
    actor_role: Role,
    users: Sequence[User],
    base_url: str,
) -> list[int]:
    """E-mail each (new, active) account a one-time link to set its first password, valid
    SETUP_LINK_SECONDS: one `notify` job each, enqueued in the caller's transaction, so the
    mail goes exactly when the accounts commit. Returns the job ids."""
    payloads = []
    for user in users:
        token = await create_password_reset(
            session, store, actor, actor_role, user, ttl=SETUP_LINK_SECONDS
        )
        body = (
            f"{actor.name} created an account for you: {user.username} ({user.email}).\n\n"
            f"Choose its password here within three days (the link works once):\n"
            f"{reset_link(base_url, token)}\n\n"
            "If you did not expect this, ignore this message: nobody can sign in to the "
            "account until a password is set.\n"
        )
        payloads.append(
            {
                "user_id": str(user.id),
                "subject": SETUP_MAIL_SUBJECT,
                "body": body,
                "kind": "password_setup",
            }
        )
    return await enqueue_many(session, "notify", payloads)


async def find_password_reset(session: AsyncSession, store: Store, token: str) -> User:
    """The account a reset link is for, without using the link up; else PasswordResetInvalid.

    A link also dies when its account's `auth_version` moved on (a new password, a
    deactivation) after it was made.
    """
    raw = await store.get(_reset_key(token)) if 0 < len(token) <= 128 else None
    if raw is None:
        raise PasswordResetInvalid()
    ticket = json.loads(raw)
    user = await session.get(User, UUID(ticket["user_id"]))
    if user is None or not user.is_active or user.auth_version != ticket["auth_version"]:
        raise PasswordResetInvalid()
    return user


async def consume_password_reset(
    session: AsyncSession,
    store: Store,
    hashing: PasswordHashing,
    actor: Actor,
    token: str,
    new_password: str,
) -> User:
    """Set the password a reset link allows, once: the link is deleted and old sessions end.

    A password that breaks the rules leaves the link usable; of two racing uses, only the
    one that deletes the key wins (the other raises PasswordResetInvalid, having changed
    nothing).
    """
    user = await find_password_reset(session, store, token)
    check_new_password(user, new_password)
    password_hash = await hashing.hash(new_password)
    if await store.delete(_reset_key(token)) == 0:
        raise PasswordResetInvalid()
    actor = Actor(user.id, user.username, actor.ip_address, actor.user_agent)
    _password_set(session, actor, user, password_hash)
    record(session, actor, "user.password_reset", "user", user.id, via="link")
    return user


FORGOT_KEY = "forgot-password:"
FORGOT_WINDOW_SECONDS = 3600
FORGOT_MAX_PER_ADDRESS = 3
"""Reset e-mails one address gets per window; more requests are answered alike but send nothing."""
FORGOT_MAX_PER_IP = 20
"""Requests one client address may make per window before it gets 429."""
RESET_MAIL_SUBJECT = "Reset your password"


def reset_mail_body(username: str, link: str) -> str:
    return (
        f"Someone, hopefully you, asked to reset the password of the account {username}.\n\n"
        f"Set a new password here within one hour (the link works once):\n{link}\n\n"
        "If you did not ask for this, ignore this message: your password stays as it is.\n"
    )


async def request_password_reset(
    session: AsyncSession,
    store: Store,
    actor: Actor,
    email: str,
    link_for: Callable[[str], str],
) -> int | None:
    """Self-service "forgot password": for an active account with this address, a one-time
    link (one hour) e-mailed by a `notify` job enqueued in the caller's transaction.

    Returns the job id, or None when nothing is sent (unknown or deactivated address, or
    that address already got FORGOT_MAX_PER_ADDRESS links this hour); the page answers the
    same either way. Throttled when the client address asked too often.
    """
    if actor.ip_address:
        requests = await store.incr(f"{FORGOT_KEY}ip:{actor.ip_address}", ttl=FORGOT_WINDOW_SECONDS)
        if requests > FORGOT_MAX_PER_IP:
            raise Throttled(
                FORGOT_WINDOW_SECONDS, "Too many requests from your address. Try later."
            )
    email = email.strip().lower()
    plausible = "@" in email and "\x00" not in email and len(email) <= 320
    user = await find_by_login(session, email) if plausible else None
    if user is None or not user.is_active:
        record(session, actor, "user.password_reset_requested", "user", None, found=False)
        return None
    digest = hashlib.sha256(email.encode()).hexdigest()
    sent = await store.incr(f"{FORGOT_KEY}address:{digest}", ttl=FORGOT_WINDOW_SECONDS)
    if sent > FORGOT_MAX_PER_ADDRESS:
        record(session, actor, "user.password_reset_requested", "user", user.id, throttled=True)
        return None
    actor = Actor(user.id, user.username, actor.ip_address, actor.user_agent)
    token = await create_password_reset(session, store, actor, user.role_level, user)
    job_id = await enqueue(
        session,
        "notify",
        {
            "user_id": str(user.id),
            "subject": RESET_MAIL_SUBJECT,
            "body": reset_mail_body(user.username, link_for(token)),
            "kind": "password_reset",
        },
    )
    record(session, actor, "user.password_reset_requested", "user", user.id, job_id=job_id)
    return job_id
