"""`listener`: subscribes to every Keel event and writes each one down (name and payload as
JSON) in its own table, as its job does with the note it is given. An entry titled "Fail
on purpose" makes its handler raise, one titled "Too slow" makes it run past the time
limit. It imports nothing of Keel but `keel.plugin`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import Column, Integer, String, Text, insert

from keel.plugin import (
    ENTRY_DELETED,
    ENTRY_PUBLISHED,
    ENTRY_UNPUBLISHED,
    ENTRY_UPDATED,
    MEDIA_UPLOADED,
    USER_CREATED,
    USER_DELETED,
    USER_ROLE_CHANGED,
    Job,
    JobContext,
    Plugin,
    PluginContext,
)


def heard_table(ctx: PluginContext):  # type: ignore[no-untyped-def]
    return ctx.storage.table(
        "heard",
        Column("id", Integer, primary_key=True),
        Column("event", String(40), nullable=False),
        Column("detail", Text, nullable=False),
    )


async def write_down(ctx: PluginContext, event: str, detail: dict[str, Any]) -> None:
    async with ctx.session() as session:
        await session.execute(
            insert(heard_table(ctx)).values(event=event, detail=json.dumps(detail, default=str))
        )


async def hear(ctx: PluginContext, event: Any) -> None:
    title = getattr(event, "title", "")
    if title == "Fail on purpose":
        raise RuntimeError("the listener fails on purpose")
    if title == "Too slow":
        await asyncio.sleep(5)
    await write_down(ctx, event.name, asdict(event))


async def take_note(ctx: PluginContext, job: JobContext) -> dict[str, str]:
    """Writes the note it is given down (a job of the plugin's own)."""
    note = str(job.payload.get("note", ""))
    await write_down(ctx, "job", {"note": note})
    return {"noted": note}


class Listener(Plugin):
    jobs = [Job("listener.note", take_note)]
    subscriptions = {
        name: hear
        for name in (
            ENTRY_PUBLISHED,
            ENTRY_UPDATED,
            ENTRY_UNPUBLISHED,
            ENTRY_DELETED,
            USER_CREATED,
            USER_DELETED,
            USER_ROLE_CHANGED,
            MEDIA_UPLOADED,
        )
    }
