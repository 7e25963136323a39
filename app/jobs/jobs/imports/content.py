"""Importing pages and posts: each row saved as an editor's save would be (the rules of
`app.content.services.entries`, sanitized HTML, a first revision, tags, an audit entry), then
published, scheduled or archived as its status says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role
from app.accounts.services.audit import Actor
from app.content.models import Status
from app.content.services.entries import (
    EntryInput,
    SlugTaken,
    archive_entry,
    check_entry,
    entry_input,
    publish_entry,
    save_entry,
    taken_slugs,
)
from app.content.services.public import now
from app.core.times import InvalidTime, parse_local_time
from app.jobs.jobs.imports.common import Importer, reason
from app.jobs.jobs.imports.csvfile import Columns, Row

COLUMNS = Columns(
    allowed=(
        "kind",
        "title",
        "slug",
        "body",
        "excerpt",
        "meta_description",
        "tags",
        "status",
        "publish_at",
        "nav_order",
    ),
    required=("kind", "title"),
    shown=("kind", "title", "slug", "status", "publish_at"),
)
STATUSES = tuple(status.value for status in Status)


@dataclass
class NewEntry:
    row: Row
    data: EntryInput
    status: str
    publish_at: datetime | None


class ContentImporter(Importer[NewEntry]):
    columns = COLUMNS

    def check(self, row: Row, role: Role) -> NewEntry:
        values = row.values
        wanted, problem = entry_input(values, values.get("kind", "").strip().lower(), "body")
        if problem is not None:
            row.reasons.append(reason(problem))
        data, problems = check_entry(wanted)
        row.reasons += [reason(problem) for problem in problems]
        status = values.get("status", "").strip().lower() or Status.draft.value
        if status not in STATUSES:
            row.reasons.append(f"status: Choose one of {', '.join(STATUSES)}.")
        publish_at = self._publish_at(row, status)
        return NewEntry(row, data, status, publish_at)

    def _publish_at(self, row: Row, status: str) -> datetime | None:
        text = row.values.get("publish_at", "").strip()
        moment = None
        if text:
            try:  # as the editor's form reads it: without an offset, in the site's zone
                moment = parse_local_time(text, "publish_at", self.zone)
            except InvalidTime as problem:
                row.reasons.append(reason(problem))
                return None
        if status == Status.scheduled.value and moment is None:
            row.reasons.append("publish_at: A scheduled row needs its publish time.")
        elif status == Status.scheduled.value and moment is not None and moment <= now():
            row.reasons.append("publish_at: A scheduled time must be in the future.")
        elif status == Status.published.value and moment is not None and moment > now():
            row.reasons.append("publish_at: This time is in the future; use status scheduled.")
        elif moment is not None and status not in (Status.published, Status.scheduled):
            row.reasons.append("publish_at: Only published and scheduled rows have one.")
        return moment

    def key(self, item: NewEntry) -> tuple[str, str]:
        given = item.row.values.get("slug", "").strip() or item.row.values.get("title", "").strip()
        return (f"{item.data.kind} address", item.data.slug if given else "")

    async def conflicts(self, session: AsyncSession, items: list[NewEntry]) -> None:
        for kind in {item.data.kind for item in items}:
            same_kind = [item for item in items if item.data.kind == kind]
            taken = await taken_slugs(session, kind, [item.data.slug for item in same_kind])
            for item in same_kind:
                if item.data.slug in taken:
                    item.row.reasons.append(f"slug: {SlugTaken(kind).message}")

    async def write(
        self,
        session: AsyncSession,
        actor: Actor,
        role: Role,
        items: list[NewEntry],
        context: dict[str, str],
    ) -> None:
        for item in items:
            entry = await save_entry(session, actor, item.data)
            if item.status in (Status.published, Status.scheduled):
                await publish_entry(session, actor, entry, item.publish_at)
            elif item.status == Status.archived:
                await archive_entry(session, actor, entry)
