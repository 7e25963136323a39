"""The audit log: one `record` call per state change, in the same transaction as the change,
and the queries behind the audit page, its CSV export and the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from uuid import UUID

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import AuditEntry, User
from app.core.errors import InvalidField
from app.core.pagination import Page, PageRequest, paginate
from app.core.times import parse_day, utc_time
from app.site_settings.services import SettingDefinition, define

AUDIT_RETENTION_DAYS = define(
    SettingDefinition(
        "audit_retention_days",
        int,
        365,
        "Days audit log entries are kept before cleanup.",
        label="Keep audit entries (days)",
        minimum=1,
        maximum=3650,
    )
)

EXPORT_LIMIT = 100_000


@dataclass(frozen=True)
class Actor:
    """Who did something and from where, taken from the request (or the CLI)."""

    user_id: UUID | None
    name: str
    ip_address: str | None = None
    user_agent: str | None = None

    @classmethod
    def from_connection(cls, connection: ASGIConnection) -> Actor:
        user = connection.scope.get("user")
        return cls(
            user_id=getattr(user, "id", None),
            name=getattr(user, "username", "") or "anonymous",
            ip_address=connection.scope.get("state", {}).get("client_ip"),
            user_agent=(connection.headers.get("user-agent") or "")[:500] or None,
        )

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(user_id=None, name=name)


def provide_actor(request: Request) -> Actor:
    """The `actor` dependency of handlers (`actor: CurrentActor`): who makes this request."""
    return Actor.from_connection(request)


CurrentActor = NamedDependency[Actor]
"""A handler's `actor` parameter: the caller (or `anonymous`), their address and browser,
for the audit entries of the change (`create_app` provides it)."""


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str | None = None,
    resource_id: object | None = None,
    **details: Any,
) -> AuditEntry:
    """Add an audit entry to `session`; it commits (or rolls back) with the change itself."""
    entry = AuditEntry(
        user_id=actor.user_id,
        actor=actor.name,
        action=action,
        resource_type=resource_type,
        resource_id=None if resource_id is None else str(resource_id),
        details=details or None,
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        created_at=datetime.now(UTC),
    )
    session.add(entry)
    return entry


class AuditFilterError(InvalidField):
    """A filter of the audit log cannot be understood (a bad date, an inverted range)."""


@dataclass(frozen=True)
class AuditFilters:
    """Which entries to show. `user` is a username or a user id; `until` is exclusive."""

    user: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("user", "action", "resource_type", "resource_id"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value or "").strip()[:255] or None)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc_time(value, name))  # naive means UTC
        if self.since and self.until and self.since > self.until:
            raise AuditFilterError("The start of the time range is after its end.", "until")

    @classmethod
    def from_form(cls, params: Mapping[str, str | None], zone: tzinfo = UTC) -> AuditFilters:
        """Filters from the audit page's form: `from` and `to` are whole days in `zone` (the
        site's time zone), inclusive."""

        def day(name: str) -> date | None:
            text = (params.get(name) or "").strip()
            return parse_day(text, name) if text else None

        first, last = day("from"), day("to")
        if first and last and first > last:
            raise AuditFilterError("The start of the time range is after its end.", "to")
        return cls(
            user=params.get("user"),
            action=params.get("action"),
            resource_type=params.get("resource_type"),
            resource_id=params.get("resource_id"),
            since=datetime.combine(first, time.min, zone) if first else None,
            until=datetime.combine(last + timedelta(days=1), time.min, zone) if last else None,
        )


def _conditions(filters: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.user:
        try:
            conditions.append(AuditEntry.user_id == UUID(filters.user))
        except ValueError:
            name = filters.user.lower()
            accounts = select(User.id).where(func.lower(User.username) == name)
            conditions.append(
                or_(AuditEntry.user_id.in_(accounts), func.lower(AuditEntry.actor) == name)
            )
    if filters.action:
        conditions.append(AuditEntry.action == filters.action)
    if filters.resource_type:
        conditions.append(AuditEntry.resource_type == filters.resource_type)
    if filters.resource_id:
        conditions.append(AuditEntry.resource_id == filters.resource_id)
    if filters.since:
        conditions.append(AuditEntry.created_at >= filters.since)
    if filters.until:
        conditions.append(AuditEntry.created_at < filters.until)
    return conditions


NEWEST_FIRST = (AuditEntry.created_at.desc(), AuditEntry.id.desc())


async def list_audit(
    session: AsyncSession, filters: AuditFilters, page: PageRequest
) -> Page[AuditEntry]:
    """One page of the matching entries, newest first."""
    conditions = _conditions(filters)
    statement = select(AuditEntry).where(*conditions).order_by(*NEWEST_FIRST)
    return await paginate(session, statement, page)


async def iter_audit(
    sessionmaker: async_sessionmaker[AsyncSession],
    filters: AuditFilters,
    *,
    limit: int = EXPORT_LIMIT,
    batch_size: int = 1000,
) -> AsyncIterator[AuditEntry]:
    """Every matching entry (up to `limit`), newest first, for exports.

    Reads in keyset batches, each in its own short session, so a slow download holds no
    connection or transaction open between batches.
    """
    conditions = _conditions(filters)
    sent = 0
    last: AuditEntry | None = None
    while sent < limit:
        query = select(AuditEntry).where(*conditions)
        if last is not None:
            query = query.where(
                or_(
                    AuditEntry.created_at < last.created_at,
                    and_(AuditEntry.created_at == last.created_at, AuditEntry.id < last.id),
                )
            )
        async with sessionmaker() as session:
            batch = list(
                await session.scalars(
                    query.order_by(*NEWEST_FIRST).limit(min(batch_size, limit - sent))
                )
            )
        for entry in batch:
            yield entry
        sent += len(batch)
        if len(batch) < batch_size:
            return
        last = batch[-1]


async def audit_actions(session: AsyncSession) -> list[str]:
    """The actions the log holds, for the page's action filter."""
    return list(
        await session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action))
    )
