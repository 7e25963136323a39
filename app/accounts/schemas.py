"""Request and response shapes of the accounts API."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from app.accounts.models import ApiKey
from app.accounts.services.api_keys import key_status


class LoginRequest(msgspec.Struct):
    login: str = msgspec.field(name="login")
    """E-mail address or username."""
    password: str


class RefreshRequest(msgspec.Struct):
    refresh_token: str


class LogoutRequest(msgspec.Struct):
    refresh_token: str | None = None


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class UserOut(msgspec.Struct):
    id: UUID
    email: str
    username: str
    display_name: str
    role: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class MeOut(msgspec.Struct):
    id: UUID | None
    username: str
    email: str
    display_name: str
    role: str
    via: str


class ApiKeyCreate(msgspec.Struct):
    name: str
    """1-120 characters, to tell keys apart."""
    role: str = "viewer"
    """viewer, editor or admin; never above the creator's own role."""
    expires_at: datetime | None = None
    """When the key stops working (UTC when no zone is given); none means never."""


class ApiKeyOut(msgspec.Struct):
    id: UUID
    name: str
    prefix: str
    """The key's first characters, to recognise it; never the whole secret."""
    role: str
    status: str
    """`active`, `expired` or `revoked`."""
    created_by_id: UUID | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey, created_by: str | None = None) -> ApiKeyOut:
        """Not a plain copy: `status` is worked out and `created_by` comes from a join."""
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            role=key.role,
            status=key_status(key),
            created_by_id=key.created_by_id,
            created_by=created_by,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    secret: str = ""
    """The whole key. Shown in this response only: Keel keeps just its hash."""


class ApiKeyPageOut(msgspec.Struct):
    """One page of API keys (`Page.envelope`)."""

    items: list[ApiKeyOut]
    total: int
    page: int
    per_page: int


class UserPageOut(msgspec.Struct):
    """One page of users: the items plus where they sit in the whole (`Page.envelope`)."""

    items: list[UserOut]
    total: int
    page: int
    per_page: int


class UserCreate(msgspec.Struct):
    email: str
    username: str
    password: str
    role: str = "viewer"
    """viewer, editor or admin; at most the caller's own role."""
    display_name: str = ""


class UserUpdate(msgspec.Struct):
    """Only the fields given change."""

    email: str | None = None
    username: str | None = None
    display_name: str | None = None
    role: str | None = None
    is_active: bool | None = None


class PasswordResetOut(msgspec.Struct):
    reset_url: str
    """A one-time link for the user; it is shown only here, Keel keeps only its hash."""
    expires_in: int
