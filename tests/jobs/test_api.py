"""`/api/v1/jobs` on both legs: RBAC, validation as problem details, cancel, retry, results."""

from __future__ import annotations

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import delete, select

from app.accounts.models import AuditEntry, Role, User
from app.accounts.services.api_keys import create_api_key
from app.accounts.services.audit import Actor
from app.jobs.services.registry import JOB_TYPES, JobType
from app.settings import Settings
from tests.conftest import bearer, client_for, signed_in
from tests.jobs.conftest import PLUGIN, running_worker, wait_for_status


@pytest.fixture
async def api(app: Litestar) -> httpx.AsyncClient:
    async with client_for(app) as client:
        yield client


def record_payload(tmp_path) -> dict[str, object]:
    return {"path": str(tmp_path / "runs")}


async def _audit_actions(app: Litestar) -> list[str]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry.action).where(AuditEntry.action.like("job.%"))
        return list(await session.scalars(query.order_by(AuditEntry.created_at)))


async def test_an_editor_enqueues_a_job_it_may_run_and_the_enqueue_is_audited(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User], tmp_path
) -> None:
    editor = await bearer(app, accounts["editor"])
    created = await api.post(
        "/api/v1/jobs",
        json={"type": "test.record", "payload": record_payload(tmp_path), "priority": -1},
        headers=editor,
    )
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["priority"] == -1 and job["attempts"] == 0
    assert job["created_by"] == str(accounts["editor"].id)
    assert job["payload"] == {"path": str(tmp_path / "runs")}
    fetched = await api.get(f"/api/v1/jobs/{job['id']}", headers=editor)
    assert fetched.status_code == 200 and fetched.json()["id"] == job["id"]
    assert await _audit_actions(app) == ["job.enqueue"]


@pytest.mark.parametrize(
    ("role", "type", "expected"),
    [
        ("viewer", "test.file", 201),
        ("viewer", "test.record", 403),
        ("editor", "test.record", 201),
        ("editor", "cleanup", 403),
        ("admin", "cleanup", 201),
    ],
)
async def test_who_may_enqueue_which_type(
    app: Litestar,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
    tmp_path,
    role: str,
    type: str,
    expected: int,
) -> None:
    payload = record_payload(tmp_path) if type == "test.record" else {}
    response = await api.post(
        "/api/v1/jobs",
        json={"type": type, "payload": payload},
        headers=await bearer(app, accounts[role]),
    )
    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_anonymous_callers_get_401(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/jobs")).status_code == 401
    assert (await api.post("/api/v1/jobs", json={"type": "test.file"})).status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"type": "no.such.type"}, 422, "type"),
        ({"type": "test.record", "payload": {"sleep": "long"}}, 422, "payload"),
        ({"type": "test.record", "payload": [1]}, 400, None),
        ({"type": "test.file", "priority": 1000}, 400, "priority"),
        ({"payload": {}}, 400, None),
        ("not json", 400, None),
    ],
)
async def test_bad_input_is_answered_with_problem_details(
    app: Litestar,
    api: httpx.AsyncClient,
    accounts: dict[str, User],
    body: object,
    status: int,
    field: str | None,
) -> None:
    headers = await bearer(app, accounts["admin"])
    if isinstance(body, str):
        response = await api.post(
            "/api/v1/jobs", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    else:
        response = await api.post("/api/v1/jobs", json=body, headers=headers)
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == status
    if field:
        assert problem["errors"][0]["field"] == field


async def test_a_job_type_added_while_keel_runs_is_listed_and_enqueued_and_refused_once_removed(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User], plugin_job_type: JobType
) -> None:
    editor, admin = await bearer(app, accounts["editor"]), await bearer(app, accounts["admin"])
    listed = (await api.get("/api/v1/jobs/types", headers=editor)).json()
    assert "plugin.greet" in [kind["name"] for kind in listed]
    created = await api.post("/api/v1/jobs", json={"type": "plugin.greet"}, headers=editor)
    assert created.status_code == 201, created.text

    JOB_TYPES.remove(PLUGIN)
    listed = (await api.get("/api/v1/jobs/types", headers=editor)).json()
    assert "plugin.greet" not in [kind["name"] for kind in listed]
    refused = await api.post("/api/v1/jobs", json={"type": "plugin.greet"}, headers=editor)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["errors"][0]["field"] == "type"
    # the job queued before stays visible, and an admin can still cancel it
    job_id = created.json()["id"]
    assert (await api.get(f"/api/v1/jobs/{job_id}", headers=editor)).status_code == 200
    assert (await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=editor)).status_code == 403
    cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_a_job_id_past_bigint_is_a_400_and_the_last_bigint_a_404(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    headers = await bearer(app, accounts["admin"])
    for path in ("", "/result"):
        past = await api.get(f"/api/v1/jobs/{2**63}{path}", headers=headers)
        assert past.status_code == 400 and past.json()["errors"][0]["field"] == "job_id"
        last = await api.get(f"/api/v1/jobs/{2**63 - 1}{path}", headers=headers)
        assert last.status_code == 404
    for action in ("cancel", "retry"):
        past = await api.post(f"/api/v1/jobs/{2**64}/{action}", headers=headers)
        assert past.status_code == 400 and past.json()["errors"][0]["field"] == "job_id"
    async with signed_in(app, accounts["admin"]) as browser:
        assert (await browser.get(f"/admin/jobs/{2**63}")).status_code == 400
        assert (await browser.get(f"/admin/jobs/{2**63}/download")).status_code == 400
        assert (await browser.post(f"/admin/jobs/{2**63}/cancel")).status_code == 400
        assert (await browser.get(f"/admin/jobs/{2**63 - 1}")).status_code == 404


async def test_lists_filter_and_page_and_show_viewers_only_their_own_jobs(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User], tmp_path
) -> None:
    viewer, editor, admin = [await bearer(app, accounts[r]) for r in ("viewer", "editor", "admin")]
    mine = (await api.post("/api/v1/jobs", json={"type": "test.file"}, headers=viewer)).json()
    theirs = (
        await api.post(
            "/api/v1/jobs",
            json={"type": "test.record", "payload": record_payload(tmp_path)},
            headers=editor,
        )
    ).json()
    seen = (await api.get("/api/v1/jobs", headers=viewer)).json()
    assert [j["id"] for j in seen["items"]] == [mine["id"]] and seen["total"] == 1
    assert (await api.get(f"/api/v1/jobs/{theirs['id']}", headers=viewer)).status_code == 404
    everything = (await api.get("/api/v1/jobs?per_page=1", headers=admin)).json()
    assert everything["total"] == 2 and [j["id"] for j in everything["items"]] == [theirs["id"]]
    by_type = (await api.get("/api/v1/jobs?type=test.file", headers=admin)).json()
    assert [j["id"] for j in by_type["items"]] == [mine["id"]]
    assert (await api.get("/api/v1/jobs?status=queued", headers=admin)).json()["total"] == 2
    bad = await api.get("/api/v1/jobs?status=sleeping", headers=admin)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "status"
    assert (await api.get("/api/v1/jobs/123456789", headers=admin)).status_code == 404
    assert (await api.get("/api/v1/jobs/abc", headers=admin)).status_code == 404
    types = (await api.get("/api/v1/jobs/types", headers=viewer)).json()
    assert [t["name"] for t in types] == ["test.file"]
    picked = (await api.get("/api/v1/jobs?fields=id,type", headers=viewer)).json()
    assert picked["items"] == [{"id": mine["id"], "type": "test.file"}]
    unknown = await api.get("/api/v1/jobs?fields=secret", headers=viewer)
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "fields"


async def test_cancel_and_retry_follow_the_job_state_and_are_audited(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User], tmp_path
) -> None:
    editor, viewer = await bearer(app, accounts["editor"]), await bearer(app, accounts["viewer"])
    job = (
        await api.post(
            "/api/v1/jobs",
            json={"type": "test.record", "payload": record_payload(tmp_path)},
            headers=editor,
        )
    ).json()
    assert (await api.post(f"/api/v1/jobs/{job['id']}/retry", headers=editor)).status_code == 409
    assert (await api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=viewer)).status_code == 404
    cancelled = await api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=editor)
    assert again.status_code == 409 and again.json()["detail"].startswith("Only a queued")
    retried = await api.post(f"/api/v1/jobs/{job['id']}/retry", headers=editor)
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert retried.json()["finished_at"] is None
    assert await _audit_actions(app) == ["job.enqueue", "job.cancel", "job.retry"]


async def test_the_requester_downloads_the_result_file_and_others_cannot(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    viewer, editor = await bearer(app, accounts["viewer"]), await bearer(app, accounts["editor"])
    job = (await api.post("/api/v1/jobs", json={"type": "test.file"}, headers=viewer)).json()
    early = await api.get(f"/api/v1/jobs/{job['id']}/result", headers=viewer)
    assert early.status_code == 404
    async with running_worker(settings, app.state.sessionmaker):
        await wait_for_status(app.state.sessionmaker, job["id"], {"succeeded"})
    download = await api.get(f"/api/v1/jobs/{job['id']}/result", headers=viewer)
    assert download.status_code == 200 and download.text == "n\n1\n2\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="numbers.csv"' in download.headers["content-disposition"]
    assert (await api.get(f"/api/v1/jobs/{job['id']}/result", headers=editor)).status_code == 404
    done = (await api.get(f"/api/v1/jobs/{job['id']}", headers=viewer)).json()
    assert done["has_file"] and done["progress"] == 100 and done["result"]["rows"] == 2


async def api_key(app: Litestar, creator: User, role: str, name: str) -> dict[str, str]:
    """The `X-API-Key` header of a new key with `role`, made by `creator`."""
    async with app.state.sessionmaker() as session, session.begin():
        _, secret = await create_api_key(
            session, Actor.system(), Role[creator.role], creator.id, name, role, None
        )
    return {"X-API-Key": secret}


async def test_an_api_key_below_admin_never_sees_another_callers_jobs(
    app: Litestar, settings: Settings, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """The reproduction of issue 12 #1: an API key has no user id, and once compared with
    NULL in SQL it matched every job enqueued by an API key (here the whole audit log)."""
    admin_key = await api_key(app, accounts["admin"], "admin", "ops")
    viewer_key = await api_key(app, accounts["admin"], "viewer", "dashboard")
    export = await api.post(
        "/api/v1/jobs",
        json={"type": "export", "payload": {"dataset": "audit", "format": "csv"}},
        headers=admin_key,
    )
    assert export.status_code == 201, export.text
    job_id = export.json()["id"]
    async with running_worker(settings, app.state.sessionmaker):
        await wait_for_status(app.state.sessionmaker, job_id, {"succeeded"})

    assert (await api.get("/api/v1/audit", headers=viewer_key)).status_code == 403
    assert (await api.get(f"/api/v1/jobs/{job_id}", headers=viewer_key)).status_code == 404
    assert (await api.get(f"/api/v1/jobs/{job_id}/result", headers=viewer_key)).status_code == 404
    listed = (await api.get("/api/v1/jobs", headers=viewer_key)).json()
    assert listed["items"] == [] and listed["total"] == 0
    viewer = await bearer(app, accounts["viewer"])
    assert (await api.get(f"/api/v1/jobs/{job_id}", headers=viewer)).status_code == 404
    assert (await api.get("/api/v1/jobs", headers=viewer)).json()["total"] == 0
    # the key that enqueued it is an admin key: it reads the result
    download = await api.get(f"/api/v1/jobs/{job_id}/result", headers=admin_key)
    assert download.status_code == 200 and "job.enqueue" in download.text


async def test_an_api_key_sees_its_own_jobs_and_only_those(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    first = await api_key(app, accounts["admin"], "viewer", "first")
    second = await api_key(app, accounts["admin"], "viewer", "second")
    created = await api.post("/api/v1/jobs", json={"type": "test.file"}, headers=first)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["created_by"] is None and job["created_by_api_key"] is not None
    assert (await api.get(f"/api/v1/jobs/{job['id']}", headers=first)).status_code == 200
    mine = (await api.get("/api/v1/jobs", headers=first)).json()
    assert [j["id"] for j in mine["items"]] == [job["id"]]
    assert (await api.get(f"/api/v1/jobs/{job['id']}", headers=second)).status_code == 404
    assert (await api.get("/api/v1/jobs", headers=second)).json()["total"] == 0
    cancel = await api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=second)
    assert cancel.status_code == 404
    # the person who made both keys is not the keys: a viewer's own list stays empty too
    viewer = await bearer(app, accounts["viewer"])
    assert (await api.get("/api/v1/jobs", headers=viewer)).json()["total"] == 0


async def test_a_job_whose_creator_is_gone_is_seen_by_admins_only(
    app: Litestar, api: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    viewer = await bearer(app, accounts["viewer"])
    job = (await api.post("/api/v1/jobs", json={"type": "test.file"}, headers=viewer)).json()
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(User).where(User.id == accounts["viewer"].id))
    viewer_key = await api_key(app, accounts["admin"], "viewer", "dashboard")
    editor = await bearer(app, accounts["editor"])
    for headers in (viewer_key, editor):
        assert (await api.get(f"/api/v1/jobs/{job['id']}", headers=headers)).status_code == 404
        assert (await api.get("/api/v1/jobs", headers=headers)).json()["total"] == 0
    admin = await bearer(app, accounts["admin"])
    assert (await api.get(f"/api/v1/jobs/{job['id']}", headers=admin)).status_code == 200
