"""`/api/v1/users`: app/accounts/api/users.py (both storage legs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from litestar import Litestar

from app.accounts.models import Role, User
from app.accounts.services.api_keys import create_api_key
from app.accounts.services.audit import Actor
from app.settings import Settings
from keel.testing import assert_problem
from tests.accounts.test_users_pages import add_user, audit_actions, reload, user_count
from tests.conftest import bearer, client_for, count_rows, signed_in

NEW_PASSWORD = "a long and unusual passphrase"


@asynccontextmanager
async def api_as(app: Litestar, user: User) -> AsyncIterator[httpx.AsyncClient]:
    """An API client holding an access token for `user`."""
    headers = await bearer(app, user)
    async with client_for(app) as client:
        client.headers.update(headers)
        yield client


def new_user(**changes: str) -> dict[str, str]:
    body = {
        "email": "newcomer@example.org",
        "username": "newcomer",
        "password": NEW_PASSWORD,
        "role": "viewer",
        "display_name": "New Comer",
    }
    return {**body, **changes}


def usernames(body: dict) -> list[str]:
    return [item["username"] for item in body["items"]]


async def test_anonymous_callers_get_a_401_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/users"), 401)


async def test_fields_picks_what_the_user_list_and_a_user_answer(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    async with api_as(app, viewer) as client:
        listed = await client.get("/api/v1/users", params={"fields": "username, role,username"})
        one = await client.get(f"/api/v1/users/{viewer.id}", params={"fields": "email"})
        unknown = await client.get("/api/v1/users", params={"fields": "username,password_hash"})
    assert listed.json()["items"] == [
        {"username": name, "role": name} for name in ("admin", "editor", "viewer")
    ]
    assert listed.json()["total"] == 3
    assert one.json() == {"email": viewer.email}
    assert "password_hash" in assert_problem(unknown, 400, "fields")["detail"]


async def test_the_list_is_a_paginated_envelope(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["viewer"]) as client:
        first = await client.get("/api/v1/users", params={"per_page": 2})
        second = await client.get("/api/v1/users", params={"per_page": 2, "page": 2})
        clamped = await client.get("/api/v1/users", params={"per_page": 1000, "page": 0})
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"items", "total", "page", "per_page"}
    assert (body["total"], body["page"], body["per_page"]) == (3, 1, 2)
    assert usernames(body) == ["admin", "editor"]
    assert usernames(second.json()) == ["viewer"]
    assert (clamped.json()["page"], clamped.json()["per_page"]) == (1, 100)
    item = body["items"][0]
    assert set(item) == {
        "id",
        "email",
        "username",
        "display_name",
        "role",
        "is_active",
        "created_at",
        "last_login_at",
    }
    assert "password_hash" not in first.text


async def test_the_list_filters_searches_and_sorts(app: Litestar, accounts: dict) -> None:
    await add_user(app, "grace", email="grace@navy.example", display_name="Grace Hopper")
    await add_user(app, "retired", role="editor", is_active=False)
    await add_user(app, "early", last_login_at=datetime(2024, 1, 1, tzinfo=UTC))
    await add_user(app, "late", last_login_at=datetime(2024, 6, 1, tzinfo=UTC))
    async with api_as(app, accounts["viewer"]) as client:
        search = await client.get("/api/v1/users", params={"q": "hopper"})
        editors = await client.get("/api/v1/users", params={"role": "editor", "sort": "-username"})
        inactive = await client.get("/api/v1/users", params={"status": "inactive"})
        by_email = await client.get("/api/v1/users", params={"sort": "-email"})
        by_login = await client.get("/api/v1/users", params={"sort": "-last_login_at"})
        by_login_asc = await client.get("/api/v1/users", params={"sort": "last_login_at"})
    assert usernames(search.json()) == ["grace"]
    assert usernames(editors.json()) == ["retired", "editor"]
    assert usernames(inactive.json()) == ["retired"]
    assert usernames(by_email.json())[:2] == ["viewer", "retired"]
    # never signed in sorts last either way, on SQLite and PostgreSQL alike
    assert usernames(by_login.json())[:3] == ["late", "early", "admin"]
    assert usernames(by_login_asc.json())[:3] == ["early", "late", "admin"]


async def test_a_bad_filter_is_a_problem_naming_the_field(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["viewer"]) as client:
        sort = await client.get("/api/v1/users", params={"sort": "password_hash"})
        role = await client.get("/api/v1/users", params={"role": "owner"})
        status = await client.get("/api/v1/users", params={"status": "asleep"})
        page = await client.get("/api/v1/users", params={"page": "two"})
    assert_problem(sort, 400, "sort")
    assert_problem(role, 400, "role")
    assert_problem(status, 400, "status")
    assert_problem(page, 400, "page")


async def test_one_user_by_id_and_a_404_problem_for_an_unknown_one(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["viewer"]) as client:
        found = await client.get(f"/api/v1/users/{accounts['editor'].id}")
        missing = await client.get("/api/v1/users/00000000-0000-0000-0000-000000000000")
    assert found.status_code == 200 and found.json()["email"] == "editor@example.org"
    assert_problem(missing, 404)


async def test_an_editor_creates_a_viewer_with_201_and_an_audit_entry(
    app: Litestar, accounts: dict
) -> None:
    async with api_as(app, accounts["editor"]) as client:
        response = await client.post("/api/v1/users", json=new_user(role="editor"))
    assert response.status_code == 201
    body = response.json()
    assert (body["username"], body["role"], body["is_active"]) == ("newcomer", "editor", True)
    assert "password" not in response.text
    assert "user.created" in await audit_actions(app)


async def test_create_errors_are_problems_and_write_nothing(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    users, audits = await user_count(app), await count_rows(settings, "audit_log")
    async with api_as(app, accounts["admin"]) as client:
        duplicate = await client.post("/api/v1/users", json=new_user(email="Viewer@example.org"))
        common = await client.post("/api/v1/users", json=new_user(password="password1234"))
        username = await client.post("/api/v1/users", json=new_user(username="-x"))
        role = await client.post("/api/v1/users", json=new_user(role="owner"))
        missing = await client.post("/api/v1/users", json={"email": "a@example.org"})
    assert_problem(duplicate, 409, "email")
    assert "common passwords" in assert_problem(common, 400, "password")["detail"]
    assert_problem(username, 400, "username")
    assert_problem(role, 400, "role")
    assert_problem(missing, 400)
    assert await user_count(app) == users
    assert await count_rows(settings, "audit_log") == audits


async def test_create_lists_every_invalid_field_in_one_problem(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    users = await user_count(app)
    async with api_as(app, accounts["admin"]) as client:
        response = await client.post(
            "/api/v1/users",
            json=new_user(email="nope", username="-x", password="short", role="owner"),
        )
    problem = assert_problem(response, 400)
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"email", "username", "password", "role"}, problem
    assert await user_count(app) == users


async def test_an_editor_cannot_create_promote_edit_reset_or_delete_an_admin(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    admin, viewer = accounts["admin"].id, accounts["viewer"].id
    before = await count_rows(settings, "audit_log")
    async with api_as(app, accounts["editor"]) as client:
        answers = [
            await client.post("/api/v1/users", json=new_user(role="admin")),
            await client.patch(f"/api/v1/users/{viewer}", json={"role": "admin"}),
            await client.patch(f"/api/v1/users/{admin}", json={"display_name": "X"}),
            await client.patch(f"/api/v1/users/{admin}", json={"is_active": False}),
            await client.post(f"/api/v1/users/{admin}/password-reset"),
            await client.delete(f"/api/v1/users/{admin}"),
        ]
    for answer in answers:
        assert_problem(answer, 403)
    assert (await reload(app, viewer)).role == "viewer"  # type: ignore[union-attr]
    assert await count_rows(settings, "audit_log") == before


async def test_viewers_read_but_cannot_change(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    editor = accounts["editor"].id
    async with api_as(app, accounts["viewer"]) as client:
        answers = [
            await client.post("/api/v1/users", json=new_user()),
            await client.patch(f"/api/v1/users/{editor}", json={"display_name": "X"}),
            await client.post(f"/api/v1/users/{editor}/password-reset"),
            await client.delete(f"/api/v1/users/{editor}"),
        ]
    for answer in answers:
        assert_problem(answer, 403)
    assert await count_rows(settings, "audit_log") == 0


async def test_patch_changes_only_the_fields_given_and_is_audited(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    async with api_as(app, accounts["editor"]) as client:
        response = await client.patch(
            f"/api/v1/users/{viewer.id}", json={"display_name": "Vera", "role": "editor"}
        )
        bad = await client.patch(f"/api/v1/users/{viewer.id}", json={"email": "nope"})
        taken = await client.patch(f"/api/v1/users/{viewer.id}", json={"username": "Admin"})
    assert response.status_code == 200
    body = response.json()
    assert (body["display_name"], body["role"], body["email"]) == (
        "Vera",
        "editor",
        "viewer@example.org",
    )
    assert_problem(bad, 400, "email")
    assert_problem(taken, 409, "username")
    assert (await audit_actions(app)).count("user.updated") == 1


LONG_EMAIL = "a" * 60 + "@" + "b" * 271 + ".org"
"""336 characters that fit the address pattern: longer than the column (320) holds."""


async def test_patch_refuses_what_create_refuses_with_the_same_message(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    """One rule per field for every path that writes it (the update path used to skip the
    length of an address, stored it on SQLite and answered 500 on PostgreSQL)."""
    assert len(LONG_EMAIL) == 336
    viewer = accounts["viewer"]
    url = f"/api/v1/users/{viewer.id}"
    before = await count_rows(settings, "audit_log")
    async with api_as(app, accounts["admin"]) as client:
        for field, value in (("email", LONG_EMAIL), ("username", "-dash"), ("role", "guest")):
            created = await client.post("/api/v1/users", json=new_user(**{field: value}))
            patched = await client.patch(url, json={field: value})
            assert_problem(created, 400, field)
            assert_problem(patched, 400, field)
            assert created.json()["detail"] == patched.json()["detail"]
    async with signed_in(app, viewer) as browser:
        profile = await browser.post(
            "/account/profile", data={"display_name": "Vera", "email": LONG_EMAIL}
        )
    async with signed_in(app, accounts["admin"]) as browser:
        form = await browser.post(
            f"/admin/users/{viewer.id}",
            data={"email": LONG_EMAIL, "username": "viewer", "display_name": "Vera"},
        )
    for page in (profile, form):
        assert page.status_code == 400 and "Enter a valid e-mail address." in page.text
    stored = await reload(app, viewer.id)
    assert stored is not None
    assert (stored.email, stored.username, stored.role) == (
        "viewer@example.org",
        "viewer",
        "viewer",
    )
    assert await user_count(app) == 3
    assert await count_rows(settings, "audit_log") == before


async def test_the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(
    app: Litestar, accounts: dict
) -> None:
    admin = accounts["admin"]
    async with app.state.sessionmaker() as session, session.begin():
        _, secret = await create_api_key(
            session, Actor.system(), Role.admin, admin.id, "ops", "admin", None
        )
    async with client_for(app) as client:
        client.headers["X-API-Key"] = secret  # another admin-level caller than the admin
        demote = await client.patch(f"/api/v1/users/{admin.id}", json={"role": "editor"})
        deactivate = await client.patch(f"/api/v1/users/{admin.id}", json={"is_active": False})
        delete = await client.delete(f"/api/v1/users/{admin.id}")
    for answer in (demote, deactivate, delete):
        assert "last active admin" in assert_problem(answer, 409)["detail"]
    second = await add_user(app, "deputy", role="admin")
    async with api_as(app, admin) as client:  # with a second admin the demotion is allowed
        assert (await client.patch(f"/api/v1/users/{second.id}", json={"role": "editor"})).json()[
            "role"
        ] == "editor"
        assert_problem(await client.delete(f"/api/v1/users/{admin.id}"), 409)  # not yourself
    user = await reload(app, admin.id)
    assert user is not None and user.role == "admin" and user.is_active


async def test_deactivation_ends_the_users_sessions_and_tokens(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as browser, api_as(app, viewer) as own_api:
        assert (await browser.get("/admin")).status_code == 200
        assert (await own_api.get("/api/v1/users")).status_code == 200
        async with api_as(app, accounts["editor"]) as client:
            response = await client.patch(f"/api/v1/users/{viewer.id}", json={"is_active": False})
        assert response.status_code == 200 and response.json()["is_active"] is False
        assert (await browser.get("/admin")).status_code == 303  # anonymous now
        assert_problem(await own_api.get("/api/v1/users"), 401)


async def test_delete_answers_204_and_is_audited(app: Litestar, accounts: dict) -> None:
    viewer = accounts["viewer"]
    async with api_as(app, accounts["editor"]) as client:
        response = await client.delete(f"/api/v1/users/{viewer.id}")
        again = await client.delete(f"/api/v1/users/{viewer.id}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(again, 404)
    assert await reload(app, viewer.id) is None
    assert "user.deleted" in await audit_actions(app)


async def test_a_password_reset_returns_a_one_time_url(app: Litestar, accounts: dict) -> None:
    async with api_as(app, accounts["editor"]) as client:
        response = await client.post(f"/api/v1/users/{accounts['viewer'].id}/password-reset")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["expires_in"] == 3600
    assert body["reset_url"].startswith("http://127.0.0.1:8000/reset/")
    assert "user.password_reset_link_created" in await audit_actions(app)
