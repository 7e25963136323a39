"""Analytics end to end: known traffic through the real app, rolled up by the job's
service, read back from the API and from /admin/analytics; the roll-up's idempotence,
late minutes, retention, the store being down; bad parameters and who may look."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
from litestar import Litestar, get
from sqlalchemy import func, select

from app.accounts.guards import roles
from app.accounts.models import User
from app.analytics.models import DAY, HOUR, MINUTE, RequestStat
from app.analytics.services.rollup import BUCKETS, roll_up
from app.analytics.services.series import percentile, recent_summary, request_series
from app.content.services.views import ViewCounts
from app.core.metrics import RequestTally, minute_key
from app.core.runtime import runtime_of
from app.core.store import StoreError, create_store
from app.jobs.models import Job
from app.jobs.services.worker import Worker
from app.settings import StoreSettings
from tests.conftest import SteppedClock, bearer, client_for, signed_in, stopped_clock

PROBLEM = "application/problem+json"


@get("/_test/boom", guards=[roles.public], sync_to_thread=False)
def boom() -> str:
    """A page whose handler fails: an honest 500."""
    raise RuntimeError("the handler failed")


def _at_minute_start(clock: SteppedClock) -> datetime:
    """Move the clock to 5 seconds into the next whole minute; that minute's start."""
    now = clock.now()
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    clock.advance(start + timedelta(seconds=5) - now)
    return start


async def _traffic(app: Litestar, pages: int, missing: int, failures: int) -> None:
    async with client_for(app) as visitor:
        for _ in range(pages):
            assert (await visitor.get("/")).status_code == 200
        for _ in range(missing):
            assert (await visitor.get(f"/api/v1/content/{uuid4()}")).status_code == 404
        for _ in range(failures):
            assert (await visitor.get("/_test/boom")).status_code == 500


async def _roll_up(app: Litestar, clock: SteppedClock) -> None:
    runtime = runtime_of(app.state)
    await runtime.figures.flush(runtime.store)
    await roll_up(runtime.sessionmaker, runtime.store, clock.now())


async def _minute_total(app: Litestar, period: int = MINUTE) -> int:
    async with runtime_of(app.state).sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(RequestStat.count), 0)).where(
                RequestStat.period_seconds == period
            )
        )
    return int(total or 0)


async def test_known_traffic_is_read_back_from_the_api_and_the_page(
    app: Litestar, accounts: dict[str, User]
) -> None:
    app.register(boom)
    with stopped_clock(app) as clock:
        minute = _at_minute_start(clock)
        await _traffic(app, pages=6, missing=3, failures=2)
        clock.advance(timedelta(minutes=2))
        await _roll_up(app, clock)

        async with client_for(app) as api:
            headers = await bearer(app, accounts["viewer"])
            answer = await api.get("/api/v1/analytics/requests?range=1h&bucket=60", headers=headers)
            assert answer.status_code == 200
            body = answer.json()
            assert body["bucket_seconds"] == 60
            assert len(body["points"]) == 60
            assert set(body["points"][0]) == {
                "start",
                "count",
                "errors",
                "p50_ms",
                "p95_ms",
                "p99_ms",
            }
            counted = [p for p in body["points"] if p["count"]]
            assert len(counted) == 1
            point = counted[0]
            assert point["start"] == minute.isoformat().replace("+00:00", "Z")
            assert point["count"] == 11
            assert point["errors"] == 2
            assert 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
            empty = [p for p in body["points"] if not p["count"]]
            assert all(p["p50_ms"] is None and p["errors"] == 0 for p in empty)

            public = await api.get(
                "/api/v1/analytics/latency?range=1h&group=public", headers=headers
            )
            assert (
                sum(p["count"] for p in public.json()["points"]) == 8
            )  # the 6 pages and 2 failures
            api_group = await api.get(
                "/api/v1/analytics/requests?range=1h&group=api", headers=headers
            )
            assert sum(p["count"] for p in api_group.json()["points"]) == 3

            day = await api.get("/api/v1/analytics/requests?range=24h&bucket=3600", headers=headers)
            assert sum(p["count"] for p in day.json()["points"]) == 11  # read from the hourly rows
            month = await api.get(
                "/api/v1/analytics/requests?range=30d&bucket=86400", headers=headers
            )
            assert sum(p["count"] for p in month.json()["points"]) == 11  # and the daily ones

        async with runtime_of(app.state).sessionmaker() as session:
            summary = await recent_summary(session, timedelta(hours=1))
        assert (summary.requests, summary.errors) == (11, 2)
        assert summary.error_rate == round(2 / 11, 4) and summary.failing

        async with signed_in(app, accounts["viewer"]) as browser:
            page = await browser.get("/admin/analytics?range=1h")
        assert page.status_code == 200
        label = minute.strftime("%b %-d %H:%M UTC")
        assert f"<title>{label} — 11 requests, 2 errors</title>" in page.text
        assert 'role="img"' in page.text and "<table" in page.text
        assert "style=" not in page.text and "<script>" not in page.text


async def test_rolling_up_twice_or_at_once_never_counts_twice_and_late_minutes_count(
    app: Litestar,
) -> None:
    runtime = runtime_of(app.state)
    with stopped_clock(app) as clock:
        minute = _at_minute_start(clock)
        await _traffic(app, pages=4, missing=0, failures=0)
        clock.advance(timedelta(minutes=2))
        await runtime.figures.flush(runtime.store)
        await asyncio.gather(
            roll_up(runtime.sessionmaker, runtime.store, clock.now()),
            roll_up(runtime.sessionmaker, runtime.store, clock.now()),
        )
        await roll_up(runtime.sessionmaker, runtime.store, clock.now())
        assert await _minute_total(app) == 4
        assert await _minute_total(app, HOUR) == 4
        assert await _minute_total(app, DAY) == 4

        late = RequestTally(runtime.store)  # a slow process flushing that minute only now
        late.record_request("GET", "/", 200, 0.003, minute.timestamp() + 30)
        await late.flush(runtime.store)
        await roll_up(runtime.sessionmaker, runtime.store, clock.now())
        await roll_up(runtime.sessionmaker, runtime.store, clock.now())
    assert await _minute_total(app) == 5
    assert await _minute_total(app, HOUR) == 5
    assert await _minute_total(app, DAY) == 5


async def test_an_open_minute_waits_for_the_next_run(app: Litestar) -> None:
    runtime = runtime_of(app.state)
    with stopped_clock(app) as clock:
        _at_minute_start(clock)
        await _traffic(app, pages=2, missing=0, failures=0)
        await _roll_up(app, clock)  # still within the minute: not closed
        assert await _minute_total(app) == 0
        clock.advance(timedelta(seconds=70))
        await roll_up(runtime.sessionmaker, runtime.store, clock.now())
    assert await _minute_total(app) == 2


async def test_retention_deletes_rows_past_their_period(app: Litestar) -> None:
    runtime = runtime_of(app.state)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ages = {
        (MINUTE, now - timedelta(hours=49)): False,
        (MINUTE, now - timedelta(hours=47)): True,
        (HOUR, now - timedelta(days=32)): False,
        (HOUR, now - timedelta(days=30)): True,
        (DAY, now - timedelta(days=401)): False,
        (DAY, now - timedelta(days=399)): True,
    }
    async with runtime.sessionmaker() as session, session.begin():
        for period, start in ages:
            session.add(
                RequestStat(
                    period_seconds=period,
                    start=start,
                    route_group="public",
                    status_class="2xx",
                    count=1,
                    seconds=0.001,
                    buckets=[1] + [0] * (BUCKETS - 1),
                )
            )
    result = await roll_up(runtime.sessionmaker, runtime.store, now)
    assert result.deleted == 3
    async with runtime.sessionmaker() as session:
        kept = set(
            (await session.execute(select(RequestStat.period_seconds, RequestStat.start))).all()
        )
    assert kept == {key for key, stays in ages.items() if stays}


async def test_counts_wait_in_the_process_while_the_store_is_down(app: Litestar) -> None:
    runtime = runtime_of(app.state)
    down = create_store(
        StoreSettings(url="redis://127.0.0.1:9/0", connect_timeout=0.2, socket_timeout=0.2)
    )
    tally = RequestTally(down)
    with stopped_clock(app) as clock:
        minute = _at_minute_start(clock)
        for _ in range(3):
            tally.record_request("GET", "/blog", 200, 0.01, clock.time())
        clock.advance(timedelta(minutes=2))
        await tally.flush(down)
        assert tally.minutes[minute_key(int(minute.timestamp() // 60))]  # kept for the next try
        try:
            await roll_up(runtime.sessionmaker, down, clock.now())
            raise AssertionError("a roll-up without a store must fail")
        except StoreError:
            pass
        await tally.flush(runtime.store)  # the store answers again
        await roll_up(runtime.sessionmaker, runtime.store, clock.now())
    await down.close()
    assert await _minute_total(app) == 3


async def test_bad_parameters_are_400_naming_them(app: Litestar, accounts: dict[str, User]) -> None:
    async with client_for(app) as api:
        headers = await bearer(app, accounts["viewer"])
        for query, name in (
            ("range=2h", "range"),
            ("bucket=90", "bucket"),
            ("range=7d&bucket=60", "bucket"),
            ("bucket=0", "bucket"),
            ("range=1h&bucket=7200", "bucket"),
            ("group=robots", "group"),
        ):
            answer = await api.get(f"/api/v1/analytics/requests?{query}", headers=headers)
            assert answer.status_code == 400, query
            assert answer.headers["content-type"].startswith(PROBLEM)
            assert name in answer.text, query
        assert (
            await api.get("/api/v1/analytics/jobs?range=1y", headers=headers)
        ).status_code == 400
        assert (
            await api.get("/api/v1/analytics/content?bucket=abc", headers=headers)
        ).status_code == 400
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/admin/analytics?range=2h")
    assert page.status_code == 400 and "range must be one of" in page.text


async def test_viewers_may_look_and_anonymous_callers_may_not(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as anonymous:
        for path in ("/api/v1/stats", "/api/v1/analytics/requests", "/api/v1/analytics/jobs"):
            answer = await anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"].startswith(PROBLEM)
        page = await anonymous.get("/admin/analytics")
        assert page.status_code in (302, 303) and "/login" in page.headers["location"]
    async with client_for(app) as api:
        headers = await bearer(app, accounts["viewer"])
        stats = (await api.get("/api/v1/stats", headers=headers)).json()
        assert stats["users"]["total"] == sum(stats["users"]["by_role"].values()) >= 3
        assert set(stats["content"]["by_status"]) == {"draft", "scheduled", "published", "archived"}
        assert "queue_depth" in stats["jobs"]
        for kind in ("content", "jobs"):
            body = (await api.get(f"/api/v1/analytics/{kind}?range=7d", headers=headers)).json()
            assert body["bucket_seconds"] == 3600 and len(body["points"]) == 168
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/admin/analytics")
        assert page.status_code == 200
        assert re.search(r'href="/admin/analytics"[^>]*aria-current="page"', page.text)
        assert "No requests recorded in this range yet." in page.text
        fragment = await browser.get("/admin/analytics?range=7d", headers={"HX-Request": "true"})
        assert fragment.text.lstrip().startswith('<div id="analytics-charts"')


async def test_request_series_reads_without_http(app: Litestar) -> None:
    async with runtime_of(app.state).sessionmaker() as session:
        series = await request_series(session, "24h")
    assert series.bucket_seconds == 900 and len(series.points) == 96
    assert isinstance(series, object) and httpx is not None


async def _run_queued_jobs(app: Litestar) -> None:
    """Keel's worker until no job is queued or running (as keel.testing's `run_jobs`)."""
    runtime = runtime_of(app.state)
    quick = replace(runtime.settings.worker, poll_interval=0.05, retry_backoff=0.0)
    worker = Worker(
        replace(runtime.settings, worker=quick),
        runtime.store,
        runtime.sessionmaker,
        schedules=False,
    )
    task = asyncio.create_task(worker.run())

    async def unfinished() -> int:
        async with runtime.sessionmaker() as session:
            statuses = ("queued", "running")
            query = select(func.count()).select_from(Job).where(Job.status.in_(statuses))
            return int(await session.scalar(query) or 0)

    try:
        async with asyncio.timeout(30):
            while await unfinished():  # noqa: ASYNC110 (the database is what is polled)
                await asyncio.sleep(0.02)
    finally:
        worker.request_stop()
        await task


async def test_views_publications_and_the_rollup_job_are_read_back(
    app: Litestar, accounts: dict[str, User]
) -> None:
    runtime = runtime_of(app.state)
    with stopped_clock(app) as clock:
        _at_minute_start(clock)
        async with client_for(app) as api:
            editor = await bearer(app, accounts["editor"])
            created = await api.post(
                "/api/v1/content",
                json={"kind": "post", "title": "Counted", "body_markdown": "Words."},
                headers=editor,
            )
            entry = created.json()
            published = await api.post(
                f"/api/v1/content/{entry['id']}/publish", json={}, headers=editor
            )
            assert published.status_code == 200
        async with client_for(app) as visitor:
            for _ in range(3):
                assert (await visitor.get(f"/blog/{entry['slug']}")).status_code == 200
        await runtime.service(ViewCounts).flush()
        clock.advance(timedelta(minutes=2))
        async with client_for(app) as api:
            admin = await bearer(app, accounts["admin"])
            queued = await api.post(
                "/api/v1/jobs", json={"type": "analytics_rollup"}, headers=admin
            )
            assert queued.status_code == 201, queued.text
        await runtime.figures.flush(runtime.store)
        await _run_queued_jobs(app)
        async with client_for(app) as api:
            viewer = await bearer(app, accounts["viewer"])
            content = (await api.get("/api/v1/analytics/content?range=1h", headers=viewer)).json()
            jobs = (await api.get("/api/v1/analytics/jobs?range=24h", headers=viewer)).json()
            requests = (await api.get("/api/v1/analytics/requests?range=1h", headers=viewer)).json()
    assert sum(p["views"] for p in content["points"]) == 3
    assert sum(p["published"] for p in content["points"]) == 1
    assert sum(p["completed"] for p in jobs["points"]) == 1
    done = next(p for p in jobs["points"] if p["completed"])
    assert done["run_p50_ms"] is not None and done["failed"] == 0
    assert (
        sum(p["count"] for p in requests["points"]) >= 5
    )  # the writes and views, rolled up by the job


def test_percentiles_are_interpolated_inside_their_latency_bucket() -> None:
    only_fast = [10] + [0] * (BUCKETS - 1)  # ten requests under 1 ms
    assert percentile(only_fast, 0.5) == 0.5
    split = [0, 0, 0, 0, 50, 0, 0, 0, 50] + [0] * (BUCKETS - 9)  # 10-25 ms, 250-500 ms
    assert percentile(split, 0.5) == 25.0
    assert percentile(split, 0.99) == 495.0
    beyond = [0] * (BUCKETS - 1) + [4]  # slower than the last bound: the bound
    assert percentile(beyond, 0.95) == 10_000.0
    assert percentile([0] * BUCKETS, 0.5) is None
