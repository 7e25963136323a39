"""The guestbook's entries: the table, the rules for a name and a message, and every read
and change. The page and the API both call these, so each rule lives here once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from keel.plugin import (
    InvalidFields,
    NotFound,
    Page,
    PageRequest,
    PluginContext,
    Request,
    paginate,
    rate_limit,
)

NAME_MAX = 80
MESSAGE_MAX = 2000
RATE_WINDOW_SECONDS = 3600
"""The `entries_per_hour` setting counts entries per client address in this window."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e]")
"""Control, zero-width and direction-changing characters: never part of a kind message."""


def entries_table(ctx: PluginContext) -> Table:
    """The plugin's table (made by migrations/0001_entries.py)."""
    return ctx.storage.table(
        "entries",
        Column("id", Integer, primary_key=True),
        Column("name", String(NAME_MAX), nullable=False),
        Column("message", Text, nullable=False),
        Column("approved", Boolean, nullable=False, default=False, index=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


@dataclass(frozen=True)
class Entry:
    id: int
    name: str
    message: str
    approved: bool
    created_at: datetime

    @property
    def status(self) -> str:
        return "approved" if self.approved else "pending"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "message": self.message,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


# -- the rules ----------------------------------------------------------------------------


def clean_text(value: object, *, one_line: bool) -> str:
    """The text as it is kept: line ends made `\\n` (none in a one-line value), control
    characters gone, spaces at either end trimmed. Not text: empty (refused as blank)."""
    if not isinstance(value, str):
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if one_line:
        text = " ".join(text.split("\n"))
    text = _CONTROL.sub("", text.replace("\t", " "))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def name_problem(name: str) -> str | None:
    if not name:
        return "Say who you are."
    if len(name) > NAME_MAX:
        return f"At most {NAME_MAX} characters, please ({len(name)} now)."
    return None


def message_problem(message: str) -> str | None:
    if not message:
        return "Write a message."
    if len(message) > MESSAGE_MAX:
        return f"At most {MESSAGE_MAX} characters, please ({len(message)} now)."
    return None


def checked_entry(values: Mapping[str, Any]) -> tuple[str, str]:
    """The name and message of a new entry, cleaned; InvalidFields (422) with every
    field's problem at once."""
    name = clean_text(values.get("name"), one_line=True)
    message = clean_text(values.get("message"), one_line=False)
    problems = {
        field: problem
        for field, problem in (("name", name_problem(name)), ("message", message_problem(message)))
        if problem
    }
    if problems:
        raise InvalidFields(problems, status=422)
    return name, message


# -- reads and changes ----------------------------------------------------------------------


def _entry(row: Any) -> Entry:
    return Entry(row.id, row.name, row.message, bool(row.approved), row.created_at)


async def sign_guestbook(
    ctx: PluginContext, request: Request[Any, Any, Any], values: Mapping[str, Any]
) -> Entry:
    """A visitor's new entry: checked, counted against the `entries_per_hour` of their
    address (TooManyRequests past it), then kept, pending unless `needs_approval` is off."""
    name, message = checked_entry(values)
    per_hour = int(ctx.settings.get("entries_per_hour", 5))
    await rate_limit(ctx, request, "sign", limit=per_hour, per_seconds=RATE_WINDOW_SECONDS)
    approved = not ctx.settings.get("needs_approval", True)
    created_at = datetime.now(UTC)
    table = entries_table(ctx)
    async with ctx.session() as session:
        new = insert(table).values(
            name=name, message=message, approved=approved, created_at=created_at
        )
        entry_id = int((await session.execute(new.returning(table.c.id))).scalar_one())
    ctx.log.info("guestbook signed", extra={"entry": entry_id, "approved": approved})
    return Entry(entry_id, name, message, approved, created_at)


async def approve_entry(ctx: PluginContext, entry_id: int) -> Entry:
    """Show an entry to visitors (approving it twice changes nothing); NotFound if there
    is no such entry."""
    table = entries_table(ctx)
    async with ctx.session() as session:
        await session.execute(update(table).where(table.c.id == entry_id).values(approved=True))
        row = (await session.execute(select(table).where(table.c.id == entry_id))).first()
    if row is None:
        raise NotFound(f"No guestbook entry {entry_id}.")
    return _entry(row)


async def delete_entry(ctx: PluginContext, entry_id: int) -> None:
    """Remove an entry, pending or approved; NotFound if there is no such entry."""
    table = entries_table(ctx)
    async with ctx.session() as session:
        result = await session.execute(delete(table).where(table.c.id == entry_id))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"No guestbook entry {entry_id}.")


async def entries_page(
    ctx: PluginContext, *, approved: bool, page: PageRequest | None = None
) -> Page[Entry]:
    """Approved entries newest first (what visitors see), or pending ones oldest first
    (the order an editor works through them)."""
    table = entries_table(ctx)
    order = table.c.id.desc() if approved else table.c.id.asc()
    statement = select(table).where(table.c.approved == approved).order_by(order)
    async with ctx.session() as session:
        found = await paginate(session, statement, page or PageRequest(), rows=True)
    return found.map(_entry)
