"""`/api/v1/audit`: the audit log for admin API clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, Parameter

from app.accounts.guards import roles
from app.accounts.services.audit import AuditFilters, list_audit
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, Selected, selected_each
from app.core.pagination import PageNumber, PageRequest, PerPage
from app.core.times import parse_time

DEFAULT_PER_PAGE = 50
IsoTime = Annotated[str | None, Parameter(schema_extra={"format": "date-time"})]
"""A time in ISO 8601. Taken as text and parsed here: Litestar's own conversion to a
datetime also takes a number as Unix seconds (`until=0.5`), which the document denies."""


def _moment(text: str | None, name: str) -> datetime | None:
    return None if text is None else parse_time(text, name)  # an empty value is no time either


class AuditEntryOut(msgspec.Struct):
    id: UUID
    created_at: datetime
    user_id: UUID | None
    actor: str
    action: str
    resource_type: str | None
    resource_id: str | None
    details: dict[str, Any] | None
    ip_address: str | None
    user_agent: str | None


class AuditPageOut(msgspec.Struct):
    """One page of audit entries (`Page.envelope`)."""

    items: list[AuditEntryOut]
    total: int
    page: int
    per_page: int


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    guards = [roles.admin]

    @get("/", name="api:audit")
    async def list_entries(
        self,
        db_session: DbSession,
        user_id: FromQuery[UUID | None] = None,
        action: FromQuery[str | None] = None,
        resource_type: FromQuery[str | None] = None,
        resource_id: FromQuery[str | None] = None,
        since: IsoTime = None,
        until: IsoTime = None,
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = DEFAULT_PER_PAGE,
        fields: FieldNames = None,
    ) -> AuditPageOut | Selected:
        """Audit entries, newest first. `since` is inclusive, `until` exclusive (ISO 8601,
        UTC when no offset is given); `per_page` is at most 100; `fields` picks the fields
        of each entry (`fields=created_at,actor,action`)."""
        chosen = Fields.parse(fields, AuditEntryOut)
        filters = AuditFilters(
            user=str(user_id) if user_id else None,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            since=_moment(since, "since"),
            until=_moment(until, "until"),
        )
        entries = await list_audit(
            db_session, filters, PageRequest.of(page, per_page, default=DEFAULT_PER_PAGE)
        )
        items = msgspec.convert(entries.items, list[AuditEntryOut], from_attributes=True)
        if chosen is not None:
            return entries.envelope(selected_each(items, chosen))
        return AuditPageOut(items, entries.total, entries.page, entries.per_page)
