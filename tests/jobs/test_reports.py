"""The `report` job on both legs: its figures match the seeded data, both files download,
and bad periods are refused."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
from litestar import Litestar
from sqlalchemy import update

from app.accounts.models import AuditEntry, User
from app.content.models import Entry
from app.core.db import create_engine, create_sessionmaker
from app.jobs.models import Job, JobStatus
from app.jobs.services.queue import enqueue
from app.settings import Settings
from tests.conftest import bearer
from tests.jobs.conftest import run_job, running_worker, wait_for_status


async def seed(app: Litestar) -> dict[str, str]:
    """Entries, audit entries and jobs in and out of a 30-day period; the days used."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    recent, older, outside = now, now - timedelta(days=2), now - timedelta(days=40)
    async with app.state.sessionmaker() as session, session.begin():
        for n, (kind, status) in enumerate(
            [("post", "published"), ("post", "published"), ("post", "draft"), ("page", "published")]
        ):
            session.add(Entry(kind=kind, title=f"Entry {n}", slug=f"entry-{n}", status=status))
        for action, when in [("a.x", recent), ("a.x", recent), ("a.y", older), ("a.old", outside)]:
            session.add(AuditEntry(created_at=when, actor="system", action=action))
        await enqueue(session, "test.file", delay=3600)
        old = await enqueue(session, "test.file")
        await session.execute(
            update(Job)
            .where(Job.id == old)
            .values(status=JobStatus.succeeded.value, created_at=outside, finished_at=outside)
        )
    return {"recent": recent.date().isoformat(), "older": older.date().isoformat()}


async def test_a_report_counts_what_was_seeded_in_its_period(
    app: Litestar,
    settings: Settings,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
) -> None:
    days = await seed(app)
    job = await run_job(app, settings, api, accounts["editor"], "report", {})
    async with app.state.sessionmaker() as session:
        enqueued_on = (await session.get(Job, job["id"])).created_at.date().isoformat()
    expected = {
        "users_by_role": {"admin": 1, "editor": 1, "viewer": 1},
        "entries_by_kind_status": {"post/published": 2, "post/draft": 1, "page/published": 1},
        "jobs_by_status": {"queued": 1, "running": 1},
        "audit_actions_per_day": {
            f"{days['recent']}/a.x": 2,
            f"{days['older']}/a.y": 1,
            f"{enqueued_on}/job.enqueue": 1,
        },
    }
    assert job["result"]["days"] == 30 and job["result"]["figures"] == expected
    assert job["progress"] == 100
    html_name, csv_name = (f["name"] for f in job["result"]["files"])
    assert html_name.endswith(".html") and csv_name.endswith(".csv")
    editor = await bearer(app, accounts["editor"])
    page = await api.get(f"/api/v1/jobs/{job['id']}/result", headers=editor)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<th>post/published</th><td>2</td>" in page.text
    table = await api.get(f"/api/v1/jobs/{job['id']}/result?file={csv_name}", headers=editor)
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert {(r["section"], r["key"]): int(r["count"]) for r in rows} == {
        (section, key): count
        for section, figures in expected.items()
        for key, count in figures.items()
    }
    missing = await api.get(f"/api/v1/jobs/{job['id']}/result?file=other.csv", headers=editor)
    assert missing.status_code == 404
    other = await api.get(
        f"/api/v1/jobs/{job['id']}/result", headers=await bearer(app, accounts["viewer"])
    )
    assert other.status_code == 404


async def test_a_shorter_period_leaves_older_activity_out(
    app: Litestar,
    settings: Settings,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
) -> None:
    days = await seed(app)
    job = await run_job(app, settings, api, accounts["admin"], "report", {"days": 1})
    per_day = job["result"]["figures"]["audit_actions_per_day"]
    assert f"{days['older']}/a.y" not in per_day and per_day[f"{days['recent']}/a.x"] == 2


REPORT_REQUESTS = [
    ("viewer", {}, 403),
    ("editor", {"days": 0}, 422),
    ("editor", {"days": 4000}, 422),
    ("editor", {"days": "many"}, 422),
    ("editor", {"period": 3}, 422),
    ("editor", {"days": 7}, 201),
]


async def test_who_may_run_a_report_and_which_periods_are_refused(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    for role, payload, status in REPORT_REQUESTS:  # one app for all: it is what a test costs
        response = await api.post(
            "/api/v1/jobs",
            json={"type": "report", "payload": payload},
            headers=await bearer(app, accounts[role]),
        )
        assert response.status_code == status, (role, payload, response.text)
        if status >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_report_never_holds_one_pooled_connection_while_it_waits_for_another(
    app: Litestar, settings: Settings
) -> None:
    """Progress is written through a session of the worker's pool: a report that reported
    while its own session held a connection waited on itself once the pool had none left.
    Here the pool has two connections and the worker's claim line keeps one (the test
    watches through the app's own pool)."""
    await seed(app)
    small = replace(settings, db=replace(settings.db, pool_size=2, max_overflow=0))
    engine = create_engine(small.db)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session, session.begin():
            job_id = await enqueue(session, "report", {"days": 30})
        async with running_worker(small, sessionmaker, lease_seconds=30.0):
            job = await wait_for_status(
                app.state.sessionmaker, job_id, {"succeeded", "failed", "dead"}
            )
    finally:
        await engine.dispose()
    assert job.status == "succeeded", job.last_error
