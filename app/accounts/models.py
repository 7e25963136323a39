"""Tables of the accounts domain: users, API keys, API sign-ins (token families, refresh
tokens, signed-out access tokens) and the audit log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import AdvancedDeclarativeBase, UUIDAuditBase, UUIDBase
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class Role(enum.IntEnum):
    """Roles in order of power; a role may do everything the roles below it may."""

    guest = 0
    viewer = 1
    editor = 2
    admin = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: use viewer, editor or admin") from None


ASSIGNABLE_ROLES = (Role.viewer, Role.editor, Role.admin)


class User(UUIDAuditBase):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.viewer.name, index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    auth_version: Mapped[int] = mapped_column(Integer, default=1)
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    """When the user proved the address is theirs (a verification link); None until then."""
    """Bumped to end every session and token of the user at once."""

    @property
    def role_level(self) -> Role:
        return Role[self.role]

    @property
    def name(self) -> str:
        return self.display_name or self.username


class ApiKey(UUIDAuditBase):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, shown in lists so people can tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class TokenFamily(UUIDBase):
    """One API sign-in (`POST /api/v1/auth/login`): its refresh tokens and every access
    token issued from them (they carry its id) live and end together."""

    __tablename__ = "token_families"

    user_id: Mapped[UUID] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    auth_version: Mapped[int] = mapped_column(Integer)
    """The user's auth_version at sign-in: once it is bumped, the family is over."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    """No token of the family outlives this; it moves on with every rotation."""
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class RefreshToken(AdvancedDeclarativeBase):
    """A refresh token, by the hash of its secret: spent once, for the next of its family."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[UUID] = mapped_column(
        GUID, ForeignKey("token_families.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    spent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    """When it was exchanged for the next one; presenting it again is a reuse."""


class RevokedAccessToken(AdvancedDeclarativeBase):
    """An access token signed out before it expired, kept until it would have."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class AuditEntry(UUIDBase):
    """One state change: who, what, on which resource, from where (seed's `audit_log`)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created_at", "created_at"),
        Index("ix_audit_log_user_id_created_at", "user_id", "created_at"),
        Index("ix_audit_log_action_created_at", "action", "created_at"),
    )

    user_id: Mapped[UUID | None] = mapped_column(GUID, ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(120), default="")
    """Who acted, kept as text so the entry survives the user's deletion."""
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str | None] = mapped_column(String(100))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonB)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
