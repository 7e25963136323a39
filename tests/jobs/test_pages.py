"""`/admin/jobs` on both legs: the list with live refresh, the enqueue form, a job's page,
cancel, retry and download, and the workers' heartbeats."""

from __future__ import annotations

import html
import json
import re
import time

from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import User
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.jobs.services.worker import HEARTBEAT_PREFIX
from app.settings import Settings
from tests.conftest import bearer, client_for, signed_in
from tests.jobs.conftest import running_worker, wait_for_status


async def _jobs(app: Litestar) -> list[Job]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(Job).order_by(Job.id)))


async def _job_for(app: Litestar, user: User, type: str, payload: dict | None = None) -> int:
    async with app.state.sessionmaker() as session, session.begin():
        return await enqueue(session, type, payload, created_by=user.id)


async def test_the_list_shows_jobs_their_progress_and_live_workers(
    app: Litestar, accounts: dict[str, User]
) -> None:
    job_id = await _job_for(app, accounts["editor"], "test.file")
    heartbeat = {
        "id": "host:1:abc",
        "mode": "process",
        "queues": ["default"],
        "concurrency": 4,
        "running": 1,
        "processed": 7,
        "started_at": time.time() - 60,
        "last_seen": time.time(),
    }
    await app.state.store.set(HEARTBEAT_PREFIX + "host:1:abc", json.dumps(heartbeat), ttl=30)
    async with signed_in(app, accounts["admin"]) as browser:
        page = await browser.get("/admin/jobs")
        assert page.status_code == 200
        assert f'data-job="{job_id}"' in page.text and "test.file" in page.text
        assert 'hx-trigger="every 2s"' in page.text  # the results refresh themselves
        assert 'data-worker="host:1:abc"' in page.text and "1 / 4" in page.text
        assert '<tr data-queue="default"><td>default</td><td data-waiting>1</td>' in page.text
        poll = await browser.get(
            "/admin/jobs", headers={"HX-Request": "true", "HX-Trigger": "results"}
        )
        assert poll.status_code == 200 and poll.text.lstrip().startswith('<div id="results"')
        assert "HX-Push-Url" not in poll.headers and "<html" not in poll.text
        filtered = await browser.get(
            "/admin/jobs?status=running",
            headers={"HX-Request": "true", "HX-Trigger": "job-filters"},
        )
        assert "No jobs match these filters." in filtered.text
        assert filtered.headers["HX-Push-Url"] == "/admin/jobs?status=running"
        bad = await browser.get("/admin/jobs?status=sleeping")
        assert bad.status_code == 400 and "Status must be one of" in bad.text


async def test_the_enqueue_form_creates_a_job_and_shows_its_page(
    app: Litestar, settings: Settings, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/admin/jobs")
        form = page.text.split('id="enqueue-title"')[1]  # the enqueue form offers what they may run
        assert 'value="test.file"' in form and 'value="test.record"' not in form
        created = await browser.post(
            "/admin/jobs", data={"type": "test.file", "payload": "{}", "priority": "0"}
        )
        assert created.status_code == 303
        location = created.headers["location"]
        job_id = int(location.rsplit("/", 1)[1])
        detail = await browser.get(location)
        assert detail.status_code == 200 and "data-status>queued<" in detail.text
        assert 'hx-trigger="every 1s"' in detail.text  # refreshes until it finishes
        async with running_worker(settings, app.state.sessionmaker):
            await wait_for_status(app.state.sessionmaker, job_id, {"succeeded"})
        done = await browser.get(location, headers={"HX-Request": "true"})
        assert done.text.lstrip().startswith('<section id="job-status"')
        assert "every 1s" not in done.text and "data-progress>100 %<" in done.text
        assert "Download numbers.csv" in done.text
        download = await browser.get(f"/admin/jobs/{job_id}/download")
        assert download.status_code == 200 and download.text == "n\n1\n2\n"


async def test_form_mistakes_come_back_beside_the_fields_with_the_input_kept(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["editor"]) as browser:
        bad_json = await browser.post(
            "/admin/jobs", data={"type": "test.file", "payload": "{oops", "priority": "0"}
        )
        assert bad_json.status_code == 400
        assert "JSON is malformed" in bad_json.text and "{oops" in bad_json.text
        missing = await browser.post(
            "/admin/jobs", data={"type": "test.record", "p.steps": "2", "priority": "0"}
        )
        assert missing.status_code == 400
        assert 'id="e-f-p-path">Path is required.<' in missing.text
        assert 'name="p.steps" type="number" value="2"' in missing.text, "the input is kept"
        out_of_range = await browser.post(
            "/admin/jobs", data={"type": "report", "p.days": "0", "priority": "0"}
        )
        assert out_of_range.status_code == 400
        assert re.search(
            r'id="e-f-p-days">Invalid payload: Expected `int` &gt;= 1', out_of_range.text
        )
        not_allowed = await browser.post(
            "/admin/jobs", data={"type": "cleanup", "payload": "{}", "priority": "0"}
        )
        assert not_allowed.status_code == 403
    assert await _jobs(app) == [], "no mistake enqueued anything"


async def test_the_json_box_refuses_what_the_database_cannot_store_beside_the_field(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """The JSON box is decoded by Keel, not by the boundary: same rules, same message."""
    payloads = {
        '{"path": "/tmp/x\\u0000"}': "NUL character",
        '{"path": "\\ud800"}': "unpaired surrogate",
        "[" * 5000 + "]" * 5000: "The JSON is nested too deeply.",
    }
    async with signed_in(app, accounts["admin"]) as browser:
        for payload, message in payloads.items():
            response = await browser.post(
                "/admin/jobs", data={"type": "test.file", "payload": payload, "priority": "0"}
            )
            assert response.status_code == 400, response.text
            assert re.search(r'id="e-payload">[^<]*' + re.escape(message), response.text)
    assert await _jobs(app) == []


def _reason(message: str) -> str:
    """A JSON decoding message without where it happened (an offset, a path), which differ
    between the API's whole body and the form's box."""
    return re.split(r" \(byte | - at ", message)[0]


async def test_the_json_box_reads_json_exactly_as_the_api_does(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """NaN and Infinity are not JSON, nor an integer or a number past what is kept; nesting
    has the API's limit; of duplicate keys the last one counts."""
    refused = [
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": 1e999}',
        '{"a": 1' + "0" * 5000 + "}",
        '{"a": ' + "[" * 5000 + "]" * 5000 + "}",
    ]
    as_admin = await bearer(app, accounts["admin"])
    async with client_for(app) as api, signed_in(app, accounts["admin"]) as browser:
        for payload in refused:
            by_api = await api.post(
                "/api/v1/jobs",
                content=f'{{"type": "cleanup", "payload": {payload}}}',
                headers={**as_admin, "Content-Type": "application/json"},
            )
            by_form = await browser.post(
                "/admin/jobs", data={"type": "cleanup", "payload": payload, "priority": "0"}
            )
            assert by_api.status_code == 400, by_api.text
            assert by_form.status_code == 400, by_form.text
            shown = re.search(r'id="e-payload">([^<]*)<', by_form.text)
            assert shown is not None, by_form.text
            assert _reason(html.unescape(shown[1])) == _reason(by_api.json()["detail"])
        assert await _jobs(app) == [], "nothing refused was enqueued"
        duplicate = '{"a": 1, "a": 2}'
        await browser.post(
            "/admin/jobs", data={"type": "cleanup", "payload": duplicate, "priority": "0"}
        )
    assert [job.payload for job in await _jobs(app)] == [{"a": 2}]


async def test_the_form_asks_for_each_types_own_settings(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["admin"]) as browser:
        export = await browser.get("/admin/jobs/fields", params={"type": "export"})
        assert '<select id="f-p-dataset" name="p.dataset"' in export.text
        assert '<option value="audit">audit</option>' in export.text
        report = await browser.get("/admin/jobs/fields", params={"type": "report"})
        assert 'name="p.days" type="number" value="30" min="1" max="3650"' in report.text
        notify = await browser.get("/admin/jobs/fields", params={"type": "notify"})
        assert '<textarea id="f-p-body" name="p.body" rows="4" required' in notify.text
        free = await browser.get("/admin/jobs/fields", params={"type": "test.file"})
        assert 'name="payload"' in free.text, "a type without a schema keeps the JSON box"
        created = await browser.post(
            "/admin/jobs",
            data={"type": "export", "p.dataset": "content", "p.format": "json", "priority": "0"},
        )
        assert created.status_code == 303
    [job] = await _jobs(app)
    assert (job.type, job.payload) == ("export", {"dataset": "content", "format": "json"})
    async with signed_in(app, accounts["viewer"]) as browser:
        theirs = await browser.get("/admin/jobs/fields", params={"type": "export"})
    assert "p.dataset" not in theirs.text, "only a type the user may run is offered"


async def test_cancel_and_retry_from_the_job_page(
    app: Litestar, accounts: dict[str, User], tmp_path
) -> None:
    job_id = await _job_for(app, accounts["editor"], "test.record", {"path": str(tmp_path / "r")})
    async with signed_in(app, accounts["editor"]) as browser:
        cancelled = await browser.post(f"/admin/jobs/{job_id}/cancel")
        assert cancelled.status_code == 303
        page = await browser.get(f"/admin/jobs/{job_id}")
        assert "data-status>cancelled<" in page.text and re.search(r">\s*Retry\s*<", page.text)
        retried = await browser.post(f"/admin/jobs/{job_id}/retry")
        assert retried.status_code == 303
        page = await browser.get(f"/admin/jobs/{job_id}")
        assert "data-status>queued<" in page.text
        conflict = await browser.post(f"/admin/jobs/{job_id}/retry")
        assert conflict.status_code == 409
    async with signed_in(app, accounts["viewer"]) as browser:
        assert (await browser.get(f"/admin/jobs/{job_id}")).status_code == 404
        assert (await browser.post(f"/admin/jobs/{job_id}/cancel")).status_code == 404


async def test_the_system_page_shows_each_workers_last_heartbeat_and_current_job(
    app: Litestar, accounts: dict[str, User], settings: Settings, tmp_path
) -> None:
    job_id = await _job_for(
        app, accounts["editor"], "test.record", {"path": str(tmp_path / "runs"), "sleep": 20}
    )
    store, sessionmaker = app.state.store, app.state.sessionmaker
    async with running_worker(settings, sessionmaker, store, shutdown_grace=0.3) as worker:
        await wait_for_status(sessionmaker, job_id, {"running"})
        await worker.heartbeat()
        async with signed_in(app, accounts["admin"]) as browser:
            page = await browser.get("/admin/system")
    assert page.status_code == 200, page.text
    row = re.search(rf'<tr data-worker="{re.escape(worker.id)}">(.*?)</tr>', page.text, re.S)
    assert row, page.text
    assert f'<a href="/admin/jobs/{job_id}">#{job_id} test.record</a>' in row.group(1)
    assert re.search(r"<td>\d+ s ago</td>", row.group(1))


async def test_the_list_comes_first_and_the_form_opens_on_no_type_with_each_types_purpose(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await _job_for(app, accounts["admin"], "cleanup")
    async with signed_in(app, accounts["admin"]) as browser:
        page = (await browser.get("/admin/jobs")).text
        fields = (await browser.get("/admin/jobs/fields", params={"type": "cleanup"})).text
        unchosen = await browser.post("/admin/jobs", data={"type": "", "priority": "0"})
    assert page.index("<tr data-job=") < page.index('id="enqueue-title"')
    assert re.search(r'<details class="panel job-action">\s*<summary><h2 id="enqueue-title">', page)
    assert '<option value="">Choose a job type…</option>' in page
    assert re.search(r'<option value="cleanup">cleanup</option>', page)  # not selected
    assert re.search(r"<dt><code>cleanup</code></dt><dd>[^<]+</dd>", page)  # what it does
    assert 'name="payload"' not in page, "no JSON box before a type is chosen"
    assert "data-description" in fields
    assert re.search(r'<details class="advanced">\s*<summary>Advanced: the payload as JSON', fields)
    assert unchosen.status_code == 400
    assert re.search(r'id="e-type">Choose a job type\.<', unchosen.text)
    assert re.search(
        r'<details class="panel job-action" open>\s*<summary><h2 id="enqueue-title">', unchosen.text
    )
    assert [job.type for job in await _jobs(app)] == ["cleanup"]


async def test_a_typed_job_takes_its_payload_as_json_from_the_advanced_box(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["admin"]) as browser:
        created = await browser.post(
            "/admin/jobs",
            data={
                "type": "export",
                "p.dataset": "content",
                "p.format": "json",
                "payload": '{"dataset": "audit", "format": "csv"}',
                "priority": "0",
            },
        )
    assert created.status_code == 303, created.text
    [job] = await _jobs(app)
    assert job.payload == {"dataset": "audit", "format": "csv"}


async def test_a_result_reads_as_labelled_values_not_json(
    app: Litestar, accounts: dict[str, User]
) -> None:
    from sqlalchemy import update

    job_id = await _job_for(app, accounts["admin"], "report", {"days": 7})
    result = {"days": 7, "figures": {"users_by_role": {"admin": 1, "viewer": 1234}}}
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id).values(status="succeeded", result=result)
        )
    async with signed_in(app, accounts["admin"]) as browser:
        page = (await browser.get(f"/admin/jobs/{job_id}")).text
    by_role = r'<dt>Users by role</dt><dd data-fact="users_by_role">.*?'
    assert re.search(by_role + r'<dt>Viewer</dt><dd data-fact="viewer">1,234</dd>', page, re.S)
    assert re.search(r'<dt>Days</dt><dd data-fact="days">7</dd>', page)
    assert "{&#34;" not in page and "&#34;figures&#34;" not in page
