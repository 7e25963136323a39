"""What the admin dashboard shows: the system page's alerts and health (`system_report`),
and the figures of the domains (accounts, content, jobs) read through their services.

Each panel is read on its own. One that cannot be read (the database or the store not
answering, the requests' pool exhausted) is None and shows as unavailable; the page
itself never fails for it. Once the database has failed, the panels after it are not
tried again, so a page over a database that is down answers within one timeout."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import AuditEntry
from app.accounts.services.audit import NEWEST_FIRST
from app.accounts.services.stats import UserCounts, user_counts, usernames
from app.analytics.services.charts import dashboard_charts
from app.analytics.services.series import ERROR_RATE_ALERT, P95_ALERT_MS, Summary, recent_summary
from app.content.services.stats import (
    ContentCounts,
    ListedEntry,
    content_counts,
    entry_titles,
    most_viewed,
    scheduled_next,
)
from app.core.charts import Chart
from app.core.clock import current_clock
from app.core.db import is_unavailable
from app.core.runtime import Runtime
from app.jobs.services.jobs import QueueFigures
from app.jobs.services.stats import JobCounts, job_counts
from app.system.services.system import SystemReport, system_report

T = TypeVar("T")

LIST_LENGTH = 5
"""Entries in each of the dashboard's short lists (scheduled next, most read)."""
AUDIT_LENGTH = 8
"""Recent changes shown (admins only, as the audit log is)."""


@dataclass(frozen=True)
class Change:
    """One audit entry as a sentence: who did what to which thing, with links."""

    entry: AuditEntry
    what: str
    """The action in words: `published`, `password reset link created`."""
    noun: str
    """The kind of thing changed: `post`, `user`, `job`; empty when none."""
    subject: str
    """The thing by name (a title, a username, a job's type and number)."""
    link: tuple[str, dict[str, Any]] | None
    """The route (and its parameters) of the thing's admin page, while it exists."""


@dataclass(frozen=True)
class Traffic:
    """Requests over the last hour and the last day (rolled up by the workers)."""

    hour: Summary
    day: Summary


async def read_traffic(session: AsyncSession, now: datetime) -> Traffic:
    hour = await recent_summary(session, timedelta(hours=1), now)
    return Traffic(hour, await recent_summary(session, timedelta(days=1), now))


@dataclass(frozen=True)
class DashboardFigures:
    report: SystemReport
    """Health, alerts, queues and workers: what `/admin/system` shows."""
    users: UserCounts | None
    content: ContentCounts | None
    scheduled: list[ListedEntry] | None
    most_viewed: list[ListedEntry] | None
    jobs: JobCounts | None
    changes: list[Change] | None
    """None when unavailable, or when the caller may not read the audit log."""
    checked_at: datetime
    traffic: Traffic | None = None
    charts: dict[str, Chart] | None = None
    """The last day's request, latency and job charts: read for the whole page only, not
    for the figures' 15-second refresh."""

    @property
    def alerts(self) -> list[str]:
        """The seed's alert thresholds that are crossed now: pool exhausted, disk over
        80 %, store not answering, a missing migration, and over the last hour p95 latency
        above 2,000 ms or an error rate above 5 %."""
        alerts = list(self.report.warnings)
        hour = self.traffic.hour if self.traffic else None
        if hour is not None and hour.slow:
            alerts.append(
                f"Requests are slow: p95 latency over the last hour is {hour.p95_ms:,.0f} ms "
                f"(the limit is {P95_ALERT_MS:,.0f} ms)."
            )
        if hour is not None and hour.failing and hour.error_rate is not None:
            alerts.append(
                f"Requests are failing: {hour.error_rate:.1%} of the last hour's requests "
                f"were server errors (the limit is {ERROR_RATE_ALERT:.0%})."
            )
        return alerts

    @property
    def queues(self) -> list[QueueFigures] | None:
        return self.report.queues

    @property
    def workers(self) -> list[dict[str, Any]] | None:
        """The live workers, or None when the store (where they report) is not answering."""
        return self.report.workers if self.report.store.ok else None

    @property
    def oldest_wait_seconds(self) -> float | None:
        waits = [q.oldest_wait_seconds for q in self.queues or () if q.oldest_wait_seconds]
        return max(waits) if waits else None


_VERBS = {
    "enqueue": "queued",
    "cancel": "cancelled",
    "retry": "retried",
    "auth.login": "signed in",
    "auth.logout": "signed out",
    "auth.login_failed": "failed to sign in",
    "auth.login_throttled": "was held back signing in",
    "auth.signed_out_everywhere": "signed out everywhere",
    "auth.session_revoked": "ended a session",
}
"""Actions said otherwise than their last word (by that word, or by the whole action)."""
_NOUNS = {"api_key": "API key", "media": "file"}
_ENTRY_KINDS = ("post", "page")


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value or "")
    except ValueError:
        return None


def describe_change(entry: AuditEntry, names: Mapping[UUID, str]) -> Change:
    """An audit entry in words. `names`: the current titles and usernames of the entries
    and accounts changed (the ones that still exist, which are linked)."""
    action = entry.action.rsplit(".", 1)[-1]
    kind = entry.resource_type or ""
    details = entry.details or {}
    resource = _uuid(entry.resource_id)
    current = names.get(resource) if resource else None
    link: tuple[str, dict[str, Any]] | None = None
    if kind in _ENTRY_KINDS:
        title = current or details.get("title")
        subject = f"“{title}”" if title else "(untitled)"
        link = ("admin:content_edit", {"entry_id": resource}) if current is not None else None
    elif kind == "user":
        subject = str(current or details.get("username") or details.get("email") or "")
        link = ("admin:user_edit", {"user_id": resource}) if current is not None else None
    elif kind == "job" and (entry.resource_id or "").isdigit():
        number = int(entry.resource_id or "")
        subject = f"#{number}" + (f" ({details['type']})" if details.get("type") else "")
        link = ("admin:job", {"job_id": number})
    else:
        subject = str(details.get("title") or details.get("name") or entry.resource_id or "")
        link = {"setting": ("admin:settings", {}), "plugin": ("admin:plugins", {})}.get(kind)
    what = _VERBS.get(entry.action) or _VERBS.get(action) or action.replace("_", " ")
    noun = _NOUNS.get(kind, kind.replace("_", " "))
    if entry.action.startswith("auth.") and subject == entry.actor:
        noun = subject = ""  # "alice signed in", not "alice signed in user alice"
    return Change(entry, what, noun, subject, link)


def _span(seconds: float) -> str:
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days > 1 else ''}"


def ago(moment: datetime, now: datetime) -> str:
    """`moment` as said next to a list: `just now`, `5 min ago`, `3 h ago`, `2 days ago`."""
    seconds = (now - moment).total_seconds()
    return "just now" if seconds < 60 else f"{_span(seconds)} ago"


def until(moment: datetime, now: datetime) -> str:
    """How far off `moment` is: `in a moment`, `in 5 min`, `in 3 h`, `in 2 days`."""
    seconds = (moment - now).total_seconds()
    return "in a moment" if seconds < 60 else f"in {_span(seconds)}"


async def recent_changes(session: AsyncSession, limit: int = AUDIT_LENGTH) -> list[Change]:
    """The newest audit entries, in words, with the current names of what they changed."""
    entries = list(await session.scalars(select(AuditEntry).order_by(*NEWEST_FIRST).limit(limit)))

    def ids(*kinds: str) -> set[UUID]:
        found = {_uuid(e.resource_id) for e in entries if e.resource_type in kinds}
        return {resource for resource in found if resource is not None}

    names = {
        **await entry_titles(session, ids(*_ENTRY_KINDS)),
        **await usernames(session, ids("user")),
    }
    return [describe_change(entry, names) for entry in entries]


class _Panels:
    """Reads panels one after the other on the request's session until the database fails."""

    def __init__(self, session: AsyncSession, database_answers: bool) -> None:
        self.session = session
        self.database_answers = database_answers

    async def read(self, reader: Callable[[], Awaitable[T]]) -> T | None:
        if not self.database_answers:
            return None
        try:
            return await reader()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.database_answers = False
            with contextlib.suppress(SQLAlchemyError):
                await self.session.rollback()
            return None


async def read_dashboard(
    runtime: Runtime,
    session: AsyncSession,
    *,
    audit: bool,
    charts: bool = False,
    zone: tzinfo = UTC,
) -> DashboardFigures:
    """Every figure of the dashboard, read now; `audit`: whether to read the recent changes
    (the caller may read the audit log); `charts`: whether to draw the last day's charts."""
    report = await system_report(runtime, session)
    now = current_clock().now()
    panels = _Panels(session, report.database.ok)
    users = await panels.read(lambda: user_counts(session, now))
    content = await panels.read(lambda: content_counts(session))
    scheduled = await panels.read(lambda: scheduled_next(session, now, LIST_LENGTH))
    viewed = await panels.read(lambda: most_viewed(session, LIST_LENGTH))
    jobs = await panels.read(lambda: job_counts(session, now - timedelta(days=1)))
    changes = await panels.read(lambda: recent_changes(session)) if audit else None
    traffic = await panels.read(lambda: read_traffic(session, now))
    drawn = await panels.read(lambda: dashboard_charts(session, zone)) if charts else None
    return DashboardFigures(
        report, users, content, scheduled, viewed, jobs, changes, now, traffic, drawn
    )
