"""The `report` job: site statistics over the last `days` days, as HTML and as CSV.

Counts users by role and entries by kind and status (as they are now), jobs created in
the period by status, and audit actions per day of the period. Both files expire after
EXPORT_RETENTION_HOURS like exports.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from markupsafe import escape
from sqlalchemy import func, select

from app.accounts.models import AuditEntry, Role, User
from app.content.models import Entry
from app.jobs.models import Job
from app.jobs.services.registry import JobContext, job_handler


class ReportPayload(msgspec.Struct, forbid_unknown_fields=True):
    days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


Figures = list[tuple[str, str, int]]
"""Rows of (section, key, count)."""


@job_handler("report", timeout=1800, payload=ReportPayload, role=Role.editor, expiring_files=True)
async def run_report(ctx: JobContext[ReportPayload]) -> dict[str, Any]:
    """A statistics report (users, entries, jobs, audit activity) as HTML and CSV."""
    end = datetime.now(UTC)
    start = end - timedelta(days=ctx.payload.days)
    figures: Figures = []
    async with ctx.sessionmaker() as session:
        for section, columns, conditions in (
            ("users_by_role", (User.role,), ()),
            ("entries_by_kind_status", (Entry.kind, Entry.status), ()),
            ("jobs_by_status", (Job.status,), (Job.created_at >= start,)),
        ):
            rows = await session.execute(
                select(*columns, func.count()).where(*conditions).group_by(*columns)
            )
            figures.extend((section, "/".join(row[:-1]), row[-1]) for row in rows)
    # Progress is written through a session of its own: never while this one holds a
    # connection of the same pool.
    await ctx.progress(50, "counts done")
    per_day: Counter[tuple[str, str]] = Counter()
    async with ctx.sessionmaker() as session:
        stream = await session.stream(
            select(AuditEntry.created_at, AuditEntry.action)
            .where(AuditEntry.created_at >= start)
            .execution_options(yield_per=1000)
        )
        async for created_at, action in stream:
            per_day[(created_at.astimezone(UTC).date().isoformat(), action)] += 1
    figures.sort()
    figures.extend(
        ("audit_actions_per_day", f"{day}/{action}", count)
        for (day, action), count in sorted(per_day.items())
    )
    await ctx.progress(90, "writing files")
    stem = f"report-{ctx.payload.days}d-{secrets.token_hex(8)}"
    ctx.attach(f"{stem}.html", to_html(figures, start, end), "text/html; charset=utf-8")
    ctx.attach(f"{stem}.csv", to_csv(figures), "text/csv; charset=utf-8")
    await ctx.progress(100, "report written")
    totals: dict[str, dict[str, int]] = {}
    for section, key, count in figures:
        totals.setdefault(section, {})[key] = count
    return {"days": ctx.payload.days, "since": start.isoformat(), "figures": totals}


def to_csv(figures: Figures) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("section", "key", "count"))
    writer.writerows(figures)
    return out.getvalue()


def to_html(figures: Figures, start: datetime, end: datetime) -> str:
    """A self-contained page (no Keel layout: it is read after download)."""
    period = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Keel report {escape(period)}</title></head><body>",
        f"<h1>Keel report</h1><p>{escape(period)}</p>",
    ]
    section = None
    for name, key, count in figures:
        if name != section:
            if section is not None:
                parts.append("</tbody></table>")
            section = name
            parts.append(f"<h2>{escape(name.replace('_', ' '))}</h2><table><tbody>")
        parts.append(f"<tr><th>{escape(key)}</th><td>{count}</td></tr>")
    if section is not None:
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
