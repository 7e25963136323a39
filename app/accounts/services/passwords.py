"""Passwords: changing them, and one-time reset links."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.audit import Actor, record
from app.accounts.models import Role, User
from app.accounts.passwords import PasswordHashing, PasswordRuleError, check_password_rules
from app.accounts.services.users import AccountError, can_manage
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
        raise AccountError("The current password is not right.", "current_password")
    return await set_password(session, hashing, actor, user, new)


async def set_password(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, user: User, new: str
) -> User:
    try:
        check_password_rules(new, username=user.username, email=user.email)
    except PasswordRuleError as exc:
        raise AccountError(str(exc), "new_password") from None
    user.password_hash = await hashing.hash(new)
    user.password_changed_at = datetime.now(UTC)
    user.auth_version += 1
    user.failed_login_count = 0
    user.locked_until = None
    record(session, actor, "user.password_changed", "user", user.id)
    return user


RESET_LINK_KEY = "password-reset:"
RESET_LINK_SECONDS = 3600


class PasswordResetInvalid(AccountError):
    """A reset link that is unknown, expired, used, or no longer matches its account."""

    def __init__(self) -> None:
        super().__init__("This link has expired or was already used.", None, 404)


def _reset_key(token: str) -> str:
    return RESET_LINK_KEY + hashlib.sha256(token.encode()).hexdigest()


async def create_password_reset(
    session: AsyncSession, store: Store, actor: Actor, actor_role: Role, user: User
) -> str:
    """A one-time link token for `user` (valid one hour); only its hash is stored."""
    if actor.user_id != user.id and not can_manage(actor_role, user.role_level):
        raise AccountError("You cannot reset this account's password.", None, 403)
    if not user.is_active:
        raise AccountError("This account is deactivated; reactivate it first.", None, 409)
    token = secrets.token_urlsafe(32)
    ticket = {"user_id": str(user.id), "auth_version": user.auth_version}
    await store.set(_reset_key(token), json.dumps(ticket), ttl=RESET_LINK_SECONDS)
    record(
        session,
        actor,
        "user.password_reset_link_created",
        "user",
        user.id,
        expires_in=RESET_LINK_SECONDS,
    )
    return token


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
    one that deletes the key wins (the other raises, rolling its transaction back).
    """
    user = await find_password_reset(session, store, token)
    actor = Actor(user.id, user.username, actor.ip_address, actor.user_agent)
    await set_password(session, hashing, actor, user, new_password)
    if await store.delete(_reset_key(token)) == 0:
        raise PasswordResetInvalid()
    record(session, actor, "user.password_reset", "user", user.id, via="link")
    return user
