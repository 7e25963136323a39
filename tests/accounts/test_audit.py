"""The audit log: app/accounts/services/audit.py queries, the admin page and the API (both legs)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import AuditEntry, User
from app.accounts.pages.audit import CSV_COLUMNS
from app.accounts.services.audit import AuditFilterError, AuditFilters, iter_audit
from tests.conftest import bearer, client_for, signed_in

NOON = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)
USER_ID = "5f0c1d2e-0000-4000-8000-000000000001"


async def add_entries(app: Litestar, *entries: dict[str, Any]) -> list[UUID]:
    async with app.state.sessionmaker() as session, session.begin():
        rows = [AuditEntry(**{"created_at": NOON, "actor": "system", **e}) for e in entries]
        session.add_all(rows)
    return [row.id for row in rows]


@pytest.fixture
async def log(app: Litestar, accounts: dict[str, User]) -> dict[str, UUID]:
    """Four entries over four days: 8 Jan (admin) to 11 Jan 2030 (admin), one a day."""

    def by(role: str) -> dict[str, Any]:
        return {"user_id": accounts[role].id, "actor": role}

    ids = await add_entries(
        app,
        {
            **by("admin"),
            "action": "user.created",
            "resource_type": "user",
            "resource_id": USER_ID,
            "details": {"email": "new@example.org"},
            "created_at": NOON - timedelta(days=2),
        },
        {**by("editor"), "action": "content.published", "created_at": NOON - timedelta(days=1)},
        {**by("viewer"), "action": "auth.login", "ip_address": "192.0.2.5"},
        {**by("admin"), "action": "auth.login", "created_at": NOON + timedelta(days=1)},
    )
    return dict(zip(("created", "published", "viewer_login", "admin_login"), ids, strict=True))


def rows(html: str) -> list[UUID]:
    return [UUID(found) for found in re.findall(r'data-entry="([0-9a-f-]+)"', html)]


async def audit_page(app: Litestar, admin: User, query: str = "", **headers: str) -> httpx.Response:
    async with signed_in(app, admin) as client:
        return await client.get(f"/admin/audit{query}", headers=headers)


async def test_admins_see_the_log_newest_first(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    response = await audit_page(app, accounts["admin"])
    assert response.status_code == 200
    assert rows(response.text) == [
        log["admin_login"],
        log["viewer_login"],
        log["published"],
        log["created"],
    ]
    assert "192.0.2.5" in response.text
    assert "new@example.org" in response.text
    assert '<option value="content.published">' in response.text


PAGE_FILTERS = [
    ("?action=auth.login", ["admin_login", "viewer_login"]),
    ("?user=viewer", ["viewer_login"]),
    ("?user=ADMIN", ["admin_login", "created"]),
    ("?from=2030-01-09&to=2030-01-10", ["viewer_login", "published"]),
    ("?from=2030-01-10", ["admin_login", "viewer_login"]),
    ("?to=2030-01-08", ["created"]),
    (f"?resource_type=user&resource_id={USER_ID}", ["created"]),
    ("?action=auth.login&user=admin&from=2030-01-11", ["admin_login"]),
]
"""Each filter of the page with the entries it must keep, newest first. The cases share
one app and one log (building an app is what a test costs), each is named when it fails."""


async def test_filters_narrow_the_entries(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with signed_in(app, accounts["admin"]) as client:
        for query, expected in PAGE_FILTERS:
            response = await client.get(f"/admin/audit{query}")
            assert response.status_code == 200, query
            assert rows(response.text) == [log[name] for name in expected], query


async def test_the_user_filter_takes_an_id_too(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    response = await audit_page(app, accounts["admin"], f"?user={accounts['editor'].id}")
    assert rows(response.text) == [log["published"]]


async def test_no_match_and_an_empty_log_each_say_so(
    app: Litestar, accounts: dict[str, User]
) -> None:
    empty = await audit_page(app, accounts["admin"])
    assert "The audit log is empty." in empty.text
    await add_entries(app, {"action": "auth.login"})
    unmatched = await audit_page(app, accounts["admin"], "?action=user.deleted")
    assert unmatched.status_code == 200
    assert "No entries match these filters." in unmatched.text
    assert "Export CSV" not in unmatched.text


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("?from=2030-13-01", "from", "Enter a date as YYYY-MM-DD."),
        ("?from=2030-01-10&to=2030-01-09", "to", "The start of the time range is after its end."),
        ("?to=9999-12-31", "to", "Give a time between the years 1000 and 9998."),
    ],
)
async def test_a_bad_date_comes_back_beside_its_field(
    app: Litestar,
    accounts: dict[str, User],
    log: dict[str, UUID],
    query: str,
    field: str,
    message: str,
) -> None:
    response = await audit_page(app, accounts["admin"], query)
    assert response.status_code == 400
    assert f'<p class="error" id="e-{field}">{message}</p>' in response.text
    assert rows(response.text) == []


async def test_htmx_gets_only_the_results_and_a_clean_url(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    response = await audit_page(
        app, accounts["admin"], "?user=&action=auth.login&from=&to=", **{"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "<html" not in response.text and "<form" not in response.text
    assert rows(response.text) == [log["admin_login"], log["viewer_login"]]
    assert response.headers["HX-Push-Url"] == "/admin/audit?action=auth.login"
    assert "HX-Request" in response.headers["Vary"]


async def test_the_log_is_paged_fifty_at_a_time(app: Litestar, accounts: dict[str, User]) -> None:
    await add_entries(
        app,
        *({"action": "auth.login", "created_at": NOON + timedelta(minutes=i)} for i in range(120)),
    )
    first = await audit_page(app, accounts["admin"], "?action=auth.login")
    last = await audit_page(app, accounts["admin"], "?action=auth.login&page=3")
    assert len(rows(first.text)) == 50
    assert "Page 1 of 3 · 120 in all" in first.text
    assert 'href="?action=auth.login&amp;page=2"' in first.text
    assert len(rows(last.text)) == 20
    assert set(rows(first.text)).isdisjoint(rows(last.text))
    assert 'rel="next"' not in last.text


async def test_the_csv_export_holds_the_matching_rows_only(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    await add_entries(
        app,
        {
            "action": "auth.login",
            "actor": '=HYPERLINK("x")',
            "created_at": NOON - timedelta(days=30),
        },
    )
    page = await audit_page(app, accounts["admin"], "?action=auth.login")
    assert 'href="/admin/audit/export?action=auth.login"' in page.text
    async with signed_in(app, accounts["admin"]) as client:
        response = await client.get("/admin/audit/export?action=auth.login")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"  # one charset
    assert response.headers["content-disposition"].startswith('attachment; filename="keel-audit-')
    table = list(csv.reader(io.StringIO(response.text)))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [row[3] for row in table[1:]] == ["auth.login"] * 3
    assert [row[1] for row in table[1:]] == ["admin", "viewer", '\'=HYPERLINK("x")']
    assert table[2][0] == NOON.isoformat()
    assert table[2][2] == str(accounts["viewer"].id)


async def test_the_csv_export_of_a_user_keeps_the_details(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with signed_in(app, accounts["admin"]) as client:
        response = await client.get(f"/admin/audit/export?resource_id={USER_ID}&to=2030-01-08")
    table = list(csv.reader(io.StringIO(response.text)))
    assert len(table) == 2
    assert table[1][-1] == '{"email": "new@example.org"}'


async def test_a_bad_filter_refuses_the_export(app: Litestar, accounts: dict[str, User]) -> None:
    async with signed_in(app, accounts["admin"]) as client:
        response = await client.get("/admin/audit/export?from=yesterday")
    assert response.status_code == 400


async def test_the_export_reads_in_batches_newest_first_up_to_its_limit(
    app: Litestar, accounts: dict[str, User]
) -> None:
    ids = await add_entries(
        app, *({"action": "tick", "created_at": NOON + timedelta(hours=i // 2)} for i in range(7))
    )
    filters = AuditFilters(action="tick")
    everything = [e.id async for e in iter_audit(app.state.sessionmaker, filters, batch_size=2)]
    assert sorted(everything) == sorted(ids)  # ties on created_at neither repeat nor vanish
    limited = [
        e.id async for e in iter_audit(app.state.sessionmaker, filters, limit=3, batch_size=2)
    ]
    assert limited == everything[:3]


@pytest.mark.parametrize("role", ["editor", "viewer"])
async def test_only_admins_see_the_audit_log(
    app: Litestar, accounts: dict[str, User], role: str
) -> None:
    async with signed_in(app, accounts[role]) as client:
        page = await client.get("/admin/audit")
        export = await client.get("/admin/audit/export")
        dashboard = await client.get("/admin")
    async with client_for(app) as client:
        api = await client.get("/api/v1/audit", headers=await bearer(app, accounts[role]))
        anonymous = await client.get("/admin/audit")
    assert (page.status_code, export.status_code, api.status_code) == (403, 403, 403)
    assert anonymous.status_code == 303
    assert "Audit log" not in dashboard.text
    assert "Audit log" in (await audit_page(app, accounts["admin"])).text


async def test_the_api_lists_entries_in_an_envelope(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/audit",
            params={"action": "auth.login"},
            headers=await bearer(app, accounts["admin"]),
        )
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["page"], body["per_page"]) == (2, 1, 50)
    first, second = body["items"]
    assert first["id"] == str(log["admin_login"])
    assert second == {
        "id": str(log["viewer_login"]),
        "created_at": "2030-01-10T12:00:00Z",
        "user_id": str(accounts["viewer"].id),
        "actor": "viewer",
        "action": "auth.login",
        "resource_type": None,
        "resource_id": None,
        "details": None,
        "ip_address": "192.0.2.5",
        "user_agent": None,
    }


API_FILTERS = [
    ({"user_id": USER_ID}, []),
    ({"resource_type": "user", "resource_id": USER_ID}, ["created"]),
    ({"since": "2030-01-10T12:00:00Z"}, ["admin_login", "viewer_login"]),
    ({"until": "2030-01-10T12:00:00+00:00"}, ["published", "created"]),
    (
        {"since": "2030-01-09T00:00:00", "until": "2030-01-11T00:00:00"},
        ["viewer_login", "published"],
    ),
    ({"per_page": "1", "page": "2"}, ["viewer_login"]),
]


async def test_the_api_filters_like_the_page(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with client_for(app) as client:
        for params, expected in API_FILTERS:
            response = await client.get(
                "/api/v1/audit", params=params, headers=await bearer(app, accounts["admin"])
            )
            assert response.status_code == 200, (params, response.text)
            found = [item["id"] for item in response.json()["items"]]
            assert found == [str(log[n]) for n in expected], params


async def test_the_api_filters_by_user_id(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/audit",
            params={"user_id": str(accounts["admin"].id)},
            headers=await bearer(app, accounts["admin"]),
        )
    assert [item["id"] for item in response.json()["items"]] == [
        str(log["admin_login"]),
        str(log["created"]),
    ]


BAD_API_FILTERS = [
    {"since": "yesterday"},
    {"until": "0.5"},  # a number is no ISO 8601 time (it was taken as Unix seconds)
    {"since": "1700000000"},
    {"until": ""},
    {"until": "2030-02-30T00:00:00Z"},
    {"user_id": "admin"},
    {"page": "first"},
    {"since": "2030-01-11T00:00:00Z", "until": "2030-01-10T00:00:00Z"},
]


async def test_the_api_answers_bad_filters_with_a_problem(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        for params in BAD_API_FILTERS:
            response = await client.get(
                "/api/v1/audit", params=params, headers=await bearer(app, accounts["admin"])
            )
            assert response.status_code == 400, params
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == 400, params


async def test_a_time_past_what_a_datetime_holds_is_a_400_naming_its_filter(
    app: Litestar, accounts: dict[str, User]
) -> None:
    as_admin = await bearer(app, accounts["admin"])
    async with client_for(app) as client:
        for name in ("since", "until"):
            for moment in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"):
                response = await client.get(
                    "/api/v1/audit", params={name: moment}, headers=as_admin
                )
                assert response.status_code == 400, response.text
                assert response.json()["errors"][0]["field"] == name


async def test_the_api_needs_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/audit")
    assert response.status_code == 401


def test_filters_read_naive_times_as_utc_and_refuse_an_inverted_range() -> None:
    filters = AuditFilters(since=datetime(2030, 1, 1), user="  ", action=" auth.login ")
    assert filters.since == datetime(2030, 1, 1, tzinfo=UTC)
    assert (filters.user, filters.action) == (None, "auth.login")
    with pytest.raises(AuditFilterError):
        AuditFilters(since=NOON, until=NOON - timedelta(seconds=1))
    form = AuditFilters.from_form({"from": "2030-01-09", "to": "2030-01-09"})
    assert (form.since, form.until) == (
        datetime(2030, 1, 9, tzinfo=UTC),
        datetime(2030, 1, 10, tzinfo=UTC),
    )


async def test_fields_picks_what_each_audit_entry_answers_and_an_unknown_one_is_a_400(
    app: Litestar, accounts: dict[str, User], log: dict[str, UUID]
) -> None:
    async with client_for(app) as client:
        auth = await bearer(app, accounts["admin"])
        picked = await client.get(
            "/api/v1/audit",
            params={"action": "auth.login", "fields": "actor, action,actor"},
            headers=auth,
        )
        unknown = await client.get("/api/v1/audit", params={"fields": "actor,secret"}, headers=auth)
        document = (await client.get("/schema/openapi.json")).json()
    assert picked.status_code == 200, picked.text
    assert picked.json() == {
        "items": [
            {"actor": "admin", "action": "auth.login"},
            {"actor": "viewer", "action": "auth.login"},
        ],
        "total": 2,
        "page": 1,
        "per_page": 50,
    }
    assert unknown.status_code == 400
    problem = unknown.json()
    assert "secret" in problem["detail"] and problem["errors"][0]["field"] == "fields", problem
    operation = document["paths"]["/api/v1/audit"]["get"]
    [fields] = [p for p in operation["parameters"] if p["name"] == "fields"]
    assert "Comma-separated" in fields["description"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert any(choice.get("$ref", "").endswith("AuditPageOut") for choice in answer["anyOf"])


async def test_entries_read_as_sentences_with_links_names_and_old_to_new_changes(
    app: Litestar, accounts: dict[str, User]
) -> None:
    from tests.accounts.test_users_api import api_as

    async with api_as(app, accounts["admin"]) as api:
        made = await api.post(
            "/api/v1/content", json={"kind": "post", "title": "Hello", "body_markdown": "Hi"}
        )
        entry_id = made.json()["id"]
        await api.post(f"/api/v1/content/{entry_id}/publish", json={})
        gone = await api.post(
            "/api/v1/content", json={"kind": "post", "title": "Short-lived", "body_markdown": "x"}
        )
        await api.delete(f"/api/v1/content/{gone.json()['id']}")
        await api.put("/api/v1/settings/site_title", json={"value": "Garden"})
    page = await audit_page(app, accounts["admin"])
    text = page.text
    admin = accounts["admin"]
    assert f'<a href="/admin/users/{admin.id}">{admin.display_name or admin.username}</a>' in text
    assert re.search(
        rf'published post <a href="/admin/content/{entry_id}" data-target>“Hello”</a>', text
    )
    assert re.search(
        r"deleted post <span data-target>“Short-lived”</span> <span[^>]*data-deleted>", text
    )
    assert re.search(
        r'changed setting <a href="/admin/settings" data-target>“site_title”</a>', text
    )
    assert re.search(r'data-change="value"><span class="muted">Value:</span> Keel → Garden', text)
    table = text[text.index('<table class="table audit">') :]
    assert "{&#34;" not in table and '{"' not in table  # no JSON dumps


async def test_names_are_read_once_per_kind_for_a_whole_page(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """The statements the page runs do not grow with the entries it shows."""
    from sqlalchemy import event

    async def statements_for(count: int) -> int:
        await add_entries(
            app,
            *[
                {
                    "user_id": accounts["editor"].id,
                    "actor": "editor",
                    "action": "user.updated",
                    "resource_type": "user",
                    "resource_id": str(accounts["viewer"].id),
                }
                for _ in range(count)
            ],
        )
        seen: list[str] = []

        def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement)

        engine = app.state.runtime.engine.sync_engine
        event.listen(engine, "before_cursor_execute", listen)
        try:
            page = await audit_page(app, accounts["admin"])
        finally:
            event.remove(engine, "before_cursor_execute", listen)
        assert page.status_code == 200
        return len(seen)

    await statements_for(1)  # first use: connections and caches set up
    few = await statements_for(2)
    many = await statements_for(20)
    assert many == few
