"""The admin dashboard `/admin` (app/system/pages.py, app/system/services/dashboard.py):
known data read back from the page and its htmx fragment, the empty site's first steps,
and panels that cannot be read shown as unavailable (both legs)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
from litestar import Litestar
from sqlalchemy import text, update

from app.accounts.models import AuditEntry, User
from app.asgi import create_app
from app.content.models import Entry
from app.core.runtime import runtime_of
from app.settings import Settings
from app.system.services.dashboard import describe_change, read_dashboard
from tests.accounts.test_users_api import api_as, new_user
from tests.conftest import client_for, signed_in
from tests.core.test_errors import database_down

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://testserver/admin"}


def figure(page: str, attribute: str, key: str) -> int:
    """The count a list item of the dashboard shows (`<li data-…="key">… <strong>n</strong>`)."""
    found = re.search(rf'<li {attribute}="{key}">.*?<strong[^>]*>([\d,]+)</strong>', page, re.S)
    assert found, f"no {attribute}={key} on the page"
    return int(found.group(1).replace(",", ""))


def headline(page: str, name: str) -> int:
    found = re.search(rf'data-figure="{name}">([\d,]+)<', page)
    assert found, f"no headline figure {name}"
    return int(found.group(1).replace(",", ""))


async def _entry(api: httpx.AsyncClient, title: str, kind: str = "post") -> str:
    created = await api.post("/api/v1/content", json={"title": title, "kind": kind})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _publish(api: httpx.AsyncClient, entry_id: str, at: datetime | None = None) -> None:
    body = {"published_at": at.isoformat()} if at else None
    published = await api.post(f"/api/v1/content/{entry_id}/publish", json=body)
    assert published.status_code == 200, published.text


async def _sql(app: Litestar, statement: str, **values: object) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(text(statement), values)


async def _a_site_with_data(app: Litestar, accounts: dict[str, User]) -> dict[str, str]:
    """Users of each role (one who joined 3 days ago), an entry in each status, a scheduled
    one, a page, views, a queued and a failed job; the changes leave audit entries."""
    ids = {}
    async with api_as(app, accounts["admin"]) as api:
        ids["draft"] = await _entry(api, "A draft in progress")
        ids["published"] = await _entry(api, "Hello readers")
        await _publish(api, ids["published"])
        ids["scheduled"] = await _entry(api, "Coming next week")
        await _publish(api, ids["scheduled"], datetime.now(UTC) + timedelta(days=6, hours=1))
        ids["archived"] = await _entry(api, "Old news")
        await _publish(api, ids["archived"])
        ids["page"] = await _entry(api, "About us", kind="page")
        await _publish(api, ids["page"])
        created = await api.post("/api/v1/users", json=new_user())
        assert created.status_code == 201, created.text
        for _ in range(2):
            queued = await api.post("/api/v1/jobs", json={"type": "cleanup", "payload": {}})
            assert queued.status_code in (201, 202), queued.text
        ids["failed_job"] = str(queued.json()["id"])
    async with signed_in(app, accounts["editor"]) as editor:
        archived = await editor.post(f"/admin/content/{ids['archived']}/archive")
        assert archived.status_code in (200, 303), archived.text
    async with app.state.sessionmaker() as session, session.begin():
        for key, views in (("published", 42), ("page", 7)):
            viewed = update(Entry).where(Entry.id == UUID(ids[key])).values(view_count=views)
            await session.execute(viewed)
    await _sql(
        app,
        "UPDATE jobs SET status = 'failed', finished_at = :now WHERE id = :id",
        id=int(ids["failed_job"]),
        now=datetime.now(UTC),
    )
    await _sql(
        app,
        "UPDATE users SET created_at = :then WHERE username = 'viewer'",
        then=datetime.now(UTC) - timedelta(days=3),
    )
    return ids


async def test_the_dashboard_shows_the_sites_figures_and_refreshes_them_through_htmx(
    app: Litestar, accounts: dict[str, User]
) -> None:
    ids = await _a_site_with_data(app, accounts)
    async with signed_in(app, accounts["admin"]) as browser:
        page = await browser.get("/admin")
        fragment = await browser.get("/admin", headers=HTMX)
    assert page.status_code == 200 and fragment.status_code == 200
    assert "HX-Request" in page.headers["vary"] and page.headers["vary"] == fragment.headers["vary"]
    assert "<html" not in fragment.text and fragment.text.lstrip().startswith('<div id="figures"')
    assert 'hx-trigger="every 15s"' in fragment.text
    for shown in (page.text, fragment.text):
        # content by the status editors see, and what comes next
        assert {s: figure(shown, "data-status-count", s) for s in ("draft", "scheduled")} == {
            "draft": 1,
            "scheduled": 1,
        }
        assert figure(shown, "data-status-count", "published") == 2  # the post and the page
        assert figure(shown, "data-status-count", "archived") == 1
        assert headline(shown, "published") == 2
        scheduled = shown.split('data-list="scheduled"')[1].split("</ol>")[0]
        assert f'href="/admin/content/{ids["scheduled"]}">Coming next week</a>' in scheduled
        assert "in 6 days" in scheduled
        # users by role and sign-ups
        assert headline(shown, "users") == 4
        assert figure(shown, "data-role-count", "viewer") == 2
        assert figure(shown, "data-role-count", "admin") == 1
        signups = re.search(
            r'data-figure="sign-ups">New: <strong>(\d+)</strong> in 24 h · '
            r"<strong>(\d+)</strong> in 7 days",
            shown,
        )
        assert signups and signups.groups() == ("3", "4")
        # jobs by status and queue depth
        assert headline(shown, "queued") == 1
        assert figure(shown, "data-job-count", "failed") == 1
        assert figure(shown, "data-job-count", "succeeded") == 0
        assert re.search(r'data-queue="default"><td>default</td><td>1</td>', shown)
        assert 'data-figure="oldest-wait"' in shown
        # the most read, with links to the editor and the public page
        viewed = shown.split('data-list="most-viewed"')[1].split("</ol>")[0]
        assert viewed.index("Hello readers") < viewed.index("About us")
        assert f'href="/admin/content/{ids["published"]}"' in viewed
        assert 'href="/blog/hello-readers"' in viewed and 'href="/about-us"' in viewed
        assert headline(shown, "views") == 49
        # recent changes in words, with links to who and what
        changes = shown.split('data-list="changes"')[1].split("</ol>")[0]
        editor_link = f'<a href="/admin/users/{accounts["editor"].id}">editor</a>'
        archived = f'<a href="/admin/content/{ids["archived"]}">“Old news”</a>'
        assert re.search(rf"{editor_link}\s+archived post\s+{archived}", changes)
        assert re.search(
            r"admin</a>\s+created user\s+<a href=\"/admin/users/[0-9a-f-]+\">newcomer", changes
        )
        assert "just now" in changes
        assert 'href="/admin/audit"' in shown
        # the health panel stays, and no threshold is crossed
        assert 'data-component="database"' in shown and "data-alert-none" in shown
        assert "data-unavailable" not in shown


async def test_viewers_see_the_figures_but_not_the_audit_log(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await _a_site_with_data(app, accounts)
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/admin")
    assert page.status_code == 200
    assert headline(page.text, "published") == 2 and headline(page.text, "users") == 4
    assert "Recent changes" not in page.text and 'href="/admin/audit"' not in page.text
    assert "Write the first post" not in page.text and "/admin/system" not in page.text


async def test_anonymous_visitors_are_sent_to_sign_in(app: Litestar) -> None:
    async with client_for(app) as client:
        page = await client.get("/admin")
        fragment = await client.get("/admin", headers=HTMX)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fadmin"
    assert fragment.headers["hx-redirect"].startswith("/login?next=")
    assert "figures" not in page.text + fragment.text


async def test_an_empty_site_is_told_what_to_do_first(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await _sql(app, "DELETE FROM users WHERE username IN ('editor', 'viewer')")
    async with signed_in(app, accounts["admin"]) as browser:
        page = (await browser.get("/admin")).text
    assert 'href="/admin/content/new?kind=post">Write the first post</a>' in page
    assert "You are the only user." in page and 'href="/admin/users/new">Add a user</a>' in page
    assert "No entry has been read yet" in page
    assert "Nothing is scheduled." in page
    assert "No change yet." in page
    assert "Start one with <code>keel worker</code>" in page  # no lifespan: no worker here
    assert "data-unavailable" not in page


async def test_a_full_database_pool_is_an_alert_and_its_panels_say_unavailable(
    settings: Settings, accounts: dict[str, User]
) -> None:
    """Every pooled connection of the requests is taken: the page still answers 200 with
    the seed's alert and each figure panel marked unavailable (no 500, no long wait per
    panel: the panels after the database failed are not tried)."""
    small = replace(settings.db, pool_size=2, max_overflow=0, pool_timeout=0.3)
    app = create_app(replace(settings, db=small))
    runtime = runtime_of(app.state)
    try:
        async with signed_in(app, accounts["admin"]) as browser:
            assert (await browser.get("/admin")).status_code == 200  # first-run check done
            async with runtime.engine.connect() as one, runtime.engine.connect() as two:
                await one.execute(text("SELECT 1"))
                await two.execute(text("SELECT 1"))
                page = await browser.get("/admin")
                fragment = await browser.get("/admin", headers=HTMX)
            after = await browser.get("/admin")
    finally:
        await runtime.close()
    for answer in (page, fragment):
        assert answer.status_code == 200, answer.text
        assert "The requests pool is exhausted (2 of 2 in use)." in answer.text
        assert (
            answer.text.count("data-unavailable") == 6
        )  # content, users, jobs, most read, changes
        assert "Recent changes unavailable" in answer.text
        assert re.search(
            r'data-component="database"><td>Database</td><td><span class="badge badge-fail">',
            answer.text,
        )
    assert "data-unavailable" not in after.text
    assert "data-alert-none" in after.text


async def test_a_database_that_does_not_answer_leaves_every_figure_unavailable(
    settings: Settings,
) -> None:
    app = create_app(database_down(settings))
    runtime = runtime_of(app.state)
    try:
        async with runtime.sessionmaker() as session:
            figures = await read_dashboard(runtime, session, audit=True)
    finally:
        await runtime.close()
    assert not figures.report.database.ok
    shown = (figures.users, figures.content, figures.scheduled, figures.most_viewed)
    assert shown == (None, None, None, None)
    assert figures.jobs is None and figures.changes is None and figures.queues is None
    assert figures.workers is not None  # the store answers: its workers are known


def _audit(action: str, kind: str, resource: UUID, details: dict | None = None) -> AuditEntry:
    return AuditEntry(
        user_id=None,
        actor="alice",
        action=action,
        resource_type=kind,
        resource_id=str(resource),
        details=details,
        created_at=datetime.now(UTC),
    )


def test_a_sign_in_reads_as_one_and_a_deleted_post_keeps_its_title_without_a_link() -> None:
    alice = uuid4()
    change = describe_change(_audit("auth.login", "user", alice), {alice: "alice"})
    assert (change.what, change.noun, change.subject) == ("signed in", "", "")
    deleted = _audit("content.deleted", "post", uuid4(), {"title": "Gone"})
    change = describe_change(deleted, {})
    assert (change.what, change.noun, change.subject, change.link) == (
        "deleted",
        "post",
        "“Gone”",
        None,
    )
