"""The `export` job on both legs: rows and headers per dataset and format, formula
escaping, who may export what, who may download, expiry, and bad payloads."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import update

from app.accounts.models import AuditEntry, User
from app.content.models import Entry
from app.jobs.jobs.exports import BATCH, DATASETS
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.jobs.services.registry import files_dir
from app.settings import Settings
from tests.conftest import bearer, signed_in
from tests.jobs.conftest import run_job, running_worker, wait_for_status

FORMULAS = ("=1+2", "+SUM(A1)", "-3+4", "@cmd")


@pytest.fixture
async def seeded(app: Litestar, accounts: dict[str, User]) -> None:
    """Entries and audit entries whose text starts like a spreadsheet formula."""
    async with app.state.sessionmaker() as session, session.begin():
        for n, title in enumerate(FORMULAS):
            session.add(Entry(kind="post", title=title, slug=f"entry-{n}", status="published"))
            session.add(
                AuditEntry(created_at=datetime.now(UTC), actor="system", action=f"seed.{n}")
            )
        await session.execute(
            update(User).where(User.username == "viewer").values(display_name="=HYPERLINK(1)")
        )


def read_rows(text: str, format: str) -> tuple[list[str], list[dict[str, Any]]]:
    if format == "csv":
        reader = csv.DictReader(io.StringIO(text))
        return list(reader.fieldnames or []), list(reader)
    records = json.loads(text)
    return list(records[0]), records


@pytest.mark.parametrize("format", ["csv", "json"])
@pytest.mark.parametrize(
    ("dataset", "key", "expected"),
    [
        ("users", "username", {"admin", "editor", "viewer"}),
        ("content", "title", {f"'{t}" for t in FORMULAS}),
        ("audit", "action", {"job.enqueue", *(f"seed.{n}" for n in range(4))}),
    ],
)
async def test_an_export_holds_every_row_with_its_headers(
    app: Litestar,
    settings: Settings,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
    seeded: None,
    dataset: str,
    format: str,
    key: str,
    expected: set[str],
) -> None:
    job = await run_job(
        app, settings, api, accounts["admin"], "export", {"dataset": dataset, "format": format}
    )
    assert job["progress"] == 100 and job["result"]["rows"] == len(expected)
    download = await api.get(
        f"/api/v1/jobs/{job['id']}/result", headers=await bearer(app, accounts["admin"])
    )
    assert download.status_code == 200, download.text
    name = job["result"]["files"][0]["name"]
    assert name.startswith(f"{dataset}-") and name.endswith(f".{format}") and len(name) > 20
    assert download.headers["content-type"] == (  # one charset, not two
        "text/csv; charset=utf-8" if format == "csv" else "application/json"
    )
    headers, rows = read_rows(download.text, format)
    assert headers == list(DATASETS[dataset].columns)
    if format == "json" and dataset == "content":
        expected = set(FORMULAS)  # JSON is not a spreadsheet: the text stays as it is
    assert {row[key] for row in rows} == expected
    assert "password" not in download.text and "$argon2" not in download.text


async def test_csv_cells_that_look_like_formulas_are_escaped(
    app: Litestar,
    settings: Settings,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
    seeded: None,
) -> None:
    job = await run_job(
        app, settings, api, accounts["admin"], "export", {"dataset": "users", "format": "csv"}
    )
    download = await api.get(
        f"/api/v1/jobs/{job['id']}/result", headers=await bearer(app, accounts["admin"])
    )
    rows = {row["username"]: row for row in csv.DictReader(io.StringIO(download.text))}
    assert rows["viewer"]["display_name"] == "'=HYPERLINK(1)"
    assert rows["admin"]["display_name"] == "Admin" and rows["admin"]["role"] == "admin"


WHO_EXPORTS_WHAT = [
    ("editor", "content", 201),
    ("editor", "users", 403),
    ("editor", "audit", 403),
    ("viewer", "content", 403),
    ("admin", "users", 201),
    ("admin", "audit", 201),
]


async def test_editors_export_content_and_only_admins_export_users_and_audit(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    for role, dataset, expected in WHO_EXPORTS_WHAT:  # one app for all: it is what a test costs
        response = await api.post(
            "/api/v1/jobs",
            json={"type": "export", "payload": {"dataset": dataset}},
            headers=await bearer(app, accounts[role]),
        )
        assert response.status_code == expected, (role, dataset, response.text)
        if expected == 403:
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_only_the_requester_and_admins_download_an_export(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    job = await run_job(
        app, settings, api, accounts["editor"], "export", {"dataset": "content", "format": "json"}
    )
    url = f"/api/v1/jobs/{job['id']}/result"
    assert (await api.get(url, headers=await bearer(app, accounts["editor"]))).json() == []
    assert (await api.get(url, headers=await bearer(app, accounts["admin"]))).status_code == 200
    other = await api.get(url, headers=await bearer(app, accounts["viewer"]))
    assert other.status_code == 404
    assert other.headers["content-type"].startswith("application/problem+json")
    assert (await api.get(url)).status_code == 401


async def test_an_expired_export_answers_410_and_cleanup_removes_its_file(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    admin = accounts["admin"]
    old = await run_job(app, settings, api, admin, "export", {"dataset": "users"})
    recent = await run_job(app, settings, api, admin, "export", {"dataset": "users"})
    hours = settings.worker.export_retention_hours
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == old["id"])
            .values(finished_at=datetime.now(UTC) - timedelta(hours=hours, minutes=5))
        )
    expired = await api.get(f"/api/v1/jobs/{old['id']}/result", headers=await bearer(app, admin))
    assert expired.status_code == 410
    assert expired.headers["content-type"].startswith("application/problem+json")
    assert "expired" in expired.json()["detail"]
    async with signed_in(app, admin) as browser:
        page = (await browser.get(f"/admin/jobs/{old['id']}")).text
        assert "The result files have expired." in page and "Download users-" not in page
    folders = files_dir(settings)
    assert (folders / str(old["id"])).is_dir()
    async with app.state.sessionmaker() as session, session.begin():
        cleanup = await enqueue(session, "cleanup")
    async with running_worker(settings, app.state.sessionmaker):
        done = await wait_for_status(app.state.sessionmaker, cleanup, {"succeeded", "dead"})
    assert done.status == "succeeded", done.last_error
    assert not (folders / str(old["id"])).exists() and (folders / str(recent["id"])).is_dir()
    fetched = await api.get(f"/api/v1/jobs/{old['id']}", headers=await bearer(app, admin))
    assert fetched.status_code == 200  # the job stays until job_retention_days
    still = await api.get(f"/api/v1/jobs/{recent['id']}/result", headers=await bearer(app, admin))
    assert still.status_code == 200


BAD_EXPORT_PAYLOADS: list[tuple[object, int]] = [
    ({}, 422),
    ({"dataset": "secrets"}, 422),
    ({"dataset": "users", "format": "xml"}, 422),
    ({"dataset": "users", "extra": 1}, 422),
    ({"dataset": ["users"]}, 422),
    ("users", 400),  # not an object: the request body's own schema answers
]


async def test_a_bad_export_payload_is_a_4xx_problem(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    for payload, status in BAD_EXPORT_PAYLOADS:  # one app for all: it is what a test costs
        response = await api.post(
            "/api/v1/jobs",
            json={"type": "export", "payload": payload},
            headers=await bearer(app, accounts["admin"]),
        )
        assert response.status_code == status, (payload, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == "payload", payload


async def test_the_admin_form_refuses_bad_export_payloads_beside_the_field(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["editor"]) as browser:
        form = {"type": "export", "priority": "0"}
        bad = await browser.post("/admin/jobs", data={**form, "p.dataset": "nope"})
        assert bad.status_code == 400 and 'id="e-f-p-dataset"' in bad.text
        assert "Invalid payload" in bad.text and "nope" in bad.text
        users = await browser.post("/admin/jobs", data={**form, "p.dataset": "users"})
        assert users.status_code == 403
        content = await browser.post("/admin/jobs", data={**form, "p.dataset": "content"})
        assert content.status_code in (302, 303), content.text


async def test_the_job_page_offers_every_report_file_for_download(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    job = await run_job(app, settings, api, accounts["editor"], "report", {"days": 7})
    html_name, csv_name = (f["name"] for f in job["result"]["files"])
    async with signed_in(app, accounts["editor"]) as browser:
        page = await browser.get(f"/admin/jobs/{job['id']}")
        assert f"Download {html_name}" in page.text and f"Download {csv_name}" in page.text
        link = f"/admin/jobs/{job['id']}/download?file={csv_name}"
        assert link in page.text
        table = await browser.get(link)
        assert table.status_code == 200 and table.text.startswith("section,key,count")


async def test_a_large_export_reads_every_row_once_across_batches(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    count = BATCH * 2 + 7
    async with app.state.sessionmaker() as session, session.begin():
        session.add_all(
            AuditEntry(created_at=datetime.now(UTC), actor="system", action=f"bulk.{n}")
            for n in range(count)
        )
    job = await run_job(
        app, settings, api, accounts["admin"], "export", {"dataset": "audit", "format": "json"}
    )
    rows = (
        await api.get(
            f"/api/v1/jobs/{job['id']}/result", headers=await bearer(app, accounts["admin"])
        )
    ).json()
    actions = [row["action"] for row in rows]
    assert len(actions) == count + 1 and len(set(actions)) == count + 1  # + its own enqueue
    assert job["progress"] == 100 and job["progress_message"] == f"{count + 1} rows exported"
