"""`/admin/audit`: the audit log for admins, filtered, paged, and exported as CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Stream

from app.accounts.guards import roles
from app.accounts.models import AuditEntry
from app.accounts.services.audit import (
    AuditFilterError,
    AuditFilters,
    audit_actions,
    iter_audit,
    list_audit,
)
from app.accounts.services.audit_view import readable_audit
from app.core.db import DbSession
from app.core.errors import field_errors
from app.core.pagination import PageNumber, PageRequest
from app.core.runtime import AppRuntime
from app.core.templating import render_list
from app.core.times import InvalidTime
from app.core.zones import zone_of

PER_PAGE = 50
CSV_COLUMNS = (
    "created_at",
    "actor",
    "user_id",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "details",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_CHUNK = 64 * 1024


def filter_params(
    user: FromQuery[str | None] = None,
    action: FromQuery[str | None] = None,
    resource_type: FromQuery[str | None] = None,
    resource_id: FromQuery[str | None] = None,
    date_from: Annotated[str | None, QueryParameter(name="from")] = None,
    date_to: Annotated[str | None, QueryParameter(name="to")] = None,
) -> dict[str, str]:
    """The filter form's values as the URL carries them (empty ones left out)."""
    values = {
        "user": user,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "from": date_from,
        "to": date_to,
    }
    return {name: value.strip() for name, value in values.items() if value and value.strip()}


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv_row(entry: AuditEntry) -> list[str]:
    details = json.dumps(entry.details, sort_keys=True) if entry.details else ""
    values = (
        entry.created_at.isoformat(),
        entry.actor,
        entry.user_id,
        entry.action,
        entry.resource_type,
        entry.resource_id,
        entry.ip_address,
        entry.user_agent,
        details,
    )
    return [_cell(value) for value in values]


async def _csv(entries: AsyncIterator[AuditEntry]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for entry in entries:
        writer.writerow(_csv_row(entry))
        if buffer.tell() >= CSV_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


class AuditAdminController(Controller):
    path = "/audit"
    guards = [roles.admin]
    include_in_schema = False
    dependencies = {"params": Provide(filter_params, sync_to_thread=False)}

    @get("/", name="admin:audit")
    async def audit_log(
        self,
        request: HTMXRequest,
        db_session: DbSession,
        params: NamedDependency[dict[str, str]],
        page: FromQuery[PageNumber] = 1,
    ) -> Response[str]:
        """Newest first, 50 a page; htmx swaps only the results when the filters change."""
        errors: dict[str, str] = {}
        entries = None
        try:
            filters = AuditFilters.from_form(params, zone_of(request.state))
        except (AuditFilterError, InvalidTime) as exc:
            errors.update(field_errors(exc))
        else:
            entries = await list_audit(
                db_session, filters, PageRequest.of(page, PER_PAGE, default=PER_PAGE)
            )
        context = {
            "params": params,
            "form": params,
            "errors": errors,
            "entries": entries,
            "rows": await readable_audit(db_session, entries.items) if entries else [],
            "actions": await audit_actions(db_session),
        }
        return render_list(
            request,
            "accounts/audit.html",
            context,
            params=params,
            page=entries.page if entries else None,
            invalid=bool(errors),
        )

    @get("/export", name="admin:audit_export")
    async def export(
        self, request: HTMXRequest, runtime: AppRuntime, params: NamedDependency[dict[str, str]]
    ) -> Stream:
        """Every matching entry (up to 100,000) as a CSV download, newest first."""
        # a bad filter is a 400 before any row
        filters = AuditFilters.from_form(params, zone_of(request.state))
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return Stream(
            _csv(iter_audit(runtime.sessionmaker, filters)),
            media_type="text/csv",  # Litestar adds "; charset=utf-8" to text types
            headers={
                "Content-Disposition": f'attachment; filename="keel-audit-{stamp}.csv"',
                "Cache-Control": "no-store",
            },
        )
