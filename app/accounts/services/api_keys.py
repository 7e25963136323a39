"""API keys: created by an admin, shown once, stored only as a hash, revocable.

A key acts with its own role, never above its creator's (IdentityMiddleware takes the
lower of the two on every request), and stops working when its creator is deactivated.
The admin page and the JSON API both call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ApiKey, Role, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.tokens import new_api_key
from app.accounts.services.users import check_role
from app.core.errors import DomainError, Forbidden, InvalidField, NotFound
from app.core.pagination import Page, PageRequest, paginate
from app.core.times import utc_time

NAME_MAX_LENGTH = 120


class ApiKeyError(DomainError):
    """A rule about API keys said no: one of the kinds below."""


class InvalidApiKey(ApiKeyError, InvalidField):
    """A field of a new key breaks a rule."""


class ApiKeyNotFound(ApiKeyError, NotFound):
    """No such API key."""


class ApiKeyForbidden(ApiKeyError, Forbidden):
    """The caller may not make this key."""


@dataclass(frozen=True)
class ListedApiKey:
    """A key as lists show it: the row plus its creator's username (None once deleted)."""

    key: ApiKey
    created_by: str | None
    status: str


def key_status(key: ApiKey, now: datetime | None = None) -> str:
    """`active`, `expired` or `revoked`."""
    now = now or datetime.now(UTC)
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def acting_role(key: ApiKey, creator: User | None, now: datetime | None = None) -> Role | None:
    """The role `key` acts with now: its own, never above its creator's; None when the key
    is revoked or expired, or its creator is deleted or deactivated."""
    if key_status(key, now) != "active" or creator is None or not creator.is_active:
        return None
    return min(Role[key.role], creator.role_level)


def acting_name(key: ApiKey) -> str:
    """How a key is named where a person's username would be (audit log, lists)."""
    return f"api-key:{key.name}"


def _clean_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise InvalidApiKey(f"Give the key a name of 1-{NAME_MAX_LENGTH} characters.", "name")
    return name


def _clean_role(role: str, creator_role: Role) -> Role:
    parsed, problem = check_role(role.strip())
    if problem is not None:
        raise InvalidApiKey(problem.message, "role")
    if parsed > creator_role:
        raise ApiKeyForbidden("A key cannot have a higher role than yours.", "role")
    return parsed


def _clean_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    expires_at = utc_time(expires_at, "expires_at")  # a time without a zone is UTC
    if expires_at <= now:
        raise InvalidApiKey("The expiry must be in the future.", "expires_at")
    return expires_at


async def create_api_key(
    session: AsyncSession,
    actor: Actor,
    actor_role: Role,
    creator_id: UUID | None,
    name: str,
    role: str,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A new key and its secret; the secret is returned here once and never stored."""
    if creator_id is None:
        raise ApiKeyForbidden("API keys are created by a person: sign in or use an access token.")
    now = datetime.now(UTC)
    clean_name = _clean_name(name)
    clean_role = _clean_role(role, actor_role)
    clean_expiry = _clean_expiry(expires_at, now)
    secret, prefix, key_hash = new_api_key()
    key = ApiKey(
        name=clean_name,
        prefix=prefix,
        key_hash=key_hash,
        role=clean_role.name,
        created_by_id=creator_id,
        expires_at=clean_expiry,
    )
    session.add(key)
    await session.flush()
    record(
        session,
        actor,
        "api_key.created",
        "api_key",
        key.id,
        name=key.name,
        prefix=key.prefix,
        role=key.role,
        expires_at=clean_expiry.isoformat() if clean_expiry else None,
    )
    return key, secret


async def list_api_keys(
    session: AsyncSession, include_revoked: bool, page: PageRequest
) -> Page[ListedApiKey]:
    """Keys, newest first; revoked ones only when asked for."""
    conditions = [] if include_revoked else [ApiKey.revoked_at.is_(None)]
    statement = (
        select(ApiKey, User.username)
        .outerjoin(User, User.id == ApiKey.created_by_id)
        .where(*conditions)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    found = await paginate(session, statement, page, rows=True)
    now = datetime.now(UTC)
    return found.map(lambda row: ListedApiKey(row[0], row[1], key_status(row[0], now)))


async def get_api_key(session: AsyncSession, key_id: UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyNotFound("No such API key.")
    return key


async def revoke_api_key(session: AsyncSession, actor: Actor, key_id: UUID) -> ApiKey:
    """Revoke a key at once; revoking a revoked key changes nothing."""
    key = await get_api_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        record(
            session, actor, "api_key.revoked", "api_key", key.id, name=key.name, prefix=key.prefix
        )
    return key
