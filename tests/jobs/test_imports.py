"""The `import` job on both legs: users and content from CSV, every rejected row with its
reasons, nothing half-written, a second run that changes nothing, who may import what,
and uploads refused at once (API problem details, the admin form again)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, select, update

from app.accounts.models import AuditEntry, User
from app.content.models import Entry, Revision
from app.jobs.models import ImportRun, Job
from app.site_settings.services import write_setting
from tests.conftest import bearer, client_for, signed_in, with_csrf
from tests.jobs.conftest import running_worker, wait_for_status
from tests.jobs.test_api import api_key

NEW_PASSWORD = "a long and unusual passphrase"

USERS_CSV = (
    "\ufeffEmail,Name,Role,Active\n"  # a BOM and capitals, as spreadsheets save it
    "ann@example.com,Ann,editor,\n"
    "bob@example.com,Bob,,no\n"
    "not-an-address,Carl,superuser,maybe\n"
    "dup@example.com,First,viewer,\n"
    "DUP@example.com,Second,viewer,yes\n"
    "viewer@example.org,Taken,viewer,\n"
    "\n"
    'eve@example.com,"=HYPERLINK(""http://x"")",viewer,yes\n'
)
CONTENT_CSV = (
    "kind,title,slug,body,tags,status,publish_at,nav_order\n"
    'post,Hello World,,"**bold**\n\n<script>alert(1)</script>","news, Tech",published,,\n'
    "page,About us,about,We are here.,,draft,,2\n"
    "post,Bad status,bad-status,,,live,,\n"
    "post,First copy,same,,,draft,,\n"
    "post,Second copy,same,,,draft,,\n"
    "post,Clash,existing,,,draft,,\n"
    "post,No time,no-time,,,scheduled,,\n"
    "post,Later,later,Soon.,,scheduled,2099-01-01T09:00:00Z,\n"
    "video,,Bad Slug!,,,draft,,x\n"
    "post,,,,,draft,,\n"
    "post,,,,,draft,,\n"
)


def csv_file(text: str | bytes, name: str = "data.csv") -> dict[str, Any]:
    body = text.encode() if isinstance(text, str) else text
    return {"file": (name, body, "text/csv")}


async def upload(
    app: Litestar, api: httpx.AsyncClient, user: User, kind: str, text: str | bytes
) -> httpx.Response:
    return await api.post(
        "/api/v1/jobs/import",
        data={"kind": kind},
        files=csv_file(text),
        headers=await bearer(app, user),
    )


async def run_until_done(app: Litestar, job_id: int, statuses: set[str] | None = None) -> Job:
    async with running_worker(app.state.settings, app.state.sessionmaker, app.state.store):
        return await wait_for_status(
            app.state.sessionmaker, job_id, statuses or {"succeeded", "failed", "dead"}
        )


async def imported(
    app: Litestar, api: httpx.AsyncClient, user: User, kind: str, text: str
) -> dict[str, Any]:
    """Upload as `user`, run the job in-process, return it as the API shows it."""
    created = await upload(app, api, user, kind, text)
    assert created.status_code == 201, created.text
    job = await run_until_done(app, created.json()["id"])
    assert job.status == "succeeded", job.last_error
    return (await api.get(f"/api/v1/jobs/{job.id}", headers=await bearer(app, user))).json()


def reasons_by_line(job: dict[str, Any]) -> dict[int, list[str]]:
    return {row["line"]: row["reasons"] for row in job["result"]["rejected_rows"]}


async def users_by_email(app: Litestar) -> dict[str, User]:
    async with app.state.sessionmaker() as session:
        return {user.email: user for user in await session.scalars(select(User))}


async def setup_mails(app: Litestar) -> list[Job]:
    async with app.state.sessionmaker() as session:
        jobs = await session.scalars(select(Job).where(Job.type == "notify").order_by(Job.id))
        return [job for job in jobs if job.payload["kind"] == "password_setup"]


async def test_a_users_import_creates_the_valid_rows_and_lists_every_rejected_one(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    job = await imported(app, api, accounts["admin"], "users", USERS_CSV)
    result = job["result"]
    assert (result["rows"], result["imported"], result["rejected"]) == (7, 3, 4)
    reasons = reasons_by_line(job)
    assert set(reasons) == {4, 5, 6, 7}
    assert reasons[4] == [
        "email: Enter a valid e-mail address.",
        "role: Choose viewer, editor or admin.",
        "active: Write yes or no (or leave it empty for yes).",
    ]
    assert reasons[5] == ["The same e-mail address is also on line 6 of the file."]
    assert reasons[6] == ["The same e-mail address is also on line 5 of the file."]
    assert reasons[7] == ["email: An account with this e-mail address exists."]
    users = await users_by_email(app)
    assert not {"dup@example.com", "not-an-address"} & set(users)
    assert users["viewer@example.org"].display_name == "Viewer"  # the clash changed nothing
    ann, bob, eve = users["ann@example.com"], users["bob@example.com"], users["eve@example.com"]
    assert (ann.username, ann.role, ann.is_active) == ("ann", "editor", True)
    assert (bob.role, bob.is_active) == ("viewer", False)
    assert eve.display_name == '=HYPERLINK("http://x")'  # data, stored as written

    async with client_for(app) as browser:  # no password works until one is set
        login = {"login": "ann@example.com", "password": ""}
        assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 401
    mails = await setup_mails(app)
    assert sorted(mail.payload["user_id"] for mail in mails) == sorted([str(ann.id), str(eve.id)])
    link = re.search(r"http://127\.0\.0\.1:8000(/reset/[\w-]+)", mails[0].payload["body"])
    assert link, mails[0].payload["body"]
    async with client_for(app) as browser:
        await with_csrf(browser, link.group(1))  # the page answers 200 and sets the token
        form = {"new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD}
        assert (await browser.post(link.group(1), data=form)).status_code == 303
        owner = next(u for u in (ann, eve) if str(u.id) == mails[0].payload["user_id"])
        login = {"login": owner.email, "password": NEW_PASSWORD}
        assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 200

    async with app.state.sessionmaker() as session:
        created = await session.scalars(
            select(AuditEntry.resource_id).where(AuditEntry.action == "user.created")
        )
        assert sorted(created) == sorted(str(u.id) for u in (ann, bob, eve))
    rejected = await api.get(
        f"/api/v1/jobs/{job['id']}/result", headers=await bearer(app, accounts["admin"])
    )
    rows = list(csv.DictReader(io.StringIO(rejected.text)))
    assert [row["email"] for row in rows] == [
        "not-an-address",
        "dup@example.com",
        "DUP@example.com",
        "viewer@example.org",
    ]
    assert "Enter a valid e-mail address." in rows[0]["import_errors"]


async def test_a_content_import_saves_valid_rows_like_the_editor_and_rejects_the_rest(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        session.add(Entry(kind="post", title="Old", slug="existing", status="draft"))
    async with client_for(app) as visitor:  # the blog as cached before the import
        assert "Hello World" not in (await visitor.get("/blog")).text
    editor = accounts["editor"]
    job = await imported(app, api, editor, "content", CONTENT_CSV)
    result = job["result"]
    assert (result["rows"], result["imported"], result["rejected"]) == (11, 3, 8)
    assert job["progress"] == 100 and job["progress_message"] == "3 imported, 8 rejected"
    reasons = reasons_by_line(job)
    assert reasons[6] == ["status: Choose one of draft, scheduled, published, archived."]
    assert reasons[7] == ["The same post address is also on line 8 of the file."]
    assert reasons[8] == ["The same post address is also on line 7 of the file."]
    assert reasons[9] == ["slug: Another post already uses this address."]
    assert reasons[10] == ["publish_at: A scheduled row needs its publish time."]
    assert reasons[12] == [
        "nav_order: Enter a whole number, or leave it empty.",
        "kind: Choose page or post.",
        "title: Give it a title.",
        "slug: Use lowercase letters, digits and single dashes.",
    ]
    assert reasons[13] == reasons[14] == ["title: Give it a title."]  # no address to share
    assert result["rejected_rows"][0]["values"]["status"] == "live"

    async with app.state.sessionmaker() as session:
        entries = {e.slug: e for e in await session.scalars(select(Entry))}
        counted = select(Revision.entry_id, func.count()).group_by(Revision.entry_id)
        revisions = dict((await session.execute(counted)).all())
    assert set(entries) == {"existing", "hello-world", "about", "later"}
    hello, about, later = entries["hello-world"], entries["about"], entries["later"]
    assert (hello.kind, hello.status, hello.author_id) == ("post", "published", editor.id)
    assert "<strong>bold</strong>" in hello.body_html and "<script" not in hello.body_html
    assert sorted(tag.name for tag in hello.tags) == ["Tech", "news"]
    assert (about.kind, about.status, about.nav_order) == ("page", "draft", 2)
    assert later.status == "scheduled" and later.published_at.year == 2099
    assert all(revisions[e.id] == 1 for e in (hello, about, later))
    assert entries["existing"].title == "Old"

    async with client_for(app) as visitor:  # the import dropped the cached pages
        for _ in range(30):
            blog = (await visitor.get("/blog")).text
            if "Hello World" in blog:
                break
            await asyncio.sleep(0.1)
        assert "Hello World" in blog and "Later" not in blog
        assert (await visitor.get("/blog/hello-world")).status_code == 200


async def test_a_number_past_its_column_rejects_its_row_and_the_rest_is_imported(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """Once one such row made every attempt fail and showed the INSERT in `last_error`."""
    text = (
        "kind,title,slug,nav_order\n"
        "page,Menu one,menu-one,1\n"
        "page,Too far,too-far,2147483648\n"
        "page,Far too far,far-too-far,9223372036854775808\n"
        "post,A post,a-post,\n"
    )
    job = await imported(app, api, accounts["editor"], "content", text)
    assert job["attempts"] == 1 and job["last_error"] is None
    assert (job["result"]["imported"], job["result"]["rejected"]) == (2, 2)
    reason = "nav_order: Use a number from -2,147,483,648 to 2,147,483,647."
    assert reasons_by_line(job) == {3: [reason], 4: [reason]}
    async with app.state.sessionmaker() as session:
        slugs = set(await session.scalars(select(Entry.slug)))
    assert slugs == {"menu-one", "a-post"}


async def test_a_publish_time_past_what_a_datetime_holds_rejects_its_row(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    text = (
        "kind,title,slug,status,publish_at\n"
        "post,Far,far,scheduled,9999-12-31T23:00:00-05:00\n"
        "post,Soon,soon,scheduled,2099-01-01T09:00:00Z\n"
    )
    job = await imported(app, api, accounts["editor"], "content", text)
    assert job["attempts"] == 1 and job["last_error"] is None
    assert (job["result"]["imported"], job["result"]["rejected"]) == (1, 1)
    assert reasons_by_line(job) == {2: ["publish_at: Give a time between the years 1000 and 9998."]}


async def test_a_publish_time_without_an_offset_is_read_in_the_site_s_time_zone(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """As the editor's form reads it: 09:00 in Berlin in winter is 08:00 UTC; a time with
    its own offset keeps it; an hour the clocks skip there is a reason on its row."""
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "time_zone", "Europe/Berlin")
    text = (
        "kind,title,slug,status,publish_at\n"
        "post,Local,local,scheduled,2099-01-15T09:00\n"
        "post,Offset,offset,scheduled,2099-01-15T09:00:00+05:00\n"
        "post,Skipped,skipped,scheduled,2099-03-29T02:30\n"
    )
    job = await imported(app, api, accounts["editor"], "content", text)
    assert (job["result"]["imported"], job["result"]["rejected"]) == (2, 1), job
    assert list(reasons_by_line(job)) == [4]
    assert "publish_at" in reasons_by_line(job)[4][0]
    async with app.state.sessionmaker() as session:
        times = dict((await session.execute(select(Entry.slug, Entry.published_at))).all())
    assert times["local"].replace(tzinfo=UTC) == datetime(2099, 1, 15, 8, 0, tzinfo=UTC)
    assert times["offset"].replace(tzinfo=UTC) == datetime(2099, 1, 15, 4, 0, tzinfo=UTC)


async def test_a_second_run_of_the_same_job_writes_and_sends_nothing_again(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    first = await imported(app, api, accounts["admin"], "users", USERS_CSV)
    before = (len(await users_by_email(app)), len(await setup_mails(app)))
    async with app.state.sessionmaker() as session, session.begin():  # as if the worker died
        await session.execute(  # after the commit and before it stored the outcome
            update(Job)
            .where(Job.id == first["id"])
            .values(status="queued", result=None, finished_at=None, attempts=1)
        )
    again = await run_until_done(app, first["id"])
    assert again.status == "succeeded", again.last_error
    assert (len(await users_by_email(app)), len(await setup_mails(app))) == before == (6, 2)
    assert {k: again.result[k] for k in ("rows", "imported", "rejected", "rejected_rows")} == {
        k: first["result"][k] for k in ("rows", "imported", "rejected", "rejected_rows")
    }
    assert again.result["files"][0]["name"] == first["result"]["files"][0]["name"]
    download = await api.get(
        f"/api/v1/jobs/{first['id']}/result", headers=await bearer(app, accounts["admin"])
    )
    assert download.status_code == 200 and download.text.count("\n") == 5
    async with app.state.sessionmaker() as session:
        created = await session.scalar(
            select(func.count()).where(AuditEntry.action == "user.created")
        )
    assert created == 3


async def test_a_failure_part_way_leaves_nothing_imported(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User], monkeypatch: Any
) -> None:
    from app.jobs.jobs.imports import content

    real, calls = content.publish_entry, []

    async def fail_on_the_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) % 2 == 0:
            raise RuntimeError("the disk is on fire")
        return await real(*args, **kwargs)

    monkeypatch.setattr(content, "publish_entry", fail_on_the_second)
    created = await upload(app, api, accounts["editor"], "content", CONTENT_CSV)
    job = await run_until_done(app, created.json()["id"], {"dead"})
    assert "the disk is on fire" in (job.last_error or "") and len(calls) == 6
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Entry)) == 0
        assert await session.scalar(select(func.count()).select_from(Revision)) == 0
        assert await session.scalar(select(func.count()).select_from(ImportRun)) == 0
        actions = set(await session.scalars(select(AuditEntry.action)))
    assert not {"content.created", "content.published", "import.finished"} & actions


async def test_viewers_cannot_import_and_editors_cannot_import_admins(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    refused = await upload(app, api, accounts["viewer"], "content", CONTENT_CSV)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    anonymous = await api.post(
        "/api/v1/jobs/import", data={"kind": "users"}, files=csv_file(USERS_CSV)
    )
    assert anonymous.status_code == 401
    text = "email,role\nboss@example.com,admin\npeer@example.com,editor\n"
    job = await imported(app, api, accounts["editor"], "users", text)
    assert reasons_by_line(job) == {2: ["role: You cannot create an account with the admin role."]}
    users = await users_by_email(app)
    assert "boss@example.com" not in users and users["peer@example.com"].role == "editor"
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/admin/jobs")
        assert "Import from a CSV file" not in page.text
        form = await browser.post(
            "/admin/jobs/import", data={"kind": "content"}, files=csv_file(CONTENT_CSV)
        )
        assert form.status_code == 403


@pytest.mark.parametrize(
    ("kind", "body", "status", "message"),
    [
        ("pets", "email\na@example.com\n", 422, "Choose users or content."),
        ("users", "email,colour\na@example.com,red\n", 422, "unknown columns: colour"),
        ("users", "name,role\nAnn,viewer\n", 422, "missing columns: email"),
        ("users", "email\n", 422, "no rows to import"),
        ("users", "email\nzoë@example.com\n".encode("latin-1"), 422, "not UTF-8"),
        ("users", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "not a CSV file"),
        ("users", "email\n" + "a@example.com\n" * 5001, 422, "more than 5,000 rows"),
        ("users", b"email\n" + b"a" * (5 * 1024 * 1024), 413, "larger than the import limit"),
    ],
)  # fmt: skip
async def test_a_bad_upload_is_refused_with_a_problem_and_no_job(
    app: Litestar,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
    kind: str,
    body: str | bytes,
    status: int,
    message: str,
) -> None:
    response = await upload(app, api, accounts["admin"], kind, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert message in response.json()["detail"]
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0


async def test_the_generic_enqueue_refuses_imports(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    response = await api.post(
        "/api/v1/jobs",
        json={"type": "import", "payload": {"kind": "users"}},
        headers=await bearer(app, accounts["admin"]),
    )
    assert response.status_code == 422
    assert "/api/v1/jobs/import" in response.json()["detail"]


async def test_the_admin_form_shows_a_refused_file_and_the_job_page_the_rejected_rows(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["editor"]) as browser:
        page = await browser.get("/admin/jobs")
        assert "Import from a CSV file" in page.text and 'name="kind"' in page.text
        bad = await browser.post(
            "/admin/jobs/import", data={"kind": "content"}, files=csv_file("title\nHi\n")
        )
        assert bad.status_code == 400 and 'id="e-import-file"' in bad.text
        assert "missing columns: kind" in bad.text
        assert '<option value="content" selected>' in bad.text
        empty = await browser.post(
            "/admin/jobs/import", data={"kind": "users"}, files={"file": ("", b"", "text/csv")}
        )
        assert empty.status_code == 400 and "Choose a CSV file to upload." in empty.text
        good = await browser.post(
            "/admin/jobs/import", data={"kind": "content"}, files=csv_file(CONTENT_CSV)
        )
        assert good.status_code == 303, good.text
        job_id = int(good.headers["location"].rsplit("/", 1)[1])
        await run_until_done(app, job_id)
        detail = (await browser.get(good.headers["location"])).text
        assert "11 read · 4 imported · 7 rejected" in detail and 'data-line="10"' in detail
        assert "A scheduled row needs its publish time." in detail
        assert f"Download rejected-content-{job_id}.csv" in detail
        download = await browser.get(f"/admin/jobs/{job_id}/download")
        assert download.status_code == 200 and download.text.startswith("kind,title,slug")
    async with app.state.sessionmaker() as session:
        enqueued = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "job.enqueue")
        )
    assert enqueued is not None and enqueued.details["kind"] == "content"
    assert enqueued.ip_address == "203.0.113.7"


async def test_the_upload_is_documented_in_the_openapi_schema(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/v1/jobs/import"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert "import_errors" in operation["description"]


async def test_the_rejected_rows_file_can_be_fixed_and_uploaded_again(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    admin = accounts["admin"]
    text = "email,name\nann@example.com,Ann\ncarl-at-example.com,=1+2\n"
    first = await imported(app, api, admin, "users", text)
    download = await api.get(f"/api/v1/jobs/{first['id']}/result", headers=await bearer(app, admin))
    assert download.text.splitlines()[1].startswith("carl-at-example.com,'=1+2,")  # escaped
    fixed = download.text.replace("carl-at-example.com", "carl@example.com")
    second = await imported(app, api, admin, "users", fixed)  # import_errors is ignored
    assert (second["result"]["imported"], second["result"]["rejected"]) == (1, 0)
    assert (await users_by_email(app))["carl@example.com"].display_name == "=1+2"


async def test_an_editor_api_key_imports_as_itself_within_its_creators_role(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """An import enqueued by an API key records the key, runs with the key's role (never
    above its creator's) and is audited as the key."""
    key = await api_key(app, accounts["admin"], "editor", "sync")
    text = "email,role\nboss@example.com,admin\npeer@example.com,editor\n"
    created = await api.post(
        "/api/v1/jobs/import", data={"kind": "users"}, files=csv_file(text), headers=key
    )
    assert created.status_code == 201, created.text
    assert created.json()["created_by_api_key"] is not None
    job = await run_until_done(app, created.json()["id"])
    assert job.status == "succeeded", job.last_error
    assert job.result["imported"] == 1
    assert job.result["rejected_rows"][0]["reasons"] == [
        "role: You cannot create an account with the admin role."
    ]
    async with app.state.sessionmaker() as session:
        actors = await session.scalars(
            select(AuditEntry.actor).where(AuditEntry.action == "import.finished")
        )
        assert list(actors) == ["api-key:sync"]
    seen = await api.get(f"/api/v1/jobs/{job.id}", headers=key)
    assert seen.status_code == 200 and seen.json()["result"]["imported"] == 1
