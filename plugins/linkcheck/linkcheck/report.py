"""The link check's data: its tables, the run (the job), and the reads of its pages, its
widget and its API. Entries come from Keel's shared view of what visitors can read now
(`ctx.shared.published_entries`); nothing else of Keel's data is read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from keel.plugin import JobContext, Page, PageRequest, PluginContext, paginate

from .links import Outcome, check_links, links_in

PER_PAGE = 20
TIME_LEFT_TO_STORE = 2.0
"""Seconds of the job's time limit kept for writing the results."""

Sources = dict[str, tuple[str, str]]
"""The entries linking to an address: entry id -> (title, public path)."""


@dataclass(frozen=True)
class Tables:
    links: Table
    sources: Table
    runs: Table


def tables(ctx: PluginContext) -> Tables:
    """The plugin's tables (made by migrations/0001_links.py)."""
    storage = ctx.storage
    links = storage.table(
        "links",
        Column("id", Integer, primary_key=True),
        Column("url", String(2000), nullable=False, unique=True),
        Column("status", Integer),
        Column("error", String(200)),
        Column("broken", Boolean, nullable=False, default=False, index=True),
        Column("checked_at", DateTime(timezone=True)),
        Column("first_broken_at", DateTime(timezone=True)),
        Column("last_broken_at", DateTime(timezone=True)),
    )
    sources = storage.table(
        "sources",
        Column("link_id", Integer, ForeignKey(links.c.id), primary_key=True),
        Column("entry_id", String(36), primary_key=True),
        Column("title", String(200), nullable=False),
        Column("path", String(200), nullable=False),
    )
    runs = storage.table(
        "runs",
        Column("id", Integer, primary_key=True),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
        Column("entries", Integer, nullable=False, default=0),
        Column("links", Integer, nullable=False, default=0),
        Column("checked", Integer, nullable=False, default=0),
        Column("broken", Integer, nullable=False, default=0),
    )
    return Tables(links, sources, runs)


def utc(moment: datetime | None) -> datetime | None:
    """A stored time in UTC (SQLite gives it back without its zone)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Run:
    started_at: datetime
    finished_at: datetime | None
    entries: int
    links: int
    checked: int
    broken: int


async def last_run(session: AsyncSession, t: Tables) -> Run | None:
    row = (await session.execute(select(t.runs).order_by(t.runs.c.id.desc()).limit(1))).first()
    if row is None:
        return None
    started_at = utc(row.started_at)
    assert started_at is not None
    return Run(started_at, utc(row.finished_at), row.entries, row.links, row.checked, row.broken)


# -- the run ---------------------------------------------------------------------------------


async def run_check(ctx: PluginContext, job: JobContext[Any]) -> dict[str, Any]:
    """Check the links of the published entries: the ones checked longest ago first, up to
    `max_links`, within the job's time limit. Without `{"force": true}` (Check now) it
    does nothing until `interval_minutes` have passed since the last run started."""
    began = time.monotonic()
    now = datetime.now(UTC)
    force = isinstance(job.payload, dict) and bool(job.payload.get("force"))
    interval = timedelta(minutes=int(ctx.settings.get("interval_minutes", 1440)))
    t = tables(ctx)
    async with ctx.session() as session:
        previous = await last_run(session, t)
        if not force and previous is not None and previous.started_at + interval > now:
            due = previous.started_at + interval
            return {"skipped": f"not due before {due:%Y-%m-%d %H:%M} UTC"}
        found, entries = await _published_links(ctx, session)
        await _keep_only(session, t, found)
        run_id = await session.scalar(
            insert(t.runs)
            .values(started_at=now, entries=entries, links=len(found))
            .returning(t.runs.c.id)
        )
        due_urls = list(
            (
                await session.execute(
                    select(t.links.c.url)
                    .order_by(t.links.c.checked_at.is_(None).desc(), t.links.c.checked_at)
                    .order_by(t.links.c.id)
                    .limit(int(ctx.settings.get("max_links", 200)))
                )
            ).scalars()
        )
    await job.progress(5, f"checking {len(due_urls)} of {len(found)} links")
    outcomes = await check_links(
        due_urls,
        timeout=float(ctx.settings.get("timeout_seconds", 5)),
        deadline=began + ctx.time_limit - TIME_LEFT_TO_STORE,
        user_agent=f"Keel-linkcheck/{ctx.version}",
    )
    async with ctx.session() as session:
        await _store(session, t, outcomes, datetime.now(UTC))
        broken = await session.scalar(
            select(func.count()).select_from(t.links).where(t.links.c.broken)
        )
        await session.execute(
            update(t.runs)
            .where(t.runs.c.id == run_id)
            .values(finished_at=datetime.now(UTC), checked=len(outcomes), broken=broken or 0)
        )
    summary = {"entries": entries, "links": len(found), "checked": len(outcomes)}
    return {**summary, "broken": broken or 0}


async def _published_links(
    ctx: PluginContext, session: AsyncSession
) -> tuple[dict[str, Sources], int]:
    """Every address the published entries link to, with the entries linking to it; and
    how many entries there are."""
    view = ctx.shared.published_entries
    found: dict[str, Sources] = {}
    entries = 0
    rows = await session.execute(
        select(view.c.id, view.c.title, view.c.path, view.c.body_html).order_by(view.c.path)
    )
    for row in rows:
        entries += 1
        for url in links_in(row.body_html or "", ctx.site_url + row.path):
            found.setdefault(url, {})[str(row.id)] = (row.title, row.path)
    return found, entries


async def _keep_only(session: AsyncSession, t: Tables, found: dict[str, Sources]) -> None:
    """The links table holds exactly the addresses found (their results kept), and the
    sources table the entries linking to each now."""
    known = dict((await session.execute(select(t.links.c.url, t.links.c.id))).tuples().all())
    await session.execute(delete(t.sources))
    gone = [link_id for url, link_id in known.items() if url not in found]
    if gone:
        await session.execute(delete(t.links).where(t.links.c.id.in_(gone)))
    new = [{"url": url, "broken": False} for url in found if url not in known]
    if new:
        await session.execute(insert(t.links), new)
    ids = dict((await session.execute(select(t.links.c.url, t.links.c.id))).tuples().all())
    rows = [
        {"link_id": ids[url], "entry_id": entry_id, "title": title[:200], "path": path[:200]}
        for url, sources in found.items()
        for entry_id, (title, path) in sources.items()
    ]
    if rows:
        await session.execute(insert(t.sources), rows)


async def _store(session: AsyncSession, t: Tables, outcomes: list[Outcome], now: datetime) -> None:
    """Each outcome on its link; a link broken before keeps when it was first seen broken."""
    if not outcomes:
        return
    before = {
        row.url: row
        for row in await session.execute(
            select(t.links.c.url, t.links.c.broken, t.links.c.first_broken_at).where(
                t.links.c.url.in_([outcome.url for outcome in outcomes])
            )
        )
    }
    changes = []
    for outcome in outcomes:
        row = before.get(outcome.url)
        if row is None:
            continue  # gone from the entries while it was checked
        first_broken = utc(row.first_broken_at) if row.broken else None
        changes.append(
            {
                "u": outcome.url,
                "status": outcome.status,
                "error": outcome.error,
                "broken": outcome.broken,
                "checked_at": now,
                "first_broken_at": (first_broken or now) if outcome.broken else None,
                "last_broken_at": now if outcome.broken else None,
            }
        )
    statement = update(t.links).where(t.links.c.url == bindparam("u"))
    await session.execute(
        statement.values(
            status=bindparam("status"),
            error=bindparam("error"),
            broken=bindparam("broken"),
            checked_at=bindparam("checked_at"),
            first_broken_at=bindparam("first_broken_at"),
            last_broken_at=bindparam("last_broken_at"),
        ),
        changes,
    )


# -- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What the widget and the page's header say."""

    last_run: Run | None
    links: int
    checked: int
    broken: int


@dataclass(frozen=True)
class Source:
    title: str
    path: str


@dataclass(frozen=True)
class BrokenLink:
    url: str
    status: int | None
    error: str | None
    first_broken_at: datetime | None
    last_broken_at: datetime | None
    sources: list[Source] = field(default_factory=list)

    @property
    def problem(self) -> str:
        return self.error or f"HTTP {self.status}"

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "first_broken_at": _iso(self.first_broken_at),
            "last_broken_at": _iso(self.last_broken_at),
            "linked_from": [{"title": s.title, "path": s.path} for s in self.sources],
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


async def summary(ctx: PluginContext) -> Summary:
    t = tables(ctx)
    links = t.links.c
    async with ctx.session() as session:
        run = await last_run(session, t)
        counts = (
            await session.execute(
                select(
                    func.count(),
                    func.count(links.checked_at),
                    func.count().filter(links.broken),
                ).select_from(t.links)
            )
        ).one()
    return Summary(run, counts[0], counts[1], counts[2])


async def broken_links(ctx: PluginContext, page: PageRequest | None = None) -> Page[BrokenLink]:
    """The broken links, the longest broken first, each with the entries linking to it."""
    t = tables(ctx)
    links = t.links.c
    async with ctx.session() as session:
        found = await paginate(
            session,
            select(t.links).where(links.broken).order_by(links.first_broken_at, links.url),
            page or PageRequest(per_page=PER_PAGE),
            rows=True,
        )
        sources: dict[int, list[Source]] = {}
        if found.items:
            linked = await session.execute(
                select(t.sources.c.link_id, t.sources.c.title, t.sources.c.path)
                .where(t.sources.c.link_id.in_([row.id for row in found.items]))
                .order_by(t.sources.c.title)
            )
            for link_id, title, path in linked:
                sources.setdefault(link_id, []).append(Source(title, path))
    return found.map(
        lambda row: BrokenLink(
            row.url,
            row.status,
            row.error,
            utc(row.first_broken_at),
            utc(row.last_broken_at),
            sources.get(row.id, []),
        )
    )
