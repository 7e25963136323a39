"""Counting entry views: a page handler names the entry it shows in a response header
(`VIEW_HEADER`); the page cache's middleware takes it off and counts it here, for cached
and rendered answers alike. Counts gather in the process (`ViewCounts`), go to the store
in batches every VIEW_FLUSH_SECONDS, and a worker moves them into `entries.view_count`
(`flush_view_counts`). The views of each minute go to that minute's analytics hash as well
(`app.core.metrics.minute_key`), for the views per period analytics charts. No request
ever waits on counting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

from litestar.types import HTTPResponseStartEvent, Message, Send
from sqlalchemy import update

from app.content.models import Entry
from app.core.clock import current_clock
from app.core.metrics import MINUTE_TTL_SECONDS, VIEWS_FIELD, minute_key
from app.core.store import Store, StoreError
from app.core.tasks import cancel_and_wait

VIEW_HEADER = b"x-keel-view"
"""Set by a handler to the id of the entry a page shows; the page cache counts and strips it."""
VIEWS_PREFIX = "views:"
VIEW_FLUSH_SECONDS = 2.0


class ViewCounts:
    """A process's views not yet in the store."""

    def __init__(self, store: Store, on_store_failure: Callable[[BaseException], None]) -> None:
        self.store = store
        self.on_store_failure = on_store_failure
        """Told when the store fails a flush (the page cache then owes a new generation)."""
        self.pending: dict[str, int] = {}
        self.minutes: dict[int, int] = {}
        """Views per minute (since the epoch) not yet in the store."""
        self._flusher: asyncio.Task[None] | None = None

    def count(self, entry_id: str, now: float | None = None) -> None:
        """Counted in the process; moved to the store in batches, never per request. `now`:
        the current clock's time, when the caller has read it."""
        pending, minutes = self.pending, self.minutes  # plain dicts: a hit counts one
        pending[entry_id] = pending.get(entry_id, 0) + 1
        minute = int((current_clock().time() if now is None else now) // 60)
        minutes[minute] = minutes.get(minute, 0) + 1

    async def flush(self) -> None:
        minutes, self.minutes = self.minutes, {}
        if minutes:
            try:
                await self.store.incr_hashes(
                    {minute_key(m): {VIEWS_FIELD: n} for m, n in minutes.items()},
                    {minute_key(m): MINUTE_TTL_SECONDS for m in minutes},
                )
            except StoreError:
                for minute, n in minutes.items():  # kept for the next round
                    self.minutes[minute] = self.minutes.get(minute, 0) + n
        pending, self.pending = self.pending, {}
        for entry_id, count in pending.items():
            try:
                await self.store.incr(VIEWS_PREFIX + entry_id, count)
            except StoreError as exc:
                self.pending[entry_id] = self.pending.get(entry_id, 0) + count  # kept
                self.on_store_failure(exc)

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_regularly())

    async def stop(self) -> None:
        await cancel_and_wait(self._flusher)
        await self.flush()

    async def _flush_regularly(self) -> None:
        while True:
            await asyncio.sleep(VIEW_FLUSH_SECONDS)
            await self.flush()


def pop_view(start: HTTPResponseStartEvent) -> str | None:
    """Take the view header off a response start message; returns the entry id."""
    view = None
    kept = []
    for key, value in start.get("headers", []):
        if key == VIEW_HEADER:
            view = value.decode("latin-1")
        else:
            kept.append((key, value))
    start["headers"] = kept
    return view


def counting_views(send: Send, views: ViewCounts) -> Send:
    """`send`, counting the view a response's start message names."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and (view := pop_view(message)):
            views.count(view)
        await send(message)

    return wrapped


async def flush_view_counts(sessionmaker: Any, store: Store) -> int:
    """Move counted views from the store into `entries.view_count`; returns views moved.

    Each counter is taken (read and deleted) atomically, so several workers never count a
    view twice, and views counted meanwhile wait for the next round.
    """
    moved = 0
    for key in await store.keys(f"{VIEWS_PREFIX}*"):
        raw = await store.take(key)
        if not raw:
            continue
        views = int(raw)
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(Entry)
                .where(Entry.id == UUID(key.removeprefix(VIEWS_PREFIX)))
                .values(view_count=Entry.view_count + views)
            )
        moved += views
    return moved
